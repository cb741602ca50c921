/// Produces the indices of one epoch, batch by batch.
public protocol BatchSampler: Sendable {
    /// The batches of `epoch`, each a list of dataset indices.
    func batches(epoch: Int) -> [[Int]]
}

/// A shuffled or sequential order of `0..<count`, seeded per epoch.
public struct IndexOrder: Sendable {
    public static func sequential(_ count: Int) -> [Int] { Array(0..<count) }

    /// A permutation of `0..<count` drawn from (seed, epoch): the same everywhere.
    public static func shuffled(_ count: Int, seed: UInt64, epoch: Int) -> [Int] {
        var rng = SampleRNG(seed: seed, epoch: epoch, index: -1)
        var order = Array(0..<count)
        if count > 1 {
            for i in stride(from: count - 1, to: 0, by: -1) { order.swapAt(i, Int(rng.next() % UInt64(i + 1))) }
        }
        return order
    }
}

/// Batches of `batchSize` from a sequential or shuffled order; `dropLast` drops a short last batch.
public struct SimpleBatchSampler: BatchSampler {
    public var count: Int
    public var batchSize: Int
    public var shuffle: Bool
    public var seed: UInt64
    public var dropLast: Bool

    public init(count: Int, batchSize: Int, shuffle: Bool = false, seed: UInt64 = 0, dropLast: Bool = false) {
        self.count = count
        self.batchSize = batchSize
        self.shuffle = shuffle
        self.seed = seed
        self.dropLast = dropLast
    }

    public func batches(epoch: Int) -> [[Int]] {
        let order = shuffle ? IndexOrder.shuffled(count, seed: seed, epoch: epoch) : IndexOrder.sequential(count)
        return chunk(order, batchSize, dropLast: dropLast)
    }
}

func chunk(_ order: [Int], _ size: Int, dropLast: Bool) -> [[Int]] {
    var out: [[Int]] = []
    var i = 0
    while i < order.count {
        let end = min(i + size, order.count)
        if end - i < size && dropLast { break }
        out.append(Array(order[i..<end]))
        i = end
    }
    return out
}

/// Detectron's aspect-ratio grouping (`_shuffle_roidb_inds` with ASPECT_GROUPING): horizontal
/// (width ≥ height) and vertical images are permuted separately, each truncated to a multiple of
/// the batch size, then the batches are permuted — every batch has one orientation and the
/// leftovers sit out that epoch.
public struct AspectRatioGroupedBatchSampler: BatchSampler {
    public var horizontal: [Bool]
    public var batchSize: Int
    public var seed: UInt64

    public init(horizontal: [Bool], batchSize: Int, seed: UInt64 = 0) {
        self.horizontal = horizontal
        self.batchSize = batchSize
        self.seed = seed
    }

    public func batches(epoch: Int) -> [[Int]] {
        var rng = SampleRNG(seed: seed, epoch: epoch, index: -2)
        func permute(_ xs: [Int]) -> [Int] {
            var v = xs
            if v.count > 1 { for i in stride(from: v.count - 1, to: 0, by: -1) { v.swapAt(i, Int(rng.next() % UInt64(i + 1))) } }
            return v
        }
        let h = permute(horizontal.indices.filter { horizontal[$0] })
        let v = permute(horizontal.indices.filter { !horizontal[$0] })
        var rows = chunk(Array(h.prefix(h.count / batchSize * batchSize)), batchSize, dropLast: true)
            + chunk(Array(v.prefix(v.count / batchSize * batchSize)), batchSize, dropLast: true)
        if rows.count > 1 { for i in stride(from: rows.count - 1, to: 0, by: -1) { rows.swapAt(i, Int(rng.next() % UInt64(i + 1))) } }
        return rows
    }
}

/// detectron2's samplers for several processes (ranks).
public enum DistributedSampling {
    /// `TrainingSampler`: the infinite stream shuffle(0..<N) + shuffle(0..<N) + … from one seed,
    /// of which rank r takes every world-th item from position r. Returns the first `length`
    /// items of rank's share.
    public static func training(count: Int, seed: UInt64, rank: Int, worldSize: Int, length: Int) -> [Int] {
        precondition(rank >= 0 && rank < worldSize && count > 0)
        var out: [Int] = []
        out.reserveCapacity(length)
        var position = 0, epoch = 0
        while out.count < length {
            for i in IndexOrder.shuffled(count, seed: seed, epoch: epoch) {
                if position % worldSize == rank { out.append(i) }
                position += 1
                if out.count == length { break }
            }
            epoch += 1
        }
        return out
    }

    /// `InferenceSampler`: the contiguous shard of rank r — N/W items each, the first N mod W
    /// ranks one more; every sample exactly once, nothing padded.
    public static func inference(count: Int, rank: Int, worldSize: Int) -> Range<Int> {
        precondition(rank >= 0 && rank < worldSize)
        let base = count / worldSize, extra = count % worldSize
        let start = rank * base + min(rank, extra)
        return start..<(start + base + (rank < extra ? 1 : 0))
    }
}

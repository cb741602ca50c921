import DataLoading
import Foundation
import Portability

/// What a snapshot holds besides the weights and the momentum, so that a resumed run continues
/// exactly where the snapshot was taken: the iteration it ends, and the losses of the last
/// iterations (json_stats logs medians over a window of 20). Everything else a run draws is a
/// function of the iteration — the sampler's order of (RNG_SEED, epoch), each sample's generator
/// of (seed, epoch, index), the learning rate of the schedule — so it is recomputed, not saved.
struct TrainingProgress: Codable, Equatable {
    /// The last iteration the snapshot's weights include.
    var iteration: Int
    /// The losses of the last ≤ 20 iterations, oldest first, as float bit patterns (exact).
    var window: [[String: UInt32]]

    static let metadataKey = "training_state"

    init(iteration: Int, window: [[String: Float]]) {
        self.iteration = iteration
        self.window = window.map { $0.mapValues(\.bitPattern) }
    }

    var losses: [[String: Float]] { window.map { $0.mapValues(Float.init(bitPattern:)) } }

    var json: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        return String(decoding: (try? encoder.encode(self)) ?? Data(), as: UTF8.self)
    }

    /// The progress saved in a checkpoint's metadata; a checkpoint written before it was saved
    /// (or by another tool) resumes with an empty window.
    init(metadata: [String: String], file: String) throws(EngineError) {
        guard let text = metadata[Self.metadataKey] else {
            guard let it = metadata["iteration"].flatMap(Int.init) else {
                throw .data("\(file) has no iteration in its metadata: it is not a training snapshot of this engine")
            }
            self.init(iteration: it, window: [])
            return
        }
        do {
            self = try JSONDecoder().decode(TrainingProgress.self, from: Data(text.utf8))
        } catch {
            throw .data("\(file): its \(Self.metadataKey) metadata is malformed (\(error)); delete the snapshot to resume from an earlier one")
        }
    }
}

/// The snapshots of a training output directory (`model_iterN.safetensors`).
struct Snapshots {
    let directory: String

    func path(_ iteration: Int) -> String { (directory as NSString).appendingPathComponent("model_iter\(iteration).safetensors") }

    /// The iterations of the snapshots present, ascending.
    var iterations: [Int] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.compactMap { n -> Int? in
            guard n.hasPrefix("model_iter"), n.hasSuffix(".safetensors") else { return nil }
            return Int(n.dropFirst("model_iter".count).dropLast(".safetensors".count))
        }.sorted()
    }

    /// The newest snapshot and its iteration.
    var latest: (path: String, iteration: Int)? { iterations.last.map { (path($0), $0) } }

    /// `TRAIN.SNAPSHOT_KEEP`: deletes all but the newest `keep` snapshots (0 keeps all).
    /// Returns the deleted paths.
    @discardableResult
    func prune(keep: Int) -> [String] {
        guard keep > 0 else { return [] }
        let its = iterations
        return its.dropLast(keep).compactMap { it in
            (try? FileManager.default.removeItem(atPath: path(it))) == nil ? nil : path(it)
        }
    }
}

/// `training_stats.jsonl`: one json_stats object a line. A resumed run first drops the lines
/// of iterations after its snapshot (the interrupted run may have logged past it), so the file
/// ends as an uninterrupted run's does.
enum TrainingStatsFile {
    /// Keeps the lines whose `iter` is at most `iteration`; a file without any is emptied.
    static func truncate(_ path: String, after iteration: Int) throws {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return }
        let kept = text.split(separator: "\n").filter { line in
            guard let obj = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  let it = obj["iter"] as? Int else { return false }
            return it <= iteration
        }
        try Files.writeAtomically(Array(kept.map { $0 + "\n" }.joined().utf8), to: path)
    }

    /// Every line's object, in order (lines that are not JSON objects are skipped).
    static func read(_ path: String) -> [[String: Any]] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
    }
}

/// Replica `index` of `replicas` takes batches index, index + replicas, … of each epoch, and each
/// epoch is cut to a multiple of `replicas` batches so every replica has as many.
struct ReplicaBatchSampler: BatchSampler {
    let base: any BatchSampler
    let replicas: Int
    let index: Int

    func batches(epoch: Int) -> [[Int]] {
        let all = base.batches(epoch: epoch)
        let usable = all.count / replicas * replicas
        return stride(from: index, to: usable, by: replicas).map { all[$0] }
    }
}

/// An endless stream of minibatches over epochs, starting after `consumed` batches (a resumed
/// run gets the batches an uninterrupted one would have had from there on).
final class BatchStream: @unchecked Sendable {
    let loader: DataLoader<TrainingDataset, Minibatch>
    private var epoch = 0
    private var offset = 0
    private var iterator: DataLoaderIterator<TrainingDataset, Minibatch>?

    init(loader: DataLoader<TrainingDataset, Minibatch>, consumed: Int = 0) {
        self.loader = loader
        var left = consumed
        while true {
            let n = loader.batchCount(epoch: epoch)
            guard n > 0, left >= n else { break }
            left -= n
            epoch += 1
        }
        offset = left
    }

    func next() throws -> Minibatch {
        while true {
            if iterator == nil {
                iterator = try loader.makeIterator(epoch: epoch, from: offset)
                offset = 0
            }
            if let b = try iterator!.next() { return b }
            epoch += 1
            iterator = nil
        }
    }

    func shutdown() {
        iterator = nil
        loader.shutdown()
    }
}

import DataLoading
import Foundation
import Portability
import Storage
import Testing

func options(workers: Int = 0, kind: WorkerKind = .threads, batch: Int = 4, persistent: Bool = false) -> DataLoaderOptions {
    var o = DataLoaderOptions()
    o.batchSize = batch
    o.shuffle = true
    o.seed = 11
    o.numWorkers = workers
    o.workerKind = kind
    o.persistentWorkers = persistent
    return o
}

@Suite("DataLoader (threads and main thread)")
struct LoaderTests {
    @Test("invalid combinations are rejected with PyTorch's messages")
    func validation() {
        func message(_ change: (inout DataLoaderOptions) -> Void) -> String {
            var o = DataLoaderOptions()
            change(&o)
            do {
                _ = try DataLoader(dataset: Numbers(count: 4), options: o) { $0 }
                return "accepted"
            } catch {
                return error.description
            }
        }
        #expect(message { $0.numWorkers = -1 } == "num_workers option should be non-negative; use num_workers=0 to disable multiprocessing.")
        #expect(message { $0.timeout = -1 } == "timeout option should be non-negative")
        #expect(message { $0.prefetchFactor = 2 }.hasPrefix("prefetch_factor option could only be specified in multiprocessing"))
        #expect(message { $0.persistentWorkers = true } == "persistent_workers option needs num_workers > 0")
        #expect(message { $0.batchSize = 0 } == "batch_size should be a positive integer value, but got batch_size=0")
        #expect(message { $0.timeout = 5 }.hasPrefix("timeout option needs num_workers > 0"))
        #expect(message { $0.numWorkers = 2; $0.workerKind = .processes }.hasPrefix("process workers need a TransportableDataset"))
        #expect(message { $0.numWorkers = 2; $0.prefetchFactor = 0 } == "prefetch_factor should be a positive integer, but got prefetch_factor=0")
    }

    @Test("batches are identical for 0, 1, 2 and 4 thread workers, persistent or not, over epochs")
    func determinism() throws {
        let ds = Numbers(count: 37)
        let reference = try DataLoader(dataset: ds, options: options()) { $0 }
        for epoch in 0..<3 {
            let want = try reference.makeIterator(epoch: epoch).collect()
            #expect(want.count == 10)
            for workers in [1, 2, 4] {
                for persistent in [false, true] {
                    let loader = try DataLoader(dataset: ds, options: options(workers: workers, persistent: persistent)) { $0 }
                    #expect(try loader.makeIterator(epoch: epoch).collect() == want, "workers \(workers) persistent \(persistent)")
                }
            }
        }
        // Different epochs shuffle differently; inOrder = false gives the same batches in some order.
        #expect(try reference.makeIterator(epoch: 0).collect() != reference.makeIterator(epoch: 1).collect())
        var unordered = options(workers: 3)
        unordered.inOrder = false
        let any = try DataLoader(dataset: ds, options: unordered) { $0 }.makeIterator(epoch: 0).collect()
        #expect(Set(any.map { $0.map { $0[0] } }) == Set(try reference.makeIterator(epoch: 0).collect().map { $0.map { $0[0] } }))
    }

    @Test("an exception in a worker reaches the caller with its message, the worker id and the sample index")
    func workerException() throws {
        var o = options(workers: 2, batch: 1)
        o.shuffle = false
        let loader = try DataLoader(dataset: Numbers(count: 10, failAt: 5), options: o) { $0 }
        let it = try loader.makeIterator()
        var seen = 0
        do {
            while try it.next() != nil { seen += 1 }
            Issue.record("no error")
        } catch {
            #expect(error.description == "DataLoader worker 1 failed on sample 5: sample 5 is broken")
        }
        #expect(seen == 5)
        // In the calling thread the same error names no worker.
        let main = try DataLoader(dataset: Numbers(count: 10, failAt: 5), options: { var m = o; m.numWorkers = 0; return m }()) { $0 }
        #expect(throws: DataLoaderError.self) { try main.makeIterator().collect() }
    }

    @Test("a user timeout gives a timeout error")
    func timeout() throws {
        var o = options(workers: 1, batch: 1)
        o.timeout = 0.05
        let loader = try DataLoader(dataset: Numbers(count: 3, slowMicros: 400_000), options: o) { $0 }
        do {
            _ = try loader.makeIterator().next()
            Issue.record("no timeout")
        } catch {
            #expect(error.description == "DataLoader timed out after 0.05 seconds")
        }
    }

    @Test("releasing the iterator mid-epoch, or the consumer throwing, stops the worker threads quickly")
    func shutdownMidEpoch() throws {
        var o = options(workers: 3)
        o.threadName = "sd-midepoch"
        let loader = try DataLoader(dataset: Numbers(count: 200), options: o) { $0 }
        let t0 = Date()
        do {
            let it = try loader.makeIterator()
            _ = try it.next()
            _ = try it.next()
        }
        #expect(Date().timeIntervalSince(t0) < 2)
        #expect(ProcessThreads.waitUntilGone(prefix: "sd-midepoch-").isEmpty)
        struct ConsumerFailed: Error {}
        #expect(throws: ConsumerFailed.self) {
            let it = try loader.makeIterator(epoch: 1)
            while let b = try it.next() { if b.count == 4 { throw ConsumerFailed() } }
        }
        #expect(ProcessThreads.waitUntilGone(prefix: "sd-midepoch-").isEmpty)
    }

    @Test("persistent thread workers survive epochs and stop with the loader")
    func persistentThreads() throws {
        do {
            var o = options(workers: 2, persistent: true)
            o.threadName = "sd-persist"
            let loader = try DataLoader(dataset: Numbers(count: 20), options: o) { $0 }
            _ = try loader.makeIterator(epoch: 0).collect()
            #expect(loader.resources.workerThreads == 2)
            _ = try loader.makeIterator(epoch: 1).collect()
            #expect(loader.resources.workerThreads == 2)
        }
        #expect(ProcessThreads.waitUntilGone(prefix: "sd-persist-").isEmpty)
    }
}

@Suite("Samplers")
struct SamplerTests {
    @Test("dropLast, shuffling per epoch")
    func simple() {
        let s = SimpleBatchSampler(count: 10, batchSize: 4, shuffle: false, dropLast: true)
        #expect(s.batches(epoch: 0) == [[0, 1, 2, 3], [4, 5, 6, 7]])
        #expect(SimpleBatchSampler(count: 10, batchSize: 4).batches(epoch: 0).last == [8, 9])
        let sh = SimpleBatchSampler(count: 10, batchSize: 10, shuffle: true, seed: 3)
        #expect(sh.batches(epoch: 0)[0].sorted() == Array(0..<10))
        #expect(sh.batches(epoch: 0) != sh.batches(epoch: 1))
        #expect(sh.batches(epoch: 2) == SimpleBatchSampler(count: 10, batchSize: 10, shuffle: true, seed: 3).batches(epoch: 2))
    }

    @Test("aspect-ratio grouping: every batch one orientation, leftovers sit out")
    func aspectGrouping() {
        let horizontal = (0..<23).map { $0 % 3 != 0 }  // 15 horizontal, 8 vertical
        let s = AspectRatioGroupedBatchSampler(horizontal: horizontal, batchSize: 2, seed: 1)
        let batches = s.batches(epoch: 0)
        #expect(batches.count == 7 + 4)
        for b in batches { #expect(Set(b.map { horizontal[$0] }).count == 1) }
        #expect(Set(batches.flatMap { $0 }).count == 22)
        #expect(s.batches(epoch: 1) != batches)
    }

    @Test("distributed: the training stream interleaves ranks; inference shards are contiguous and complete")
    func distributed() {
        let r0 = DistributedSampling.training(count: 5, seed: 9, rank: 0, worldSize: 2, length: 7)
        let r1 = DistributedSampling.training(count: 5, seed: 9, rank: 1, worldSize: 2, length: 7)
        let whole = DistributedSampling.training(count: 5, seed: 9, rank: 0, worldSize: 1, length: 14)
        #expect(r0 == stride(from: 0, to: 14, by: 2).map { whole[$0] })
        #expect(r1 == stride(from: 1, to: 14, by: 2).map { whole[$0] })
        #expect(Set(whole.prefix(5)) == Set(0..<5))
        #expect((0..<3).map { DistributedSampling.inference(count: 10, rank: $0, worldSize: 3) } == [0..<4, 4..<7, 7..<10])
    }
}

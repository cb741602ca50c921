import Foundation
import Portability

/// Threads (the default: no GIL here) or processes (isolation).
public enum WorkerKind: String, Sendable, Codable, CaseIterable {
    case threads, processes
}

/// What a worker knows about itself (PyTorch's `get_worker_info()`).
public struct WorkerInfo: Sendable {
    public var id: Int
    public var numWorkers: Int
    /// `seed + id`: distinct per worker, reproducible.
    public var seed: UInt64
    public var kind: WorkerKind
}

/// A data loader's options, with PyTorch's names and defaults.
public struct DataLoaderOptions: Sendable {
    public var batchSize = 1
    public var shuffle = false
    public var seed: UInt64 = 0
    public var dropLast = false
    /// 0 loads in the calling thread.
    public var numWorkers = 0
    public var workerKind: WorkerKind = .threads
    /// Batches in flight per worker; defaults to 2 with workers, must be nil without.
    public var prefetchFactor: Int?
    /// Keep the workers between epochs.
    public var persistentWorkers = false
    /// Seconds to wait for a batch (0: forever); needs workers.
    public var timeout: Double = 0
    /// Hand out batches in order (deterministic) or as they complete.
    public var inOrder = true
    /// When workers cannot start: warn once and load with `numWorkers = 0` (true), or throw.
    public var fallbackToMainThread = true
    /// Replace a worker process that died, resubmitting its batches, instead of failing.
    public var respawnDeadWorkers = false
    /// Seconds a process worker has to start and answer.
    public var startupTimeout: Double = 20
    /// Runs in each thread worker before it loads anything (PyTorch's `worker_init_fn`).
    /// Process workers run their dataset kind's hook instead (see ``DataLoaderWorker``).
    public var workerInit: (@Sendable (WorkerInfo) -> Void)?
    /// How process workers share batches; nil chooses from the environment.
    public var sharedMemory: SharedMemoryPolicy?
    /// The prefix of worker thread names (`sd-loader-0`, …), as `top -H` and gdb show them.
    public var threadName = "sd-loader"
    /// Where warnings go (the fallback's one warning, respawns).
    public var warn: @Sendable (String) -> Void = { FileHandle.standardError.write(Data("warning: \($0)\n".utf8)) }

    public init() {}

    /// Checks the options by PyTorch's rules.
    func validate(hasSampler: Bool) throws(DataLoaderError) {
        if numWorkers < 0 {
            throw .invalidOption("num_workers option should be non-negative; use num_workers=0 to disable multiprocessing.")
        }
        if timeout < 0 { throw .invalidOption("timeout option should be non-negative") }
        if batchSize < 1 { throw .invalidOption("batch_size should be a positive integer value, but got batch_size=\(batchSize)") }
        if numWorkers == 0 && prefetchFactor != nil {
            throw .invalidOption("prefetch_factor option could only be specified in multiprocessing.let num_workers > 0 to enable multiprocessing, otherwise set prefetch_factor to None.")
        }
        if let p = prefetchFactor, p < 1 { throw .invalidOption("prefetch_factor should be a positive integer, but got prefetch_factor=\(p)") }
        if persistentWorkers && numWorkers == 0 { throw .invalidOption("persistent_workers option needs num_workers > 0") }
        if timeout > 0 && numWorkers == 0 { throw .invalidOption("timeout option needs num_workers > 0 (batches are made in the calling thread)") }
        if hasSampler && shuffle { throw .invalidOption("batch_sampler option is mutually exclusive with batch_size, shuffle, sampler, and drop_last") }
    }
}

/// What a loader holds right now, for leak checks.
public struct LoaderResources: Sendable, Equatable {
    public var workerThreads = 0
    public var workerProcesses = 0
    public var sharedSegments = 0
    public var sharedBytes = 0
    /// Descriptors open in this process (all of them, not only the loader's).
    public var openDescriptors = 0
}

/// One batch of work: its position in the epoch and its sample indices.
struct LoadTask: Sendable {
    var batch: Int
    var epoch: Int
    var indices: [Int]
}

/// Where workers deliver finished batches for the iterator that is running.
final class ResultSink<Batch: Sendable>: @unchecked Sendable {
    let cond = Condition()
    var results: [Int: Result<Batch, DataLoaderError>] = [:]
    /// A failure that ends the epoch (a dead worker), reported at the next `next()`.
    var fatal: DataLoaderError?

    func deliver(_ batch: Int, _ result: Result<Batch, DataLoaderError>) {
        cond.withLock {
            results[batch] = result
            cond.broadcast()
        }
    }

    func fail(_ error: DataLoaderError) {
        cond.withLock {
            if fatal == nil { fatal = error }
            cond.broadcast()
        }
    }
}

/// A set of workers that turn tasks into batches.
protocol LoaderBackend<Batch>: AnyObject, Sendable {
    associatedtype Batch: Sendable
    var workerCount: Int { get }
    func attach(_ sink: ResultSink<Batch>)
    func submit(_ task: LoadTask, worker: Int)
    func shutdown()
    var resources: LoaderResources { get }
}

/// Makes a batch in the calling thread: each sample from its own (seed, epoch, index) generator.
func makeBatch<D: Dataset, Batch>(_ dataset: D, _ task: LoadTask, seed: UInt64, worker: Int?,
                                   collate: ([D.Element]) throws -> Batch) -> Result<Batch, DataLoaderError> {
    var elements: [D.Element] = []
    elements.reserveCapacity(task.indices.count)
    for index in task.indices {
        var rng = SampleRNG(seed: seed, epoch: task.epoch, index: index)
        do {
            elements.append(try dataset.element(at: index, rng: &rng))
        } catch {
            return .failure(.sampleFailed(index: index, worker: worker, message: "\(error)"))
        }
    }
    do {
        return .success(try collate(elements))
    } catch {
        return .failure(.sampleFailed(index: task.indices.first ?? -1, worker: worker, message: "collate failed: \(error)"))
    }
}

/// A data loader: batches of a dataset, made by worker threads or processes, or the caller.
///
/// ```swift
/// var options = DataLoaderOptions()
/// options.batchSize = 2
/// options.shuffle = true
/// options.numWorkers = 2
/// let loader = try DataLoader(dataset: images, options: options) { $0 }   // collate: the list
/// var batches = try loader.makeIterator(epoch: 0)
/// while let batch = try batches.next() { train(batch) }
/// ```
///
/// Batches are identical for any worker count and kind (and for the main-thread fallback):
/// the sampler runs here, every sample draws from its own seeded generator, and with `inOrder`
/// batches come back in sampler order. If workers cannot start — spawning refused (`ulimit -u`,
/// seccomp, a missing `WorkerGuard`), shared memory unusable, a worker dying during start-up —
/// the loader warns once, saying why, and loads in the calling thread; `fallbackToMainThread =
/// false` makes that an error.
public final class DataLoader<D: Dataset, Batch: Sendable>: Sendable {
    public let dataset: D
    public let options: DataLoaderOptions
    let sampler: any BatchSampler
    let collate: @Sendable ([D.Element]) throws -> Batch
    let makeBackend: (@Sendable () throws(DataLoaderError) -> any LoaderBackend<Batch>)?
    private let state = Locked<(persistent: (any LoaderBackend<Batch>)?, fallbackReason: String?)>((nil, nil))

    /// Why the loader fell back to the calling thread, if it did.
    public var fallbackReason: String? { state.current.fallbackReason }

    /// A loader over `dataset` with thread workers (or none).
    public init(dataset: D, options: DataLoaderOptions = DataLoaderOptions(), batchSampler: (any BatchSampler)? = nil,
                collate: @escaping @Sendable ([D.Element]) throws -> Batch) throws(DataLoaderError) {
        try options.validate(hasSampler: batchSampler != nil)
        if options.numWorkers > 0 && options.workerKind == .processes {
            throw .invalidOption("process workers need a TransportableDataset whose elements are ByteCodable (use workerKind = .threads for this dataset)")
        }
        self.dataset = dataset
        self.options = options
        self.sampler = batchSampler ?? SimpleBatchSampler(count: dataset.count, batchSize: options.batchSize, shuffle: options.shuffle,
                                                          seed: options.seed, dropLast: options.dropLast)
        self.collate = collate
        if options.numWorkers > 0 {
            let o = options
            self.makeBackend = { () throws(DataLoaderError) -> any LoaderBackend<Batch> in
                ThreadBackend(dataset: dataset, options: o, collate: collate)
            }
        } else {
            self.makeBackend = nil
        }
    }

    init(dataset: D, options: DataLoaderOptions, batchSampler: (any BatchSampler)?, collate: @escaping @Sendable ([D.Element]) throws -> Batch,
         backend: @escaping @Sendable () throws(DataLoaderError) -> any LoaderBackend<Batch>) throws(DataLoaderError) {
        try options.validate(hasSampler: batchSampler != nil)
        self.dataset = dataset
        self.options = options
        self.sampler = batchSampler ?? SimpleBatchSampler(count: dataset.count, batchSize: options.batchSize, shuffle: options.shuffle,
                                                          seed: options.seed, dropLast: options.dropLast)
        self.collate = collate
        self.makeBackend = options.numWorkers > 0 ? backend : nil
    }

    deinit { state.withLock { $0.persistent?.shutdown() } }

    /// The batches of one epoch, from batch `firstBatch` on (a resumed run skips what it has
    /// already consumed; the batches it gets are the ones an uninterrupted epoch would give).
    public func makeIterator(epoch: Int = 0, from firstBatch: Int = 0) throws(DataLoaderError) -> DataLoaderIterator<D, Batch> {
        var backend: (any LoaderBackend<Batch>)?
        var owned = false
        if let makeBackend, fallbackReason == nil {
            if options.persistentWorkers, let p = state.current.persistent {
                backend = p
            } else {
                do throws(DataLoaderError) {
                    backend = try makeBackend()
                    if options.persistentWorkers { state.withLock { $0.persistent = backend } } else { owned = true }
                } catch {
                    guard options.fallbackToMainThread else { throw error }
                    let reason = error.description
                    state.withLock { $0.fallbackReason = reason }
                    options.warn("DataLoader: \(reason); loading with numWorkers = 0 in the calling thread instead (same batches)")
                }
            }
        }
        return DataLoaderIterator(loader: self, epoch: epoch, from: firstBatch, backend: backend, ownsBackend: owned)
    }

    /// The number of batches the sampler gives for `epoch`.
    public func batchCount(epoch: Int) -> Int { sampler.batches(epoch: epoch).count }

    /// The loader's resources now (threads, processes, shared memory, open descriptors).
    public var resources: LoaderResources {
        var r = state.current.persistent?.resources ?? LoaderResources()
        r.openDescriptors = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []).count
        return r
    }

    /// Stops persistent workers now (they also stop when the loader is released).
    public func shutdown() {
        let p: (any LoaderBackend<Batch>)? = state.withLock { s in
            defer { s.persistent = nil }
            return s.persistent
        }
        p?.shutdown()
    }
}

/// The batches of one epoch, in order (or as completed with `inOrder = false`). Releasing it
/// mid-epoch stops its workers (unless they are persistent).
public final class DataLoaderIterator<D: Dataset, Batch: Sendable>: @unchecked Sendable {
    let loader: DataLoader<D, Batch>
    public let epoch: Int
    let batches: [[Int]]
    let backend: (any LoaderBackend<Batch>)?
    let ownsBackend: Bool
    let sink = ResultSink<Batch>()
    private var dispatched = 0
    private var yielded = 0
    private var outstanding: [Int]
    private var workerOf: [Int: Int] = [:]
    private var finished = false

    init(loader: DataLoader<D, Batch>, epoch: Int, from firstBatch: Int, backend: (any LoaderBackend<Batch>)?, ownsBackend: Bool) {
        self.loader = loader
        self.epoch = epoch
        self.batches = loader.sampler.batches(epoch: epoch)
        dispatched = min(max(0, firstBatch), batches.count)
        yielded = dispatched
        self.backend = backend
        self.ownsBackend = ownsBackend
        self.outstanding = [Int](repeating: 0, count: backend?.workerCount ?? 0)
        backend?.attach(sink)
    }

    deinit { finish() }

    /// The number of batches in this epoch.
    public var count: Int { batches.count }

    private func finish() {
        guard !finished else { return }
        finished = true
        if ownsBackend { backend?.shutdown() }
    }

    private func dispatch() {
        guard let backend else { return }
        let cap = loader.options.prefetchFactor ?? 2
        while dispatched < batches.count {
            let w: Int
            if loader.options.inOrder {
                w = dispatched % backend.workerCount
                if outstanding[w] >= cap { break }
            } else {
                guard let best = outstanding.indices.min(by: { outstanding[$0] < outstanding[$1] }), outstanding[best] < cap else { break }
                w = best
            }
            outstanding[w] += 1
            workerOf[dispatched] = w
            backend.submit(LoadTask(batch: dispatched, epoch: epoch, indices: batches[dispatched]), worker: w)
            dispatched += 1
        }
    }

    /// The next batch, or nil at the end of the epoch.
    public func next() throws(DataLoaderError) -> Batch? {
        guard yielded < batches.count else {
            finish()
            return nil
        }
        guard backend != nil else {
            let task = LoadTask(batch: yielded, epoch: epoch, indices: batches[yielded])
            yielded += 1
            return try makeBatch(loader.dataset, task, seed: loader.options.seed, worker: nil, collate: loader.collate).get()
        }
        dispatch()
        let timeout = loader.options.timeout
        let inOrder = loader.options.inOrder
        let want = yielded
        let outcome: Result<(Int, Result<Batch, DataLoaderError>), DataLoaderError> = sink.cond.withLock {
            let deadline = timeout > 0 ? Date().addingTimeInterval(timeout) : nil
            while true {
                if let fatal = sink.fatal { return .failure(fatal) }
                if inOrder {
                    if let r = sink.results.removeValue(forKey: want) { return .success((want, r)) }
                } else if let (k, r) = sink.results.first {
                    sink.results.removeValue(forKey: k)
                    return .success((k, r))
                }
                if let deadline {
                    let left = deadline.timeIntervalSinceNow
                    if left <= 0 { return .failure(.timedOut(seconds: timeout)) }
                    _ = sink.cond.wait(seconds: left)
                } else {
                    sink.cond.wait()
                }
            }
        }
        switch outcome {
        case let .failure(error):
            finish()
            throw error
        case let .success((index, result)):
            if let w = workerOf.removeValue(forKey: index) { outstanding[w] -= 1 }
            yielded += 1
            dispatch()
            do throws(DataLoaderError) {
                return try result.get()
            } catch {
                finish()
                throw error
            }
        }
    }

    /// Every remaining batch of the epoch.
    public func collect() throws(DataLoaderError) -> [Batch] {
        var out: [Batch] = []
        while let b = try next() { out.append(b) }
        return out
    }
}

/// Worker threads, each with its own queue of tasks (so batch i goes to worker i mod N, as in
/// PyTorch).
final class ThreadBackend<D: Dataset, Batch: Sendable>: LoaderBackend, @unchecked Sendable {
    let dataset: D
    let options: DataLoaderOptions
    let collate: @Sendable ([D.Element]) throws -> Batch
    let cond = Condition()
    var queues: [[LoadTask]]
    var stopping = false
    var sink: ResultSink<Batch>?
    /// One pool thread per worker, each running `loop` until shutdown (pthreads, joined on
    /// shutdown: nothing of a worker outlives the backend).
    let pool: ThreadPool
    var running = 0

    init(dataset: D, options: DataLoaderOptions, collate: @escaping @Sendable ([D.Element]) throws -> Batch) {
        self.dataset = dataset
        self.options = options
        self.collate = collate
        self.queues = Array(repeating: [], count: options.numWorkers)
        pool = ThreadPool(threadCount: options.numWorkers, name: options.threadName)
        cond.withLock { running = options.numWorkers }
        for id in 0..<options.numWorkers { pool.execute { [self] in self.loop(id) } }
    }

    var workerCount: Int { options.numWorkers }

    func attach(_ sink: ResultSink<Batch>) {
        cond.withLock {
            self.sink = sink
            for i in queues.indices { queues[i].removeAll() }
        }
    }

    func submit(_ task: LoadTask, worker: Int) {
        cond.withLock {
            queues[worker].append(task)
            cond.broadcast()
        }
    }

    private func loop(_ id: Int) {
        options.workerInit?(WorkerInfo(id: id, numWorkers: options.numWorkers, seed: options.seed &+ UInt64(id), kind: .threads))
        while true {
            let next: (LoadTask, ResultSink<Batch>)? = cond.withLock {
                while queues[id].isEmpty && !stopping { cond.wait() }
                if stopping { return nil }
                return (queues[id].removeFirst(), sink!)
            }
            guard let (task, target) = next else { break }
            target.deliver(task.batch, makeBatch(dataset, task, seed: options.seed, worker: id, collate: collate))
        }
        cond.withLock {
            running -= 1
            cond.broadcast()
        }
    }

    func shutdown() {
        cond.withLock {
            stopping = true
            cond.broadcast()
            while running > 0 { cond.wait() }
        }
        pool.shutdown()
    }

    var resources: LoaderResources {
        cond.withLock { LoaderResources(workerThreads: running) }
    }
}

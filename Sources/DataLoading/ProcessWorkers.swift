import Foundation
import Glibc
import Portability

/// The worker side of process workers: register it as a role of the guarded executable.
///
/// ```swift
/// WorkerGuard.enter(roles: [DataLoaderWorker.role: DataLoaderWorker.entry(datasets: [ImageFolderDataset.self])])
/// ```
public enum DataLoaderWorker {
    /// The worker role name the loader starts.
    public static let role = "dataloader"

    /// The entry of the worker role, able to rebuild the given dataset kinds.
    public static func entry(datasets: [any TransportableDataset.Type]) -> WorkerEntry {
        let kinds = Dictionary(datasets.map { ($0.kind, $0) }, uniquingKeysWith: { a, _ in a })
        return { _ in run(kinds: kinds) }
    }

    static func run(kinds: [String: any TransportableDataset.Type]) -> Int32 {
        let requests: Int32 = 3, results: Int32 = 4
        func reply(_ type: Message, _ body: (inout ByteWriter) -> Void) -> Bool {
            var w = ByteWriter()
            w.write(type.rawValue)
            body(&w)
            return (try? Frames.send(results, w.bytes)) != nil
        }
        guard let first = try? Frames.receive(requests) else { return 0 }
        var setup: (kind: String, description: [UInt8], id: Int, seed: UInt64, slots: [(Int32, Int)])?
        first.withUnsafeBytes { raw in
            var r = ByteReader(raw)
            guard (try? r.read(UInt8.self)) == Message.initialize.rawValue,
                  let kind = try? r.read(String.self), let desc = try? r.readArray(of: UInt8.self),
                  let id = try? r.read(Int64.self), let seed = try? r.read(UInt64.self),
                  let n = try? r.read(UInt32.self) else { return }
            var slots: [(Int32, Int)] = []
            for _ in 0..<n {
                guard let fd = try? r.read(Int32.self), let size = try? r.read(Int64.self) else { return }
                slots.append((fd, Int(size)))
            }
            setup = (kind, desc, Int(id), seed, slots)
        }
        guard let setup else {
            _ = reply(.initFailed) { $0.write("unreadable initialisation message") }
            return 2
        }
        guard let type = kinds[setup.kind] else {
            _ = reply(.initFailed) { $0.write("dataset kind '\(setup.kind)' is not registered in this executable's DataLoaderWorker.entry(datasets:) (known: \(kinds.keys.sorted().joined(separator: ", ")))") }
            return 2
        }
        return serve(type, setup: setup, requests: requests, reply: reply)
    }

    static func serve<T: TransportableDataset>(_ type: T.Type, setup: (kind: String, description: [UInt8], id: Int, seed: UInt64, slots: [(Int32, Int)]),
                                                requests: Int32, reply: (Message, (inout ByteWriter) -> Void) -> Bool) -> Int32 {
        let dataset: T
        do {
            dataset = try T(description: setup.description)
        } catch {
            _ = reply(.initFailed) { $0.write("cannot rebuild the \(setup.kind) dataset: \(error)") }
            return 2
        }
        var slots: [SharedMemorySegment] = []
        for (fd, size) in setup.slots {
            guard let s = try? SharedMemorySegment(mapping: fd, byteCount: size, transport: .memfd) else {
                _ = reply(.initFailed) { $0.write("cannot map a shared-memory slot (fd \(fd), \(size) bytes)") }
                return 2
            }
            slots.append(s)
        }
        guard reply(.ready, { $0.write(Int64(getpid())) }) else { return 0 }
        while true {
            guard let msg = try? Frames.receive(requests) else { return 0 }  // parent gone or closed: done
            var task: (id: Int64, epoch: Int64, slot: Int32, indices: [Int64])?
            msg.withUnsafeBytes { raw in
                var r = ByteReader(raw)
                guard let t = try? r.read(UInt8.self) else { return }
                if t == Message.shutdown.rawValue { return }
                guard t == Message.task.rawValue, let id = try? r.read(Int64.self), let epoch = try? r.read(Int64.self),
                      let slot = try? r.read(Int32.self), let indices = try? r.readArray(of: Int64.self) else { return }
                task = (id, epoch, slot, indices)
            }
            guard let task else { return 0 }
            var payload = ByteWriter()
            payload.write(UInt32(task.indices.count))
            var failed: (Int, String)?
            for index in task.indices {
                var rng = SampleRNG(seed: setup.seed, epoch: Int(task.epoch), index: Int(index))
                do {
                    let element = try dataset.element(at: Int(index), rng: &rng)
                    element.encode(to: &payload)
                } catch {
                    failed = (Int(index), "\(error)")
                    break
                }
            }
            if let (index, message) = failed {
                guard reply(.sampleError, { w in w.write(task.id); w.write(Int64(index)); w.write(message) }) else { return 0 }
                continue
            }
            let bytes = payload.bytes
            if task.slot >= 0, Int(task.slot) < slots.count, bytes.count <= slots[Int(task.slot)].byteCount {
                bytes.withUnsafeBytes { slots[Int(task.slot)].baseAddress.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
                guard reply(.result, { w in w.write(task.id); w.write(task.slot); w.write(Int64(bytes.count)) }) else { return 0 }
            } else {
                // No slot, or too big for it: the payload follows the header as its own frame.
                guard reply(.result, { w in w.write(task.id); w.write(Int32(-1)); w.write(Int64(bytes.count)) }) else { return 0 }
                guard (try? Frames.send(4, bytes)) != nil else { return 0 }
            }
        }
    }
}

/// Worker processes: this executable in the `dataloader` role, one request pipe and one result
/// pipe each, and `prefetchFactor` shared-memory slots each for the batches (pipes when the
/// portability layer picks no shared memory, or a batch outgrows its slot).
final class ProcessBackend<D: TransportableDataset, Batch: Sendable>: LoaderBackend, @unchecked Sendable {
    struct Worker {
        var child: ChildProcess
        var requests: Int32
        var results: Int32
        var slots: [SharedMemorySegment]
        var freeSlots: [Int32]
        var pending: [Int64: (task: LoadTask, slot: Int32)]
        /// False while a replacement starts: submissions wait in `pending` for it.
        var alive = true
    }

    let dataset: D
    let options: DataLoaderOptions
    let collate: @Sendable ([D.Element]) throws -> Batch
    let cond = Condition()
    var workers: [Worker] = []
    var sink: ResultSink<Batch>?
    var stopping = false
    var receiversRunning = 0
    /// One thread per worker reading its results (pthreads, joined at shutdown).
    let receivers: ThreadPool
    /// Replacements started so far; past ``maxRespawns`` a death fails the epoch.
    var respawns = 0
    static var maxRespawns: Int { 3 }
    let slotBytes: Int
    let transport: SharedMemoryTransport

    init(dataset: D, options: DataLoaderOptions, collate: @escaping @Sendable ([D.Element]) throws -> Batch) throws(DataLoaderError) {
        self.dataset = dataset
        self.options = options
        self.collate = collate
        self.slotBytes = 16 << 20
        let policy = options.sharedMemory ?? SharedMemoryPolicy()
        let (t, _) = policy.select(segmentBytes: slotBytes)
        self.transport = t
        self.receivers = ThreadPool(threadCount: options.numWorkers, name: options.threadName + "-rx")
        do throws(DataLoaderError) {
            for id in 0..<options.numWorkers { workers.append(try start(id, policy: policy)) }
        } catch {
            shutdown()
            throw error
        }
        for id in workers.indices { startReceiver(id) }
    }

    var workerCount: Int { options.numWorkers }

    /// Spawns worker `id` and waits for its "ready".
    private func start(_ id: Int, policy: SharedMemoryPolicy) throws(DataLoaderError) -> Worker {
        var slots: [SharedMemorySegment] = []
        if transport != .pipe {
            for _ in 0..<(options.prefetchFactor ?? 2) {
                do throws(SharedMemoryError) {
                    slots.append(try SharedMemorySegment(byteCount: slotBytes, transport: transport, devShmPath: policy.devShmPath))
                } catch {
                    throw .workersUnavailable(reason: "no usable shared memory: \(error)")
                }
            }
        }
        // [worker's end, our end] for requests and for results.
        guard let (reqChild, reqParent) = Frames.pair() else {
            throw .workersUnavailable(reason: "cannot make a socket pair: \(String(cString: strerror(errno)))")
        }
        guard let (resChild, resParent) = Frames.pair() else {
            close(reqChild); close(reqParent)
            throw .workersUnavailable(reason: "cannot make a socket pair: \(String(cString: strerror(errno)))")
        }
        let req = [reqChild, reqParent], res = [resParent, resChild]
        let child: ChildProcess
        do throws(SpawnError) {
            child = try WorkerGuard.spawnWorker(role: DataLoaderWorker.role) { config in
                config.inheritedDescriptors = [(req[0], 3), (res[1], 4)] + slots.enumerated().map { ($1.descriptor, Int32(5 + $0)) }
                config.standardInput = .null
            }
        } catch {
            for fd in req + res { close(fd) }
            throw .workersUnavailable(reason: error.description)
        }
        close(req[0])
        close(res[1])
        let w = Worker(child: child, requests: req[1], results: res[0], slots: slots, freeSlots: slots.indices.map { Int32($0) }.reversed(),
                       pending: [:])
        var initMsg = ByteWriter()
        initMsg.write(Message.initialize.rawValue)
        initMsg.write(D.kind)
        initMsg.write(array: dataset.describe())
        initMsg.write(Int64(id))
        initMsg.write(options.seed)
        initMsg.write(UInt32(slots.count))
        for (k, s) in slots.enumerated() {
            initMsg.write(Int32(5 + k))
            initMsg.write(Int64(s.byteCount))
        }
        func fail(_ reason: String) -> DataLoaderError {
            close(w.requests)
            close(w.results)
            child.terminate(grace: 0.5)
            return .workersUnavailable(reason: reason)
        }
        guard (try? Frames.send(w.requests, initMsg.bytes)) != nil else { throw fail("worker \(id) (pid \(child.pid)) closed its pipe at start-up: \(child.wait(timeout: 1).map { "\($0)" } ?? "still running")") }
        guard Frames.waitReadable(w.results, seconds: options.startupTimeout) else {
            throw fail("worker \(id) (pid \(child.pid)) did not start within \(options.startupTimeout) s")
        }
        guard let answer = try? Frames.receive(w.results), let type = answer.first else {
            let status = child.wait(timeout: 2)
            throw fail("worker \(id) (pid \(child.pid)) died during start-up (\(status.map { "\($0)" } ?? "no status"))")
        }
        if type == Message.initFailed.rawValue {
            let reason = answer.withUnsafeBytes { raw -> String in
                var r = ByteReader(raw)
                _ = try? r.read(UInt8.self)
                return (try? r.read(String.self)) ?? "unknown"
            }
            throw fail("worker \(id) could not start: \(reason)")
        }
        guard type == Message.ready.rawValue else { throw fail("worker \(id) answered its start with message \(type)") }
        return w
    }

    private func startReceiver(_ id: Int) {
        cond.withLock { receiversRunning += 1 }
        receivers.execute { [self] in self.receive(id) }
    }

    func attach(_ sink: ResultSink<Batch>) {
        cond.withLock { self.sink = sink }
    }

    func submit(_ task: LoadTask, worker id: Int) {
        let send: (Int32, [UInt8])? = cond.withLock {
            guard !stopping else { return nil }
            let key = Int64(task.batch) << 20 | Int64(task.epoch & 0xFFFFF)
            guard workers[id].alive else {
                workers[id].pending[key] = (task, -1)  // the replacement gets it
                return nil
            }
            let slot = workers[id].freeSlots.popLast() ?? -1
            workers[id].pending[key] = (task, slot)
            var w = ByteWriter()
            w.write(Message.task.rawValue)
            w.write(key)
            w.write(Int64(task.epoch))
            w.write(slot)
            w.write(array: task.indices.map { Int64($0) })
            return (workers[id].requests, w.bytes)
        }
        if let (fd, bytes) = send { try? Frames.send(fd, bytes) }  // a dead worker is reported by its receiver
    }

    /// Reads worker `id`'s results until it stops; decodes, collates and delivers them.
    private func receive(_ id: Int) {
        defer { cond.withLock { receiversRunning -= 1; cond.broadcast() } }
        while true {
            let fd = cond.withLock { workers[id].results }
            guard let msg = try? Frames.receive(fd), let type = msg.first else {
                if handleDeath(id) { continue }
                return
            }
            var header: (key: Int64, slot: Int32, length: Int)?
            var sampleError: (key: Int64, index: Int, message: String)?
            msg.withUnsafeBytes { raw in
                var r = ByteReader(raw)
                _ = try? r.read(UInt8.self)
                if type == Message.result.rawValue, let k = try? r.read(Int64.self), let s = try? r.read(Int32.self), let n = try? r.read(Int64.self) {
                    header = (k, s, Int(n))
                } else if type == Message.sampleError.rawValue, let k = try? r.read(Int64.self), let i = try? r.read(Int64.self), let m = try? r.read(String.self) {
                    sampleError = (k, Int(i), m)
                }
            }
            if let e = sampleError {
                let task = cond.withLock { workers[id].pending.removeValue(forKey: e.key) }
                if let (task, slot) = task {
                    cond.withLock { if slot >= 0 { workers[id].freeSlots.append(slot) } }
                    currentSink()?.deliver(task.batch, .failure(.sampleFailed(index: e.index, worker: id, message: e.message)))
                }
                continue
            }
            guard let h = header else {
                currentSink()?.fail(.protocolError(worker: id, message: "unexpected message type \(type)"))
                return
            }
            var bytes: [UInt8]
            if h.slot < 0 {
                guard let payload = try? Frames.receive(fd) else {
                    if handleDeath(id) { continue }
                    return
                }
                bytes = payload
            } else {
                let seg = cond.withLock { workers[id].slots[Int(h.slot)] }
                bytes = [UInt8](UnsafeRawBufferPointer(start: seg.baseAddress, count: h.length))
            }
            let pending = cond.withLock { () -> (task: LoadTask, slot: Int32)? in
                let p = workers[id].pending.removeValue(forKey: h.key)
                if let p, p.slot >= 0 { workers[id].freeSlots.append(p.slot) }
                return p
            }
            guard let (task, _) = pending else { continue }
            let result: Result<Batch, DataLoaderError> = bytes.withUnsafeBytes { raw in
                var r = ByteReader(raw)
                do throws(ByteReader.Truncated) {
                    let n = Int(try r.read(UInt32.self))
                    var elements: [D.Element] = []
                    elements.reserveCapacity(n)
                    for _ in 0..<n { elements.append(try D.Element(from: &r)) }
                    do {
                        return .success(try collate(elements))
                    } catch {
                        return .failure(.sampleFailed(index: task.indices.first ?? -1, worker: id, message: "collate failed: \(error)"))
                    }
                } catch {
                    return .failure(.protocolError(worker: id, message: "truncated batch \(task.batch)"))
                }
            }
            currentSink()?.deliver(task.batch, result)
        }
    }

    private func currentSink() -> ResultSink<Batch>? { cond.withLock { sink } }

    /// Worker `id`'s pipe closed. Returns true when a replacement took over (keep receiving).
    private func handleDeath(_ id: Int) -> Bool {
        let (child, stop) = cond.withLock { (workers[id].child, stopping) }
        if stop { return false }
        let status = child.wait(timeout: 2) ?? { child.terminate(grace: 0.5) }()
        let error = DataLoaderError.workerDied(worker: id, pid: child.pid, status: status)
        let canRespawn = cond.withLock { () -> Bool in
            guard options.respawnDeadWorkers, respawns < Self.maxRespawns else { return false }
            respawns += 1
            return true
        }
        if canRespawn {
            options.warn("\(error); starting a replacement and resubmitting its batches")
            let policy = options.sharedMemory ?? SharedMemoryPolicy()
            do throws(DataLoaderError) {
                let old: Worker = cond.withLock {
                    workers[id].alive = false
                    return workers[id]
                }
                close(old.requests)
                close(old.results)
                let fresh = try start(id, policy: policy)
                // Everything the dead worker owed, and whatever was submitted meanwhile, goes to
                // the replacement.
                let tasks: [LoadTask] = cond.withLock {
                    let owed = workers[id].pending.values.map(\.task).sorted { $0.batch < $1.batch }
                    workers[id] = fresh
                    return owed
                }
                for t in tasks { submit(t, worker: id) }
                return true
            } catch {
                currentSink()?.fail(.workersUnavailable(reason: "replacing worker \(id) failed: \(error)"))
                return false
            }
        }
        currentSink()?.fail(error)
        return false
    }

    func shutdown() {
        let list: [Worker] = cond.withLock {
            if stopping { return [] }
            stopping = true
            return workers
        }
        var bye = ByteWriter()
        bye.write(Message.shutdown.rawValue)
        for w in list {
            try? Frames.send(w.requests, bye.bytes)
            close(w.requests)
        }
        for w in list where w.child.wait(timeout: 2) == nil { w.child.terminate(grace: 0.5) }
        cond.withLock {
            while receiversRunning > 0 { cond.wait() }
        }
        for w in list { close(w.results) }
        cond.withLock { workers.removeAll() }
        receivers.shutdown()
    }

    deinit { shutdown() }

    var resources: LoaderResources {
        cond.withLock {
            LoaderResources(workerThreads: receiversRunning,
                            workerProcesses: workers.filter { $0.child.isRunning }.count,
                            sharedSegments: workers.reduce(0) { $0 + $1.slots.count },
                            sharedBytes: workers.reduce(0) { $0 + $1.slots.reduce(0) { $0 + $1.byteCount } })
        }
    }
}

extension DataLoader where D: TransportableDataset {
    /// A loader whose workers may be processes (`workerKind = .processes`): the executable must call
    /// `WorkerGuard.enter` with ``DataLoaderWorker/entry(datasets:)`` registering `D`.
    public convenience init(transportable dataset: D, options: DataLoaderOptions = DataLoaderOptions(), batchSampler: (any BatchSampler)? = nil,
                            collate: @escaping @Sendable ([D.Element]) throws -> Batch) throws(DataLoaderError) {
        let o = options
        try self.init(dataset: dataset, options: options, batchSampler: batchSampler, collate: collate) { () throws(DataLoaderError) -> any LoaderBackend<Batch> in
            o.workerKind == .processes
                ? try ProcessBackend(dataset: dataset, options: o, collate: collate)
                : ThreadBackend(dataset: dataset, options: o, collate: collate)
        }
    }
}

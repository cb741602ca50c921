import CLinuxShim
import Glibc

/// A fixed set of named worker threads running jobs and parallel loops.
///
/// ``parallelFor(_:_:)`` splits `0..<count` across the workers and the calling thread. Its
/// contract, relied on by the net executors and the data loader:
/// - the first error thrown by any iteration is rethrown to the caller;
/// - once an iteration has thrown, no iteration that has not started yet will start;
/// - the call returns (or throws) only after every iteration that did start has finished, so
///   nothing of the loop runs after it.
///
/// Nested use is safe. A `parallelFor` called from inside one of this pool's jobs queues helpers
/// like any other, and its caller works through the iterations itself: helpers only help, so
/// the loop finishes even when every other worker is busy. The caller then waits only for
/// helpers that are running iterations of this very loop (a late helper finds the loop closed and
/// leaves), and those never wait for anything but loops nested deeper still — so no cycle of
/// waits, and no deadlock, can form. The threads stay the same fixed set: nesting never
/// oversubscribes the cores.
///
/// ``shutdown()`` (also run when the pool is released) finishes queued jobs and joins every
/// thread. Pools are cheap to create and destroy.
public final class ThreadPool: @unchecked Sendable {
    /// A unit of work for ``execute(_:)``.
    public typealias Job = @Sendable () -> Void

    private final class Shared: @unchecked Sendable {
        let cond = Condition()
        var queue: [Job] = []
        var head = 0
        var stopping = false
        var threads: [pthread_t] = []
    }

    /// The number of worker threads.
    public let threadCount: Int
    /// The prefix of the worker threads' names (`name-0`, `name-1`, …), visible in `top -H` and gdb.
    public let name: String
    private let shared = Shared()
    private var joined = false

    /// Starts `threadCount` workers (0 runs every job on the calling thread).
    public init(threadCount: Int, name: String = "sd-pool") {
        precondition(threadCount >= 0, "threadCount must be ≥ 0")
        self.threadCount = threadCount
        self.name = name
        for i in 0..<threadCount {
            let box = Unmanaged.passRetained(WorkerStart(shared: shared))
            var tid = pthread_t()
            let rc = pthread_create(&tid, nil, { raw in
                let start = Unmanaged<WorkerStart>.fromOpaque(raw!).takeRetainedValue()
                ThreadPool.workerLoop(start.shared)
                return nil
            }, box.toOpaque())
            if rc != 0 {
                box.release()
                // Fewer threads than asked for still work: the caller thread takes part in loops.
                break
            }
            // Named here, not by the thread itself, so the name is set when init returns.
            sd_set_thread_name(tid, "\(name)-\(i)")
            shared.threads.append(tid)
        }
    }

    private final class WorkerStart: Sendable {
        let shared: Shared
        init(shared: Shared) { self.shared = shared }
    }

    deinit { shutdown() }

    /// The number of threads that really started.
    public var liveThreadCount: Int { shared.cond.withLock { shared.threads.count } }

    private static func workerLoop(_ s: Shared) {
        while true {
            s.cond.lock()
            while s.head == s.queue.count && !s.stopping { s.cond.wait() }
            if s.head == s.queue.count {  // stopping and drained
                s.cond.unlock()
                return
            }
            let job = s.queue[s.head]
            s.head += 1
            if s.head == s.queue.count {
                s.queue.removeAll(keepingCapacity: true)
                s.head = 0
            }
            s.cond.unlock()
            job()
        }
    }

    /// Whether the calling thread is one of this pool's workers.
    public var isWorkerThread: Bool {
        let me = pthread_self()
        return shared.cond.withLock { shared.threads.contains { pthread_equal($0, me) != 0 } }
    }

    /// Queues `job` to run on a worker (on the calling thread if the pool has no workers or is
    /// shut down).
    public func execute(_ job: @escaping Job) {
        let queued: Bool = shared.cond.withLock {
            guard !shared.stopping, !shared.threads.isEmpty else { return false }
            shared.queue.append(job)
            shared.cond.signal()
            return true
        }
        if !queued { job() }
    }

    /// Runs `body(i)` for every `i` in `0..<count` across the workers and the calling thread.
    /// See the type's documentation for the error, cancellation and nesting contract.
    public func parallelFor<E: Error>(_ count: Int, _ body: (Int) throws(E) -> Void) throws(E) {
        guard count > 0 else { return }
        if count == 1 || liveThreadCount == 0 {
            for i in 0..<count { try body(i) }
            return
        }
        // The loop's state. `body` does not escape: the caller waits below until every runner
        // that entered the loop has left it.
        let outcome: Result<Void, E> = withoutActuallyEscaping(body) { escapable in
            // Queued helpers hold only `loop`; the body is dropped from it before this returns,
            // so a helper that starts late finds the loop closed and never sees the body.
            let loop = LoopState(count: count, body: UncheckedBody { i throws(LoopFailure) in
                do throws(E) { try escapable(i) } catch { throw LoopFailure(error: error) }
            })
            let helpers = min(liveThreadCount, count - 1)
            for _ in 0..<helpers {
                execute { loop.run() }
            }
            loop.run()
            loop.closeAndWait()
            if let failure = loop.firstError { return .failure(failure.error as! E) }
            return .success(())
        }
        try outcome.get()
    }

    /// Runs every closure in `tasks` on the pool, with ``parallelFor(_:_:)``'s contract.
    public func run<E: Error>(_ tasks: [() throws(E) -> Void]) throws(E) {
        try parallelFor(tasks.count) { i throws(E) in try tasks[i]() }
    }

    /// Stops the workers after the queued jobs ran, and joins them. Idempotent.
    public func shutdown() {
        let threads: [pthread_t] = shared.cond.withLock {
            if joined { return [] }
            joined = true
            shared.stopping = true
            shared.cond.broadcast()
            return shared.threads
        }
        let me = pthread_self()
        for t in threads {
            // A pool released by its own job cannot join itself; that thread ends on its own.
            if pthread_equal(t, me) != 0 { pthread_detach(t) } else { pthread_join(t, nil) }
        }
    }
}

/// An error from inside a loop body, carried across threads.
struct LoopFailure: Error, Sendable {
    let error: any Error
}

/// A loop body crossing to worker threads while the caller waits for it.
struct UncheckedBody: @unchecked Sendable {
    let call: (Int) throws(LoopFailure) -> Void
    init(_ call: @escaping (Int) throws(LoopFailure) -> Void) { self.call = call }
}

/// Hands out loop indices and collects the first error.
final class LoopState: @unchecked Sendable {
    private let cond = Condition()
    private let count: Int
    private var next = 0
    private var active = 0
    private var closed = false
    private var body: UncheckedBody?
    private(set) var firstError: LoopFailure?

    init(count: Int, body: UncheckedBody) {
        self.count = count
        self.body = body
    }

    /// Takes indices until none are left or an iteration failed. A runner arriving after the
    /// caller closed the loop does nothing.
    func run() {
        cond.lock()
        guard !closed, body != nil else {
            cond.unlock()
            return
        }
        active += 1
        while firstError == nil && next < count {
            let i = next
            next += 1
            // Held only for this iteration, so no runner keeps the body once it has left.
            let call = body!.call
            cond.unlock()
            var failure: LoopFailure?
            do throws(LoopFailure) { try call(i) } catch { failure = error }
            cond.lock()
            if let failure, firstError == nil { firstError = failure }
        }
        active -= 1
        if active == 0 { cond.broadcast() }
        cond.unlock()
    }

    /// Stops new runners from entering and waits until the ones inside have left.
    func closeAndWait() {
        cond.lock()
        closed = true
        while active > 0 { cond.wait() }
        body = nil
        cond.unlock()
    }
}

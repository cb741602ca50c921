import Foundation
import Glibc
@testable import Portability
import Synchronization
import Testing

struct InjectedError: Error, Equatable { let index: Int }

/// An atomic counter shared by closures (a class, so closures capture a reference).
final class Counter: Sendable {
    private let atomic = Atomic<Int>(0)
    func add(_ n: Int = 1) { atomic.add(n, ordering: .relaxed) }
    func subtract(_ n: Int = 1) { atomic.subtract(n, ordering: .relaxed) }
    var value: Int { atomic.load(ordering: .relaxed) }
}

@Suite("Thread pool")
struct ThreadPoolTests {
    @Test("every index runs exactly once")
    func coversAll() throws {
        let pool = ThreadPool(threadCount: 3, name: "cover")
        let hits = Locked([Int](repeating: 0, count: 1000))
        pool.parallelFor(1000) { i in hits.withLock { $0[i] += 1 } }
        #expect(hits.current == [Int](repeating: 1, count: 1000))
    }

    @Test("the first error reaches the caller, unstarted iterations never start, started ones finish — 1,000 randomized runs, no hang")
    func errorPropagationRandomized() {
        withWatchdog(seconds: 120, "1,000 randomized failing loops") {
            let pool = ThreadPool(threadCount: 4, name: "errprop")
            var rng = SystemRandomNumberGenerator()
            for _ in 0..<1000 {
                let count = Int.random(in: 2...200, using: &rng)
                let failing = Set((0..<Int.random(in: 1...3, using: &rng)).map { _ in Int.random(in: 0..<count, using: &rng) })
                let running = Counter()
                let started = Locked(Set<Int>())
                let finished = Locked(Set<Int>())
                var caught: InjectedError?
                do throws(InjectedError) {
                    try pool.parallelFor(count) { i throws(InjectedError) in
                        running.add()
                        defer { running.subtract() }
                        started.withLock { _ = $0.insert(i) }
                        if Int.random(in: 0..<4) == 0 { usleep(UInt32.random(in: 0...200)) }
                        if failing.contains(i) { throw InjectedError(index: i) }
                        finished.withLock { _ = $0.insert(i) }
                    }
                } catch {
                    caught = error
                }
                // Nothing of the loop runs after the call returned.
                #expect(running.value == 0)
                let s = started.current, f = finished.current
                #expect(caught != nil)
                if let caught {
                    #expect(failing.contains(caught.index))
                    #expect(s.contains(caught.index))
                }
                // Every started iteration that was not a failing one finished.
                #expect(s.subtracting(failing) == f)
                // Some iterations were cancelled whenever the failure came early enough.
                #expect(s.count <= count)
            }
        }
    }

    @Test("after a failure no new iteration starts")
    func cancellation() {
        let pool = ThreadPool(threadCount: 2, name: "cancel")
        let started = Counter()
        #expect(throws: InjectedError.self) {
            try pool.parallelFor(10_000) { i throws(InjectedError) in
                started.add()
                if i == 0 { throw InjectedError(index: 0) }
                usleep(100)
            }
        }
        // Index 0 fails at once; at most a few iterations per thread were already under way.
        #expect(started.value < 100)
    }

    @Test("nested parallelFor inside a pool task does not deadlock")
    func nested() {
        withWatchdog(seconds: 30, "nested loops") {
            let pool = ThreadPool(threadCount: 2, name: "nested")
            let total = Counter()
            for _ in 0..<50 {
                pool.parallelFor(8) { _ in
                    pool.parallelFor(8) { _ in
                        pool.parallelFor(4) { _ in total.add() }
                    }
                }
            }
            #expect(total.value == 50 * 8 * 8 * 4)
        }
    }

    @Test("a nested error reaches the outer caller")
    func nestedError() {
        let pool = ThreadPool(threadCount: 2, name: "nesterr")
        #expect(throws: InjectedError(index: 3)) {
            try pool.parallelFor(4) { i throws(InjectedError) in
                try pool.parallelFor(4) { j throws(InjectedError) in
                    if i == 1 && j == 3 { throw InjectedError(index: 3) }
                }
            }
        }
    }

    @Test("threads carry the pool's name, and shutdown joins them")
    func namesAndShutdown() {
        let pool = ThreadPool(threadCount: 3, name: "named-pool")
        #expect(ProcessThreads.names().filter { $0.hasPrefix("named-pool-") }.count == 3)
        pool.shutdown()
        #expect(ProcessThreads.waitUntilGone(prefix: "named-pool-").isEmpty)
        // A shut-down pool still runs work, on the caller.
        let ran = Counter()
        pool.parallelFor(3) { _ in ran.add() }
        #expect(ran.value == 3)
    }

    @Test("1,000 create/destroy cycles leave no threads behind")
    func lifecycleThreads() {
        for _ in 0..<1000 {
            let pool = ThreadPool(threadCount: 4, name: "cycle")
            pool.parallelFor(8) { _ in }
        }
        let left = ProcessThreads.waitUntilGone(prefix: "cycle-")
        #expect(left.isEmpty, "left: \(left)")
    }

    @Test("1,000 create/destroy cycles keep thread and memory counts flat (measured in a child process)")
    func lifecycleMemory() throws {
        let r = try probe(["pool-cycles", "1000"])
        #expect(r.status.isSuccess, "\(r.output) \(r.error)")
        // "threads BEFORE AFTER rss BEFORE_KB AFTER_KB"
        let f = r.output.split(separator: " ").map(String.init)
        try #require(f.count == 6, "unexpected probe output: \(r.output)")
        #expect(f[1] == f[2], "thread count grew: \(r.output)")
        let growth = (Int(f[5].trimmingCharacters(in: .whitespacesAndNewlines))! - Int(f[4])!)
        if let sanitizer = Sanitizer.active {
            // Sanitizers keep shadow state and quarantined memory for every thread that ever ran.
            print("RSS bound not checked under \(sanitizer) (grew \(growth) KiB)")
        } else {
            #expect(growth < 1024, "RSS grew by \(growth) KiB over 900 cycles")
        }
    }

    @Test("the execute API runs queued jobs and shutdown drains them")
    func executeDrains() {
        let pool = ThreadPool(threadCount: 2, name: "exec")
        let n = Counter()
        for _ in 0..<100 { pool.execute { n.add() } }
        pool.shutdown()
        #expect(n.value == 100)
    }
}

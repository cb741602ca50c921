import Foundation
@testable import Operators
import Portability
import Storage
import Testing

/// Which test ops fail in the current run, and how many are running now.
final class FaultPlan: @unchecked Sendable {
    let state = Locked<(failing: Set<Int>, running: Int, maxRunning: Int)>(([], 0, 0))
    func set(_ failing: Set<Int>) { state.withLock { $0.failing = failing } }
    var running: Int { state.current.running }
}

/// `Fail(x; id) -> y`: copies x to y, sometimes pausing, and throws when the plan says so.
final class FailOp: Operator, @unchecked Sendable {
    let io: OpIO
    let id: Int
    let plan: FaultPlan
    init(_ io: OpIO, plan: FaultPlan) throws(OperatorError) {
        self.io = io
        self.plan = plan
        id = try io.int("id")
    }

    func run(_ ctx: ExecutionContext) throws {
        let fail = plan.state.withLock { s -> Bool in
            s.running += 1
            s.maxRunning = max(s.maxRunning, s.running)
            return s.failing.contains(id)
        }
        defer { plan.state.withLock { $0.running -= 1 } }
        if id % 3 == 0 { usleep(UInt32(id % 5) * 20) }
        let (x, xd) = try io.inputData(0)
        let (_, y) = try io.outputData(0, shape: x.shape)
        for i in 0..<x.count { y[i] = xd[i] }
        if fail { throw OpRunError(blob: io.def.outputs[0], "injected failure \(id)") }
    }
}

/// `RunNet(x; net) -> y`: runs the workspace's net called `net`, then copies x to y.
final class RunNetOp: Operator, @unchecked Sendable {
    let io: OpIO
    let netName: String
    init(_ io: OpIO) throws(OperatorError) {
        self.io = io
        netName = try io.string("net")
    }

    func run(_ ctx: ExecutionContext) throws {
        let inner = try io.workspace.net(netName)
        try (inner as! Net).run()
        let (x, xd) = try io.inputData(0)
        let (_, y) = try io.outputData(0, shape: x.shape)
        for i in 0..<x.count { y[i] = xd[i] }
    }
}

func faultRegistry(_ plan: FaultPlan) -> OperatorRegistry {
    var r = OperatorRegistry.standard
    r.register("Fail", OperatorSchema(inputs: 1...1, outputs: 1...1, gradient: { g in
        var args = g.def.arguments
        if case let .int(id)? = args["id"] { args["id"] = .int(id + 1000) }
        return GradientResult(ops: [OperatorDef("Fail", inputs: [g.outputGradient(0)!], outputs: [g.inputGradient(0)], arguments: args)],
                              inputsWithGradient: [0])
    }) { io throws(OperatorError) in try FailOp(io, plan: plan) })
    r.register("RunNet", OperatorSchema(inputs: 1...1, outputs: 1...1) { io throws(OperatorError) in try RunNetOp(io) })
    return r
}

/// A diamond of Fail ops with a nested net, a loss, and its backward part.
func faultNet() throws -> (inner: NetDef, outer: NetDef, ids: [Int]) {
    var inner = NetDef(name: "inner", externalInputs: ["x"], executor: .dag)
    inner.add("Fail", ["x"], ["i1"], ["id": .int(100)])
    inner.add("Fail", ["i1"], ["i2"], ["id": .int(101)])
    inner.add("Fail", ["x"], ["i3"], ["id": .int(102)])
    var outer = NetDef(name: "outer", externalInputs: ["x", "t"], executor: .dag)
    outer.add("Fail", ["x"], ["a"], ["id": .int(1)])
    outer.add("Fail", ["a"], ["b1"], ["id": .int(2)])
    outer.add("Fail", ["a"], ["b2"], ["id": .int(3)])
    outer.add("Fail", ["b1"], ["c1"], ["id": .int(4)])
    outer.add("Fail", ["b2"], ["c2"], ["id": .int(5)])
    outer.add("RunNet", ["x"], ["side"], ["net": .string("inner")])
    outer.add("Sum", ["c1", "c2"], ["s"])
    outer.add("Fail", ["s"], ["d"], ["id": .int(6)])
    outer.add("SigmoidCrossEntropyLoss", ["d", "t"], ["loss"])
    try addGradientOperators(to: &outer, losses: ["loss"], registry: faultRegistry(FaultPlan()))
    let ids = [1, 2, 3, 4, 5, 6, 100, 101, 102, 1001, 1002, 1003, 1004, 1005, 1006]
    return (inner, outer, ids)
}

@Suite("Executor fault injection", .serialized)
struct FaultInjectionTests {
    @Test("10,000 dag runs with 1–3 random failing ops (forward, backward, nested): the right error every time, no hang, no leak")
    func tenThousandRuns() throws {
        let plan = FaultPlan()
        let registry = faultRegistry(plan)
        let ctx = CPUContext()
        let check = LeakCheck(ctx)
        let weakOuter = Weak<Net>(), weakPool = Weak<ThreadPool>()
        let outcome = Locked<(failures: Int, successes: Int, wrong: [String])>((0, 0, []))
        withWatchdog(seconds: 300, "10,000 fault-injected runs") {
            do {
                let pool = ThreadPool(threadCount: 3, name: "faults")
                weakPool.value = pool
                let ws = Workspace(context: ctx)
                ws.feedBlob("x", try Tensor((0..<16).map { Float($0) / 16 - 0.5 }, shape: [4, 4], context: ctx))
                ws.feedBlob("t", try Tensor((0..<16).map { Int32($0 % 2) }, shape: [4, 4], context: ctx))
                let (innerDef, outerDef, ids) = try faultNet()
                try ws.addNet(try Net(innerDef, workspace: ws, registry: registry, pool: pool))
                let outer = try Net(outerDef, workspace: ws, registry: registry, pool: pool)
                weakOuter.value = outer
                var rng = TestRNG(99)
                for run in 0..<10_000 {
                    let k = run % 10 == 0 ? 0 : Int(rng.next() % 3) + 1
                    var failing = Set<Int>()
                    while failing.count < k { failing.insert(ids[Int(rng.next() % UInt64(ids.count))]) }
                    plan.set(failing)
                    do throws(OperatorError) {
                        try outer.run()
                        outcome.withLock { o in
                            o.successes += 1
                            if !failing.isEmpty { o.wrong.append("run \(run): succeeded with failing \(failing)") }
                        }
                    } catch {
                        let named = failing.contains { error.description.contains("injected failure \($0)") }
                        let located = error.description.contains("op #") && error.description.contains("failed on blob")
                        outcome.withLock { o in
                            o.failures += 1
                            if failing.isEmpty || !named || !located { o.wrong.append("run \(run) (failing \(failing)): \(error)") }
                        }
                    }
                    // The run returned only after every started op finished.
                    if plan.running != 0 { outcome.withLock { $0.wrong.append("run \(run): \(plan.running) ops still running") } }
                }
                ws.reset()
            } catch {
                outcome.withLock { $0.wrong.append("setup failed: \(error)") }
            }
        }
        let o = outcome.current
        #expect(o.wrong.isEmpty, "\(o.wrong.prefix(5))")
        #expect(o.failures + o.successes == 10_000)
        #expect(o.successes >= 1000)
        #expect(weakOuter.value == nil, "the net outlived its last reference (a retain cycle)")
        #expect(weakPool.value == nil, "the pool outlived its last reference")
        #expect(plan.state.current.maxRunning > 1, "the dag executor never ran two ops at once")
        #expect(throws: Never.self) { try check.verify() }
    }

    @Test("a 200-iteration train loop keeps memory flat from iteration 10 and the leak check clean")
    func trainLoop() throws {
        let ctx = CPUContext()
        let check = LeakCheck(ctx)
        var losses: [Float] = []
        var at10 = MemoryAccounting(), at200 = MemoryAccounting()
        weak var weakNet: Net?
        do {
            let pool = ThreadPool(threadCount: 2, name: "train")
            let ws = Workspace(context: ctx)
            try feedSmallNet(ws)
            var def = smallNet(executor: .dag)
            let grads = try addGradientOperators(to: &def, losses: ["loss"])
            ws.feedBlob("lr", try Tensor([0.1] as [Float], shape: [1], context: ctx))
            for (param, grad) in grads.sorted(by: { $0.key < $1.key }) where param != "data" {
                let p = try ws.fetchBlob(param)
                ws.feedBlob(param + "_momentum", try Tensor([Float](repeating: 0, count: p.count), shape: p.shape, context: ctx))
                def.add("MomentumSGDUpdate", [grad, param + "_momentum", "lr", param], [grad, param + "_momentum", param], ["momentum": .float(0.9)])
            }
            let net = try Net(def, workspace: ws, pool: pool)
            weakNet = net
            for iteration in 1...200 {
                try net.run()
                losses.append(try ws.fetchBlob("loss").toArray(as: Float.self)[0])
                if iteration == 10 { at10 = ctx.accounting }
            }
            at200 = ctx.accounting
        }
        #expect(losses.last! < losses.first! * 0.2, "loss \(losses.first!) → \(losses.last!)")
        #expect(at200.liveBytes == at10.liveBytes)
        #expect(at200.totalAllocations == at10.totalAllocations, "allocations kept happening after iteration 10")
        #expect(at200.liveTensors == at10.liveTensors)
        #expect(weakNet == nil)
        #expect(throws: Never.self) { try check.verify() }
    }
}

/// Runs `body` on its own thread and fails the test (instead of hanging it) after `seconds`.
func withWatchdog(seconds: Double, _ what: String, _ body: @escaping @Sendable () -> Void) {
    let done = Condition()
    let finished = Locked(false)
    Thread.detachNewThread {
        body()
        done.withLock {
            finished.withLock { $0 = true }
            done.signal()
        }
    }
    let ok: Bool = done.withLock {
        let deadline = Date().addingTimeInterval(seconds)
        while !finished.current {
            let left = deadline.timeIntervalSinceNow
            if left <= 0 { return false }
            _ = done.wait(seconds: left)
        }
        return true
    }
    #expect(ok, "\(what) did not finish within \(seconds) s: a hang")
}

/// A weak reference that closures on other threads may set.
final class Weak<T: AnyObject>: @unchecked Sendable {
    weak var value: T?
}

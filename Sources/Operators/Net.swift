import Dispatch
import Portability
import Storage

/// A net made runnable in a workspace: its ops created and checked, and their dependencies known.
///
/// Two executors give identical results:
/// - `simple` runs the ops in program order on the calling thread;
/// - `dag` runs every op whose inputs are ready, in parallel on the thread pool when several are
///   ready at once (pool threads not running ops serve the ops' own parallel loops). Dependencies
///   follow program order exactly — read-after-write, write-after-write and write-after-read on
///   every blob — so in-place ops and reused gradient blobs are safe.
///
/// When an op throws — forward or gradient, on any thread, several at once — ``run()`` throws
/// the first error, naming the op (type, name, position) and the blob; no op starts after it;
/// the call returns only after the ops already running have finished; and the net, its
/// executor and the pool are ready for the next run. A net run from inside a pool job (an op
/// that runs a nested net) executes its ops in order on that thread, so it never waits for a
/// pool thread that may be waiting for it.
public final class Net: WorkspaceNet, @unchecked Sendable {
    public let name: String
    public let def: NetDef
    public let workspace: Workspace
    let ops: [any Operator]
    /// For each op, the ops that must finish before it starts.
    let predecessorCounts: [Int]
    /// For each op, the ops waiting for it.
    let successors: [[Int]]
    public let pool: ThreadPool?
    public let seed: UInt64
    /// The ops' scratch memory, kept across runs.
    let scratch: ScratchBuffers
    /// When set, every op's wall time is added to it by op type (Caffe2's `prof_dag`). Set it
    /// before a run, not during one.
    public var profile: OpProfile?

    /// Creates the ops of `def` in `workspace`, checking types, input counts, arguments and that
    /// every input exists, is an external input, or is produced by an earlier op.
    public init(_ def: NetDef, workspace: Workspace, registry: OperatorRegistry = .standard,
                pool: ThreadPool? = nil, seed: UInt64 = 0) throws(OperatorError) {
        self.name = def.name
        self.def = def
        self.workspace = workspace
        self.pool = pool
        self.seed = seed
        self.scratch = ScratchBuffers(context: workspace.context)
        var available = Set(def.externalInputs)
        var made: [any Operator] = []
        for (index, opDef) in def.ops.enumerated() {
            let at = OpLocation(type: opDef.type, name: opDef.name, index: index, net: def.name)
            guard let schema = registry.schema(opDef.type) else {
                throw .unknownOperator(type: opDef.type, at: at, suggestion: closestName(to: opDef.type, in: registry.types))
            }
            guard schema.inputs.contains(opDef.inputs.count) else {
                throw .wrongInputCount(at: at, expected: Self.describe(schema.inputs), got: opDef.inputs.count)
            }
            guard schema.outputs.contains(opDef.outputs.count) else {
                throw .badArgument(name: "outputs", at: at, reason: "must number \(Self.describe(schema.outputs)), got \(opDef.outputs.count)")
            }
            for input in opDef.inputs where !available.contains(input) && !workspace.hasBlob(input) {
                throw .missingInput(blob: input, at: at)
            }
            if !schema.allowsInPlace, let shared = opDef.outputs.first(where: opDef.inputs.contains) {
                throw .badInput(blob: shared, at: at, reason: "cannot be both an input and an output of \(opDef.type) (it does not run in place)")
            }
            made.append(try schema.make(OpIO(def: opDef, location: at, workspace: workspace)))
            available.formUnion(opDef.outputs)
        }
        self.ops = made
        (self.predecessorCounts, self.successors) = Self.dependencies(def.ops)
    }

    private static func describe(_ r: ClosedRange<Int>) -> String {
        r.lowerBound == r.upperBound ? "\(r.lowerBound)" : (r.upperBound == Int.max ? "at least \(r.lowerBound)" : "\(r.lowerBound)...\(r.upperBound)")
    }

    /// Program-order hazards on every blob: RAW, WAW and WAR.
    static func dependencies(_ ops: [OperatorDef]) -> ([Int], [[Int]]) {
        var lastWriter: [String: Int] = [:]
        var readersSinceWrite: [String: [Int]] = [:]
        var preds = [Set<Int>](repeating: [], count: ops.count)
        for (j, op) in ops.enumerated() {
            for b in op.inputs {
                if let w = lastWriter[b] { preds[j].insert(w) }
            }
            for b in op.outputs {
                if let w = lastWriter[b] { preds[j].insert(w) }
                for r in readersSinceWrite[b] ?? [] where r != j { preds[j].insert(r) }
            }
            for b in op.inputs { readersSinceWrite[b, default: []].append(j) }
            for b in op.outputs {
                lastWriter[b] = j
                readersSinceWrite[b] = []
            }
        }
        var succ = [[Int]](repeating: [], count: ops.count)
        for (j, p) in preds.enumerated() {
            for i in p.sorted() { succ[i].append(j) }
        }
        return (preds.map(\.count), succ)
    }

    /// Runs every op once.
    public func run() throws(OperatorError) {
        let ctx = ExecutionContext(pool: pool, seed: seed, scratch: scratch)
        if def.executor == .simple || pool == nil || pool!.liveThreadCount == 0 || pool!.isWorkerThread {
            for op in ops { try Self.runOne(op, ctx, profile: profile) }
            return
        }
        try DAGRun(net: self, ctx: ctx, pool: pool!).execute()
    }

    static func runOne(_ op: any Operator, _ ctx: ExecutionContext, profile: OpProfile? = nil) throws(OperatorError) {
        let t0 = profile == nil ? 0 : DispatchTime.now().uptimeNanoseconds
        defer { profile?.add(op.io.def, nanoseconds: DispatchTime.now().uptimeNanoseconds - t0) }
        do {
            try op.run(ctx)
        } catch let e as OpRunError {
            throw .runFailed(at: op.io.location, blob: e.blob, message: e.message)
        } catch let e as OperatorError {
            throw e
        } catch {
            throw .runFailed(at: op.io.location, blob: nil, message: String(describing: error))
        }
    }
}

/// Wall time per op type (or, `perOp`, per op: its type and first output), summed over the runs
/// of the nets it is attached to (``Net/profile``). With the dag executor, ops that overlap each
/// count their own time.
public final class OpProfile: Sendable {
    private let table = Locked<[String: (nanoseconds: UInt64, count: Int)]>([:])
    public let perOp: Bool

    public init(perOp: Bool = false) { self.perOp = perOp }

    func add(_ def: OperatorDef, nanoseconds: UInt64) {
        let key = perOp ? def.type + " " + (def.outputs.first ?? "") : def.type
        table.withLock { $0[key, default: (0, 0)].nanoseconds += nanoseconds; $0[key, default: (0, 0)].count += 1 }
    }

    /// Op types (or ops) by descending total time: (type, seconds, number of op runs).
    public var entries: [(type: String, seconds: Double, count: Int)] {
        table.current.map { (type: $0.key, seconds: Double($0.value.nanoseconds) / 1e9, count: $0.value.count) }
            .sorted { $0.seconds != $1.seconds ? $0.seconds > $1.seconds : $0.type < $1.type }
    }

    public func reset() { table.withLock { $0 = [:] } }
}

/// One run of the dag executor. The caller runs ready ops in turn; whenever more ops are ready
/// than there are runners, helper runners are started on idle pool threads (one per extra ready
/// op, at most one per pool thread). A helper leaves as soon as nothing is ready, so idle pool
/// threads serve the ops' own parallel loops instead of waiting: our ops split their work across
/// the pool, and a runner that blocked a pool thread would leave them one thread short. The call
/// returns only when every helper has left, so every started op has finished, and nothing of the
/// run (no closure, no reference to the net) outlives it.
private final class DAGRun: @unchecked Sendable {
    let net: Net
    let ctx: ExecutionContext
    let pool: ThreadPool
    let poolThreads: Int
    let cond = Condition()
    var pending: [Int]
    var ready: [Int]
    var finished = 0
    var helpers = 0
    var firstError: OperatorError?

    init(net: Net, ctx: ExecutionContext, pool: ThreadPool) {
        self.net = net
        self.ctx = ctx
        self.pool = pool
        self.poolThreads = pool.liveThreadCount
        self.pending = net.predecessorCounts
        self.ready = (0..<net.ops.count).filter { net.predecessorCounts[$0] == 0 }.reversed()
    }

    func execute() throws(OperatorError) {
        guard !net.ops.isEmpty else { return }
        runner(helper: false)
        if let firstError { throw firstError }
    }

    /// Reserves helpers for the ready ops this runner will not take (none once an op has failed:
    /// ready ops then stay unstarted) and returns how many to start. Called with the lock held;
    /// ``startHelpers(_:)`` starts them after the lock is released, because a pool that has been
    /// shut down runs a job on the calling thread.
    private func reserveHelpers() -> Int {
        let wanted = min(ready.count - 1, poolThreads - helpers)
        guard wanted > 0, firstError == nil else { return 0 }
        helpers += wanted
        return wanted
    }

    /// Starts `count` reserved helpers. Called with the lock held; releases it meanwhile.
    ///
    /// A helper's job holds the run unretained: the caller keeps the run alive until every helper
    /// has left (its last touch is the unlock after `helpers -= 1`), and a job the pool releases
    /// later must not keep the run — and through it the net and the pool — alive after
    /// ``execute()`` returns (the pool's last reference dropped on its own thread would join itself).
    private func startHelpers(_ count: Int) {
        guard count > 0 else { return }
        cond.unlock()
        let run = Unmanaged.passUnretained(self)
        for _ in 0..<count { pool.execute { run._withUnsafeGuaranteedRef { $0.runner(helper: true) } } }
        cond.lock()
    }

    private func runner(helper: Bool) {
        let total = net.ops.count
        // A strong local: a helper's last act is to unlock it, after which the caller may return
        // and free the run while this function is still returning.
        let cond = self.cond
        cond.lock()
        if !helper { startHelpers(reserveHelpers()) }
        while true {
            let done = firstError != nil || finished == total
            if done && (helper || helpers == 0) { break }
            guard !done, let i = ready.popLast() else {
                if helper { break }   // nothing ready: give the thread back to the pool
                cond.wait()           // ops are running; one of them will make more ready, or a helper leaves
                continue
            }
            cond.unlock()
            var failure: OperatorError?
            do throws(OperatorError) {
                try Net.runOne(net.ops[i], ctx, profile: net.profile)
            } catch {
                failure = error
            }
            cond.lock()
            finished += 1
            if let failure {
                if firstError == nil { firstError = failure }
            } else {
                for s in net.successors[i] {
                    pending[s] -= 1
                    if pending[s] == 0 { ready.append(s) }
                }
            }
            cond.broadcast()
            startHelpers(reserveHelpers())
        }
        if helper {
            helpers -= 1
            cond.broadcast()
        }
        cond.unlock()
    }
}

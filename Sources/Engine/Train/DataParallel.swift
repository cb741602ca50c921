import CMPIShim
import Foundation
import Operators
import Portability
import Storage

/// How the replicas of a data-parallel run talk: gradient sums and parameter broadcasts. The
/// engine sees only this; two backends implement it — ``InProcessCommunicator`` (the replicas are
/// thread groups of one process) and ``MPICommunicator`` (one replica per MPI rank).
///
/// Buffers come in groups, one group per tensor, one buffer per local replica (all the same
/// length). A global replica index is `firstReplica + local index`.
public protocol ReplicaCommunicator: Sendable {
    /// Replicas in this process.
    var localReplicas: Int { get }
    /// Replicas in the whole run (Detectron's NUM_GPUS).
    var worldSize: Int { get }
    /// The global index of this process's first replica.
    var firstReplica: Int { get }
    /// On return every buffer holds the elementwise sum over all replicas of the run.
    func allReduceSum(_ groups: [[UnsafeMutableBufferPointer<Float>]]) throws(EngineError)
    /// On return every buffer holds what global replica 0 had.
    func broadcastFromFirst(_ groups: [[UnsafeMutableBufferPointer<Float>]]) throws(EngineError)
}

/// Replicas as thread groups of this process. The sum is taken in replica order (0 + 1 + …) and
/// the same result written to every replica, so replicas stay bitwise identical.
public struct InProcessCommunicator: ReplicaCommunicator {
    public let localReplicas: Int
    public var worldSize: Int { localReplicas }
    public var firstReplica: Int { 0 }

    public init(replicas: Int) {
        precondition(replicas > 0, "a run needs at least one replica")
        localReplicas = replicas
    }

    public func allReduceSum(_ groups: [[UnsafeMutableBufferPointer<Float>]]) throws(EngineError) {
        guard localReplicas > 1 else { return }
        try check(groups)
        for group in groups {
            for i in 0..<group[0].count {
                var acc = group[0][i]
                for r in 1..<group.count { acc += group[r][i] }
                for r in 0..<group.count { group[r][i] = acc }
            }
        }
    }

    public func broadcastFromFirst(_ groups: [[UnsafeMutableBufferPointer<Float>]]) throws(EngineError) {
        guard localReplicas > 1 else { return }
        try check(groups)
        for group in groups {
            for r in 1..<group.count { group[r].baseAddress!.update(from: group[0].baseAddress!, count: group[0].count) }
        }
    }

    private func check(_ groups: [[UnsafeMutableBufferPointer<Float>]]) throws(EngineError) {
        for (g, group) in groups.enumerated() {
            guard group.count == localReplicas, group.allSatisfy({ $0.count == group[0].count }) else {
                throw .usage("all-reduce group \(g): \(group.count) buffers of sizes \(group.map(\.count)) for \(localReplicas) replicas")
            }
        }
    }
}

/// One replica per MPI rank (`mpirun -np N detectron train …`): rank and size come from MPI.
/// Open MPI is loaded at run time. Gradients of all tensors are packed into one buffer and summed
/// with one MPI_Allreduce. If any rank fails, the trainer calls ``abort(_:)`` (MPI_Abort), which
/// stops every rank; a rank that dies makes `mpirun` stop the others.
public struct MPICommunicator: ReplicaCommunicator {
    public let rank: Int
    public let worldSize: Int
    public var localReplicas: Int { 1 }
    public var firstReplica: Int { rank }

    /// The environment variables `mpirun` (Open MPI) sets in every rank.
    static let sizeKey = "OMPI_COMM_WORLD_SIZE"

    /// MPI when this process was started by `mpirun` with more than one rank; nil otherwise.
    public static func fromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment) throws(EngineError) -> MPICommunicator? {
        guard let raw = environment[sizeKey], let size = Int(raw), size > 1 else { return nil }
        var message = [CChar](repeating: 0, count: 512)
        guard sd_mpi_start(&message, message.count) == 0 else {
            throw .io("started by mpirun (\(sizeKey)=\(raw)) but MPI is unusable: \(String(decoding: message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))")
        }
        return MPICommunicator(rank: Int(sd_mpi_rank()), worldSize: Int(sd_mpi_size()))
    }

    /// Packs the groups (one buffer each here), runs `body` on the packed values, unpacks.
    private func packed(_ groups: [[UnsafeMutableBufferPointer<Float>]], _ what: String,
                        _ body: (UnsafeMutablePointer<Float>, Int) -> Int32) throws(EngineError) {
        var all = [Float]()
        all.reserveCapacity(groups.reduce(0) { $0 + ($1.first?.count ?? 0) })
        for g in groups { all.append(contentsOf: g[0]) }
        let rc = all.withUnsafeMutableBufferPointer { packed in
            let rc = body(packed.baseAddress!, packed.count)
            guard rc == 0 else { return rc }
            var offset = 0
            for g in groups {
                g[0].baseAddress!.update(from: packed.baseAddress! + offset, count: g[0].count)
                offset += g[0].count
            }
            return rc
        }
        guard rc == 0 else { throw .replica(rank, "MPI \(what) failed") }
    }

    public func allReduceSum(_ groups: [[UnsafeMutableBufferPointer<Float>]]) throws(EngineError) {
        try packed(groups, "all-reduce") { sd_mpi_allreduce_sum($0, $1) }
    }

    public func broadcastFromFirst(_ groups: [[UnsafeMutableBufferPointer<Float>]]) throws(EngineError) {
        try packed(groups, "broadcast") { sd_mpi_broadcast($0, $1) }
    }

    /// This process's rank when MPI was started, else nil.
    public static var runningRank: Int? { let r = sd_mpi_rank(); return r >= 0 ? Int(r) : nil }

    /// Stops every rank of the job (after the caller has printed why).
    public static func abort(code: Int32 = 1) { sd_mpi_abort(code) }
}

/// One replica: its workspace, its forward-and-backward net, its update net and its threads.
final class Replica: Sendable {
    let index: Int
    let workspace: Workspace
    let forwardBackward: Net
    let update: Net
    let pool: ThreadPool

    init(index: Int, workspace: Workspace, forwardBackward: Net, update: Net, pool: ThreadPool) {
        self.index = index
        self.workspace = workspace
        self.forwardBackward = forwardBackward
        self.update = update
        self.pool = pool
    }
}

/// Detectron's data-parallel step (spec §7): every replica runs forward and backward on its own
/// minibatch (its losses already scaled by 1/NUM_GPUS), the gradients of the trainable
/// parameters are summed over all replicas, and each replica applies the same update — so
/// parameters and momentum buffers stay identical. With one replica this is the plain step.
final class ReplicaGroup: Sendable {
    let replicas: [Replica]
    let communicator: any ReplicaCommunicator
    /// The gradient blob of each trainable parameter, in parameter order.
    let gradients: [String]
    /// Blobs that must start identical on every replica: parameters and momentum buffers.
    let shared: [String]
    private let driver: ThreadPool

    init(replicas: [Replica], communicator: any ReplicaCommunicator, gradients: [String], shared: [String]) {
        precondition(replicas.count == communicator.localReplicas, "one Replica per local replica")
        self.replicas = replicas
        self.communicator = communicator
        self.gradients = gradients
        self.shared = shared
        // One driver thread per extra replica; each replica's ops use that replica's own pool.
        driver = ThreadPool(threadCount: replicas.count - 1, name: "sd-replica")
    }

    private func buffers(_ names: [String]) throws -> [[UnsafeMutableBufferPointer<Float>]] {
        try names.map { name in try replicas.map { try $0.workspace.fetchBlob(name).mutableData(as: Float.self) } }
    }

    /// Copies replica 0's parameters and momentum to every replica of the run.
    func broadcastParameters() throws {
        try communicator.broadcastFromFirst(try buffers(shared))
    }

    /// Runs `body` for every local replica at once; the first error wins, naming the replica
    /// when there is more than one.
    func forEachReplica(_ body: (Replica) throws -> Void) throws {
        guard communicator.worldSize > 1 else {
            for r in replicas { try body(r) }
            return
        }
        try driver.parallelFor(replicas.count) { (r: Int) throws(EngineError) in
            do {
                try body(replicas[r])
            } catch let e as EngineError {
                throw e
            } catch {
                throw EngineError.replica(communicator.firstReplica + r, "\(error)")
            }
        }
    }

    /// One iteration: `feed` fills replica r's inputs, then forward/backward everywhere, the
    /// gradient sum, and the update everywhere.
    func step(feed: (Replica) throws -> Void) throws {
        try forEachReplica { r in
            try feed(r)
            try r.forwardBackward.run()
        }
        try communicator.allReduceSum(try buffers(gradients))
        try forEachReplica { r in try r.update.run() }
    }

    func shutdown() {
        driver.shutdown()
        for r in replicas { r.pool.shutdown() }
    }
}

import Foundation
import Operators
import Storage

/// The communicator for this run: MPI when started by `mpirun` with more than one rank, else
/// NUM_GPUS replicas in this process.
func makeCommunicator(_ cfg: Config) throws -> any ReplicaCommunicator {
    let gpus = cfg.int("NUM_GPUS")
    guard gpus >= 1 else { throw EngineError.config(.invalid(key: "NUM_GPUS", reason: "is \(gpus); it must be at least 1 (replicas)")) }
    if let mpi = try MPICommunicator.fromEnvironment() {
        guard mpi.worldSize == gpus else {
            throw EngineError.config(.invalid(key: "NUM_GPUS", reason: "is \(gpus) but mpirun started \(mpi.worldSize) ranks: one replica per rank, so pass NUM_GPUS \(mpi.worldSize) (or mpirun -np \(gpus))"))
        }
        return mpi
    }
    return InProcessCommunicator(replicas: gpus)
}

/// The value replica 0 has, on every replica (e.g. the iteration to resume from).
func agreeOnFirstReplica(_ value: Int, _ communicator: any ReplicaCommunicator) throws -> Int {
    let values = try communicate((0..<communicator.localReplicas).map { _ in [Float(value)] }) { try communicator.broadcastFromFirst([$0]) }
    return Int(values[0][0])
}

/// Each replica's losses summed over all replicas, and the metrics (`accuracy_cls`, …) averaged.
func replicaLosses(_ group: ReplicaGroup, names: [String], metrics: [String]) throws -> [String: Float] {
    let keys = names + metrics
    let mine = try group.replicas.map { r in try keys.map { try r.workspace.fetchBlob($0).toArray(as: Float.self)[0] } }
    let buffers = try communicate(mine) { try group.communicator.allReduceSum([$0]) }
    var out: [String: Float] = [:]
    for (i, k) in keys.enumerated() { out[k] = buffers[0][i] }
    for m in metrics { out[m] = out[m]! / Float(group.communicator.worldSize) }
    return out
}

/// Runs `body` on scratch copies of `values` (one buffer per local replica) and returns them.
func communicate(_ values: [[Float]], _ body: ([UnsafeMutableBufferPointer<Float>]) throws -> Void) rethrows -> [[Float]] {
    let buffers = values.map { v in
        let b = UnsafeMutableBufferPointer<Float>.allocate(capacity: v.count)
        _ = b.initialize(from: v)
        return b
    }
    defer { for b in buffers { b.deallocate() } }
    try body(buffers)
    return buffers.map { Array($0) }
}

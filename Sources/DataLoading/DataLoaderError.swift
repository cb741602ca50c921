import Portability

/// Everything that can go wrong in a data loader. Messages name the worker, the sample index
/// and the cause, and say what to do.
public enum DataLoaderError: Error, Sendable, CustomStringConvertible {
    /// A constructor argument breaks PyTorch's rules (the message is PyTorch's).
    case invalidOption(String)
    /// The dataset threw for a sample.
    case sampleFailed(index: Int, worker: Int?, message: String)
    /// A worker process died.
    case workerDied(worker: Int, pid: Int32, status: TerminationStatus)
    /// No batch arrived within the user's timeout.
    case timedOut(seconds: Double)
    /// Workers could not start, and the fallback to `numWorkers = 0` was turned off.
    case workersUnavailable(reason: String)
    /// A worker sent something the loader cannot read.
    case protocolError(worker: Int, message: String)

    public var description: String {
        switch self {
        case let .invalidOption(m): return m
        case let .sampleFailed(index, worker, message):
            return (worker.map { "DataLoader worker \($0)" } ?? "DataLoader") + " failed on sample \(index): \(message)"
        case let .workerDied(worker, pid, status):
            switch status {
            case let .signaled(sig, core):
                var m = "DataLoader worker \(worker) (pid \(pid)) was killed by signal \(sig.name)\(core ? " (core dumped)" : "")"
                if sig == .bus {
                    m += ". It is possible that the workers are out of shared memory: give /dev/shm more room (docker --shm-size), or set DETECTRON_SHM_TRANSPORT=memfd or pipe"
                }
                return m
            case let .exited(code):
                return "DataLoader worker \(worker) (pid \(pid)) exited unexpectedly with exit code \(code); rerunning with numWorkers = 0 may give a clearer error"
            }
        case let .timedOut(s): return "DataLoader timed out after \(s) seconds"
        case let .workersUnavailable(reason): return "DataLoader workers cannot start: \(reason)"
        case let .protocolError(worker, message): return "DataLoader worker \(worker) sent an unreadable message: \(message)"
        }
    }
}

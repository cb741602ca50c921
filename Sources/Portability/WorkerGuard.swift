import Foundation
import Glibc

/// What a worker process learns about itself.
public struct WorkerContext: Sendable {
    /// The role it was started in.
    public var role: String
    /// The pid of the process that started it.
    public var parentPID: Int32
    /// The arguments after the executable path.
    public var arguments: [String]
}

/// A worker role's entry point; its result is the process's exit code.
public typealias WorkerEntry = @Sendable (WorkerContext) -> Int32

/// The guard that makes worker processes safe to start — our answer to Python's
/// `if __name__ == '__main__':`.
///
/// Worker processes are this same executable started again in a *worker role* (never `fork`).
/// Every executable that may start workers calls ``enter(roles:)`` as the first statement of
/// `main`:
///
/// ```swift
/// WorkerGuard.enter(roles: ["loader": LoaderWorker.main])
/// // … the program's own main follows; workers never get here.
/// ```
///
/// Started in a worker role, `enter` runs that role's entry and exits: the program's own main
/// never runs in a worker. Started normally, it marks the process as guarded and returns.
/// ``spawnWorker(role:arguments:configure:)`` refuses, at once and with an error naming the
/// missing call, to start workers from an executable that never called `enter`, and refuses to
/// let a worker start workers of its own — so a forgotten guard is an error, never a hang or a
/// fork bomb.
public enum WorkerGuard {
    static let roleKey = "SWIFTDETECTRON_WORKER_ROLE"
    static let parentKey = "SWIFTDETECTRON_WORKER_PARENT"
    static let guardedKey = "SWIFTDETECTRON_GUARDED"

    /// Runs the worker role this process was started in (and exits), or marks the process as
    /// guarded and returns.
    public static func enter(roles: [String: WorkerEntry]) {
        let env = ProcessInfo.processInfo.environment
        guard let role = env[roleKey] else {
            // Records in this process's own environment that main called the guard. The value is
            // our pid, so a child that inherits it is not mistaken for a guarded process.
            setenv(guardedKey, String(getpid()), 1)
            return
        }
        let parent = Int32(env[parentKey] ?? "") ?? 0
        // The spawner set the parent-death signal; if the parent is already gone, stop now.
        if parent != 0 && getppid() != parent { exit(3) }
        guard let entry = roles[role] else {
            FileHandle.standardError.write(Data("error: \(SpawnError.unknownWorkerRole(role, known: roles.keys.sorted()))\n".utf8))
            exit(2)
        }
        let code = entry(WorkerContext(role: role, parentPID: parent, arguments: Array(CommandLine.arguments.dropFirst())))
        exit(code)
    }

    /// The role this process runs in, or nil in the main process.
    public static var currentRole: String? { ProcessInfo.processInfo.environment[roleKey] }

    /// Whether ``enter(roles:)`` ran in this process (and it is not a worker).
    public static var isGuarded: Bool {
        ProcessInfo.processInfo.environment[guardedKey] == String(getpid()) && currentRole == nil
    }

    /// This executable's path.
    public static var executablePath: String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    }

    /// Starts this executable in worker role `role`. The worker dies with this process.
    public static func spawnWorker(
        role: String, arguments: [String] = [],
        configure: (inout ProcessConfiguration) -> Void = { _ in }
    ) throws(SpawnError) -> ChildProcess {
        if let mine = currentRole { throw .recursiveWorkerSpawn(role: mine) }
        guard isGuarded else { throw .missingWorkerGuard(executable: executablePath) }
        var config = ProcessConfiguration(executable: executablePath, arguments: arguments)
        var env = ProcessInfo.processInfo.environment
        env.removeValue(forKey: guardedKey)
        env[roleKey] = role
        env[parentKey] = String(getpid())
        config.environment = env
        config.dieWithParent = true
        configure(&config)
        return try Processes.spawn(config)
    }
}

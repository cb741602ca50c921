import CLinuxShim
import Foundation
import Glibc

/// A POSIX signal, printed by name.
public struct Signal: RawRepresentable, Hashable, Sendable, CustomStringConvertible, Codable {
    public var rawValue: Int32
    public init(rawValue: Int32) { self.rawValue = rawValue }

    public static let term = Signal(rawValue: SIGTERM)
    public static let kill = Signal(rawValue: SIGKILL)
    public static let int = Signal(rawValue: SIGINT)
    public static let bus = Signal(rawValue: SIGBUS)
    public static let segv = Signal(rawValue: SIGSEGV)
    public static let abrt = Signal(rawValue: SIGABRT)
    public static let usr1 = Signal(rawValue: SIGUSR1)

    /// `SIGKILL`, `SIGTERM`, … (or `signal N` for unknown numbers).
    public var name: String {
        guard let abbrev = sd_signal_abbrev(rawValue) else { return "signal \(rawValue)" }
        return "SIG" + String(cString: abbrev)
    }

    public var description: String { name }
}

/// How a child process ended.
public enum TerminationStatus: Equatable, Sendable, CustomStringConvertible {
    case exited(code: Int32)
    case signaled(Signal, coreDumped: Bool)

    init(waitStatus: Int32) {
        if sd_wifsignaled(waitStatus) != 0 {
            self = .signaled(Signal(rawValue: sd_wtermsig(waitStatus)), coreDumped: sd_wcoredump(waitStatus) != 0)
        } else {
            self = .exited(code: sd_wexitstatus(waitStatus))
        }
    }

    public var isSuccess: Bool { self == .exited(code: 0) }

    public var description: String {
        switch self {
        case let .exited(code): return "exited with code \(code)"
        case let .signaled(sig, core): return "was killed by signal \(sig.name)\(core ? " (core dumped)" : "")"
        }
    }
}

/// Why a process could not be started or waited for.
public enum SpawnError: Error, Equatable, Sendable, CustomStringConvertible {
    case executableNotFound(String)
    case permissionDenied(String)
    case notExecutable(String)
    case processLimitReached(limit: String)
    case outOfMemory
    case badWorkingDirectory(String, errno: Int32)
    case tooManyOpenFiles(limit: String)
    case system(call: String, errno: Int32, path: String)
    case missingWorkerGuard(executable: String)
    case recursiveWorkerSpawn(role: String)
    case unknownWorkerRole(String, known: [String])
    case timedOut(pid: Int32, seconds: Double)

    public var description: String {
        switch self {
        case let .executableNotFound(p):
            return "cannot start \(p): no such file (check the path or PATH)"
        case let .permissionDenied(p):
            return "cannot start \(p): permission denied (the file or a directory on its path lacks execute permission; chmod +x, or check the mount is not noexec)"
        case let .notExecutable(p):
            return "cannot start \(p): not an executable format"
        case let .processLimitReached(limit):
            return "cannot start a process: the per-user process limit is reached (ulimit -u is \(limit)); raise it or use fewer workers"
        case .outOfMemory:
            return "cannot start a process: out of memory"
        case let .badWorkingDirectory(d, e):
            return "cannot start a process in \(d): \(String(cString: strerror(e)))"
        case let .tooManyOpenFiles(limit):
            return "cannot start a process: too many open files (ulimit -n is \(limit)); raise it with ulimit -n"
        case let .system(call, e, path):
            return "cannot start \(path): \(call) failed: \(String(cString: strerror(e))) (errno \(e))"
        case let .missingWorkerGuard(exe):
            return "cannot start workers: \(exe) did not call WorkerGuard.enter(roles:) at the top of main (add it as the first statement, the way `if __name__ == '__main__':` guards a Python script)"
        case let .recursiveWorkerSpawn(role):
            return "a worker process (role '\(role)') tried to start workers of its own; workers are started only by the main process"
        case let .unknownWorkerRole(role, known):
            return "unknown worker role '\(role)' (known roles: \(known.isEmpty ? "none" : known.joined(separator: ", ")))"
        case let .timedOut(pid, s):
            return "process \(pid) did not end within \(s) s"
        }
    }
}

/// What a child's standard stream is connected to.
public enum StandardIO: Sendable, Equatable {
    /// The parent's own descriptor.
    case inherit
    /// `/dev/null`.
    case null
    /// A new pipe; the parent's end is on ``ChildProcess``.
    case pipe
    /// A descriptor of the parent's.
    case descriptor(Int32)
}

/// Everything needed to start a process.
public struct ProcessConfiguration: Sendable {
    /// A path, or a name looked up in `PATH`.
    public var executable: String
    public var arguments: [String]
    /// The child's whole environment (nil: the parent's).
    public var environment: [String: String]?
    public var workingDirectory: String?
    public var standardInput: StandardIO = .null
    public var standardOutput: StandardIO = .inherit
    public var standardError: StandardIO = .inherit
    /// Parent descriptors the child inherits, as (parent fd, child fd). All others are closed.
    public var inheritedDescriptors: [(parent: Int32, child: Int32)] = []
    /// Kill the child (SIGKILL) when the spawning thread's process dies.
    public var dieWithParent = true
    /// Start the child in a new session (its own process group).
    public var newSession = false

    public init(executable: String, arguments: [String] = [], environment: [String: String]? = nil,
                workingDirectory: String? = nil) {
        self.executable = executable
        self.arguments = arguments
        self.environment = environment
        self.workingDirectory = workingDirectory
    }
}

/// A started child process. It is always reaped: waiting does it, and releasing an unwaited
/// child kills and reaps it, so no zombie is left behind.
public final class ChildProcess: @unchecked Sendable {
    public let pid: Int32
    public let executable: String
    /// The parent's ends of the pipes asked for (nil otherwise); closed when the child is released.
    public let standardInput: FileHandle?
    public let standardOutput: FileHandle?
    public let standardError: FileHandle?

    private let cond = Condition()
    private var status: TerminationStatus?

    init(pid: Int32, executable: String, stdin: FileHandle?, stdout: FileHandle?, stderr: FileHandle?) {
        self.pid = pid
        self.executable = executable
        self.standardInput = stdin
        self.standardOutput = stdout
        self.standardError = stderr
    }

    deinit {
        if cond.withLock({ status == nil }) {
            kill(pid, SIGKILL)
            var s: Int32 = 0
            while waitpid(pid, &s, 0) < 0 && errno == EINTR {}
        }
    }

    /// The exit status if the child has ended (reaping it), without blocking.
    public func poll() -> TerminationStatus? {
        cond.withLock {
            if let status { return status }
            var s: Int32 = 0
            let r = waitpid(pid, &s, WNOHANG)
            if r == pid { status = TerminationStatus(waitStatus: s) }
            else if r < 0 && errno == ECHILD { status = .exited(code: -1) }
            return status
        }
    }

    /// Whether the child is still running.
    public var isRunning: Bool { poll() == nil }

    /// Waits for the child to end, at most `timeout` seconds (nil: forever); nil on time-out.
    @discardableResult
    public func wait(timeout: Double? = nil) -> TerminationStatus? {
        let deadline = timeout.map { monotonicSeconds() + $0 }
        var pause = 0.0005
        while true {
            if let s = poll() { return s }
            if let deadline, monotonicSeconds() >= deadline { return nil }
            usleep(UInt32(pause * 1e6))
            pause = min(pause * 2, 0.02)
        }
    }

    /// Sends `signal` (no-op once the child has ended).
    public func send(_ signal: Signal) {
        guard poll() == nil else { return }
        kill(pid, signal.rawValue)
    }

    /// Ends the child gracefully, then forcefully: SIGTERM, up to `grace` seconds, then SIGKILL;
    /// always reaps. Returns how it ended.
    @discardableResult
    public func terminate(grace: Double = 3) -> TerminationStatus {
        if let s = poll() { return s }
        send(.term)
        if let s = wait(timeout: grace) { return s }
        send(.kill)
        return wait()!
    }
}

/// Starting processes without `fork`.
///
/// `fork()` in a threaded process copies one thread and every lock in whatever state other
/// threads left it, so a Swift process never forks. ``spawn(_:)`` uses the same
/// `clone(CLONE_VM|CLONE_VFORK)` + `execve` technique as `posix_spawn`, with two additions
/// `posix_spawn` cannot make: the parent-death signal, and closing every descriptor the child
/// was not given.
///
/// Note: Linux sends the parent-death signal when the *thread* that spawned the child exits.
/// Spawn long-lived children from long-lived threads (the main thread, or a pool that outlives
/// them).
public enum Processes {
    /// Starts a process. Spawn failures come back as typed errors naming the cause.
    public static func spawn(_ config: ProcessConfiguration) throws(SpawnError) -> ChildProcess {
        let path = try resolveExecutable(config.executable, environment: config.environment)
        var maps: [sd_fd_map] = []
        var parentEnds: [Int32: FileHandle] = [:]
        var childEnds: [Int32] = []
        defer { for fd in childEnds { close(fd) } }

        for (childFD, io) in [(Int32(0), config.standardInput), (1, config.standardOutput), (2, config.standardError)] {
            switch io {
            case .inherit: maps.append(sd_fd_map(parent_fd: childFD, child_fd: childFD))
            case .null: maps.append(sd_fd_map(parent_fd: -1, child_fd: childFD))
            case let .descriptor(fd): maps.append(sd_fd_map(parent_fd: fd, child_fd: childFD))
            case .pipe:
                var p: [Int32] = [0, 0]
                guard sd_pipe_cloexec(&p) == 0 else {
                    for h in parentEnds.values { try? h.close() }
                    throw errnoError(call: "pipe", errno: errno, path: path)
                }
                let (childEnd, parentEnd) = childFD == 0 ? (p[0], p[1]) : (p[1], p[0])
                childEnds.append(childEnd)
                parentEnds[childFD] = FileHandle(fileDescriptor: parentEnd, closeOnDealloc: true)
                maps.append(sd_fd_map(parent_fd: childEnd, child_fd: childFD))
            }
        }
        for (parent, child) in config.inheritedDescriptors {
            maps.append(sd_fd_map(parent_fd: parent, child_fd: child))
        }

        let argv = [path] + config.arguments
        let env = (config.environment ?? ProcessInfo.processInfo.environment)
            .sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        var pid: pid_t = 0
        var failedStep: UnsafePointer<CChar>?
        let rc = withCStrings(argv) { cArgv in
            withCStrings(env) { cEnv in
                maps.withUnsafeBufferPointer { m in
                    sd_spawn(path, cArgv, cEnv, config.workingDirectory, m.baseAddress, Int32(m.count),
                             config.dieWithParent ? SIGKILL : 0, config.newSession ? 1 : 0, &pid, &failedStep)
                }
            }
        }
        if rc != 0 {
            for h in parentEnds.values { try? h.close() }
            let step = failedStep.map { String(cString: $0) } ?? "spawn"
            if step == "chdir" { throw .badWorkingDirectory(config.workingDirectory ?? "", errno: rc) }
            throw errnoError(call: step, errno: rc, path: path)
        }
        return ChildProcess(pid: pid, executable: path, stdin: parentEnds[0], stdout: parentEnds[1], stderr: parentEnds[2])
    }

    /// Runs a process to completion and collects its standard output and error. With a
    /// `timeout`, a child still running then is terminated and ``SpawnError/timedOut(pid:seconds:)``
    /// is thrown.
    public static func run(_ config: ProcessConfiguration, timeout: Double? = nil) throws(SpawnError) -> (status: TerminationStatus, output: String, error: String) {
        var c = config
        c.standardOutput = .pipe
        c.standardError = .pipe
        let child = try spawn(c)
        // Drain both pipes on their own threads so a chatty child never blocks on a full pipe,
        // and the time-out below still applies to a child that never closes them.
        let done = Condition()
        let texts = Box<[Int: Data]>([:])
        for (key, handle) in [(1, child.standardOutput!), (2, child.standardError!)] {
            Thread.detachNewThread {
                let data = handle.readDataToEndOfFile()
                done.withLock {
                    texts.value[key] = data
                    done.signal()
                }
            }
        }
        let status = child.wait(timeout: timeout)
        if status == nil { child.terminate(grace: 1) }
        let collected: [Int: Data] = done.withLock {
            while texts.value.count < 2 { done.wait() }
            return texts.value
        }
        guard let status else { throw .timedOut(pid: child.pid, seconds: timeout ?? 0) }
        return (status, String(decoding: collected[1]!, as: UTF8.self), String(decoding: collected[2]!, as: UTF8.self))
    }

    /// The absolute path `name` would run as.
    public static func resolveExecutable(_ name: String, environment: [String: String]? = nil) throws(SpawnError) -> String {
        if name.contains("/") {
            guard access(name, F_OK) == 0 else { throw .executableNotFound(name) }
            return name
        }
        let pathVar = (environment ?? ProcessInfo.processInfo.environment)["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        for dir in pathVar.split(separator: ":") {
            let candidate = "\(dir)/\(name)"
            if access(candidate, X_OK) == 0 { return candidate }
        }
        throw .executableNotFound(name)
    }

    static func errnoError(call: String, errno e: Int32, path: String) -> SpawnError {
        switch e {
        case ENOENT: return call == "execve" ? .executableNotFound(path) : .system(call: call, errno: e, path: path)
        case EACCES: return .permissionDenied(path)
        case ENOEXEC: return .notExecutable(path)
        case EAGAIN: return .processLimitReached(limit: Limits.describe(Limits.processes))
        case ENOMEM: return .outOfMemory
        case EMFILE, ENFILE: return .tooManyOpenFiles(limit: Limits.describe(Limits.openFiles))
        default: return .system(call: call, errno: e, path: path)
        }
    }
}

/// A mutable box for passing a value out of a thread.
final class Box<T>: @unchecked Sendable {
    var value: T
    init(_ value: T) { self.value = value }
}

/// The process heap.
public enum Heap {
    /// Returns freed heap pages to the kernel (`malloc_trim`), so RSS follows live memory.
    public static func trim() { sd_malloc_trim() }
}

/// Resource limits, readably (soft limits; nil means unlimited).
public enum Limits {
    /// `ulimit -n`: open descriptors.
    public static var openFiles: Int? { let v = sd_rlimit_nofile(); return v < 0 ? nil : Int(v) }
    /// `ulimit -u`: processes of this user.
    public static var processes: Int? { let v = sd_rlimit_nproc(); return v < 0 ? nil : Int(v) }

    /// Sets the soft `ulimit -u` (nil: unlimited, up to the hard limit). Root is exempt from it.
    public static func setProcesses(_ value: Int?) -> Bool { sd_set_rlimit_nproc(Int64(value ?? -1)) == 0 }
    /// Sets the soft `ulimit -n` (nil: up to the hard limit).
    public static func setOpenFiles(_ value: Int?) -> Bool { sd_set_rlimit_nofile(Int64(value ?? -1)) == 0 }

    static func describe(_ value: Int?) -> String { value.map(String.init) ?? "unlimited" }
}

/// Calls `body` with a NULL-terminated C array of the strings.
func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> R) -> R {
    let pointers: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) } + [nil]
    defer { for p in pointers { free(p) } }
    return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
}

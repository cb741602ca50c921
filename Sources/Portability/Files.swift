import Foundation
import Glibc
import SystemPackage

/// Why a path could not be written.
public enum FileAccessError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The user lacks a permission the mode bits deny. `owner` says whether the user owns it.
    case permissionDenied(path: String, missing: String, userOwnsIt: Bool, mode: String)
    /// The file system is mounted read-only.
    case readOnlyFileSystem(path: String)
    case notADirectory(path: String)
    case doesNotExist(path: String)
    case io(path: String, call: String, errno: Int32)
    case noWritableTemporaryDirectory(tried: [String])
    /// A directory could not be created; `reason` is about the ancestor that stopped it.
    indirect case cannotCreate(path: String, reason: FileAccessError)

    public var description: String {
        switch self {
        case let .permissionDenied(path, missing, owns, mode):
            let who = owns
                ? "you own it, but its mode bits (\(mode)) deny the owner \(missing) permission: chmod u+\(missing.first!) \(path)"
                : "you do not own it and its mode bits (\(mode)) deny you \(missing) permission: choose another directory, or ask its owner"
            return "cannot write to \(path): \(who)"
        case let .readOnlyFileSystem(path): return "cannot write to \(path): the file system is mounted read-only (choose an output directory on a writable mount)"
        case let .notADirectory(path): return "\(path) is not a directory"
        case let .doesNotExist(path): return "\(path) does not exist (create it, or choose another directory)"
        case let .io(path, call, e): return "\(path): \(call) failed: \(String(cString: strerror(e)))"
        case let .cannotCreate(path, reason): return "cannot create \(path): \(reason)"
        case let .noWritableTemporaryDirectory(tried): return "no writable temporary directory among \(tried.joined(separator: ", ")) (set TMPDIR to a writable directory)"
        }
    }
}

/// File permissions and paths the way a trainer needs them.
public enum Files {
    /// Writes `bytes` to `path` atomically: a temporary file in the same directory is written,
    /// flushed to disk, given `permissions` (less the umask), and renamed over `path`; then the
    /// directory is flushed. A crash at any moment leaves either the old file or the new one,
    /// never a mix. A temporary file a killed writer left behind is named `.<name>.tmp-*`.
    public static func writeAtomically(_ bytes: some Collection<UInt8>, to path: String,
                                       permissions: FilePermissions = [.ownerReadWrite, .groupRead, .otherRead]) throws(FileAccessError) {
        let target = FilePath(path)
        let dir = target.removingLastComponent().string.isEmpty ? "." : target.removingLastComponent().string
        let name = target.lastComponent?.string ?? path
        try checkWritableDirectory(dir)
        let tmp = "\(dir)/.\(name).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let mask = currentUmask()
        let mode = FilePermissions(rawValue: permissions.rawValue & ~mask)
        let fd: FileDescriptor
        do {
            fd = try FileDescriptor.open(FilePath(tmp), .writeOnly, options: [.create, .exclusiveCreate, .closeOnExec], permissions: mode)
        } catch {
            throw .io(path: tmp, call: "open", errno: (error as? Errno)?.rawValue ?? EIO)
        }
        do {
            let array = Array(bytes)
            _ = try array.withUnsafeBytes { try fd.writeAll($0) }
            // Explicit, because open() applied the umask to `mode` already and chmod does not.
            guard fchmod(fd.rawValue, mode.rawValue) == 0 else { throw Errno(rawValue: errno) }
            guard fsync(fd.rawValue) == 0 else { throw Errno(rawValue: errno) }
            try fd.close()
        } catch {
            try? fd.close()
            unlink(tmp)
            throw .io(path: tmp, call: "write", errno: (error as? Errno)?.rawValue ?? EIO)
        }
        if let hook = ProcessInfo.processInfo.environment["SWIFTDETECTRON_TEST_PAUSE_BEFORE_RENAME"] {
            // Test hook: lets a test kill the writer between write and rename.
            FileHandle.standardOutput.write(Data("paused \(tmp)\n".utf8))
            usleep(UInt32((Double(hook) ?? 5) * 1e6))
        }
        guard rename(tmp, path) == 0 else {
            let e = errno
            unlink(tmp)
            throw .io(path: path, call: "rename", errno: e)
        }
        let dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 {
            fsync(dfd)
            close(dfd)
        }
    }

    /// The process's umask (read without changing it for longer than the call).
    /// Removes the temporary files that killed writers of ``writeAtomically(_:to:permissions:)``
    /// left in `dir` (`.<name>.tmp-<pid>-*` whose process is gone); a live writer's are kept.
    /// Returns the names removed.
    @discardableResult
    public static func removeStaleTemporaries(in dir: String) -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        return names.filter { name in
            guard name.hasPrefix("."), let r = name.range(of: ".tmp-", options: .backwards),
                  let pid = Int32(name[r.upperBound...].prefix { $0 != "-" }), pid > 0 else { return false }
            // kill(pid, 0) fails with ESRCH once the process is gone.
            guard kill(pid, 0) != 0 && errno == ESRCH else { return false }
            return unlink("\(dir)/\(name)") == 0
        }
    }

    public static func currentUmask() -> CModeT {
        let m = umask(0o022)
        umask(m)
        return m
    }

    /// Throws a named error unless new files can be created in `dir`.
    ///
    /// The error says which permission is missing, whether the user owns the directory (so
    /// `chmod` would help) or not, and the mode bits; a read-only mount is reported as such.
    public static func checkWritableDirectory(_ dir: String) throws(FileAccessError) {
        var st = stat()
        guard stat(dir, &st) == 0 else {
            if errno == ENOENT { throw .doesNotExist(path: dir) }
            if errno == EACCES { throw .permissionDenied(path: dir, missing: "execute", userOwnsIt: false, mode: "unknown: a parent directory is not searchable") }
            throw .io(path: dir, call: "stat", errno: errno)
        }
        guard (st.st_mode & S_IFMT) == S_IFDIR else { throw .notADirectory(path: dir) }
        if faccessat(AT_FDCWD, dir, W_OK | X_OK, AT_EACCESS) == 0 { return }
        if errno == EROFS { throw .readOnlyFileSystem(path: dir) }
        let owns = st.st_uid == geteuid()
        let missing = faccessat(AT_FDCWD, dir, X_OK, AT_EACCESS) != 0 ? "execute" : "write"
        throw .permissionDenied(path: dir, missing: missing, userOwnsIt: owns, mode: String(st.st_mode & 0o7777, radix: 8))
    }

    /// Creates `dir` and its missing parents (like `mkdir -p`). When that fails, the error names
    /// the ancestor that stopped it and why (permissions, read-only mount), not just the errno.
    public static func makeDirectory(_ dir: String) throws(FileAccessError) {
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        } catch {
            var ancestor = (dir as NSString).deletingLastPathComponent
            while !ancestor.isEmpty && ancestor != "/" && !FileManager.default.fileExists(atPath: ancestor) {
                ancestor = (ancestor as NSString).deletingLastPathComponent
            }
            do throws(FileAccessError) {
                try checkWritableDirectory(ancestor.isEmpty ? "." : ancestor)
            } catch {
                throw .cannotCreate(path: dir, reason: error)
            }
            let code = ((error as NSError).userInfo[NSUnderlyingErrorKey] as? NSError)?.code ?? Int(EIO)
            throw .io(path: dir, call: "mkdir", errno: Int32(code))
        }
        try checkWritableDirectory(dir)
    }

    /// Whether `dir` is writable, without the details.
    public static func isWritableDirectory(_ dir: String) -> Bool {
        (try? checkWritableDirectory(dir)) != nil
    }

    /// The temporary directory to use: `TMPDIR`, then `/tmp`, `/var/tmp`, then `outputDirectory`,
    /// skipping any that is missing or not writable.
    public static func temporaryDirectory(environment: [String: String] = ProcessInfo.processInfo.environment,
                                          outputDirectory: String? = nil) throws(FileAccessError) -> String {
        var candidates: [String] = []
        if let t = environment["TMPDIR"], !t.isEmpty { candidates.append(t) }
        candidates += ["/tmp", "/var/tmp"]
        if let outputDirectory { candidates.append(outputDirectory) }
        for c in candidates where isWritableDirectory(c) { return c }
        throw .noWritableTemporaryDirectory(tried: candidates)
    }
}

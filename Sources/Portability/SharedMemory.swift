import CLinuxShim
import Foundation
import Glibc

/// How buffers travel between processes.
public enum SharedMemoryTransport: String, Sendable, Codable, CaseIterable {
    /// An anonymous `memfd_create` file: no name, nothing in `/dev/shm`, gone with its last descriptor.
    case memfd
    /// A POSIX `shm_open` object in `/dev/shm`, unlinked as soon as it is open.
    case shm
    /// No shared memory: bytes are copied through pipes.
    case pipe
}

/// Why shared memory could not be had.
public enum SharedMemoryError: Error, Equatable, Sendable, CustomStringConvertible {
    case unavailable(transport: SharedMemoryTransport, reason: String)
    case noSpace(path: String, requested: Int, free: Int)
    case system(call: String, errno: Int32)

    public var description: String {
        switch self {
        case let .unavailable(t, r): return "\(t.rawValue) shared memory is unavailable: \(r)"
        case let .noSpace(path, req, free):
            return "\(path) has \(free) bytes free but \(req) are needed (raise it, e.g. docker --shm-size=1g, or the loader falls back to pipes)"
        case let .system(call, e): return "\(call) failed: \(String(cString: strerror(e))) (errno \(e))"
        }
    }
}

/// Chooses the shared-memory transport, checking before use instead of finding out by SIGBUS.
///
/// Order: `memfd` when the kernel offers `memfd_create`; else `shm` when `/dev/shm` exists, is a
/// writable directory and has room for the segment; else `pipe`. The environment variable
/// `DETECTRON_SHM_TRANSPORT` (memfd|shm|pipe) forces a choice; one that cannot work is reported,
/// not silently replaced.
public struct SharedMemoryPolicy: Sendable {
    public static let environmentKey = "DETECTRON_SHM_TRANSPORT"
    public var devShmPath: String
    public var memfdAvailable: Bool
    public var forced: SharedMemoryTransport?

    public init(devShmPath: String = "/dev/shm", memfdAvailable: Bool? = nil,
                environment: [String: String] = ProcessInfo.processInfo.environment) {
        self.devShmPath = devShmPath
        self.memfdAvailable = memfdAvailable ?? Self.probeMemfd()
        self.forced = environment[Self.environmentKey].flatMap { SharedMemoryTransport(rawValue: $0.lowercased()) }
    }

    static func probeMemfd() -> Bool {
        let fd = sd_memfd_create("sd-probe")
        guard fd >= 0 else { return false }
        close(fd)
        return true
    }

    /// Bytes free in the `/dev/shm` mount, or nil if it is missing or not a writable directory.
    public func devShmFree() -> Int? {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: devShmPath, isDirectory: &isDir), isDir.boolValue,
              access(devShmPath, W_OK | X_OK) == 0 else { return nil }
        var st = statvfs()
        guard statvfs(devShmPath, &st) == 0 else { return nil }
        return Int(st.f_bavail) * Int(st.f_frsize)
    }

    /// The transport for segments of `segmentBytes`, and why the better ones were passed over.
    public func select(segmentBytes: Int) -> (SharedMemoryTransport, reasons: [String]) {
        if let forced { return (forced, ["forced by \(Self.environmentKey)"]) }
        var reasons: [String] = []
        if memfdAvailable { return (.memfd, reasons) }
        reasons.append("memfd_create is not available")
        guard let free = devShmFree() else {
            reasons.append("\(devShmPath) is missing or not writable")
            return (.pipe, reasons)
        }
        // Keep a margin: other processes share the mount.
        if free >= segmentBytes * 2 { return (.shm, reasons) }
        reasons.append("\(devShmPath) has \(free) bytes free, less than twice the \(segmentBytes)-byte segment")
        return (.pipe, reasons)
    }
}

/// A shared-memory segment mapped into this process: an anonymous file another process can map
/// through its descriptor (pass it with ``ProcessConfiguration/inheritedDescriptors``).
///
/// The memory is reserved with `posix_fallocate` when the segment is made, so a full tmpfs is an
/// error here rather than a SIGBUS later. The segment has no name once it exists — for `shm` the
/// name is unlinked at once — so nothing outlives the processes holding it.
public final class SharedMemorySegment: @unchecked Sendable {
    public let transport: SharedMemoryTransport
    public let byteCount: Int
    public let descriptor: Int32
    public let baseAddress: UnsafeMutableRawPointer

    /// Makes a segment of `byteCount` bytes on `transport` (`memfd` or `shm`).
    public init(byteCount: Int, transport: SharedMemoryTransport, devShmPath: String = "/dev/shm") throws(SharedMemoryError) {
        precondition(byteCount > 0, "segment size must be positive")
        let fd: Int32
        switch transport {
        case .memfd:
            fd = sd_memfd_create("swiftdetectron")
            guard fd >= 0 else { throw .unavailable(transport: .memfd, reason: String(cString: strerror(errno))) }
        case .shm:
            if let free = SharedMemoryPolicy(devShmPath: devShmPath, memfdAvailable: false, environment: [:]).devShmFree() {
                guard free >= byteCount else { throw .noSpace(path: devShmPath, requested: byteCount, free: free) }
            } else {
                throw .unavailable(transport: .shm, reason: "\(devShmPath) is missing or not writable")
            }
            var opened: Int32 = -1
            for _ in 0..<16 {
                let name = "/swiftdetectron-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
                opened = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
                if opened >= 0 {
                    shm_unlink(name)
                    break
                }
                if errno != EEXIST { break }
            }
            guard opened >= 0 else { throw .unavailable(transport: .shm, reason: String(cString: strerror(errno))) }
            fd = opened
        case .pipe:
            throw .unavailable(transport: .pipe, reason: "pipes carry copies, not shared segments")
        }
        let rc = posix_fallocate(fd, 0, off_t(byteCount))
        guard rc == 0 else {
            close(fd)
            if rc == ENOSPC { throw .noSpace(path: transport == .shm ? devShmPath : "memfd", requested: byteCount, free: 0) }
            throw .system(call: "posix_fallocate", errno: rc)
        }
        guard let p = mmap(nil, byteCount, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), p != MAP_FAILED else {
            let e = errno
            close(fd)
            throw .system(call: "mmap", errno: e)
        }
        self.transport = transport
        self.byteCount = byteCount
        self.descriptor = fd
        self.baseAddress = p
    }

    /// Maps a segment whose descriptor this process received from another.
    public init(mapping fd: Int32, byteCount: Int, transport: SharedMemoryTransport) throws(SharedMemoryError) {
        guard let p = mmap(nil, byteCount, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), p != MAP_FAILED else {
            throw .system(call: "mmap", errno: errno)
        }
        self.transport = transport
        self.byteCount = byteCount
        self.descriptor = fd
        self.baseAddress = p
    }

    deinit {
        munmap(baseAddress, byteCount)
        close(descriptor)
    }
}

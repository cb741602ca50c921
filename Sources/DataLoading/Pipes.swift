import Glibc

/// Framed messages over Unix socket pairs: a 4-byte little-endian length, then the payload.
/// Writes use `MSG_NOSIGNAL`, so a peer that died is an error here, never a SIGPIPE that kills
/// the process.
enum Frames {
    struct Closed: Error {}

    /// A connected pair of stream sockets, close-on-exec.
    static func pair() -> (Int32, Int32)? {
        var fds: [Int32] = [0, 0]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else { return nil }
        return (fds[0], fds[1])
    }

    static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) throws(Closed) {
        var off = 0
        while off < bytes.count {
            let n = Glibc.send(fd, bytes.baseAddress! + off, bytes.count - off, Int32(MSG_NOSIGNAL))
            if n < 0 {
                if errno == EINTR { continue }
                throw Closed()
            }
            off += n
        }
    }

    static func readExact(_ fd: Int32, _ count: Int) throws(Closed) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        var off = 0
        while off < count {
            let n = out.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress! + off, count - off) }
            if n < 0 {
                if errno == EINTR { continue }
                throw Closed()
            }
            if n == 0 { throw Closed() }
            off += n
        }
        return out
    }

    static func send(_ fd: Int32, _ payload: [UInt8]) throws(Closed) {
        var frame = [UInt8](repeating: 0, count: 4)
        let n = UInt32(payload.count)
        frame[0] = UInt8(n & 0xFF); frame[1] = UInt8((n >> 8) & 0xFF); frame[2] = UInt8((n >> 16) & 0xFF); frame[3] = UInt8(n >> 24)
        frame += payload
        let ok = frame.withUnsafeBytes { b in (try? writeAll(fd, b)) != nil }
        if !ok { throw Closed() }
    }

    static func receive(_ fd: Int32) throws(Closed) -> [UInt8] {
        let h = try readExact(fd, 4)
        let n = Int(h[0]) | Int(h[1]) << 8 | Int(h[2]) << 16 | Int(h[3]) << 24
        return try readExact(fd, n)
    }

    /// Waits until `fd` is readable or `seconds` pass.
    static func waitReadable(_ fd: Int32, seconds: Double) -> Bool {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let r = poll(&p, 1, Int32(seconds * 1000))
        return r > 0
    }
}

/// Message types of the worker protocol.
enum Message: UInt8 {
    // parent → worker
    case initialize = 1, task = 2, shutdown = 3
    // worker → parent
    case ready = 10, result = 11, sampleError = 12, initFailed = 13
}

import Foundation
import Glibc
@testable import Portability
import Testing

/// Whether this host has a usable /dev/shm (ci/matrix runs the suite without one).
let hostHasDevShm = SharedMemoryPolicy(environment: [:]).devShmFree() != nil

extension Spawning {
    @Suite("Shared memory", .serialized)
    struct SharedMemoryTests {
        @Test("memfd and shm segments are shared with a child process", arguments: [SharedMemoryTransport.memfd] + (hostHasDevShm ? [.shm] : []))
        func sharedWithChild(transport: SharedMemoryTransport) throws {
            let seg = try SharedMemorySegment(byteCount: 4096, transport: transport)
            let p = seg.baseAddress.assumingMemoryBound(to: UInt8.self)
            for (i, b) in Array("hello".utf8).enumerated() { p[i] = b }
            // The probe is guarded, so it can run the read-shm role when started as a worker by us
            // through the environment the guard expects.
            var env = ProcessInfo.processInfo.environment
            env["SWIFTDETECTRON_WORKER_ROLE"] = "read-shm"
            env["SWIFTDETECTRON_WORKER_PARENT"] = String(getpid())
            var config = ProcessConfiguration(executable: probePath, arguments: ["3", "4096", transport.rawValue], environment: env)
            config.inheritedDescriptors = [(parent: seg.descriptor, child: 3)]
            let r = try Processes.run(config, timeout: 10)
            #expect(r.status.isSuccess, "\(r.output) \(r.error)")
            #expect(r.output == "read hello\n")
            #expect(String(decoding: UnsafeBufferPointer(start: p + 8, count: 5), as: UTF8.self) == "world")
        }

        @Test("an shm segment leaves nothing in /dev/shm", .enabled(if: hostHasDevShm, "this host has no usable /dev/shm"))
        func shmIsUnlinked() throws {
            let before = Set((try? FileManager.default.contentsOfDirectory(atPath: "/dev/shm")) ?? [])
            // 64 KiB: enough to be a real segment, small enough to fit beside other tests' segments
            // in ci/matrix's 1 MiB /dev/shm (1 MiB failed there whenever another held a page).
            let seg = try SharedMemorySegment(byteCount: 64 << 10, transport: .shm)
            let during = Set((try? FileManager.default.contentsOfDirectory(atPath: "/dev/shm")) ?? [])
            #expect(during.subtracting(before).filter { $0.hasPrefix("swiftdetectron") }.isEmpty)
            withExtendedLifetime(seg) {}
        }

        @Test("a missing /dev/shm selects pipes when memfd is unavailable")
        func missingDevShm() {
            let policy = SharedMemoryPolicy(devShmPath: "/nonexistent/shm", memfdAvailable: false, environment: [:])
            let (t, reasons) = policy.select(segmentBytes: 1 << 20)
            #expect(t == .pipe)
            #expect(reasons.contains { $0.contains("/nonexistent/shm is missing") })
            #expect(throws: SharedMemoryError.unavailable(transport: .shm, reason: "/nonexistent/shm is missing or not writable")) {
                try SharedMemorySegment(byteCount: 4096, transport: .shm, devShmPath: "/nonexistent/shm")
            }
        }

        @Test("memfd is preferred; the environment can force a transport")
        func preference() {
            #expect(SharedMemoryPolicy(memfdAvailable: true, environment: [:]).select(segmentBytes: 1).0 == .memfd)
            #expect(SharedMemoryPolicy(memfdAvailable: false, environment: [:]).select(segmentBytes: 1).0 == (hostHasDevShm ? .shm : .pipe))
            #expect(SharedMemoryPolicy(memfdAvailable: true, environment: ["DETECTRON_SHM_TRANSPORT": "pipe"]).select(segmentBytes: 1).0 == .pipe)
        }

        @Test("a 1 MB /dev/shm selects pipes for large segments and refuses an oversized shm segment (no SIGBUS)")
        func smallDevShm() throws {
            // A private mount namespace with a 1 MB tmpfs: needs root and unshare.
            guard isRoot, (try? Processes.resolveExecutable("unshare")) != nil else {
                print("skipped: a 1 MB /dev/shm needs root and unshare (mount namespace); ci/matrix covers it")
                return
            }
            let dir = makeTempDirectory("smallshm")
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let script = """
                mount -t tmpfs -o size=1m tmpfs \(dir) || exit 99
                exec \(probePath) shm-select \(dir) 4194304
                """
            let r = try Processes.run(ProcessConfiguration(executable: "unshare", arguments: ["-m", "sh", "-c", script]), timeout: 30)
            if r.status == .exited(code: 99) {
                print("skipped: mounting a tmpfs is not permitted here: \(r.error)")
                return
            }
            #expect(r.status.isSuccess, "\(r.output) \(r.error)")
            #expect(r.output.contains("transport pipe"), "\(r.output)")
            #expect(r.output.contains("segment error"), "\(r.output)")
            #expect(r.output.contains("bytes free but 4194304 are needed"), "\(r.output)")
        }
    }
}

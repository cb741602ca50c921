// A small executable the portability tests start as a child: it exercises the layer from the
// outside (worker roles, parent death, atomic writes under kill, permissions as another user).
// Usage: PortabilityProbe [--as-nobody] COMMAND [ARGS…]
import Foundation
import Glibc
import Portability

/// Writes a line unbuffered: the tests read lines while the probe is still running.
func say(_ line: String) { FileHandle.standardOutput.write(Data((line + "\n").utf8)) }

if ProcessInfo.processInfo.environment["PROBE_SKIP_GUARD"] == nil {
    WorkerGuard.enter(roles: [
        "echo": { ctx in
            say("worker role=\(ctx.role) parent=\(ctx.parentPID) args=\(ctx.arguments.joined(separator: " "))")
            return 0
        },
        "sleep": { ctx in
            sleep(UInt32(ctx.arguments.first.flatMap { Int($0) } ?? 60))
            return 0
        },
        "recurse": { _ in
            do {
                _ = try WorkerGuard.spawnWorker(role: "echo")
                say("spawned")
                return 0
            } catch {
                say("refused: \(error)")
                return 7
            }
        },
        "read-shm": { ctx in
            // args: fd byteCount transport — reads the first bytes and writes a reply after them.
            let fd = Int32(ctx.arguments[0])!, n = Int(ctx.arguments[1])!
            do {
                let seg = try SharedMemorySegment(mapping: fd, byteCount: n, transport: SharedMemoryTransport(rawValue: ctx.arguments[2])!)
                let p = seg.baseAddress.assumingMemoryBound(to: UInt8.self)
                let text = String(decoding: UnsafeBufferPointer(start: p, count: 5), as: UTF8.self)
                say("read \(text)")
                let reply = Array("world".utf8)
                for (i, b) in reply.enumerated() { p[8 + i] = b }
                return 0
            } catch {
                say("error \(error)")
                return 1
            }
        },
    ])
}

var args = Array(CommandLine.arguments.dropFirst())
if args.first == "--as-nobody" {
    args.removeFirst()
    var groups: [gid_t] = []
    guard setgroups(0, &groups) == 0, setgid(65534) == 0, setuid(65534) == 0 else {
        say("cannot drop to nobody: \(String(cString: strerror(errno)))")
        exit(90)
    }
}

switch args.first {
case "spawn-worker", "spawn-worker-role":
    // Starts one worker (`echo`, or the role named) and prints what happened.
    do {
        let role = args.first == "spawn-worker" ? "echo" : args[1]
        let child = try WorkerGuard.spawnWorker(role: role, arguments: ["a", "b"])
        say("status \(child.wait(timeout: 10).map(String.init(describing:)) ?? "timeout")")
    } catch {
        say("refused: \(error)")
        exit(7)
    }
case "spawn-sleeper":
    // Starts a sleeping worker, prints its pid, then sleeps (the test kills us).
    let child = try WorkerGuard.spawnWorker(role: "sleep", arguments: ["60"])
    say("worker \(child.pid)")
    sleep(60)
case "spawn-program":
    // spawn-program LIMIT PATH: sets ulimit -u to LIMIT (-1 keeps it) and starts PATH.
    if let limit = Int64(args[1]), limit >= 0 { _ = Limits.setProcesses(Int(limit)) }
    do {
        let child = try Processes.spawn(ProcessConfiguration(executable: args[2]))
        say("status \(child.wait(timeout: 10).map(String.init(describing:)) ?? "timeout")")
    } catch {
        say("error \(error)")
        exit(8)
    }
case "atomic-write":
    // atomic-write PATH TEXT
    do {
        try Files.writeAtomically(Array(args[2].utf8), to: args[1])
        say("written")
    } catch {
        say("error \(error)")
        exit(9)
    }
case "check-writable":
    do {
        try Files.checkWritableDirectory(args[1])
        say("writable")
    } catch {
        say("error \(error)")
        exit(10)
    }
case "pool-cycles":
    // pool-cycles N: creates and destroys N pools; prints "threads BEFORE AFTER rss BEFORE AFTER",
    // measured after the first tenth (warm-up) and at the end.
    func rssKB() -> Int {
        let f = ((try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8)) ?? "0 0").split(separator: " ")
        return (Int(f[1]) ?? 0) * Int(sysconf(Int32(_SC_PAGESIZE))) / 1024
    }
    let n = Int(args[1])!
    var before = (0, 0)
    for i in 0..<n {
        // Counted once the previous pool's joined threads have left the kernel's list.
        if i == n / 10 { before = (ProcessThreads.waitUntilGone(prefix: "cycle-").isEmpty ? ProcessThreads.count : -1, rssKB()) }
        let pool = ThreadPool(threadCount: 4, name: "cycle")
        pool.parallelFor(16) { _ in }
    }
    let left = ProcessThreads.waitUntilGone(prefix: "cycle-")
    say("threads \(before.0) \(left.isEmpty ? ProcessThreads.count : -left.count) rss \(before.1) \(rssKB())")
case "shm-select":
    // shm-select DIR BYTES: the transport chosen without memfd, and what making an shm segment says.
    let bytes = Int(args[2])!
    let policy = SharedMemoryPolicy(devShmPath: args[1], memfdAvailable: false, environment: [:])
    say("transport \(policy.select(segmentBytes: bytes).0.rawValue)")
    do {
        _ = try SharedMemorySegment(byteCount: bytes, transport: .shm, devShmPath: args[1])
        say("segment made")
    } catch {
        say("segment error \(error)")
    }
case "exit":
    exit(Int32(args[1])!)
case "kill-self":
    kill(getpid(), Int32(args[1])!)
    sleep(5)
case "sleep":
    usleep(UInt32(Double(args[1])! * 1e6))
case "ignore-term-sleep":
    signal(SIGTERM, SIG_IGN)
    say("ready")
    sleep(UInt32(args[1])!)
case "fds":
    // Lists this process's open descriptors.
    let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
    say(fds.compactMap { Int($0) }.sorted().map(String.init).joined(separator: " "))
case "pwd":
    say(FileManager.default.currentDirectoryPath)
case "env":
    say(ProcessInfo.processInfo.environment[args[1]] ?? "<unset>")
default:
    say("usage: PortabilityProbe [--as-nobody] COMMAND …")
    exit(64)
}

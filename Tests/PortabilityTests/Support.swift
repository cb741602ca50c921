import Foundation
import Glibc
@testable import Portability
import Testing

/// The probe executable, built beside the test bundle.
let probePath: String = {
    let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    return URL(fileURLWithPath: exe).deletingLastPathComponent().appendingPathComponent("PortabilityProbe").path
}()

/// Runs the probe to completion.
func probe(_ args: [String], environment extra: [String: String] = [:], timeout: Double = 30) throws -> (status: TerminationStatus, output: String, error: String) {
    var env = ProcessInfo.processInfo.environment
    for (k, v) in extra { env[k] = v }
    return try Processes.run(ProcessConfiguration(executable: probePath, arguments: args, environment: env), timeout: timeout)
}

let isRoot = geteuid() == 0

/// Children of this process that stay zombies (exited, never reaped). A child another test is
/// reaping right now is a zombie for a few milliseconds; only one still there after half a second
/// counts.
func zombieChildren() -> [Int32] {
    let first = currentZombieChildren()
    if first.isEmpty { return [] }
    usleep(500_000)
    return currentZombieChildren().filter(first.contains)
}

private func currentZombieChildren() -> [Int32] {
    let me = getpid()
    let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
    return entries.compactMap(Int32.init).filter { pid in
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return false }
        let fields = stat[stat.index(close, offsetBy: 2)...].split(separator: " ")
        return fields.count > 1 && fields[0] == "Z" && Int32(fields[1]) == me
    }
}

/// Whether `pid` is gone or a zombie (dead, waiting for a reaper that is not us).
func isDead(_ pid: Int32) -> Bool {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = stat.lastIndex(of: ")") else { return true }
    return stat[stat.index(close, offsetBy: 2)...].hasPrefix("Z") || stat[stat.index(close, offsetBy: 2)...].hasPrefix("X")
}

/// Runs `body` on its own thread and fails the test (instead of hanging it) after `seconds`.
func withWatchdog(seconds: Double, _ what: String, _ body: @escaping @Sendable () -> Void) {
    let done = Condition()
    let finished = Box(false)
    Thread.detachNewThread {
        body()
        done.withLock {
            finished.value = true
            done.signal()
        }
    }
    let ok: Bool = done.withLock {
        let deadline = monotonicSeconds() + seconds
        while !finished.value {
            let left = deadline - monotonicSeconds()
            if left <= 0 { return false }
            _ = done.wait(seconds: left)
        }
        return true
    }
    #expect(ok, "\(what) did not finish within \(seconds) s: a hang")
}

/// A fresh empty directory under /tmp.
func makeTempDirectory(_ tag: String) -> String {
    let path = "/tmp/sd-test-\(tag)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    chmod(path, 0o755)
    return path
}

/// Every suite that starts processes, run one at a time.
@Suite("Spawning", .serialized)
struct Spawning {}

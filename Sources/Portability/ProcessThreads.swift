import Foundation
import Glibc

/// This process's threads as the kernel lists them (`/proc/self/task`): what leak checks count.
///
/// A joined thread leaves the list a moment after `pthread_join` returns: the join completes
/// when the exiting thread clears its thread id, and the kernel reaps the task just after that
/// (under load, milliseconds later). ``waitUntilGone(prefix:timeout:)`` allows for that moment;
/// a thread that is still running stays listed, and is reported.
public enum ProcessThreads {
    /// The names of this process's threads (`comm`, at most 15 bytes each).
    public static func names() -> [String] {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
        return tasks.compactMap { try? String(contentsOfFile: "/proc/self/task/\($0)/comm", encoding: .utf8) }
            .map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
    }

    /// The number of this process's threads.
    public static var count: Int { ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []).count }

    /// Waits up to `timeout` seconds until no thread whose name starts with `prefix` is listed;
    /// returns the names still listed then (empty: all gone).
    public static func waitUntilGone(prefix: String, timeout: Double = 5) -> [String] {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let left = names().filter { $0.hasPrefix(prefix) }
            if left.isEmpty || Date() >= deadline { return left }
            usleep(5_000)
        }
    }
}

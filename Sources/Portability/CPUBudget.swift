import CLinuxShim
import Foundation

/// How many cores this process may really use, and why.
///
/// The count is the smallest of: the CPUs online, the CPUs in the affinity mask
/// (`taskset`, `docker --cpuset-cpus`) and the cgroup CPU quota rounded up (cgroup v2
/// `cpu.max`, v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`, as `docker --cpus` sets them). The
/// environment variable `DETECTRON_NUM_THREADS` (or a config value passed as `override`) replaces
/// the result. The thread pool and OpenBLAS both take their thread counts from this decision, so
/// together they never oversubscribe the cores.
public struct CPUBudget: Sendable, Equatable, Codable {
    /// CPUs the kernel has online.
    public var online: Int
    /// CPUs in this process's affinity mask.
    public var affinity: Int
    /// The cgroup quota in CPUs (fractional), or nil when unlimited or unknown.
    public var cgroupQuota: Double?
    /// Which cgroup file gave the quota.
    public var cgroupSource: String?
    /// An explicit override (environment or config), if any.
    public var override: Int?
    /// The decision: threads to use.
    public var threads: Int

    /// The environment variable that overrides the decision.
    public static let environmentKey = "DETECTRON_NUM_THREADS"

    /// Reads the live system. `root` prefixes the `/proc` and `/sys` paths (tests point it at
    /// fixture trees); `affinity` defaults to the real mask.
    public static func detect(
        root: String = "",
        environment: [String: String] = ProcessInfo.processInfo.environment,
        affinity: Int? = nil,
        online: Int? = nil,
        override configOverride: Int? = nil
    ) -> CPUBudget {
        let online = online ?? max(1, ProcessInfo.processInfo.activeProcessorCount)
        let mask = affinity ?? Int(sd_affinity_cpu_count())
        let (quota, source) = cgroupQuota(root: root)
        var envOverride: Int?
        if let raw = environment[environmentKey], let n = Int(raw.trimmingCharacters(in: .whitespaces)), n > 0 {
            envOverride = n
        }
        let chosenOverride = configOverride ?? envOverride
        var limit = max(1, min(online, mask > 0 ? mask : online))
        if let quota { limit = max(1, min(limit, Int(quota.rounded(.up)))) }
        return CPUBudget(online: online, affinity: mask > 0 ? mask : online, cgroupQuota: quota,
                         cgroupSource: source, override: chosenOverride, threads: chosenOverride ?? limit)
    }

    /// The cgroup CPU quota in CPUs, from `<root>/proc/self/cgroup` and `<root>/sys/fs/cgroup`.
    /// The tightest limit on the path from the process's cgroup up to the root wins.
    public static func cgroupQuota(root: String = "") -> (Double?, String?) {
        let membership = (try? String(contentsOfFile: root + "/proc/self/cgroup", encoding: .utf8)) ?? ""
        var best: (Double, String)?
        func consider(_ value: Double?, _ path: String) {
            guard let value, value > 0 else { return }
            if best == nil || value < best!.0 { best = (value, path) }
        }
        for line in membership.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard parts.count == 3 else { continue }
            let controllers = parts[1].split(separator: ",")
            let cgroupPath = String(parts[2])
            if parts[0] == "0" && parts[1].isEmpty {
                // cgroup v2 unified hierarchy.
                for dir in ancestors(of: cgroupPath) {
                    let file = root + "/sys/fs/cgroup" + dir + "/cpu.max"
                    consider(parseCPUMax(file), file)
                }
            } else if controllers.contains("cpu") {
                let mount = root + "/sys/fs/cgroup/" + parts[1]
                let alt = root + "/sys/fs/cgroup/cpu"
                for base in [mount, alt] {
                    for dir in ancestors(of: cgroupPath) {
                        let q = base + dir + "/cpu.cfs_quota_us"
                        let p = base + dir + "/cpu.cfs_period_us"
                        consider(parseV1(quota: q, period: p), q)
                    }
                }
            }
        }
        return (best?.0, best?.1)
    }

    /// `/a/b` → `/a/b`, `/a`, `` (the root).
    static func ancestors(of path: String) -> [String] {
        var out: [String] = []
        var comps = path.split(separator: "/").map(String.init)
        while true {
            out.append(comps.isEmpty ? "" : "/" + comps.joined(separator: "/"))
            if comps.isEmpty { break }
            comps.removeLast()
        }
        return out
    }

    /// `cpu.max` holds `max 100000` or `200000 100000`.
    static func parseCPUMax(_ file: String) -> Double? {
        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { return nil }
        let f = text.split(whereSeparator: { $0 == " " || $0 == "\n" })
        guard f.count >= 2, f[0] != "max", let q = Double(f[0]), let p = Double(f[1]), p > 0 else { return nil }
        return q / p
    }

    static func parseV1(quota: String, period: String) -> Double? {
        guard let qt = try? String(contentsOfFile: quota, encoding: .utf8),
              let pt = try? String(contentsOfFile: period, encoding: .utf8),
              let q = Double(qt.trimmingCharacters(in: .whitespacesAndNewlines)),
              let p = Double(pt.trimmingCharacters(in: .whitespacesAndNewlines)),
              q > 0, p > 0 else { return nil }
        return q / p
    }
}

import CLinuxShim
import Foundation
import Glibc

/// One line of the host report.
public struct HostFact: Sendable, Codable, Equatable {
    public enum Status: String, Sendable, Codable {
        /// Fine.
        case ok
        /// Works, but worse than it could (a fallback is in use, a limit is low).
        case warning
        /// A required capability is missing: the verdict fails.
        case missing
        /// Information only.
        case info
    }

    /// A stable machine key, e.g. `cores.usable`.
    public var key: String
    /// What a person reads in the table's first column.
    public var label: String
    public var value: String
    public var status: Status
    /// What to do about a warning or a missing capability.
    public var hint: String?

    public init(_ key: String, _ label: String, _ value: String, _ status: Status = .info, hint: String? = nil) {
        self.key = key
        self.label = label
        self.value = value
        self.status = status
        self.hint = hint
    }
}

/// What this host offers a training framework: the facts `detectron doctor` prints.
public struct HostReport: Sendable, Codable {
    public var facts: [HostFact]

    public init(facts: [HostFact]) { self.facts = facts }

    /// Whether every required capability is present.
    public var ready: Bool { !facts.contains { $0.status == .missing } }

    /// The last line: `verdict: ready` or what is missing.
    public var verdict: String {
        let missing = facts.filter { $0.status == .missing }
        if missing.isEmpty {
            let warnings = facts.filter { $0.status == .warning }.count
            return warnings == 0 ? "verdict: ready" : "verdict: ready (\(warnings) warning\(warnings == 1 ? "" : "s"))"
        }
        return "verdict: NOT READY — missing: " + missing.map(\.label).joined(separator: ", ")
    }

    /// The report as an aligned table, one fact a line, the verdict last.
    public func table() -> String {
        let width = facts.map(\.label.count).max() ?? 0
        var lines: [String] = []
        for f in facts {
            let mark: String
            switch f.status {
            case .ok: mark = "ok  "
            case .warning: mark = "WARN"
            case .missing: mark = "FAIL"
            case .info: mark = "    "
            }
            var line = "\(mark) \(f.label.padding(toLength: width, withPad: " ", startingAt: 0))  \(f.value)"
            if let hint = f.hint, f.status == .warning || f.status == .missing { line += "  — \(hint)" }
            lines.append(line)
        }
        lines.append(verdict)
        return lines.joined(separator: "\n")
    }

    /// The report as one JSON object: `{"facts": [...], "ready": Bool, "verdict": String}`.
    public func json() -> String {
        struct Wire: Encodable {
            var facts: [HostFact]
            var ready: Bool
            var verdict: String
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        let data = (try? encoder.encode(Wire(facts: facts, ready: ready, verdict: verdict))) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    /// Collects the portability layer's facts.
    ///
    /// - Parameters:
    ///   - outputDirectory: checked for writability (created if missing).
    ///   - environment: the variables read (TMPDIR, HOME, DETECTRON_NUM_THREADS, …).
    ///   - spawnCheck: starts a worker and reports how it went (nil: spawning is not checked).
    public static func collect(outputDirectory: String? = nil,
                               environment: [String: String] = ProcessInfo.processInfo.environment,
                               spawnCheck: (() -> Result<Void, SpawnError>)? = nil) -> HostReport {
        var facts: [HostFact] = []
        var u = utsname()
        uname(&u)
        let kernel = "\(cString(&u.sysname)) \(cString(&u.release)) \(cString(&u.machine))"
        facts.append(HostFact("kernel", "kernel", kernel))
        facts.append(HostFact("distribution", "distribution", osRelease()["PRETTY_NAME"] ?? "unknown"))
        let hostGlibc = String(cString: sd_glibc_version())
        facts.append(HostFact("glibc", "glibc", hostGlibc))
        if let needs = ELFVersions.needs(), let need = ELFVersions.newestGlibc(needs) {
            let fits = ELFVersions.glibc(hostGlibc, satisfies: need)
            facts.append(HostFact("glibc.required", "glibc this binary needs", "\(need) (host \(hostGlibc))", fits ? .ok : .warning,
                                  hint: fits ? nil : "this binary was linked against a newer glibc than the host's \(hostGlibc): build it with ci/release (glibc 2.28 and newer) or on the oldest host"))
        }
        facts.append(HostFact("cpu.model", "CPU model", cpuModel()))
        let features: [String] = ["sse4.2", "avx", "avx2", "fma", "avx512f"]
        let isa = features.filter { sd_cpu_supports($0) != 0 }
        facts.append(HostFact("cpu.isa", "CPU ISA", isa.isEmpty ? "baseline x86-64" : isa.joined(separator: " "),
                              isa.contains("avx2") ? .ok : .warning, hint: "no AVX2: BLAS and convolutions run much slower"))

        let budget = CPUBudget.detect(environment: environment)
        facts.append(HostFact("cores.online", "cores online", String(budget.online)))
        facts.append(HostFact("cores.affinity", "cores in affinity mask", String(budget.affinity)))
        facts.append(HostFact("cores.cgroup_quota", "cgroup CPU quota",
                              budget.cgroupQuota.map { "\(($0 * 100).rounded() / 100) CPUs (\(budget.cgroupSource ?? ""))" } ?? "none"))
        facts.append(HostFact("cores.usable", "threads to use", String(budget.threads) + (budget.override != nil ? " (set by \(CPUBudget.environmentKey))" : ""), .ok))

        let mem = memInfo()
        facts.append(HostFact("memory.total_mb", "memory", mem.map { "\($0 / 1_048_576) MiB" } ?? "unknown"))
        facts.append(HostFact("memory.cgroup_limit_mb", "cgroup memory limit", cgroupMemoryLimit().map { "\($0 / 1_048_576) MiB" } ?? "none"))

        let policy = SharedMemoryPolicy(environment: environment)
        var shmValue = "missing"
        var shmStatus = HostFact.Status.warning
        var st = statvfs()
        if statvfs(policy.devShmPath, &st) == 0 {
            let size = Int(st.f_blocks) * Int(st.f_frsize), free = Int(st.f_bavail) * Int(st.f_frsize)
            shmValue = "\(size / 1_048_576) MiB, \(free / 1_048_576) MiB free"
            shmStatus = free >= 64 * 1_048_576 ? .ok : .warning
        }
        facts.append(HostFact("shm.dev_shm", "/dev/shm", shmValue, shmStatus,
                              hint: "small or missing /dev/shm: shared memory uses memfd or pipes instead (docker --shm-size raises it)"))
        let (transport, reasons) = policy.select(segmentBytes: 16 * 1_048_576)
        facts.append(HostFact("shm.transport", "shared-memory transport", transport.rawValue + (reasons.isEmpty ? "" : " (\(reasons.joined(separator: "; ")))"),
                              transport == .pipe ? .warning : .ok, hint: "batches are copied through pipes: slower"))

        switch Result(catching: { () throws(FileAccessError) -> String in try Files.temporaryDirectory(environment: environment) }) {
        case let .success(dir):
            // TMPDIR set but passed over: say why, since tools that trust TMPDIR blindly will fail.
            if let t = environment["TMPDIR"], !t.isEmpty, t != dir {
                let why = Result { () throws(FileAccessError) in try Files.checkWritableDirectory(t) }
                let reason = if case let .failure(e) = why { e.description } else { "not usable" }
                facts.append(HostFact("paths.temp", "temporary directory", "\(dir) (writable; TMPDIR: \(reason))", .warning,
                                      hint: "set TMPDIR to a writable directory"))
            } else {
                facts.append(HostFact("paths.temp", "temporary directory", dir + " (writable)", .ok))
            }
        case let .failure(e): facts.append(HostFact("paths.temp", "temporary directory", e.description, .missing, hint: "set TMPDIR"))
        }
        if let out = outputDirectory {
            try? FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
            switch Result(catching: { () throws(FileAccessError) in try Files.checkWritableDirectory(out) }) {
            case .success: facts.append(HostFact("paths.output", "output directory", out + " (writable)", .ok))
            case let .failure(e): facts.append(HostFact("paths.output", "output directory", e.description, .missing, hint: "choose a writable OUTPUT_DIR"))
            }
        }
        let home = environment["HOME"] ?? ""
        facts.append(HostFact("paths.home", "home directory", home.isEmpty ? "unset" : home + (Files.isWritableDirectory(home) ? " (writable)" : " (read-only)")))
        facts.append(HostFact("user.root", "running as root", geteuid() == 0 ? "yes" : "no (uid \(geteuid()))"))

        let nofile = Limits.openFiles
        facts.append(HostFact("limits.nofile", "ulimit -n", nofile.map(String.init) ?? "unlimited",
                              (nofile ?? .max) >= 1024 ? .ok : .warning, hint: "few descriptors: raise with ulimit -n 4096"))
        let nproc = Limits.processes
        facts.append(HostFact("limits.nproc", "ulimit -u", nproc.map(String.init) ?? "unlimited"))

        if let spawnCheck {
            switch spawnCheck() {
            case .success:
                facts.append(HostFact("workers.kind", "worker kinds", "threads, processes", .ok))
            case let .failure(e):
                facts.append(HostFact("workers.kind", "worker kinds", "threads only (process workers cannot start: \(e))", .warning,
                                      hint: "data loading falls back to thread workers or num_workers=0"))
            }
        }
        return HostReport(facts: facts)
    }

    private static func cString<T>(_ field: inout T) -> String {
        withUnsafeBytes(of: &field) { raw in String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self) }
    }

    static func osRelease() -> [String: String] {
        guard let text = (try? String(contentsOfFile: "/etc/os-release", encoding: .utf8))
                ?? (try? String(contentsOfFile: "/usr/lib/os-release", encoding: .utf8)) else { return [:] }
        var out: [String: String] = [:]
        for line in text.split(separator: "\n") {
            guard let eq = line.firstIndex(of: "=") else { continue }
            out[String(line[..<eq])] = String(line[line.index(after: eq)...]).trimmingCharacters(in: CharacterSet(charactersIn: "\"'"))
        }
        return out
    }

    static func cpuModel() -> String {
        let text = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        for line in text.split(separator: "\n") where line.hasPrefix("model name") {
            return line.split(separator: ":", maxSplits: 1).last.map { $0.trimmingCharacters(in: .whitespaces) } ?? "unknown"
        }
        return "unknown"
    }

    static func memInfo() -> Int? {
        let text = (try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8)) ?? ""
        for line in text.split(separator: "\n") where line.hasPrefix("MemTotal:") {
            let kb = line.split(separator: " ").dropFirst().first.flatMap { Int($0) }
            return kb.map { $0 * 1024 }
        }
        return nil
    }

    static func cgroupMemoryLimit() -> Int? {
        for file in ["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"] {
            if let text = try? String(contentsOfFile: file, encoding: .utf8),
               let v = Int(text.trimmingCharacters(in: .whitespacesAndNewlines)), v < (1 << 60) {
                return v
            }
        }
        return nil
    }
}

/// Which sanitizer this process was built with, if any. Memory figures (RSS) say nothing about
/// leaks under one: it keeps shadow memory and quarantines freed blocks.
public enum Sanitizer {
    public static var active: String? {
        if dlsym(nil, "__tsan_init") != nil { return "ThreadSanitizer" }  // nil is RTLD_DEFAULT
        if dlsym(nil, "__asan_init") != nil { return "AddressSanitizer" }
        return nil
    }
}

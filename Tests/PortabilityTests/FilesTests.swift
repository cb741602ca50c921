import Foundation
import Glibc
@testable import Portability
import Testing

extension Spawning {
    @Suite("Files and permissions", .serialized)
    struct FilesTests {
        @Test("an atomic write replaces the file and sets the mode, less the umask")
        func atomicWrite() throws {
            let dir = makeTempDirectory("atomic")
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let path = dir + "/out.txt"
            try Files.writeAtomically(Array("one".utf8), to: path)
            try Files.writeAtomically(Array("two".utf8), to: path, permissions: [.ownerReadWrite])
            #expect(try String(contentsOfFile: path, encoding: .utf8) == "two")
            var st = stat()
            stat(path, &st)
            #expect(st.st_mode & 0o777 == 0o600)
            #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["out.txt"])
        }

        @Test("a writer killed between write and rename leaves the old file intact")
        func killBeforeRename() throws {
            let dir = makeTempDirectory("atomickill")
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let path = dir + "/model_final.pkl"
            try Files.writeAtomically(Array("good".utf8), to: path)
            var env = ProcessInfo.processInfo.environment
            env["SWIFTDETECTRON_TEST_PAUSE_BEFORE_RENAME"] = "30"
            var config = ProcessConfiguration(executable: probePath, arguments: ["atomic-write", path, "partial-new-content"], environment: env)
            config.standardOutput = .pipe
            let child = try Processes.spawn(config)
            let line = String(decoding: child.standardOutput!.availableData, as: UTF8.self)
            #expect(line.hasPrefix("paused"), "\(line)")
            child.send(.kill)
            #expect(child.wait(timeout: 5) == .signaled(.kill, coreDumped: false))
            #expect(try String(contentsOfFile: path, encoding: .utf8) == "good")
            // The killed writer's temporary file is cleaned up; a live writer's is kept.
            let live = ".other.tmp-\(getpid())-1"
            _ = FileManager.default.createFile(atPath: dir + "/" + live, contents: Data())
            let removed = Files.removeStaleTemporaries(in: dir)
            #expect(removed.count == 1 && removed[0].hasPrefix(".model_final.pkl.tmp-"), "\(removed)")
            #expect(try FileManager.default.contentsOfDirectory(atPath: dir).sorted() == [live, "model_final.pkl"])
        }

        @Test("the writability check names the path, the missing permission, and owner versus mode bits")
        func unwritableNamed() throws {
            let dir = makeTempDirectory("perm")
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let locked = dir + "/locked"
            try FileManager.default.createDirectory(atPath: locked, withIntermediateDirectories: false)
            chmod(locked, 0o555)
            if isRoot {
                // Root bypasses mode bits: check as nobody, in a child that drops its uid.
                let notOwned = try probe(["--as-nobody", "check-writable", locked])
                #expect(notOwned.status == .exited(code: 10), "\(notOwned.output)")
                #expect(notOwned.output.contains("cannot write to \(locked): you do not own it and its mode bits (555) deny you write permission"), "\(notOwned.output)")
                chown(locked, 65534, 65534)
                let owned = try probe(["--as-nobody", "check-writable", locked])
                #expect(owned.output.contains("you own it, but its mode bits (555) deny the owner write permission: chmod u+w \(locked)"), "\(owned.output)")
                let writable = try probe(["check-writable", locked])
                #expect(writable.output == "writable\n")
            } else {
                guard access(locked, W_OK) != 0 else {
                    print("skipped: this user can write a 0555 directory (CAP_DAC_OVERRIDE?)")
                    return
                }
                #expect(throws: FileAccessError.permissionDenied(path: locked, missing: "write", userOwnsIt: true, mode: "555")) {
                    try Files.checkWritableDirectory(locked)
                }
            }
            #expect(throws: FileAccessError.doesNotExist(path: dir + "/missing")) {
                try Files.checkWritableDirectory(dir + "/missing")
            }
        }

        @Test("an atomic write into an unwritable directory fails with the named error, not a crash")
        func atomicWriteUnwritable() throws {
            let dir = makeTempDirectory("permwrite")
            defer { try? FileManager.default.removeItem(atPath: dir) }
            chmod(dir, 0o555)
            let args = (isRoot ? ["--as-nobody"] : []) + ["atomic-write", dir + "/x.json", "{}"]
            let r = try probe(args)
            #expect(r.status == .exited(code: 9))
            #expect(r.output.contains("cannot write to \(dir)"), "\(r.output)")
        }

        @Test("makeDirectory creates parents, and names the ancestor that stops it and why")
        func makeDirectory() throws {
            let dir = makeTempDirectory("mkdir")
            defer { try? FileManager.default.removeItem(atPath: dir) }
            try Files.makeDirectory(dir + "/a/b/c")
            try Files.makeDirectory(dir + "/a/b/c")  // existing: fine
            #expect(Files.isWritableDirectory(dir + "/a/b/c"))
            _ = FileManager.default.createFile(atPath: dir + "/file", contents: Data())
            #expect(throws: FileAccessError.cannotCreate(path: dir + "/file/x/y", reason: .notADirectory(path: dir + "/file"))) {
                try Files.makeDirectory(dir + "/file/x/y")
            }
            #expect(FileAccessError.cannotCreate(path: "/o/x", reason: .readOnlyFileSystem(path: "/o")).description
                    == "cannot create /o/x: cannot write to /o: the file system is mounted read-only (choose an output directory on a writable mount)")
        }

        @Test("the temporary directory skips unwritable candidates")
        func temporaryDirectory() throws {
            #expect(try Files.temporaryDirectory(environment: ["TMPDIR": "/nonexistent"]) == "/tmp")
            let out = makeTempDirectory("tmpout")
            defer { try? FileManager.default.removeItem(atPath: out) }
            #expect(try Files.temporaryDirectory(environment: ["TMPDIR": out]) == out)
        }
    }
}

@Suite("CPU budget")
struct CPUBudgetTests {
    func fixture(_ files: [String: String]) -> String {
        let root = makeTempDirectory("cgroup")
        for (path, text) in files {
            let full = root + path
            try! FileManager.default.createDirectory(atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            _ = FileManager.default.createFile(atPath: full, contents: Data(text.utf8))
        }
        return root
    }

    @Test("cgroup v2 cpu.max quota rounds up and caps the thread count")
    func cgroupV2() {
        let root = fixture([
            "/proc/self/cgroup": "0::/docker/abc\n",
            "/sys/fs/cgroup/docker/abc/cpu.max": "150000 100000\n",
            "/sys/fs/cgroup/docker/cpu.max": "max 100000\n",
        ])
        defer { try? FileManager.default.removeItem(atPath: root) }
        let b = CPUBudget.detect(root: root, environment: [:], affinity: 8, online: 16)
        #expect(b.cgroupQuota == 1.5)
        #expect(b.threads == 2)
    }

    @Test("the tightest quota on the path wins")
    func cgroupV2Ancestor() {
        let root = fixture([
            "/proc/self/cgroup": "0::/a/b\n",
            "/sys/fs/cgroup/a/b/cpu.max": "400000 100000\n",
            "/sys/fs/cgroup/a/cpu.max": "100000 100000\n",
        ])
        defer { try? FileManager.default.removeItem(atPath: root) }
        #expect(CPUBudget.detect(root: root, environment: [:], affinity: 8, online: 8).threads == 1)
    }

    @Test("cgroup v1 cfs quota and period")
    func cgroupV1() {
        let root = fixture([
            "/proc/self/cgroup": "12:memory:/x\n4:cpu,cpuacct:/x\n",
            "/sys/fs/cgroup/cpu,cpuacct/x/cpu.cfs_quota_us": "300000\n",
            "/sys/fs/cgroup/cpu,cpuacct/x/cpu.cfs_period_us": "100000\n",
        ])
        defer { try? FileManager.default.removeItem(atPath: root) }
        let b = CPUBudget.detect(root: root, environment: [:], affinity: 8, online: 8)
        #expect(b.cgroupQuota == 3)
        #expect(b.threads == 3)
    }

    @Test("unlimited quota (-1, max) leaves the affinity mask in charge")
    func unlimited() {
        let root = fixture([
            "/proc/self/cgroup": "0::/\n",
            "/sys/fs/cgroup/cpu.max": "max 100000\n",
        ])
        defer { try? FileManager.default.removeItem(atPath: root) }
        let b = CPUBudget.detect(root: root, environment: [:], affinity: 3, online: 8)
        #expect(b.cgroupQuota == nil)
        #expect(b.threads == 3)
    }

    @Test("the environment variable, then a config value, override the decision")
    func overrides() {
        let root = fixture([:])
        defer { try? FileManager.default.removeItem(atPath: root) }
        #expect(CPUBudget.detect(root: root, environment: ["DETECTRON_NUM_THREADS": "5"], affinity: 2, online: 2).threads == 5)
        #expect(CPUBudget.detect(root: root, environment: ["DETECTRON_NUM_THREADS": "5"], affinity: 2, online: 2, override: 1).threads == 1)
        #expect(CPUBudget.detect(root: root, environment: ["DETECTRON_NUM_THREADS": "zero"], affinity: 2, online: 2).threads == 2)
    }

    @Test("the live affinity mask is counted")
    func liveAffinity() {
        let b = CPUBudget.detect()
        #expect(b.affinity >= 1 && b.affinity <= b.online)
        #expect(b.threads >= 1)
    }
}

@Suite("Host report")
struct HostReportTests {
    @Test("the report has every documented key and a verdict; JSON parses")
    func keys() throws {
        let out = makeTempDirectory("doctor")
        defer { try? FileManager.default.removeItem(atPath: out) }
        let report = HostReport.collect(outputDirectory: out)
        let keys = Set(report.facts.map(\.key))
        for k in ["kernel", "distribution", "glibc", "glibc.required", "cpu.model", "cpu.isa", "cores.online", "cores.affinity",
                  "cores.cgroup_quota", "cores.usable", "memory.total_mb", "memory.cgroup_limit_mb", "shm.dev_shm",
                  "shm.transport", "paths.temp", "paths.output", "paths.home", "user.root", "limits.nofile", "limits.nproc"] {
            #expect(keys.contains(k), "missing \(k)")
        }
        #expect(report.table().split(separator: "\n").last!.hasPrefix("verdict: "))
        let obj = try JSONSerialization.jsonObject(with: Data(report.json().utf8)) as? [String: Any]
        #expect(obj?["ready"] as? Bool == report.ready)
    }

    @Test("the glibc versions this executable needs are read from its ELF header, as objdump -T shows them")
    func glibcNeeds() throws {
        let needs = try #require(ELFVersions.needs())
        #expect(needs.contains(ELFVersions.Need(library: "libc.so.6", version: "GLIBC_2.2.5")), "\(needs)")
        let newest = try #require(ELFVersions.newestGlibc(needs))
        let host = try #require(HostReport.collect().facts.first { $0.key == "glibc" }?.value)
        #expect(ELFVersions.glibc(host, satisfies: newest))
        #expect(HostReport.collect().facts.first { $0.key == "glibc.required" }?.value == "\(newest) (host \(host))")
        #expect(ELFVersions.newestGlibc([.init(library: "libc.so.6", version: "GLIBC_2.9"), .init(library: "libc.so.6", version: "GLIBC_2.28"),
                                         .init(library: "libm.so.6", version: "GLIBC_2.27")]) == "2.28")
        #expect(ELFVersions.glibc("2.31", satisfies: "2.28") && !ELFVersions.glibc("2.27", satisfies: "2.28") && ELFVersions.glibc("2.28", satisfies: "2.28"))
        #expect(ELFVersions.needs(of: "/etc/hostname") == nil)
    }

    @Test("a TMPDIR that cannot be used is reported with the reason, and another directory is chosen")
    func unusableTMPDIR() throws {
        let report = HostReport.collect(environment: ["TMPDIR": "/nonexistent/tmp"])
        let fact = try #require(report.facts.first { $0.key == "paths.temp" })
        #expect(fact.status == .warning)
        #expect(fact.value == "/tmp (writable; TMPDIR: /nonexistent/tmp does not exist (create it, or choose another directory))", "\(fact.value)")
        let fine = try #require(HostReport.collect(environment: ["TMPDIR": "/tmp"]).facts.first { $0.key == "paths.temp" })
        #expect(fine.status == .ok && fine.value == "/tmp (writable)")
    }

    @Test("an unwritable output directory makes the verdict fail, naming it")
    func missingCapability() {
        let report = HostReport.collect(outputDirectory: "/proc/sd-not-writable")
        #expect(!report.ready)
        #expect(report.verdict.contains("output directory"))
    }
}

import BLAS
import Foundation
import Glibc
import Portability
import Testing

@Suite("Host limits")
struct HostTests {
    @Test("executables start OpenBLAS with one thread unless the environment chooses")
    func blasSingleThreadedAtLoad() throws {
        // This test bundle is such an executable.
        let env = ProcessInfo.processInfo.environment
        if env["SWIFTDETECTRON_BLAS_PREINIT"] == "1" {
            #expect(BLAS.singleThreadedAtLoad)
            #expect(env["OPENBLAS_NUM_THREADS"] == "1")
        } else {
            #expect(!BLAS.singleThreadedAtLoad)
            #expect(env["OPENBLAS_NUM_THREADS"] != nil || env["GOTO_NUM_THREADS"] != nil || env["OMP_NUM_THREADS"] != nil)
        }
        let r = try Processes.run(ProcessConfiguration(executable: detectronExecutable, arguments: ["doctor"],
                                                       environment: env.filter { !$0.key.hasSuffix("NUM_THREADS") && !$0.key.hasPrefix("SWIFTDETECTRON_BLAS") }),
                                  timeout: 60)
        #expect(r.output.contains("BLAS threads             1 at load"), "\(r.output)")
    }

    @Test("detectron runs under ulimit -u 1: OpenBLAS does not kill it at load, workers fall back (as nobody: root is exempt)")
    func lowProcessLimit() throws {
        guard geteuid() == 0, let runuser = try? Processes.resolveExecutable("runuser"),
              let prlimit = try? Processes.resolveExecutable("prlimit") else {
            print("skipped: needs root, runuser and prlimit; ci/matrix's nproc-low leg covers other hosts")
            return
        }
        var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasSuffix("NUM_THREADS") && !$0.key.hasPrefix("SWIFTDETECTRON_BLAS") }
        // LeakSanitizer's exit check needs a thread of its own, which ulimit -u 1 forbids.
        env["ASAN_OPTIONS"] = (env["ASAN_OPTIONS"].map { $0 + ":" } ?? "") + "detect_leaks=0"
        let r = try Processes.run(ProcessConfiguration(executable: runuser,
                                                       arguments: ["-u", "nobody", "--", prlimit, "--nproc=1:1", "--", detectronExecutable, "doctor"],
                                                       environment: env), timeout: 60)
        #expect(r.status.isSuccess, "\(r.output) \(r.error)")
        #expect(!r.error.contains("blas_thread_init"), "\(r.error)")
        #expect(r.output.contains("per-user process limit is reached (ulimit -u is 1)"), "\(r.output)")
    }
}

import ArgumentParser
import BLAS
import Foundation
import Imaging
import Portability

/// `detectron doctor`: what this host offers, and whether it is enough.
struct Doctor: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Report the host's facts (cores, memory, /dev/shm, limits, BLAS, JPEG, workers) and a verdict.",
        discussion: "Exits non-zero when a required capability is missing. --json prints one JSON object instead of the table."
    )

    @Flag(help: "Print one JSON object instead of the table.")
    var json = false

    @Option(help: "An output directory to check for writability (created if missing).")
    var outputDir: String?

    func run() throws {
        let report = Self.report(outputDirectory: outputDir)
        print(json ? report.json() : report.table())
        if !report.ready { throw ExitCode(1) }
    }

    static func report(outputDirectory: String?) -> HostReport {
        var report = HostReport.collect(outputDirectory: outputDirectory) {
            Result { () throws(SpawnError) in
                let child = try WorkerGuard.spawnWorker(role: WorkerRoles.doctorProbe)
                guard let status = child.wait(timeout: 10) else {
                    child.terminate(grace: 1)
                    throw SpawnError.timedOut(pid: child.pid, seconds: 10)
                }
                guard status.isSuccess else {
                    throw SpawnError.system(call: "worker probe \(status)", errno: 0, path: child.executable)
                }
            }
        }
        report.facts.append(HostFact("blas.core", "BLAS core type", "OpenBLAS \(BLAS.coreName)", .ok))
        report.facts.append(HostFact("blas.gemm", "GEMM", BLAS.gemmKernel == .native
            ? "native AVX-512 kernel (SD_GEMM=openblas chooses OpenBLAS's)"
            : "OpenBLAS \(BLAS.coreName)", .ok))
        let coreType = ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"]
        let avx512 = report.facts.first { $0.key == "cpu.isa" }?.value.contains("avx512f") ?? false
        let avx2Kernels: Set<String> = ["haswell", "zen", "sandybridge", "nehalem", "core2", "penryn", "dunnington", "atom", "prescott"]
        if let coreType, avx512, BLAS.gemmKernel == .openblas, avx2Kernels.contains(coreType.lowercased()) {
            // Measured here (docs/benchmarks.md): R-50-FPN inference 1.80 s with Haswell kernels, 1.25 s with AVX-512 ones.
            report.facts.append(HostFact("blas.coretype_env", "OPENBLAS_CORETYPE",
                                         "\(coreType): forces pre-AVX-512 kernels on this AVX-512 CPU; unset it to let OpenBLAS choose "
                                         + "(R-50-FPN inference was 1.4× faster that way on our test host)", .warning))
        } else {
            report.facts.append(HostFact("blas.coretype_env", "OPENBLAS_CORETYPE", coreType ?? "unset (OpenBLAS detects the CPU)"))
        }
        // Reported, not changed: starting OpenBLAS threads here could fail under a low process limit.
        report.facts.append(HostFact("blas.threads", "BLAS threads", BLAS.singleThreadedAtLoad
            ? "1 at load (the engine splits GEMMs across its own pool; OPENBLAS_NUM_THREADS overrides)"
            : "\(BLAS.threadCount) (from the environment)", .ok))
        report.facts.append(HostFact("jpeg.version", "JPEG library", JPEG.libraryVersion, .ok))
        report.facts.append(HostFact("png.version", "PNG library", PNG.libraryVersion, .ok))
        return report
    }
}

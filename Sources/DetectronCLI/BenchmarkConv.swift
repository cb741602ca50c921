import ArgumentParser
import BLAS
import Foundation
import Operators
import Portability
import Storage

/// `detectron benchmark-conv`: GFLOP/s of ResNet-50's convolutions against the machine's sgemm.
struct BenchmarkConv: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "benchmark-conv",
        abstract: "Time the ResNet-50 convolution shapes (Conv op, im2col + sgemm) and compare with sgemm's peak.",
        discussion: "Input is the padded blob of a TEST.SCALE 500 / MAX_SIZE 833 image (512×864 by default). Prints a Markdown table; use a release build."
    )

    @Option(help: "Padded input height.") var height = 512
    @Option(help: "Padded input width.") var width = 864
    @Option(help: "Threads (default: the usable cores).") var threads: Int?
    @Option(help: "Timed runs per shape (the median is reported).") var runs = 5

    struct Shape {
        var name: String
        var cin: Int, cout: Int, k: Int, stride: Int, scale: Int
        /// How many convolutions of ResNet-50 have this shape.
        var count: Int
    }

    /// R-50 with Detectron's MSRA blocks (stride on the 1×1); `scale` is the input's stride.
    static let shapes: [Shape] = [
        Shape(name: "conv1 7×7/2", cin: 3, cout: 64, k: 7, stride: 2, scale: 1, count: 1),
        Shape(name: "res2 1×1 64→64", cin: 64, cout: 64, k: 1, stride: 1, scale: 4, count: 1),
        Shape(name: "res2 1×1 256→64", cin: 256, cout: 64, k: 1, stride: 1, scale: 4, count: 2),
        Shape(name: "res2 3×3 64", cin: 64, cout: 64, k: 3, stride: 1, scale: 4, count: 3),
        Shape(name: "res2 1×1 64→256", cin: 64, cout: 256, k: 1, stride: 1, scale: 4, count: 4),
        Shape(name: "res3 1×1/2 256→128", cin: 256, cout: 128, k: 1, stride: 2, scale: 4, count: 1),
        Shape(name: "res3 1×1/2 256→512 (branch1)", cin: 256, cout: 512, k: 1, stride: 2, scale: 4, count: 1),
        Shape(name: "res3 1×1 512→128", cin: 512, cout: 128, k: 1, stride: 1, scale: 8, count: 3),
        Shape(name: "res3 3×3 128", cin: 128, cout: 128, k: 3, stride: 1, scale: 8, count: 4),
        Shape(name: "res3 1×1 128→512", cin: 128, cout: 512, k: 1, stride: 1, scale: 8, count: 4),
        Shape(name: "res4 1×1/2 512→256", cin: 512, cout: 256, k: 1, stride: 2, scale: 8, count: 1),
        Shape(name: "res4 1×1/2 512→1024 (branch1)", cin: 512, cout: 1024, k: 1, stride: 2, scale: 8, count: 1),
        Shape(name: "res4 1×1 1024→256", cin: 1024, cout: 256, k: 1, stride: 1, scale: 16, count: 5),
        Shape(name: "res4 3×3 256", cin: 256, cout: 256, k: 3, stride: 1, scale: 16, count: 6),
        Shape(name: "res4 1×1 256→1024", cin: 256, cout: 1024, k: 1, stride: 1, scale: 16, count: 6),
        Shape(name: "res5 1×1/2 1024→512", cin: 1024, cout: 512, k: 1, stride: 2, scale: 16, count: 1),
        Shape(name: "res5 1×1/2 1024→2048 (branch1)", cin: 1024, cout: 2048, k: 1, stride: 2, scale: 16, count: 1),
        Shape(name: "res5 1×1 2048→512", cin: 2048, cout: 512, k: 1, stride: 1, scale: 32, count: 2),
        Shape(name: "res5 3×3 512", cin: 512, cout: 512, k: 3, stride: 1, scale: 32, count: 3),
        Shape(name: "res5 1×1 512→2048", cin: 512, cout: 2048, k: 1, stride: 1, scale: 32, count: 3),
    ]

    static func median(_ xs: [Double]) -> Double { xs.sorted()[xs.count / 2] }

    static func time(runs: Int, _ body: () throws -> Void) rethrows -> Double {
        try body()  // warm-up
        var times: [Double] = []
        for _ in 0..<runs {
            let t0 = DispatchTime.now().uptimeNanoseconds
            try body()
            times.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
        }
        return median(times)
    }

    func run() throws {
        let budget = CPUBudget.detect(override: threads)
        // As the engine runs: single-threaded sgemm calls, split across its own pool.
        BLAS.threadCount = 1
        let pool = ThreadPool(threadCount: budget.threads - 1, name: "sd-bench")
        // The reference: a large square sgemm, its columns split across the threads.
        let n = 2048, parts = budget.threads
        let a = [Float](repeating: 0.5, count: n * n), b = [Float](repeating: 0.25, count: n * n)
        var c = [Float](repeating: 0, count: n * n)
        let gemmTime = a.withUnsafeBufferPointer { a in
            b.withUnsafeBufferPointer { b in
                c.withUnsafeMutableBufferPointer { c in
                    let (a, b, c) = (a.baseAddress!, b.baseAddress!, c.baseAddress!)
                    return Self.time(runs: runs) {
                        pool.parallelFor(parts) { p in
                            let j0 = n * p / parts, j1 = n * (p + 1) / parts
                            BLAS.sgemm(.none, .none, m: n, n: j1 - j0, k: n, a: a, lda: n, b: b + j0, ldb: n, c: c + j0, ldc: n)
                        }
                    }
                }
            }
        }
        let peak = 2 * Double(n * n * n) / gemmTime / 1e9
        let kernel = BLAS.gemmKernel == .native ? "our AVX-512 kernel" : "OpenBLAS \(BLAS.coreName)"
        print("sgemm \(n)³: \(String(format: "%.1f", peak)) GFLOP/s on \(budget.threads) thread(s) (\(kernel))")
        print("")
        print("| layer | input | count | GFLOP (each) | median ms | GFLOP/s | % of sgemm |")
        print("|---|---|---:|---:|---:|---:|---:|")
        let ctx = CPUContext()
        var totalFlop = 0.0, totalTime = 0.0
        for s in Self.shapes {
            let ws = Workspace(context: ctx)
            let h = height / s.scale, w = width / s.scale
            ws.feedBlob("x", try Tensor([Float](repeating: 0.1, count: s.cin * h * w), shape: [1, s.cin, h, w], context: ctx))
            ws.feedBlob("w", try Tensor([Float](repeating: 0.01, count: s.cout * s.cin * s.k * s.k), shape: [s.cout, s.cin, s.k, s.k], context: ctx))
            let net = try Net(NetDef(name: s.name, ops: [OperatorDef("Conv", inputs: ["x", "w"], outputs: ["y"],
                                                                    arguments: ["kernel": .int(s.k), "stride": .int(s.stride), "pad": .int(s.k / 2)])]),
                              workspace: ws, pool: pool)
            let seconds = try Self.time(runs: runs) { try net.run() }
            let y = try ws.fetchBlob("y")
            let flop = 2 * Double(y.count) * Double(s.cin * s.k * s.k)
            totalFlop += flop * Double(s.count)
            totalTime += seconds * Double(s.count)
            let rate = flop / seconds / 1e9
            print("| \(s.name) | \(s.cin)×\(h)×\(w) | \(s.count) | \(String(format: "%.2f", flop / 1e9)) | \(String(format: "%.2f", seconds * 1000)) | \(String(format: "%.1f", rate)) | \(String(format: "%.0f", 100 * rate / peak)) |")
        }
        let overall = totalFlop / totalTime / 1e9
        print("| **all 53 convolutions** | | 53 | \(String(format: "%.1f", totalFlop / 1e9)) total | \(String(format: "%.1f", totalTime * 1000)) | \(String(format: "%.1f", overall)) | \(String(format: "%.0f", 100 * overall / peak)) |")
    }
}

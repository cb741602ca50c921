import BLAS
import CKernels
import Portability
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Row-major naive reference in double precision.
func referenceGEMM(_ ta: Transpose, _ tb: Transpose, m: Int, n: Int, k: Int, alpha: Float,
                   a: [Float], lda: Int, b: [Float], ldb: Int, beta: Float, c: [Float], ldc: Int) -> [Float] {
    var out = c
    for i in 0..<m {
        for j in 0..<n {
            var acc = 0.0
            for p in 0..<k {
                let av = ta == .none ? a[i * lda + p] : a[p * lda + i]
                let bv = tb == .none ? b[p * ldb + j] : b[j * ldb + p]
                acc += Double(av) * Double(bv)
            }
            out[i * ldc + j] = Float(Double(alpha) * acc + Double(beta) * Double(c[i * ldc + j]))
        }
    }
    return out
}

struct GEMMCase: CustomTestStringConvertible, Sendable {
    let m: Int, n: Int, k: Int
    let ta: Transpose, tb: Transpose
    let alpha: Float, beta: Float
    let pad: Int
    var testDescription: String { "m\(m) n\(n) k\(k) \(ta == .none ? "N" : "T")\(tb == .none ? "N" : "T") α\(alpha) β\(beta) pad\(pad)" }
}

let gemmCases: [GEMMCase] = {
    var out: [GEMMCase] = []
    let shapes = [(1, 1, 1), (3, 5, 7), (17, 1, 33), (64, 31, 9), (1, 129, 65), (100, 67, 3)]
    for (m, n, k) in shapes {
        for ta in [Transpose.none, .transpose] {
            for tb in [Transpose.none, .transpose] {
                out.append(GEMMCase(m: m, n: n, k: k, ta: ta, tb: tb, alpha: 1, beta: 0, pad: 0))
            }
        }
        out.append(GEMMCase(m: m, n: n, k: k, ta: .none, tb: .transpose, alpha: -0.5, beta: 2, pad: 3))
    }
    // Past the native kernel's blocks (12 rows, 32 columns, 256 along k, 512 columns per block).
    for (m, n, k) in [(13, 545, 300), (30, 40, 513), (25, 1030, 7)] {
        for ta in [Transpose.none, .transpose] {
            for tb in [Transpose.none, .transpose] {
                out.append(GEMMCase(m: m, n: n, k: k, ta: ta, tb: tb, alpha: 1, beta: 0, pad: 0))
                out.append(GEMMCase(m: m, n: n, k: k, ta: ta, tb: tb, alpha: 0.75, beta: -1.5, pad: 5))
            }
        }
    }
    return out
}()

@Suite("BLAS")
struct GEMMTests {
    @Test("sgemm equals the naive reference on odd shapes, transposes and strides", arguments: gemmCases)
    func sgemm(_ t: GEMMCase) {
        var rng = SplitMix64(seed: UInt64(t.m * 1000 + t.n * 10 + t.k))
        let aRows = t.ta == .none ? t.m : t.k, aCols = t.ta == .none ? t.k : t.m
        let bRows = t.tb == .none ? t.k : t.n, bCols = t.tb == .none ? t.n : t.k
        let lda = aCols + t.pad, ldb = bCols + t.pad, ldc = t.n + t.pad
        let a = (0..<(aRows * lda)).map { _ in rng.nextFloat() }
        let b = (0..<(bRows * ldb)).map { _ in rng.nextFloat() }
        var c = (0..<(t.m * ldc)).map { _ in rng.nextFloat() }
        let expected = referenceGEMM(t.ta, t.tb, m: t.m, n: t.n, k: t.k, alpha: t.alpha, a: a, lda: lda, b: b, ldb: ldb, beta: t.beta, c: c, ldc: ldc)
        BLAS.sgemm(t.ta, t.tb, m: t.m, n: t.n, k: t.k, alpha: t.alpha, a: a, lda: lda, b: b, ldb: ldb, beta: t.beta, c: &c, ldc: ldc)
        let worst = zip(c, expected).map { abs($0 - $1) / max(1, abs($1)) }.max() ?? 0
        #expect(worst < 1e-5, "max relative error \(worst)")
    }

    @Test("sgemv, saxpy, sscal and sdot equal their references")
    func level1and2() {
        let a: [Float] = [1, 2, 3, 4, 5, 6]  // 2×3
        let x: [Float] = [1, -1, 2]
        var y: [Float] = [10, 20]
        BLAS.sgemv(.none, m: 2, n: 3, alpha: 1, a: a, x: x, beta: 1, y: &y)
        let expected: [Float] = [15, 31]  // 10 + (1 - 2 + 6), 20 + (4 - 5 + 12)
        #expect(y == expected)
        var yt: [Float] = [0, 0, 0]
        BLAS.sgemv(.transpose, m: 2, n: 3, a: a, x: [1, 1], y: &yt)
        #expect(yt == [5, 7, 9])
        var z: [Float] = [1, 1, 1]
        BLAS.saxpy(count: 3, alpha: 2, x: x, y: &z)
        #expect(z == [3, -1, 5])
        BLAS.sscal(count: 3, alpha: -1, x: &z)
        #expect(z == [-3, 1, -5])
        #expect(BLAS.sdot(count: 3, x: x, y: [1, 2, 3]) == 5)
    }

    @Test("the thread count is under our control")
    func threads() {
        let before = BLAS.threadCount
        BLAS.threadCount = 1
        #expect(BLAS.threadCount == 1)
        BLAS.threadCount = before
        #expect(BLAS.threadCount == before)
        #expect(!BLAS.coreName.isEmpty)
    }
}

@Suite("Native AVX-512 sgemm", .enabled(if: sd_sgemm_available() == 1, "the CPU has no AVX-512F"))
struct NativeGEMMTests {
    static func random(_ count: Int, seed: UInt64) -> [Float] {
        var rng = SplitMix64(seed: seed)
        return (0..<count).map { _ in rng.nextFloat() }
    }

    static func native(_ ta: Int32, _ tb: Int32, m: Int, n: Int, k: Int, alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
                       b: UnsafePointer<Float>, ldb: Int, beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int) {
        let status = sd_sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
        #expect(status == 0)
    }

    @Test("BLAS.sgemm uses it here unless SD_GEMM=openblas")
    func selected() {
        #expect(BLAS.gemmKernel == (getenv("SD_GEMM").map { String(cString: $0) } == "openblas" ? .openblas : .native))
    }

    @Test("beta 0 never reads C: NaN and infinity there do not leak into the result")
    func betaZeroIgnoresC() {
        let m = 14, n = 40, k = 9
        let a = Self.random(m * k, seed: 1), b = Self.random(k * n, seed: 2)
        var c = [Float](repeating: .nan, count: m * n)
        c[3] = .infinity
        Self.native(0, 0, m: m, n: n, k: k, a: a, lda: k, b: b, ldb: n, c: &c, ldc: n)
        let expected = referenceGEMM(.none, .none, m: m, n: n, k: k, alpha: 1, a: a, lda: k, b: b, ldb: n, beta: 0,
                                     c: [Float](repeating: 0, count: m * n), ldc: n)
        #expect(c.allSatisfy { $0.isFinite })
        #expect(zip(c, expected).allSatisfy { abs($0 - $1) < 1e-5 })
    }

    @Test("splitting C into row or column blocks (as the engine's threads do) gives bitwise the same result")
    func splitInvariant() {
        let m = 37, n = 700, k = 600
        let a = Self.random(m * k, seed: 3), b = Self.random(k * n, seed: 4)
        var whole = [Float](repeating: 0, count: m * n)
        Self.native(0, 0, m: m, n: n, k: k, a: a, lda: k, b: b, ldb: n, c: &whole, ldc: n)
        var byColumns = [Float](repeating: 0, count: m * n), byRows = [Float](repeating: 0, count: m * n)
        a.withUnsafeBufferPointer { a in
            b.withUnsafeBufferPointer { b in
                byColumns.withUnsafeMutableBufferPointer { c in
                    for (j0, j1) in [(0, 333), (333, 700)] {
                        Self.native(0, 0, m: m, n: j1 - j0, k: k, a: a.baseAddress!, lda: k, b: b.baseAddress! + j0, ldb: n,
                                    c: c.baseAddress! + j0, ldc: n)
                    }
                }
                byRows.withUnsafeMutableBufferPointer { c in
                    for (i0, i1) in [(0, 19), (19, 37)] {
                        Self.native(0, 0, m: i1 - i0, n: n, k: k, a: a.baseAddress! + i0 * k, lda: k, b: b.baseAddress!, ldb: n,
                                    c: c.baseAddress! + i0 * n, ldc: n)
                    }
                }
            }
        }
        #expect(byColumns == whole)
        #expect(byRows == whole)
    }

    @Test("the epilogue in the kernel's last pass equals the same steps applied after the GEMM, bitwise",
          arguments: [(true, false, false, false), (false, true, false, true), (true, true, true, true), (false, false, true, false)])
    func epilogue(_ bias: Bool, _ affine: Bool, _ residual: Bool, _ relu: Bool) {
        let m = 37, n = 700, k = 600, ldc = 710, ldr = 705  // three blocks along k, edge panels, padded rows
        let a = Self.random(m * k, seed: 5), b = Self.random(k * n, seed: 6)
        let bv = Self.random(m, seed: 7), sv = Self.random(m, seed: 8), tv = Self.random(m, seed: 9), rv = Self.random(m * ldr, seed: 10)
        var plain = [Float](repeating: 0, count: m * ldc), fused = plain
        Self.native(0, 0, m: m, n: n, k: k, a: a, lda: k, b: b, ldb: n, c: &plain, ldc: ldc)
        for i in 0..<m {
            for j in 0..<n {
                var v = plain[i * ldc + j]
                if bias { v += bv[i] }
                if affine { v = v * sv[i] + tv[i] }
                if residual { v = (0 + v) + rv[i * ldr + j] }
                if relu { v = v > 0 ? v : 0 }
                plain[i * ldc + j] = v
            }
        }
        bv.withUnsafeBufferPointer { bp in
            sv.withUnsafeBufferPointer { sp in
                tv.withUnsafeBufferPointer { tp in
                    rv.withUnsafeBufferPointer { rp in
                        var e = sd_epilogue(bias: bias ? bp.baseAddress : nil, scale: affine ? sp.baseAddress : nil, shift: affine ? tp.baseAddress : nil,
                                            residual: residual ? rp.baseAddress : nil, ldr: ldr, relu: relu ? 1 : 0)
                        #expect(sd_sgemm_epilogue(0, 0, m, n, k, 1, a, k, b, n, 0, &fused, ldc, &e) == 0)
                    }
                }
            }
        }
        #expect(fused.map(\.bitPattern) == plain.map(\.bitPattern))
        #expect(!relu || (plain.contains(0) && plain.contains { $0 > 0 }))
    }
}

extension SplitMix64 {
    /// Uniform in [-1, 1).
    mutating func nextFloat() -> Float { Float(unit() * 2 - 1) }
}

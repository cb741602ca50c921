import BLAS
import Portability
import Testing

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

extension SplitMix64 {
    /// Uniform in [-1, 1).
    mutating func nextFloat() -> Float { Float(unit() * 2 - 1) }
}

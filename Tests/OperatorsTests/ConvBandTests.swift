import Foundation
@testable import Operators
import Portability
import Storage
import Testing

@Suite("Conv in bands of output rows")
struct ConvBandTests {
    /// A 3×3 pad-1 conv whose columns (36 × 58,300 per output row) exceed one band, so every
    /// output row is its own band: forward, dW, db and dX against direct loops, with a pool.
    @Test("Conv and ConvGradient give the direct results when the columns are cut into bands")
    func bands() throws {
        let (c, h, w, m) = (4, 5, 58_300, 3)
        #expect(c * 9 * w > ConvOp.bandFloats, "the test must cut the columns into several bands")
        var rng = TestRNG(7)
        let x = rng.array(c * h * w), wt = rng.array(m * c * 9), b = rng.array(m), dy = rng.array(m * h * w)
        let ctx = CPUContext()
        let ws = Workspace(context: ctx)
        ws.feedBlob("x", try Tensor(x, shape: [1, c, h, w], context: ctx))
        ws.feedBlob("w", try Tensor(wt, shape: [m, c, 3, 3], context: ctx))
        ws.feedBlob("b", try Tensor(b, shape: [m], context: ctx))
        ws.feedBlob("dy", try Tensor(dy, shape: [1, m, h, w], context: ctx))
        var def = NetDef(name: "bands", externalInputs: ["x", "w", "b", "dy"])
        def.add("Conv", ["x", "w", "b"], ["y"], ["kernel": .int(3), "pad": .int(1)])
        def.add("ConvGradient", ["x", "w", "dy"], ["dw", "db", "dx"], ["kernel": .int(3), "pad": .int(1)])
        let pool = ThreadPool(threadCount: 1, name: "bands")
        try Net(def, workspace: ws, pool: pool).run()
        func at(_ ci: Int, _ yy: Int, _ xx: Int) -> Float { yy < 0 || yy >= h || xx < 0 || xx >= w ? 0 : x[(ci * h + yy) * w + xx] }
        var y = [Float](repeating: 0, count: m * h * w), dw = [Float](repeating: 0, count: m * c * 9)
        var dx = [Float](repeating: 0, count: c * h * w)
        for o in 0..<m {
            for oy in 0..<h {
                for ox in 0..<w {
                    var acc = b[o]
                    let g = dy[(o * h + oy) * w + ox]
                    for ci in 0..<c {
                        for ki in 0..<3 {
                            for kj in 0..<3 {
                                let wi = ((o * c + ci) * 3 + ki) * 3 + kj
                                let (iy, ix) = (oy + ki - 1, ox + kj - 1)
                                acc += wt[wi] * at(ci, iy, ix)
                                dw[wi] += g * at(ci, iy, ix)
                                if iy >= 0 && iy < h && ix >= 0 && ix < w { dx[(ci * h + iy) * w + ix] += g * wt[wi] }
                            }
                        }
                    }
                    y[(o * h + oy) * w + ox] = acc
                }
            }
        }
        let db = (0..<m).map { o in (0..<(h * w)).reduce(Float(0)) { $0 + dy[o * h * w + $1] } }
        func worst(_ blob: String, _ expected: [Float]) throws -> Float {
            let got = try ws.fetchBlob(blob).toArray(as: Float.self)
            return zip(got, expected).map { abs($0 - $1) / max(1, abs($1)) }.max() ?? .infinity
        }
        #expect(try worst("y", y) < 1e-4)
        #expect(try worst("dx", dx) < 1e-4)
        #expect(try worst("dw", dw) < 1e-3)
        #expect(try worst("db", db) < 1e-3)
    }
}

import CKernels
import Foundation
@testable import Operators
import Portability
import Storage
import Testing

@Suite("Conv in bands of output rows")
struct ConvBandTests {
    /// A 3×3 pad-1 conv whose columns (36 × 58,300 per output row) exceed one band, so every
    /// output row is its own band: forward, dW, db and dX against direct loops, with a pool (each
    /// thread its own bands) and without (one band after another).
    @Test("Conv and ConvGradient give the direct results when the columns are cut into bands", arguments: [true, false])
    func bands(withPool: Bool) throws {
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
        try Net(def, workspace: ws, pool: withPool ? ThreadPool(threadCount: 1, name: "bands") : nil).run()
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

@Suite("Winograd F(2×2, 3×3) and F(4×4, 3×3) convolution")
struct WinogradTests {
    /// Runs Conv with `algo` on x and returns y.
    func conv(_ algo: String, x: [Float], xShape: [Int], w: [Float], wShape: [Int], b: [Float], pad: [String: ArgumentValue]) throws -> [Float] {
        let ctx = CPUContext()
        let ws = Workspace(context: ctx)
        ws.feedBlob("x", try Tensor(x, shape: xShape, context: ctx))
        ws.feedBlob("w", try Tensor(w, shape: wShape, context: ctx))
        ws.feedBlob("b", try Tensor(b, shape: [wShape[0]], context: ctx))
        var def = NetDef(name: "w", externalInputs: ["x", "w", "b"])
        def.add("Conv", ["x", "w", "b"], ["y"], pad.merging(["kernel": .int(3), "algo": .string(algo)]) { a, _ in a })
        try Net(def, workspace: ws, pool: ThreadPool(threadCount: 1, name: "wino")).run()
        return try ws.fetchBlob("y").toArray(as: Float.self)
    }

    static let shapes: [([Int], Int, [String: ArgumentValue])] = [
        ([2, 5, 7, 9], 6, ["pad": .int(1)]), ([1, 3, 8, 8], 4, ["pad": .int(0)]),
        ([1, 4, 6, 11], 3, ["pad_t": .int(2), "pad_l": .int(0), "pad_b": .int(1), "pad_r": .int(2)]),
        ([1, 2, 3, 1], 2, ["pad": .int(1)]), ([1, 17, 37, 70], 5, ["pad": .int(1)]), ([1, 32, 60, 700], 32, ["pad": .int(1)]),
        ([60, 64, 14, 14], 64, ["pad": .int(1)]),  // RoI features: bands of whole images, two bands for F(4×4)
    ]

    @Test("equals im2col (≤ 1e-5 relative for F(2×2), ≤ 3e-5 for F(4×4)) on odd sizes, paddings, several images and bands",
          arguments: ["winograd_f2", "winograd_f4"], shapes)
    func matchesIm2col(_ algo: String, _ shape: ([Int], Int, [String: ArgumentValue])) throws {
        let (xShape, k, pad) = shape
        var rng = TestRNG(UInt64(xShape.reduce(k, *)))
        let x = rng.array(xShape.reduce(1, *)), w = rng.array(k * xShape[1] * 9), b = rng.array(k)
        let wShape = [k, xShape[1], 3, 3]
        let direct = try conv("im2col", x: x, xShape: xShape, w: w, wShape: wShape, b: b, pad: pad)
        let fast = try conv(algo, x: x, xShape: xShape, w: w, wShape: wShape, b: b, pad: pad)
        #expect(direct.count == fast.count)
        let scale = direct.map(abs).max() ?? 1
        let worst = zip(direct, fast).map { abs($0 - $1) }.max() ?? .infinity
        #expect(worst <= (algo == "winograd_f2" ? 1e-5 : 3e-5) * max(1, scale), "worst difference \(worst), largest value \(scale)")
    }

    @Test("a band of several small images gives each image the result it has alone, bitwise", arguments: ["winograd_f2", "winograd_f4"])
    func bandsOfImages(_ algo: String) throws {
        let (n, c, k) = (60, 64, 64)
        var rng = TestRNG(7)
        let x = rng.array(n * c * 14 * 14), w = rng.array(k * c * 9), b = rng.array(k)
        let all = try conv(algo, x: x, xShape: [n, c, 14, 14], w: w, wShape: [k, c, 3, 3], b: b, pad: ["pad": .int(1)])
        for i in [0, 1, 55, 56, 59] {
            let one = try conv(algo, x: Array(x[(i * c * 196)..<((i + 1) * c * 196)]), xShape: [1, c, 14, 14], w: w, wShape: [k, c, 3, 3],
                               b: b, pad: ["pad": .int(1)])
            #expect(one.map(\.bitPattern) == all[(i * k * 196)..<((i + 1) * k * 196)].map(\.bitPattern), "image \(i)")
        }
    }

    @Test("F(4×4)'s C transforms: the AVX-512 build (where it runs) and the baseline build agree bitwise", arguments: [37, 70])
    func kernelsAgree(width: Int) {
        var rng = TestRNG(UInt64(width))
        let (h, w) = (13, width), (ho, wo) = (h, w), th = (ho + 3) / 4, tw = (wo + 3) / 4, t = th * tw
        let plane = rng.array(h * w), m = rng.array(36 * t), filters = rng.array(9 * 21)
        func both(_ count: Int, _ run: (UnsafeMutablePointer<Float>, Bool) -> Void) -> ([Float], [Float]) {
            var a = [Float](repeating: .nan, count: count), b = a
            a.withUnsafeMutableBufferPointer { run($0.baseAddress!, false) }
            b.withUnsafeMutableBufferPointer { run($0.baseAddress!, true) }
            return (a, b)
        }
        let (v, vg) = both(36 * t) { out, generic in
            (generic ? sd_winograd_f4_input_generic : sd_winograd_f4_input)(plane, h, w, 0, th, tw, 1, 1, out, t)
        }
        let (y, yg) = both(ho * wo) { out, generic in
            (generic ? sd_winograd_f4_output_generic : sd_winograd_f4_output)(m, t, 0, th, tw, out, ho, wo)
        }
        let (u, ug) = both(36 * 21) { out, generic in
            (generic ? sd_winograd_f4_filters_generic : sd_winograd_f4_filters)(filters, 21, 0, 21, out)
        }
        for (name, (a, b)) in [("input", (v, vg)), ("output", (y, yg)), ("filters", (u, ug))] {
            #expect(a.map(\.bitPattern) == b.map(\.bitPattern), "\(name) transforms differ")
            #expect(!a.contains { $0.isNaN }, "\(name) left values unwritten")
        }
    }

    @Test("algo winograd picks F(4×4) for many tiles and channels, F(2×2) for many tiles, else im2col")
    func choice() throws {
        var def = NetDef(name: "w", externalInputs: ["x", "w"])
        def.add("Conv", ["x", "w"], ["y"], ["kernel": .int(3), "pad": .int(1), "algo": .string("winograd")])
        let ws = Workspace(context: CPUContext())
        let op = try #require(try Net(def, workspace: ws).ops.first as? ConvOp)
        func chosen(_ c: Int, _ ho: Int, _ wo: Int, n: Int = 1) -> ObjectIdentifier? {
            op.choose(n: n, c: c, ho: ho, wo: wo).map { ObjectIdentifier($0) }
        }
        #expect(chosen(256, 64, 108) == ObjectIdentifier(WinogradF4x3.self))  // P3 of a 512×864 input: 432 tiles of 4×4
        #expect(chosen(64, 128, 216) == ObjectIdentifier(WinogradF2x3.self))  // res2: 64 channels
        #expect(chosen(256, 32, 54) == ObjectIdentifier(WinogradF2x3.self))   // res4: 112 tiles of 4×4, 432 of 2×2
        #expect(chosen(256, 50, 76) == ObjectIdentifier(WinogradF4x3.self))   // P4 of an 800×1,216 input: 247 tiles of 4×4
        #expect(chosen(512, 16, 27) == nil)                                   // res5: 112 tiles of 2×2
        #expect(chosen(256, 14, 14, n: 100) == ObjectIdentifier(WinogradF4x3.self))  // a mask head: 1,600 tiles of 4×4
        #expect(chosen(256, 14, 14, n: 4) == nil)                                     // 4 RoIs: 196 tiles of 2×2
    }

    @Test("winograd is refused for shapes it does not cover, naming the argument")
    func refused() throws {
        var def = NetDef(name: "w", externalInputs: ["x", "w"])
        def.add("Conv", ["x", "w"], ["y"], ["kernel": .int(3), "stride": .int(2), "algo": .string("winograd")])
        let ws = Workspace(context: CPUContext())
        ws.feedBlob("x", try Tensor(.float32, shape: [1, 1, 8, 8], context: ws.context))
        ws.feedBlob("w", try Tensor(.float32, shape: [1, 1, 3, 3], context: ws.context))
        do {
            _ = try Net(def, workspace: ws)
            Issue.record("a stride-2 winograd conv was accepted")
        } catch {
            #expect(error.description.contains("algo") && error.description.contains("stride 1"))
        }
    }
}

@Suite("Conv against direct loops")
struct ConvDirectTests {
    @Test("strides, dilations and asymmetric padding (the im2col column ranges)",
          arguments: [(3, 2, 1, [1, 1, 1, 1]), (3, 1, 2, [2, 0, 1, 3]), (7, 2, 1, [3, 3, 3, 3]), (1, 2, 1, [0, 0, 0, 0]),
                      (3, 3, 1, [0, 2, 2, 0]), (1, 1, 1, [1, 2, 0, 1])])
    func direct(_ kernel: Int, _ stride: Int, _ dilation: Int, _ pads: [Int]) throws {
        let (c, h, w, m) = (3, 9, 11, 2)
        var rng = TestRNG(UInt64(kernel * 100 + stride * 10 + dilation))
        let x = rng.array(c * h * w), wt = rng.array(m * c * kernel * kernel)
        let ctx = CPUContext()
        let ws = Workspace(context: ctx)
        ws.feedBlob("x", try Tensor(x, shape: [1, c, h, w], context: ctx))
        ws.feedBlob("w", try Tensor(wt, shape: [m, c, kernel, kernel], context: ctx))
        var def = NetDef(name: "d", externalInputs: ["x", "w"])
        def.add("Conv", ["x", "w"], ["y"], ["kernel": .int(kernel), "stride": .int(stride), "dilation": .int(dilation),
                                            "pad_t": .int(pads[0]), "pad_l": .int(pads[1]), "pad_b": .int(pads[2]), "pad_r": .int(pads[3])])
        try Net(def, workspace: ws).run()
        let y = try ws.fetchBlob("y")
        let ext = dilation * (kernel - 1) + 1
        let (ho, wo) = ((h + pads[0] + pads[2] - ext) / stride + 1, (w + pads[1] + pads[3] - ext) / stride + 1)
        #expect(y.shape == [1, m, ho, wo])
        let got = try y.toArray(as: Float.self)
        var worst: Float = 0
        for o in 0..<m {
            for oy in 0..<ho {
                for ox in 0..<wo {
                    var acc: Float = 0
                    for ci in 0..<c {
                        for ki in 0..<kernel {
                            for kj in 0..<kernel {
                                let iy = oy * stride - pads[0] + ki * dilation, ix = ox * stride - pads[1] + kj * dilation
                                if iy >= 0 && iy < h && ix >= 0 && ix < w {
                                    acc += wt[((o * c + ci) * kernel + ki) * kernel + kj] * x[(ci * h + iy) * w + ix]
                                }
                            }
                        }
                    }
                    worst = max(worst, abs(acc - got[(o * ho + oy) * wo + ox]))
                }
            }
        }
        #expect(worst < 1e-4, "worst difference \(worst)")
    }
}

@Suite("MaxPool against direct loops")
struct MaxPoolDirectTests {
    @Test("kernels, strides and paddings, rows wider than a vector and windows in the padding",
          arguments: [(3, 2, [1, 1, 1, 1]), (2, 2, [0, 0, 0, 0]), (3, 1, [1, 2, 0, 1]), (1, 2, [0, 0, 0, 0]), (3, 3, [2, 2, 2, 2])])
    func direct(_ kernel: Int, _ stride: Int, _ pads: [Int]) throws {
        try check(kernel, stride, pads, global: false)
    }

    @Test("global max pooling: each plane's maximum")
    func global() throws {
        try check(1, 1, [0, 0, 0, 0], global: true)
    }

    func check(_ kernel: Int, _ stride: Int, _ pads: [Int], global: Bool) throws {
        let (n, c, h, w) = (2, 3, 11, 37)
        var rng = TestRNG(UInt64(kernel * 10 + stride))
        let x = rng.array(n * c * h * w)
        let ctx = CPUContext()
        let ws = Workspace(context: ctx)
        ws.feedBlob("x", try Tensor(x, shape: [n, c, h, w], context: ctx))
        var def = NetDef(name: "p", externalInputs: ["x"])
        def.add("MaxPool", ["x"], ["y"], global ? ["global_pooling": .int(1)] :
                    ["kernel": .int(kernel), "stride": .int(stride), "pad_t": .int(pads[0]), "pad_l": .int(pads[1]),
                     "pad_b": .int(pads[2]), "pad_r": .int(pads[3])])
        try Net(def, workspace: ws, pool: ThreadPool(threadCount: 1, name: "pool")).run()
        let y = try ws.fetchBlob("y")
        let (kh, kw) = global ? (h, w) : (kernel, kernel)
        let ho = (h + pads[0] + pads[2] - kh) / stride + 1, wo = (w + pads[1] + pads[3] - kw) / stride + 1
        #expect(y.shape == [n, c, ho, wo])
        var expected: [Float] = []
        for p in 0..<(n * c) {
            for oy in 0..<ho {
                for ox in 0..<wo {
                    var m = -Float.infinity
                    for ky in 0..<kh {
                        for kx in 0..<kw {
                            let iy = oy * stride - pads[0] + ky, ix = ox * stride - pads[1] + kx
                            if iy >= 0 && iy < h && ix >= 0 && ix < w { m = max(m, x[(p * h + iy) * w + ix]) }
                        }
                    }
                    expected.append(m)
                }
            }
        }
        #expect(try y.toArray(as: Float.self) == expected)
    }
}

import Foundation
import Storage

/// Detectron's RoIAlign (Caffe2 `RoIAlign`), without the half-pixel offset:
/// `roi_w = max((x2 − x1)·scale, 1)`, bins of roi_w/pooled_w, `sampling_ratio`² bilinear samples a
/// bin at ((i + 0.5)/ratio of the bin), averaged; a sample beyond [−1, H] × [−1, W] is 0 but still
/// counts. `sampling_ratio ≤ 0` picks ⌈roi_h/pooled_h⌉ samples (Caffe2's adaptive rule).
/// `RoIAlign(X, rois) -> Y (R, C, pooled_h, pooled_w)`; rois are (R, 5) = [batch, x1, y1, x2, y2].
/// `RoIAlignGradient(X, rois, dY) -> dX` scatters with the same weights.
final class RoIAlignOp: Operator, Sendable {
    let io: OpIO
    let scale: Float
    let ph: Int
    let pw: Int
    let ratio: Int
    let gradient: Bool

    init(_ io: OpIO, gradient: Bool) throws(OperatorError) {
        self.io = io
        self.gradient = gradient
        scale = Float(try io.float("spatial_scale", 1))
        ph = try io.int("pooled_h", 1)
        pw = try io.int("pooled_w", 1)
        ratio = try io.int("sampling_ratio", -1)
        try io.argument("pooled_h", ph > 0 && pw > 0, "and pooled_w must be positive")
        try io.argument("order", (try io.string("order", "NCHW")) == "NCHW", "must be NCHW")
    }

    /// The 4 corner offsets and weights of a bilinear sample, or nil when outside the map.
    @inline(__always)
    static func bilinear(y yIn: Float, x xIn: Float, h: Int, w: Int) -> (Int, Int, Int, Int, Float, Float, Float, Float)? {
        if yIn < -1 || yIn > Float(h) || xIn < -1 || xIn > Float(w) { return nil }
        var y = max(yIn, 0), x = max(xIn, 0)
        var yLo = Int(y), xLo = Int(x), yHi: Int, xHi: Int
        if yLo >= h - 1 {
            yLo = h - 1
            yHi = h - 1
            y = Float(yLo)
        } else {
            yHi = yLo + 1
        }
        if xLo >= w - 1 {
            xLo = w - 1
            xHi = w - 1
            x = Float(xLo)
        } else {
            xHi = xLo + 1
        }
        let ly = y - Float(yLo), lx = x - Float(xLo), hy = 1 - ly, hx = 1 - lx
        return (yLo * w + xLo, yLo * w + xHi, yHi * w + xLo, yHi * w + xHi, hy * hx, hy * lx, ly * hx, ly * lx)
    }

    func run(_ ctx: ExecutionContext) throws {
        let (x, xd) = try io.inputData(0)
        try io.require(x.rank == 4, input: 0, "must be NCHW, has shape \(x.shape)")
        let (rois, rd) = try io.inputData(1)
        try io.require(rois.rank == 2 && rois.shape[1] == 5, input: 1, "must be (R, 5) = [batch, x1, y1, x2, y2], has shape \(rois.shape)")
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let r = rois.shape[0]
        for i in 0..<r {
            let b = Int(rd[i * 5])
            try io.require(b >= 0 && b < n, input: 1, "roi \(i) has batch index \(b), outside 0..<\(n)")
        }
        let (ph, pw, scale, ratio) = (self.ph, self.pw, self.scale, self.ratio)
        var dyd: UnsafeBufferPointer<Float>?
        let out: UnsafeMutableBufferPointer<Float>
        if gradient {
            let (dy, d) = try io.inputData(2)
            try io.require(dy.shape == [r, c, ph, pw], input: 2, "has shape \(dy.shape), expected \([r, c, ph, pw])")
            dyd = d
            out = try io.outputData(0, shape: x.shape).1
            out.update(repeating: 0)
        } else {
            out = try io.outputData(0, shape: [r, c, ph, pw]).1
        }
        // The sample positions and weights depend on the roi, not the channel: computed once per
        // roi (Caffe2's pre-calculation), then applied to every channel. Forward: one task per
        // roi. Backward: scatter-adds of different rois may hit the same cells, but never across
        // channels, so the backward splits the channels.
        struct Tap { var a: Int32; var b: Int32; var c: Int32; var d: Int32; var wa: Float; var wb: Float; var wc: Float; var wd: Float }
        func taps(_ i: Int) -> (batch: Int, taps: [Tap], count: Float) {
            let roi = rd.baseAddress! + i * 5
            let sx = roi[1] * scale, sy = roi[2] * scale
            let roiW = max(roi[3] * scale - sx, 1), roiH = max(roi[4] * scale - sy, 1)
            let binH = roiH / Float(ph), binW = roiW / Float(pw)
            let gh = ratio > 0 ? ratio : Int(ceil(roiH / Float(ph)))
            let gw = ratio > 0 ? ratio : Int(ceil(roiW / Float(pw)))
            var out: [Tap] = []
            out.reserveCapacity(ph * pw * gh * gw)
            for py in 0..<ph {
                for px in 0..<pw {
                    for iy in 0..<gh {
                        let yy = sy + Float(py) * binH + (Float(iy) + 0.5) * binH / Float(gh)
                        for ix in 0..<gw {
                            let xx = sx + Float(px) * binW + (Float(ix) + 0.5) * binW / Float(gw)
                            if let (a, b, c, d, wa, wb, wc, wd) = Self.bilinear(y: yy, x: xx, h: h, w: w) {
                                out.append(Tap(a: Int32(a), b: Int32(b), c: Int32(c), d: Int32(d), wa: wa, wb: wb, wc: wc, wd: wd))
                            } else {
                                out.append(Tap(a: 0, b: 0, c: 0, d: 0, wa: 0, wb: 0, wc: 0, wd: 0))
                            }
                        }
                    }
                }
            }
            return (Int(roi[0]), out, Float(max(gh * gw, 1)))
        }
        if gradient {
            let all = (0..<r).map(taps)
            let parts = min(c, (ctx.pool?.liveThreadCount ?? 0) + 1)
            ctx.parallelFor(parts) { p in
                for (i, t) in all.enumerated() {
                    let perBin = t.taps.count / (ph * pw)
                    for ch in (c * p / parts)..<(c * (p + 1) / parts) {
                        let plane = out.baseAddress! + (t.batch * c + ch) * h * w
                        let g = dyd!.baseAddress! + (i * c + ch) * ph * pw
                        for bin in 0..<(ph * pw) {
                            let v = g[bin] / t.count
                            for k in 0..<perBin {
                                let s = t.taps[bin * perBin + k]
                                plane[Int(s.a)] += v * s.wa
                                plane[Int(s.b)] += v * s.wb
                                plane[Int(s.c)] += v * s.wc
                                plane[Int(s.d)] += v * s.wd
                            }
                        }
                    }
                }
            }
        } else if c >= 16 && r * ph * pw * 8 >= n * h * w {
            // Many rois for the map's size: gathering each roi's window from 256 separate channel
            // planes is bound by cache misses, so the map is first transposed to channels-last
            // (scratch memory) and each sample then reads its 4 taps as contiguous channel
            // vectors. Per channel the arithmetic and its order are the ones below, so the results
            // are bitwise the same.
            let scratch = ctx.scratch ?? ScratchBuffers(context: io.workspace.context)
            try scratch.withBuffer(count: n * h * w * c) { xt in
                Self.channelsLast(ctx, xd.baseAddress!, n: n, c: c, hw: h * w, into: xt)
                ctx.parallelFor(r) { i in
                    let t = taps(i)
                    let perBin = t.taps.count / (ph * pw)
                    let map = UnsafePointer(xt) + t.batch * h * w * c
                    withUnsafeTemporaryAllocation(of: Float.self, capacity: c) { acc in
                        let acc = acc.baseAddress!
                        for bin in 0..<(ph * pw) {
                            acc.update(repeating: 0, count: c)
                            for k in 0..<perBin {
                                let s = t.taps[bin * perBin + k]
                                Self.accumulate(acc, c: c, s.wa, map + Int(s.a) * c, s.wb, map + Int(s.b) * c,
                                                s.wc, map + Int(s.c) * c, s.wd, map + Int(s.d) * c)
                            }
                            let o = out.baseAddress! + i * c * ph * pw + bin
                            for ch in 0..<c { o[ch * ph * pw] = acc[ch] / t.count }
                        }
                    }
                }
            }
        } else {
            ctx.parallelFor(r) { i in
                let t = taps(i)
                let perBin = t.taps.count / (ph * pw)
                for ch in 0..<c {
                    let plane = xd.baseAddress! + (t.batch * c + ch) * h * w
                    let o = out.baseAddress! + (i * c + ch) * ph * pw
                    for bin in 0..<(ph * pw) {
                        var acc: Float = 0
                        for k in 0..<perBin {
                            let s = t.taps[bin * perBin + k]
                            acc += s.wa * plane[Int(s.a)] + s.wb * plane[Int(s.b)] + s.wc * plane[Int(s.c)] + s.wd * plane[Int(s.d)]
                        }
                        o[bin] = acc / t.count
                    }
                }
            }
        }
    }
}

extension RoIAlignOp {
    /// (N, C, HW) → (N, HW, C), the pixels split across the pool.
    static func channelsLast(_ ctx: ExecutionContext, _ x: UnsafePointer<Float>, n: Int, c: Int, hw: Int,
                             into xt: UnsafeMutablePointer<Float>) {
        let block = 64, blocks = (hw + block - 1) / block
        ctx.parallelFor(n * blocks) { task in
            let img = task / blocks, p0 = (task % blocks) * block, p1 = min(hw, p0 + block)
            let src = x + img * c * hw, dst = xt + img * hw * c
            for ch in 0..<c {
                let plane = src + ch * hw
                for p in p0..<p1 { dst[p * c + ch] = plane[p] }
            }
        }
    }

    /// acc[ch] += wa·a[ch] + wb·b[ch] + wc·c[ch] + wd·d[ch] for every channel, in that order.
    @inline(__always)
    static func accumulate(_ acc: UnsafeMutablePointer<Float>, c: Int, _ wa: Float, _ a: UnsafePointer<Float>, _ wb: Float,
                           _ b: UnsafePointer<Float>, _ wc: Float, _ cp: UnsafePointer<Float>, _ wd: Float, _ d: UnsafePointer<Float>) {
        typealias V = SIMD16<Float>
        @inline(__always) func load(_ p: UnsafePointer<Float>, _ ch: Int) -> V {
            UnsafeRawPointer(p + ch).loadUnaligned(as: V.self)
        }
        var ch = 0
        while ch + 16 <= c {
            let sum = V(repeating: wa) * load(a, ch) + V(repeating: wb) * load(b, ch) + V(repeating: wc) * load(cp, ch)
                + V(repeating: wd) * load(d, ch)
            UnsafeMutableRawPointer(acc + ch).storeBytes(of: load(acc, ch) + sum, as: V.self)
            ch += 16
        }
        while ch < c {
            acc[ch] += wa * a[ch] + wb * b[ch] + wc * cp[ch] + wd * d[ch]
            ch += 1
        }
    }
}

func registerRoIOps(_ r: inout OperatorRegistry) {
    r.register("RoIAlign", OperatorSchema(inputs: 2...2, outputs: 1...1, gradient: { g in
        GradientResult(ops: [OperatorDef("RoIAlignGradient", inputs: [g.input(0), g.input(1), g.outputGradient(0)!],
                                         outputs: [g.inputGradient(0)], arguments: g.def.arguments)], inputsWithGradient: [0])
    }) { io throws(OperatorError) in try RoIAlignOp(io, gradient: false) })
    r.register("RoIAlignGradient", OperatorSchema(inputs: 3...3, outputs: 1...1) { io throws(OperatorError) in
        try RoIAlignOp(io, gradient: true)
    })
}

import Storage

/// `MaxPool`/`AveragePool(X; kernel, stride, pad, global_pooling) -> Y`, NCHW, floor output size.
/// Max pooling ignores padding; average pooling divides by the window's cells inside the image
/// (Caffe2's default `count_include_pad = 0`).
final class PoolOp: Operator, Sendable {
    let io: OpIO
    let isMax: Bool
    let global: Bool
    let geo: ConvGeometry
    let gradient: Bool

    init(_ io: OpIO, max: Bool, gradient: Bool) throws(OperatorError) {
        self.io = io
        self.isMax = max
        self.gradient = gradient
        global = try io.bool("global_pooling", false)
        geo = try ConvGeometry(io, needsKernel: !global)
        try io.argument("count_include_pad", !(try io.bool("count_include_pad", false)), "= 1 is not supported")
    }

    /// Max pooling of one plane (global pooling too: one window over it all), an output row at a
    /// time: the window's input rows reduced to one row of column maxima (row by row, a loop the
    /// compiler vectorises), then each output's window of columns. Max is exact, so the order of
    /// the reductions does not change a value. An empty window gives −∞.
    static func maxPlane(_ x: UnsafePointer<Float>, h: Int, w: Int, y: UnsafeMutablePointer<Float>, ho: Int, wo: Int,
                         window: (kh: Int, kw: Int, sh: Int, sw: Int, pt: Int, pl: Int)) {
        withUnsafeTemporaryAllocation(of: Float.self, capacity: w) { columns in
            let cm = columns.baseAddress!
            for oy in 0..<ho {
                let y0 = oy * window.sh - window.pt, ys = max(y0, 0), ye = max(ys, min(y0 + window.kh, h))
                if ys == ye {
                    cm.update(repeating: -.infinity, count: w)
                } else {
                    cm.update(from: x + ys * w, count: w)
                    for iy in (ys + 1)..<ye {
                        let r = x + iy * w
                        for j in 0..<w { cm[j] = max(cm[j], r[j]) }
                    }
                }
                let row = y + oy * wo
                for ox in 0..<wo {
                    let x0 = ox * window.sw - window.pl, xs = max(x0, 0), xe = max(xs, min(x0 + window.kw, w))
                    var m: Float = -.infinity
                    for ix in xs..<xe { m = max(m, cm[ix]) }
                    row[ox] = m
                }
            }
        }
    }

    /// The window geometry for an h×w input: (kh, kw, sh, sw, padT, padL, ho, wo).
    func window(h: Int, w: Int) -> (Int, Int, Int, Int, Int, Int, Int, Int) {
        if global { return (h, w, 1, 1, 0, 0, 1, 1) }
        let (ho, wo) = geo.outputSize(h: h, w: w)
        return (geo.kh, geo.kw, geo.sh, geo.sw, geo.padT, geo.padL, ho, wo)
    }

    func run(_ ctx: ExecutionContext) throws {
        let (x, xd) = try io.inputData(0)
        try io.require(x.rank == 4, input: 0, "must be NCHW, has shape \(x.shape)")
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let (kh, kw, sh, sw, pt, pl, ho, wo) = window(h: h, w: w)
        try io.require(ho > 0 && wo > 0, input: 0, "of size \(h)×\(w) is smaller than the pooling window")
        if !gradient {
            let (_, y) = try io.outputData(0, shape: [n, c, ho, wo])
            if isMax {
                ctx.parallelFor(n * c) { p in
                    Self.maxPlane(xd.baseAddress! + p * h * w, h: h, w: w, y: y.baseAddress! + p * ho * wo, ho: ho, wo: wo,
                                  window: (kh, kw, sh, sw, pt, pl))
                }
                return
            }
            // Average: the window's sum over the cells inside the input.
            ctx.parallelFor(n * c) { p in
                let xp = xd.baseAddress! + p * h * w, yp = y.baseAddress! + p * ho * wo
                for oy in 0..<ho {
                    let y0 = oy * sh - pt, y1 = min(y0 + kh, h), ys = max(y0, 0)
                    for ox in 0..<wo {
                        let x0 = ox * sw - pl, x1 = min(x0 + kw, w), xs = max(x0, 0)
                        var acc: Float = 0
                        for iy in ys..<max(ys, y1) {
                            for ix in xs..<max(xs, x1) { acc += xp[iy * w + ix] }
                        }
                        let cells = (max(ys, y1) - ys) * (max(xs, x1) - xs)
                        yp[oy * wo + ox] = acc / Float(max(cells, 1))
                    }
                }
            }
        } else {
            // (X, Y, dY) -> dX. Max: the window's first cell (row-major) equal to its max gets dY, as
            // cuDNN's max pooling (the engine of Detectron's GPU runs) and PyTorch's do. Caffe2's own
            // CPU and CUDA ops give dY to every tied cell instead, which multiplies the gradient of
            // a flat region (a plain background, the zero padding of a batch) by the ties: shifting
            // the tied values together moves the max by the shift, not by the ties times it.
            let (_, yd) = try io.inputData(1)
            let (dy, dyd) = try io.inputData(2)
            try io.require(dy.shape == [n, c, ho, wo], input: 2, "has shape \(dy.shape), expected \([n, c, ho, wo])")
            let (_, dx) = try io.outputData(0, shape: x.shape)
            dx.update(repeating: 0)
            let isMax = self.isMax
            ctx.parallelFor(n * c) { p in
                let xp = xd.baseAddress! + p * h * w, dxp = dx.baseAddress! + p * h * w
                let yp = yd.baseAddress! + p * ho * wo, dyp = dyd.baseAddress! + p * ho * wo
                for oy in 0..<ho {
                    let y0 = oy * sh - pt, y1 = min(y0 + kh, h), ys = max(y0, 0)
                    for ox in 0..<wo {
                        let x0 = ox * sw - pl, x1 = min(x0 + kw, w), xs = max(x0, 0)
                        let g = dyp[oy * wo + ox]
                        if isMax {
                            let m = yp[oy * wo + ox]
                            window: for iy in ys..<max(ys, y1) {
                                for ix in xs..<max(xs, x1) where xp[iy * w + ix] == m {
                                    dxp[iy * w + ix] += g
                                    break window
                                }
                            }
                            continue
                        }
                        let cells = (max(ys, y1) - ys) * (max(xs, x1) - xs)
                        for iy in ys..<max(ys, y1) {
                            for ix in xs..<max(xs, x1) { dxp[iy * w + ix] += g / Float(max(cells, 1)) }
                        }
                    }
                }
            }
        }
    }
}

/// `UpsampleNearest(X; scale) -> Y`: `Y[y, x] = X[⌊y/scale⌋, ⌊x/scale⌋]`; its gradient
/// `UpsampleNearestGradient(X, dY) -> dX` sums each scale×scale block.
final class UpsampleNearestOp: Operator, Sendable {
    let io: OpIO
    let scale: Int
    let gradient: Bool
    init(_ io: OpIO, gradient: Bool) throws(OperatorError) {
        self.io = io
        self.gradient = gradient
        scale = try io.int("scale", 2)
        try io.argument("scale", scale >= 1, "must be ≥ 1")
    }

    func run(_ ctx: ExecutionContext) throws {
        let (x, xd) = try io.inputData(0)
        try io.require(x.rank == 4, input: 0, "must be NCHW, has shape \(x.shape)")
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let (ho, wo) = (h * scale, w * scale)
        let s = scale
        if !gradient {
            let (_, y) = try io.outputData(0, shape: [n, c, ho, wo])
            ctx.parallelFor(n * c) { p in
                let xp = xd.baseAddress! + p * h * w, yp = y.baseAddress! + p * ho * wo
                for oy in 0..<ho { for ox in 0..<wo { yp[oy * wo + ox] = xp[(oy / s) * w + ox / s] } }
            }
        } else {
            let (dy, dyd) = try io.inputData(1)
            try io.require(dy.shape == [n, c, ho, wo], input: 1, "has shape \(dy.shape), expected \([n, c, ho, wo])")
            let (_, dx) = try io.outputData(0, shape: x.shape)
            dx.update(repeating: 0)
            ctx.parallelFor(n * c) { p in
                let dxp = dx.baseAddress! + p * h * w, dyp = dyd.baseAddress! + p * ho * wo
                for oy in 0..<ho { for ox in 0..<wo { dxp[(oy / s) * w + ox / s] += dyp[oy * wo + ox] } }
            }
        }
    }
}

func registerPooling(_ r: inout OperatorRegistry) {
    for (name, isMax) in [("MaxPool", true), ("AveragePool", false)] {
        r.register(name, OperatorSchema(inputs: 1...1, outputs: 1...1, gradient: { g in
            GradientResult(ops: [OperatorDef(name + "Gradient", inputs: [g.input(0), g.output(0), g.outputGradient(0)!],
                                             outputs: [g.inputGradient(0)], arguments: g.def.arguments)], inputsWithGradient: [0])
        }) { io throws(OperatorError) in try PoolOp(io, max: isMax, gradient: false) })
        r.register(name + "Gradient", OperatorSchema(inputs: 3...3, outputs: 1...1) { io throws(OperatorError) in
            try PoolOp(io, max: isMax, gradient: true)
        })
    }
    r.register("UpsampleNearest", OperatorSchema(inputs: 1...1, outputs: 1...1, gradient: { g in
        GradientResult(ops: [OperatorDef("UpsampleNearestGradient", inputs: [g.input(0), g.outputGradient(0)!],
                                         outputs: [g.inputGradient(0)], arguments: g.def.arguments)], inputsWithGradient: [0])
    }) { io throws(OperatorError) in try UpsampleNearestOp(io, gradient: false) })
    r.register("UpsampleNearestGradient", OperatorSchema(inputs: 2...2, outputs: 1...1) { io throws(OperatorError) in
        try UpsampleNearestOp(io, gradient: true)
    })
}

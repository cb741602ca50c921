import BLAS
import Storage

/// `ConvTranspose(X, W[, b]) -> Y`, NCHW, with Caffe2's semantics: W is (C_in, C_out, kH, kW)
/// (PyTorch's `ConvTranspose2d` layout), arguments `kernel`, `stride`, `pad` (or their `_h`/`_w`,
/// `pad_t`/`pad_l`/`pad_b`/`pad_r` forms) and `adj` (or `adj_h`/`adj_w`); the output is
/// (in − 1)·stride + kernel + adj − pad_head − pad_tail per axis. It is the adjoint of the
/// convolution of that geometry: per image, col = Wᵀ·X ((C_out·kH·kW) × (H·W)) folded back into
/// Y, then the bias.
/// `ConvTransposeGradient(X, W, dY) -> (dW[, db][, dX])`: dW = X·im2col(dY)ᵀ, dX = W·im2col(dY),
/// db the sum of dY per channel (`no_bias` and `compute_dX` say which outputs there are).
final class ConvTransposeOp: Operator, Sendable {
    let io: OpIO
    let geo: ConvGeometry
    let adjH: Int
    let adjW: Int
    let gradient: Bool
    let hasBias: Bool
    let computeDX: Bool

    init(_ io: OpIO, gradient: Bool) throws(OperatorError) {
        self.io = io
        self.gradient = gradient
        geo = try ConvGeometry(io)
        let adj = try io.int("adj", 0)
        (adjH, adjW) = (try io.int("adj_h", adj), try io.int("adj_w", adj))
        try io.argument("group", geo.group == 1, "must be 1 (ConvTranspose has no groups here)")
        try io.argument("dilation", geo.dh == 1 && geo.dw == 1, "must be 1 (Caffe2's ConvTranspose has no dilation)")
        try io.argument("adj", adjH >= 0 && adjH < geo.sh && adjW >= 0 && adjW < geo.sw, "must be ≥ 0 and less than the stride")
        if gradient {
            hasBias = !(try io.bool("no_bias", false))
            computeDX = try io.bool("compute_dX", true)
            try io.argument("outputs", io.outputCount == 1 + (hasBias ? 1 : 0) + (computeDX ? 1 : 0), "do not match no_bias/compute_dX")
        } else {
            hasBias = io.inputCount == 3
            computeDX = false
        }
    }

    /// Checks X against W; returns (n, c_in, h, w, c_out, ho, wo).
    func shapes(x: Tensor, w: Tensor) throws(OpRunError) -> (Int, Int, Int, Int, Int, Int, Int) {
        try io.require(x.rank == 4, input: 0, "must be NCHW, has shape \(x.shape)")
        try io.require(w.rank == 4 && w.shape[0] == x.shape[1] && w.shape[2] == geo.kh && w.shape[3] == geo.kw, input: 1,
                       "has shape \(w.shape), expected (\(x.shape[1]), C_out, \(geo.kh), \(geo.kw)) for input \(x.shape)")
        let (n, c, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let ho = (h - 1) * geo.sh + geo.kh + adjH - geo.padT - geo.padB
        let wo = (wd - 1) * geo.sw + geo.kw + adjW - geo.padL - geo.padR
        try io.require(ho > 0 && wo > 0, input: 0, "of size \(h)×\(wd) gives an empty output with this padding")
        return (n, c, h, wd, w.shape[1], ho, wo)
    }

    func run(_ ctx: ExecutionContext) throws {
        let (x, xd) = try io.inputData(0)
        let (w, wdata) = try io.inputData(1)
        let (n, c, h, wd, m, ho, wo) = try shapes(x: x, w: w)
        let k = m * geo.kh * geo.kw, hw = h * wd, plane = ho * wo
        let scratch = ctx.scratch ?? ScratchBuffers(context: io.workspace.context)
        if !gradient {
            let (_, y) = try io.outputData(0, shape: [n, m, ho, wo])
            var bias: UnsafeBufferPointer<Float>?
            if hasBias {
                let (b, bd) = try io.inputData(2)
                try io.require(b.count == m, input: 2, "has \(b.count) values for \(m) output channels")
                bias = bd
            }
            func start(_ img: Int) -> UnsafeMutablePointer<Float> {
                let yi = y.baseAddress! + img * m * plane
                for oc in 0..<m { (yi + oc * plane).update(repeating: bias?[oc] ?? 0, count: plane) }
                return yi
            }
            if ConvOp.batchesImages(n: n, hw: hw) {
                // Many small maps (Mask R-CNN's conv5_mask on every RoI): a band of images side by side,
                // Xʹ (c × images·hw), one GEMM colʹ = Wᵀ · Xʹ, each image's columns folded back. Each
                // value is the same sum as the image's own GEMM gives.
                let perBand = max(1, min(n, ConvOp.batchBandFloats / max(1, (k + c) * hw)))
                try scratch.withBuffer(count: (k + c) * perBand * hw) { buffer in
                    let xb = buffer, col = buffer + c * perBand * hw
                    for first in stride(from: 0, to: n, by: perBand) {
                        let images = min(perBand, n - first), cols = images * hw
                        ctx.parallelFor(images) { i in
                            let xi = xd.baseAddress! + (first + i) * c * hw
                            for ci in 0..<c { (xb + ci * cols + i * hw).update(from: xi + ci * hw, count: hw) }
                        }
                        ctx.gemm(.transpose, .none, m: k, n: cols, k: c, a: wdata.baseAddress!, b: xb, c: col)
                        ctx.parallelFor(images) { i in
                            geo.col2imAdd(col + i * hw, channels: m, h: ho, w: wo, ho: h, wo: wd, rows: 0..<h, dx: start(first + i), rowStride: cols)
                        }
                    }
                }
                return
            }
            try scratch.withBuffer(count: k * hw) { col in
                for img in 0..<n {
                    // col = Wᵀ (k × c) · X_img (c × hw), folded into Y as a convolution's input gradient is.
                    ctx.gemm(.transpose, .none, m: k, n: hw, k: c, a: wdata.baseAddress!, b: xd.baseAddress! + img * c * hw, c: col)
                    geo.col2imAdd(ctx, col, channels: m, h: ho, w: wo, ho: h, wo: wd, rows: 0..<h, dx: start(img))
                }
            }
            return
        }
        let (dyd, dw, db, dx) = try convGradientOutputs(io, x: x, w: w, dy: [n, m, ho, wo], hasBias: hasBias, computeDX: computeDX)
        try scratch.withBuffer(count: k * hw) { col in
            for img in 0..<n {
                let dyi = dyd.baseAddress! + img * m * plane
                geo.im2col(ctx, dyi, channels: m, h: ho, w: wo, ho: h, wo: wd, rows: 0..<h, col: col)
                // dW (c × k) += X_img (c × hw) · colᵀ (hw × k); dX_img (c × hw) = W (c × k) · col (k × hw).
                ctx.gemm(.none, .transpose, m: c, n: k, k: hw, a: xd.baseAddress! + img * c * hw, b: col, beta: 1, c: dw.baseAddress!)
                if let dx { ctx.gemm(.none, .none, m: c, n: hw, k: k, a: wdata.baseAddress!, b: col, c: dx.baseAddress! + img * c * hw) }
                if let db {
                    for oc in 0..<m {
                        let p = dyi + oc * plane
                        var acc: Float = 0
                        for i in 0..<plane { acc += p[i] }
                        db[oc] += acc
                    }
                }
            }
        }
    }
}

func registerConvTranspose(_ r: inout OperatorRegistry) {
    r.register("ConvTranspose", OperatorSchema(inputs: 2...3, outputs: 1...1, gradient: { g in
        var args = g.def.arguments
        let hasBias = g.def.inputs.count > 2
        if !hasBias { args["no_bias"] = .int(1) }
        if !g.needsGradient(0) { args["compute_dX"] = .int(0) }
        let outputs = [g.inputGradient(1)] + (hasBias ? [g.inputGradient(2)] : []) + (g.needsGradient(0) ? [g.inputGradient(0)] : [])
        return GradientResult(ops: [OperatorDef("ConvTransposeGradient", inputs: [g.input(0), g.input(1), g.outputGradient(0)!],
                                                outputs: outputs, arguments: args)],
                              inputsWithGradient: Set(g.def.inputs.indices).subtracting(g.needsGradient(0) ? [] : [0]))
    }) { io throws(OperatorError) in try ConvTransposeOp(io, gradient: false) })
    r.register("ConvTransposeGradient", OperatorSchema(inputs: 3...3, outputs: 1...3) { io throws(OperatorError) in
        try ConvTransposeOp(io, gradient: true)
    })
}

import Foundation
import Storage

/// The foreground count input (1,) of RetinaNet's losses, as the normaliser max(count, 1).
func foregroundNormalizer(_ io: OpIO, _ i: Int) throws(OpRunError) -> Double {
    let (t, d) = try io.inputData(i)
    try io.require(t.count == 1, input: i, "must hold one foreground count, has shape \(t.shape)")
    return max(Double(d[0]), 1)
}

/// `SigmoidFocalLoss(X, labels, fg_num; scale=1, gamma=2, alpha=0.25, num_classes) -> loss`,
/// Detectron's RetinaNet classification loss (Caffe2's `modules/detectron` op, whose kernel is
/// 1-based: label 0 is background, −1 ignored). X is (N, A·K, H, W) with K = `num_classes`
/// foreground classes per anchor, labels (N, A, H, W). For the logit of anchor a, class k with
/// p = σ(x) and t the anchor's label: `−α(1−p)^γ·log p` when t = k+1, `−(1−α)p^γ·log(1−p)` when
/// t is anything else but −1 (background and the other classes), 0 when t = −1; the sum is
/// divided by max(fg_num, 1) and multiplied by `scale`.
/// `SigmoidFocalLossGradient(X, labels, fg_num, dLoss) -> dX`.
final class SigmoidFocalLossOp: Operator, Sendable {
    let io: OpIO
    let scale: Double
    let gamma: Double
    let alpha: Double
    let numClasses: Int
    let gradient: Bool
    init(_ io: OpIO, gradient: Bool) throws(OperatorError) {
        self.io = io
        self.gradient = gradient
        scale = try io.float("scale", 1)
        gamma = try io.float("gamma", 2)
        alpha = try io.float("alpha", 0.25)
        numClasses = try io.int("num_classes")
        try io.argument("num_classes", numClasses >= 1, "must be ≥ 1")
        try io.argument("gamma", gamma >= 0, "must be ≥ 0")
    }

    func run(_ ctx: ExecutionContext) throws {
        let (x, xd) = try io.inputData(0)
        let t = try io.input(1)
        let k = numClasses
        try io.require(x.rank == 4 && x.shape[1] % k == 0, input: 0, "must be (N, A·\(k), H, W), has shape \(x.shape)")
        let (n, a, h, w) = (x.shape[0], x.shape[1] / k, x.shape[2], x.shape[3])
        try io.require(t.shape == [n, a, h, w], input: 1, "has shape \(t.shape) but the logits need (\(n), \(a), \(h), \(w))")
        let td = try io.check(1, isInput: true) { () throws(StorageError) in try t.data(as: Int32.self) }
        let f = scale / (try foregroundNormalizer(io, 2))
        let plane = h * w
        // Visits every logit with its label: (flat index, label, foreground class k+1).
        func forEach(_ body: (Int, Int32, Int32) -> Void) {
            for img in 0..<n {
                for anchor in 0..<a {
                    for cls in 0..<k {
                        let xBase = ((img * a + anchor) * k + cls) * plane, tBase = (img * a + anchor) * plane
                        for p in 0..<plane { body(xBase + p, td[tBase + p], Int32(cls + 1)) }
                    }
                }
            }
        }
        if !gradient {
            var sum = 0.0
            forEach { i, label, fg in
                guard label != -1 else { return }
                let v = Double(xd[i]), p = 1 / (1 + exp(-v))
                if label == fg {
                    sum -= alpha * pow(1 - p, gamma) * log(max(p, Double(Float.leastNormalMagnitude)))
                } else {
                    // log(1 − p) = −x·[x ≥ 0] − log(1 + e^(x − 2x·[x ≥ 0])), stable for large |x|.
                    let pos = v >= 0 ? 1.0 : 0.0
                    sum -= (1 - alpha) * pow(p, gamma) * (-v * pos - log(1 + exp(v - 2 * v * pos)))
                }
            }
            let (_, l) = try io.outputData(0, shape: [])
            l[0] = Float(sum * f)
        } else {
            let g = Double(try lossGradient(io, 3)) * f
            let (_, dx) = try io.outputData(0, shape: x.shape)
            forEach { i, label, fg in
                guard label != -1 else {
                    dx[i] = 0
                    return
                }
                let v = Double(xd[i]), p = 1 / (1 + exp(-v))
                if label == fg {
                    // d/dx of −α(1−p)^γ·log p = α(1−p)^γ·(γ·p·log p − (1 − p)).
                    dx[i] = Float(alpha * pow(1 - p, gamma) * (gamma * p * log(max(p, Double(Float.leastNormalMagnitude))) - (1 - p)) * g)
                } else {
                    // d/dx of −(1−α)p^γ·log(1−p) = (1−α)p^γ·(p − γ(1−p)·log(1−p)).
                    let pos = v >= 0 ? 1.0 : 0.0
                    let log1mp = -v * pos - log(1 + exp(v - 2 * v * pos))
                    dx[i] = Float((1 - alpha) * pow(p, gamma) * (p - gamma * (1 - p) * log1mp) * g)
                }
            }
        }
    }
}

/// `SelectSmoothL1Loss(Y_hat, Y, locations, fg_num; beta=1, scale=1) -> loss`, Detectron's
/// RetinaNet box loss: Y_hat is (N, C, H, W); row i of `locations` (M, 4) is [n, c, y, x] and
/// picks Y_hat[n, c + j, y, x] for j = 0…3, compared with Y[i, j] (M, 4) by the smooth L1 of
/// `beta`; the sum is divided by max(fg_num, 1) and multiplied by `scale`.
/// `SelectSmoothL1LossGradient(Y_hat, Y, locations, fg_num, dLoss) -> dY_hat` (zero where no row
/// points).
final class SelectSmoothL1LossOp: Operator, Sendable {
    let io: OpIO
    let args: SmoothL1Arguments
    let gradient: Bool
    init(_ io: OpIO, gradient: Bool) throws(OperatorError) {
        self.io = io
        self.gradient = gradient
        args = try SmoothL1Arguments(io)
    }

    func run(_ ctx: ExecutionContext) throws {
        let (p, pd) = try io.inputData(0)
        try io.require(p.rank == 4, input: 0, "must be (N, C, H, W), has shape \(p.shape)")
        let (y, yd) = try io.inputData(1)
        let (l, ld) = try io.inputData(2)
        let m = y.rank == 2 ? y.shape[0] : 0
        try io.require(y.rank == 2 && y.shape[1] == 4, input: 1, "must be (M, 4), has shape \(y.shape)")
        try io.require(l.shape == y.shape, input: 2, "has shape \(l.shape) but the targets have \(y.shape)")
        let f = args.scale / (try foregroundNormalizer(io, 3))
        let (c, h, w) = (p.shape[1], p.shape[2], p.shape[3])
        var offsets = [Int](repeating: 0, count: m)
        for i in 0..<m {
            let (img, ch, yy, xx) = (Int(ld[4 * i]), Int(ld[4 * i + 1]), Int(ld[4 * i + 2]), Int(ld[4 * i + 3]))
            try io.require(img >= 0 && img < p.shape[0] && ch >= 0 && ch + 4 <= c && yy >= 0 && yy < h && xx >= 0 && xx < w, input: 2,
                           "row \(i) [\(img), \(ch), \(yy), \(xx)] is outside the predictions \(p.shape)")
            offsets[i] = ((img * c + ch) * h + yy) * w + xx
        }
        let plane = h * w
        if !gradient {
            var sum = 0.0
            for i in 0..<m {
                for j in 0..<4 {
                    sum += smoothL1(Double(pd[offsets[i] + j * plane]) - Double(yd[4 * i + j]), beta: args.beta)
                }
            }
            let (_, out) = try io.outputData(0, shape: [])
            out[0] = Float(sum * f)
        } else {
            let g = Double(try lossGradient(io, 4)) * f
            let (_, dx) = try io.outputData(0, shape: p.shape)
            for i in 0..<dx.count { dx[i] = 0 }
            for i in 0..<m {
                for j in 0..<4 {
                    let at = offsets[i] + j * plane
                    dx[at] += Float(smoothL1Derivative(Double(pd[at]) - Double(yd[4 * i + j]), beta: args.beta) * g)
                }
            }
        }
    }
}

func registerFocalLosses(_ r: inout OperatorRegistry) {
    r.register("SigmoidFocalLoss", OperatorSchema(inputs: 3...3, outputs: 1...1, gradient: { g in
        GradientResult(ops: [OperatorDef("SigmoidFocalLossGradient", inputs: g.def.inputs + [g.outputGradient(0)!],
                                         outputs: [g.inputGradient(0)], arguments: g.def.arguments)], inputsWithGradient: [0])
    }) { io throws(OperatorError) in try SigmoidFocalLossOp(io, gradient: false) })
    r.register("SigmoidFocalLossGradient", OperatorSchema(inputs: 4...4, outputs: 1...1) { io throws(OperatorError) in
        try SigmoidFocalLossOp(io, gradient: true)
    })
    r.register("SelectSmoothL1Loss", OperatorSchema(inputs: 4...4, outputs: 1...1, gradient: { g in
        GradientResult(ops: [OperatorDef("SelectSmoothL1LossGradient", inputs: g.def.inputs + [g.outputGradient(0)!],
                                         outputs: [g.inputGradient(0)], arguments: g.def.arguments)], inputsWithGradient: [0])
    }) { io throws(OperatorError) in try SelectSmoothL1LossOp(io, gradient: false) })
    r.register("SelectSmoothL1LossGradient", OperatorSchema(inputs: 5...5, outputs: 1...1) { io throws(OperatorError) in
        try SelectSmoothL1LossOp(io, gradient: true)
    })
}

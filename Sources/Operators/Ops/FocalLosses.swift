import Foundation
import Storage

/// The foreground count input (1,) of RetinaNet's losses, as the normaliser max(count, 1).
func foregroundNormalizer(_ io: OpIO, _ i: Int) throws(OpRunError) -> Double {
    let (t, d) = try io.inputData(i)
    try io.require(t.count == 1, input: i, "must hold one foreground count, has shape \(t.shape)")
    return max(Double(d[0]), 1)
}

/// The arguments both focal losses take: `scale` (1), `gamma` (2), `alpha` (0.25), `num_classes`.
struct FocalLossArguments: Sendable {
    let scale: Double
    let gamma: Double
    let alpha: Double
    let numClasses: Int
    init(_ io: OpIO, minClasses: Int, _ classesRule: String) throws(OperatorError) {
        scale = try io.float("scale", 1)
        gamma = try io.float("gamma", 2)
        alpha = try io.float("alpha", 0.25)
        numClasses = try io.int("num_classes")
        try io.argument("num_classes", numClasses >= minClasses, classesRule)
        try io.argument("gamma", gamma >= 0, "must be ≥ 0")
    }

    /// The logits X (N, A·`numClasses`, H, W) and the labels (N, A, H, W), checked against each
    /// other: (X, its data, the labels' data, N, A, H, W).
    func inputs(_ io: OpIO) throws -> (Tensor, UnsafeBufferPointer<Float>, UnsafeBufferPointer<Int32>, Int, Int, Int, Int) {
        let k = numClasses
        let (x, xd) = try io.inputData(0)
        let t = try io.input(1)
        try io.require(x.rank == 4 && x.shape[1] % k == 0, input: 0, "must be (N, A·\(k), H, W), has shape \(x.shape)")
        let (n, a, h, w) = (x.shape[0], x.shape[1] / k, x.shape[2], x.shape[3])
        try io.require(t.shape == [n, a, h, w], input: 1, "has shape \(t.shape) but the logits need (\(n), \(a), \(h), \(w))")
        let td = try io.check(1, isInput: true) { () throws(StorageError) in try t.data(as: Int32.self) }
        return (x, xd, td, n, a, h, w)
    }
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
    let args: FocalLossArguments
    let gradient: Bool
    init(_ io: OpIO, gradient: Bool) throws(OperatorError) {
        self.io = io
        self.gradient = gradient
        args = try FocalLossArguments(io, minClasses: 1, "must be ≥ 1")
    }

    func run(_ ctx: ExecutionContext) throws {
        let (scale, gamma, alpha, k) = (args.scale, args.gamma, args.alpha, args.numClasses)
        let (x, xd, td, n, a, h, w) = try args.inputs(io)
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

/// The per-anchor softmax of RetinaNet's softmax classifier: X (N, A·C, H, W), each anchor's C
/// channels normalised (max subtracted, as Caffe2's `SpatialSoftmaxKernel`).
func groupSpatialSoftmax(_ x: UnsafeBufferPointer<Float>, into p: UnsafeMutableBufferPointer<Float>, n: Int, groups a: Int, classes c: Int, plane: Int) {
    for img in 0..<n {
        for anchor in 0..<a {
            let base = (img * a + anchor) * c * plane
            for pos in 0..<plane {
                var m = -Float.greatestFiniteMagnitude
                for k in 0..<c { m = max(m, x[base + k * plane + pos]) }
                var sum: Float = 0
                for k in 0..<c {
                    let e = exp(x[base + k * plane + pos] - m)
                    p[base + k * plane + pos] = e
                    sum += e
                }
                for k in 0..<c { p[base + k * plane + pos] /= sum }
            }
        }
    }
}

/// `GroupSpatialSoftmax(X; num_classes) -> P`: ``groupSpatialSoftmax(_:into:n:groups:classes:plane:)``
/// (Detectron's RetinaNet with RETINANET.SOFTMAX, at test).
final class GroupSpatialSoftmaxOp: Operator, Sendable {
    let io: OpIO
    let numClasses: Int
    init(_ io: OpIO) throws(OperatorError) {
        self.io = io
        numClasses = try io.int("num_classes")
        try io.argument("num_classes", numClasses >= 1, "must be ≥ 1")
    }

    func run(_ ctx: ExecutionContext) throws {
        let (x, xd) = try io.inputData(0)
        try io.require(x.rank == 4 && x.shape[1] % numClasses == 0, input: 0, "must be (N, A·\(numClasses), H, W), has shape \(x.shape)")
        let (_, p) = try io.outputData(0, shape: x.shape)
        groupSpatialSoftmax(xd, into: p, n: x.shape[0], groups: x.shape[1] / numClasses, classes: numClasses, plane: x.shape[2] * x.shape[3])
    }
}

/// `SoftmaxFocalLoss(X, labels, fg_num; scale=1, gamma=2, alpha=0.25, num_classes) -> (loss, P)`,
/// Detectron's RetinaNet loss with RETINANET.SOFTMAX (Caffe2's `modules/detectron` op): X is
/// (N, A·C, H, W) with C = `num_classes` (the background's 0 included), P its per-anchor softmax,
/// labels (N, A, H, W). Per anchor with label t ≥ 0: −(1 − p_t)^γ·log(max(p_t, FLT_MIN))·z, z =
/// (1 − α) for the background (t = 0), α otherwise, over max(fg_num, 1); t = −1 contributes 0; the
/// sum times `scale`.
/// `SoftmaxFocalLossGradient(X, labels, fg_num, P, dLoss) -> dX`: for the anchor's class k,
/// dLoss·scale·w·([k = t] − p_k) with w = z·(γ(1 − p_t)^(γ−1)·p_t·log p_t − (1 − p_t)^γ).
final class SoftmaxFocalLossOp: Operator, Sendable {
    let io: OpIO
    let args: FocalLossArguments
    let gradient: Bool
    init(_ io: OpIO, gradient: Bool) throws(OperatorError) {
        self.io = io
        self.gradient = gradient
        args = try FocalLossArguments(io, minClasses: 2, "must count the background too (≥ 2)")
    }

    func run(_ ctx: ExecutionContext) throws {
        let (scale, gamma, alpha, c) = (args.scale, args.gamma, args.alpha, args.numClasses)
        let (x, xd, td, n, a, h, w) = try args.inputs(io)
        let np = try foregroundNormalizer(io, 2), plane = h * w
        try io.require(td.allSatisfy { $0 >= -1 && Int($0) < c }, input: 1, "holds a label outside −1…\(c - 1)")
        /// (label, the flat index of its probability) of anchor (img, anchor, pos).
        func label(_ img: Int, _ anchor: Int, _ pos: Int) -> Int { Int(td[(img * a + anchor) * plane + pos]) }
        func z(_ label: Int) -> Double { (label == 0 ? 1 - alpha : alpha) / np }
        if !gradient {
            let (_, p) = try io.outputData(1, shape: x.shape)
            groupSpatialSoftmax(xd, into: p, n: n, groups: a, classes: c, plane: plane)
            var sum = 0.0
            for img in 0..<n {
                for anchor in 0..<a {
                    for pos in 0..<plane {
                        let l = label(img, anchor, pos)
                        guard l >= 0 else { continue }
                        let pt = Double(p[((img * a + anchor) * c + l) * plane + pos])
                        sum -= pow(1 - pt, gamma) * log(max(pt, Double(Float.leastNormalMagnitude))) * z(l)
                    }
                }
            }
            let (_, out) = try io.outputData(0, shape: [])
            out[0] = Float(sum * scale)
        } else {
            let (pt, pd) = try io.inputData(3)
            try io.require(pt.shape == x.shape, input: 3, "has shape \(pt.shape) but the logits have \(x.shape)")
            let g = Double(try lossGradient(io, 4)) * scale
            let (_, dx) = try io.outputData(0, shape: x.shape)
            for img in 0..<n {
                for anchor in 0..<a {
                    let base = (img * a + anchor) * c * plane
                    for pos in 0..<plane {
                        let l = label(img, anchor, pos)
                        guard l >= 0 else {
                            for k in 0..<c { dx[base + k * plane + pos] = 0 }
                            continue
                        }
                        let p = Double(pd[base + l * plane + pos]), onemp = 1 - p
                        let focal = gamma == 0 ? 0 : gamma * pow(onemp, gamma - 1) * p * log(max(p, Double(Float.leastNormalMagnitude)))
                        let weight = (focal - pow(onemp, gamma)) * z(l)
                        for k in 0..<c {
                            dx[base + k * plane + pos] = Float(g * weight * ((k == l ? 1 : 0) - Double(pd[base + k * plane + pos])))
                        }
                    }
                }
            }
        }
    }
}

func registerFocalLosses(_ r: inout OperatorRegistry) {
    r.register("GroupSpatialSoftmax", OperatorSchema(inputs: 1...1, outputs: 1...1) { io throws(OperatorError) in try GroupSpatialSoftmaxOp(io) })
    r.register("SoftmaxFocalLoss", OperatorSchema(inputs: 3...3, outputs: 2...2, gradient: { g in
        guard let dl = g.outputGradient(0) else { return .none }
        return GradientResult(ops: [OperatorDef("SoftmaxFocalLossGradient", inputs: g.def.inputs + [g.output(1), dl],
                                                outputs: [g.inputGradient(0)], arguments: g.def.arguments)], inputsWithGradient: [0])
    }) { io throws(OperatorError) in try SoftmaxFocalLossOp(io, gradient: false) })
    r.register("SoftmaxFocalLossGradient", OperatorSchema(inputs: 5...5, outputs: 1...1) { io throws(OperatorError) in
        try SoftmaxFocalLossOp(io, gradient: true)
    })
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

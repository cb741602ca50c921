import Foundation
import Storage

/// Reads integer labels (int32) of input `i`, one per row.
func labels(_ io: OpIO, _ i: Int, rows: Int) throws(OpRunError) -> UnsafeBufferPointer<Int32> {
    let t = try io.input(i)
    let d = try io.check(i, isInput: true) { () throws(StorageError) in try t.data(as: Int32.self) }
    try io.require(d.count == rows, input: i, "holds \(d.count) labels for \(rows) rows")
    return d
}

/// The scalar gradient seed (dLoss) of input `i`.
func lossGradient(_ io: OpIO, _ i: Int) throws(OpRunError) -> Float {
    let (t, d) = try io.inputData(i)
    try io.require(t.count == 1, input: i, "must be a scalar loss gradient, has shape \(t.shape)")
    return d[0]
}

/// `Softmax(X; axis=1) -> Y` over the dimensions from `axis` on; `SoftmaxGradient(Y, dY) -> dX`.
final class SoftmaxOp: Operator, Sendable {
    let io: OpIO
    let axis: Int
    let gradient: Bool
    init(_ io: OpIO, gradient: Bool) throws(OperatorError) {
        self.io = io
        self.gradient = gradient
        axis = try io.int("axis", 1)
    }

    static func softmaxRows(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, rows: Range<Int>, d: Int) {
        for r in rows {
            let xr = x + r * d, yr = y + r * d
            var m = -Float.infinity
            for j in 0..<d { m = max(m, xr[j]) }
            var s: Float = 0
            for j in 0..<d {
                yr[j] = exp(xr[j] - m)
                s += yr[j]
            }
            for j in 0..<d { yr[j] /= s }
        }
    }

    func run(_ ctx: ExecutionContext) throws {
        let (x, xd) = try io.inputData(0)
        let ax = try resolveAxis(axis, rank: x.rank, io: io)
        let rows = x.shape[..<ax].reduce(1, *), d = x.shape[ax...].reduce(1, *)
        if !gradient {
            let (_, y) = try io.outputData(0, shape: x.shape)
            ctx.chunks(rows, minimumChunk: 64) { Self.softmaxRows(xd.baseAddress!, y.baseAddress!, rows: $0, d: d) }
        } else {
            let (dy, dyd) = try io.inputData(1)
            try io.require(dy.shape == x.shape, input: 1, "has shape \(dy.shape) but Y has \(x.shape)")
            let (_, dx) = try io.outputData(0, shape: x.shape)
            for r in 0..<rows {
                var dot: Float = 0
                for j in 0..<d { dot += dyd[r * d + j] * xd[r * d + j] }
                for j in 0..<d { dx[r * d + j] = xd[r * d + j] * (dyd[r * d + j] - dot) }
            }
        }
    }
}

/// `SoftmaxWithLoss(X, labels[, weights]; scale=1) -> (P, loss)`:
/// `loss = scale · Σ_i w_i · −ln P[i, label_i] / Σ_i w_i` (weights 1 when absent, so the mean).
/// `SoftmaxWithLossGradient(X, labels[, weights], P, dLoss) -> dX`.
final class SoftmaxWithLossOp: Operator, Sendable {
    let io: OpIO
    let scale: Float
    let gradient: Bool
    init(_ io: OpIO, gradient: Bool) throws(OperatorError) {
        self.io = io
        self.gradient = gradient
        scale = Float(try io.float("scale", 1))
    }

    func run(_ ctx: ExecutionContext) throws {
        let (x, xd) = try io.inputData(0)
        try io.require(x.rank >= 1, input: 0, "must be (N, D), has shape \(x.shape)")
        let n = x.shape[0], d = n > 0 ? x.count / n : 0
        let lab = try labels(io, 1, rows: n)
        let hasWeights = gradient ? io.inputCount == 5 : io.inputCount == 3
        var weights: UnsafeBufferPointer<Float>?
        if hasWeights {
            let (w, wd) = try io.inputData(2)
            try io.require(w.count == n, input: 2, "holds \(w.count) weights for \(n) rows")
            weights = wd
        }
        for i in 0..<n { try io.require(lab[i] >= 0 && Int(lab[i]) < d, input: 1, "label \(lab[i]) at row \(i) is outside 0..<\(d)") }
        var norm: Float = 0
        for i in 0..<n { norm += weights?[i] ?? 1 }
        norm = max(norm, 1e-20)
        if !gradient {
            let (_, p) = try io.outputData(0, shape: x.shape)
            SoftmaxOp.softmaxRows(xd.baseAddress!, p.baseAddress!, rows: 0..<n, d: d)
            var loss = 0.0
            for i in 0..<n {
                loss -= Double(weights?[i] ?? 1) * Double(log(max(p[i * d + Int(lab[i])], Float.leastNormalMagnitude)))
            }
            let (_, l) = try io.outputData(1, shape: [])
            l[0] = Float(loss) * scale / norm
        } else {
            let pIndex = hasWeights ? 3 : 2
            let (_, pd) = try io.inputData(pIndex)
            let g = try lossGradient(io, pIndex + 1)
            let (_, dx) = try io.outputData(0, shape: x.shape)
            for i in 0..<n {
                let f = (weights?[i] ?? 1) * scale * g / norm
                for j in 0..<d { dx[i * d + j] = pd[i * d + j] * f }
                dx[i * d + Int(lab[i])] -= f
            }
        }
    }
}

/// `SigmoidCrossEntropyLoss(X, targets; scale=1, normalize=1) -> loss`, Detectron's op: per element
/// the stable BCE with logits, elements with target −1 ignored; the sum is divided by the number
/// of valid elements (at least 1e−5) when `normalize`, then multiplied by `scale`. Targets need
/// X's number of elements, not its shape.
/// `SigmoidCrossEntropyLossGradient(X, targets, dLoss) -> dX = (σ(x) − t)·scale/normalizer·dLoss`.
final class SigmoidCrossEntropyLossOp: Operator, Sendable {
    let io: OpIO
    let scale: Double
    let normalize: Bool
    let gradient: Bool
    init(_ io: OpIO, gradient: Bool) throws(OperatorError) {
        self.io = io
        self.gradient = gradient
        scale = try io.float("scale", 1)
        normalize = try io.bool("normalize", true)
    }

    func run(_ ctx: ExecutionContext) throws {
        let (x, xd) = try io.inputData(0)
        let t = try io.input(1)
        // Caffe2 checks the sizes only: Detectron's masks_int32 (R, K·M²) against logits (R, K, M, M).
        try io.require(t.count == x.count, input: 1, "has shape \(t.shape) (\(t.count) values) but the logits have \(x.shape)")
        let td = try io.check(1, isInput: true) { () throws(StorageError) in try t.data(as: Int32.self) }
        var valid = 0
        for i in 0..<x.count where td[i] != -1 { valid += 1 }
        let normalizer = normalize ? max(Double(valid), 1e-5) : 1
        if !gradient {
            var sum = 0.0
            for i in 0..<x.count where td[i] != -1 {
                let v = Double(xd[i]), pos = v >= 0 ? 1.0 : 0.0
                sum += -v * (Double(td[i]) - pos) + log(1 + exp(v - 2 * v * pos))
            }
            let (_, l) = try io.outputData(0, shape: [])
            l[0] = Float(sum * scale / normalizer)
        } else {
            let g = Double(try lossGradient(io, 2))
            let (_, dx) = try io.outputData(0, shape: x.shape)
            let f = scale / normalizer * g
            for i in 0..<x.count {
                dx[i] = td[i] == -1 ? 0 : Float((1 / (1 + exp(-Double(xd[i]))) - Double(td[i])) * f)
            }
        }
    }
}

/// Smooth L1 with transition `beta`: 0.5z²/β where |z| < β, else |z| − 0.5β.
func smoothL1(_ z: Double, beta: Double) -> Double {
    let a = abs(z)
    return a < beta ? 0.5 * z * z / beta : a - 0.5 * beta
}

/// The derivative of ``smoothL1(_:beta:)``: z/β where |z| < β, else the sign of z.
func smoothL1Derivative(_ z: Double, beta: Double) -> Double { abs(z) < beta ? z / beta : (z > 0 ? 1 : -1) }

/// The `beta` (> 0) and `scale` arguments of the smooth-L1 losses.
struct SmoothL1Arguments: Sendable {
    let beta: Double
    let scale: Double
    init(_ io: OpIO) throws(OperatorError) {
        beta = try io.float("beta", 1)
        scale = try io.float("scale", 1)
        try io.argument("beta", beta > 0, "must be positive")
    }
}

/// `SmoothL1Loss(Y_hat, Y, alpha_in, alpha_out; beta=1, scale=1) -> loss`:
/// `scale/N · Σ alpha_out · SmoothL1(alpha_in · (Y_hat − Y))`, N = Y_hat's first dimension,
/// `SmoothL1(z) = 0.5z²/β if |z| < β else |z| − 0.5β`.
/// `SmoothL1LossGradient(Y_hat, Y, alpha_in, alpha_out, dLoss) -> dY_hat`.
final class SmoothL1LossOp: Operator, Sendable {
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
        var data: [UnsafeBufferPointer<Float>] = []
        for i in 1...3 {
            let (t, d) = try io.inputData(i)
            try io.require(t.count == p.count, input: i, "has shape \(t.shape) but \(io.def.inputs[0]) has \(p.shape)")
            data.append(d)
        }
        let (y, win, wout) = (data[0], data[1], data[2])
        let n = max(1, p.rank > 0 ? p.shape[0] : 1)
        let f = args.scale / Double(n)
        if !gradient {
            var sum = 0.0
            for i in 0..<p.count {
                sum += Double(wout[i]) * smoothL1(Double(win[i]) * Double(pd[i] - y[i]), beta: args.beta)
            }
            let (_, l) = try io.outputData(0, shape: [])
            l[0] = Float(sum * f)
        } else {
            let g = Double(try lossGradient(io, 4))
            let (_, dx) = try io.outputData(0, shape: p.shape)
            for i in 0..<p.count {
                let dz = smoothL1Derivative(Double(win[i]) * Double(pd[i] - y[i]), beta: args.beta)
                dx[i] = Float(Double(wout[i]) * Double(win[i]) * dz * f * g)
            }
        }
    }
}

/// `Accuracy(P, labels; top_k=1) -> accuracy`: the fraction of rows whose label is among the
/// top-k scores (ties count against).
final class AccuracyOp: Operator, Sendable {
    let io: OpIO
    let topK: Int
    init(_ io: OpIO) throws(OperatorError) {
        self.io = io
        topK = try io.int("top_k", 1)
        try io.argument("top_k", topK >= 1, "must be ≥ 1")
    }

    func run(_ ctx: ExecutionContext) throws {
        let (p, pd) = try io.inputData(0)
        let n = p.rank > 0 ? p.shape[0] : 0, d = n > 0 ? p.count / n : 0
        let lab = try labels(io, 1, rows: n)
        var correct = 0
        for i in 0..<n {
            let l = Int(lab[i])
            try io.require(l >= 0 && l < d, input: 1, "label \(l) at row \(i) is outside 0..<\(d)")
            let v = pd[i * d + l]
            var better = 0
            for j in 0..<d where pd[i * d + j] > v || (pd[i * d + j] == v && j < l) { better += 1 }
            if better < topK { correct += 1 }
        }
        let (_, a) = try io.outputData(0, shape: [])
        a[0] = n > 0 ? Float(correct) / Float(n) : 0
    }
}

func registerSoftmaxAndLosses(_ r: inout OperatorRegistry) {
    r.register("Softmax", OperatorSchema(inputs: 1...1, outputs: 1...1, gradient: { g in
        GradientResult(ops: [OperatorDef("SoftmaxGradient", inputs: [g.output(0), g.outputGradient(0)!],
                                         outputs: [g.inputGradient(0)], arguments: g.def.arguments)], inputsWithGradient: [0])
    }) { io throws(OperatorError) in try SoftmaxOp(io, gradient: false) })
    r.register("SoftmaxGradient", OperatorSchema(inputs: 2...2, outputs: 1...1) { io throws(OperatorError) in try SoftmaxOp(io, gradient: true) })
    r.register("SoftmaxWithLoss", OperatorSchema(inputs: 2...3, outputs: 2...2, gradient: { g in
        guard let dl = g.outputGradient(1) else { return .none }
        return GradientResult(ops: [OperatorDef("SoftmaxWithLossGradient", inputs: g.def.inputs + [g.output(0), dl],
                                                outputs: [g.inputGradient(0)], arguments: g.def.arguments)], inputsWithGradient: [0])
    }) { io throws(OperatorError) in try SoftmaxWithLossOp(io, gradient: false) })
    r.register("SoftmaxWithLossGradient", OperatorSchema(inputs: 4...5, outputs: 1...1) { io throws(OperatorError) in
        try SoftmaxWithLossOp(io, gradient: true)
    })
    r.register("SigmoidCrossEntropyLoss", OperatorSchema(inputs: 2...2, outputs: 1...1, gradient: { g in
        GradientResult(ops: [OperatorDef("SigmoidCrossEntropyLossGradient", inputs: [g.input(0), g.input(1), g.outputGradient(0)!],
                                         outputs: [g.inputGradient(0)], arguments: g.def.arguments)], inputsWithGradient: [0])
    }) { io throws(OperatorError) in try SigmoidCrossEntropyLossOp(io, gradient: false) })
    r.register("SigmoidCrossEntropyLossGradient", OperatorSchema(inputs: 3...3, outputs: 1...1) { io throws(OperatorError) in
        try SigmoidCrossEntropyLossOp(io, gradient: true)
    })
    r.register("SmoothL1Loss", OperatorSchema(inputs: 4...4, outputs: 1...1, gradient: { g in
        GradientResult(ops: [OperatorDef("SmoothL1LossGradient", inputs: g.def.inputs + [g.outputGradient(0)!],
                                         outputs: [g.inputGradient(0)], arguments: g.def.arguments)], inputsWithGradient: [0])
    }) { io throws(OperatorError) in try SmoothL1LossOp(io, gradient: false) })
    r.register("SmoothL1LossGradient", OperatorSchema(inputs: 5...5, outputs: 1...1) { io throws(OperatorError) in
        try SmoothL1LossOp(io, gradient: true)
    })
    r.register("Accuracy", OperatorSchema(inputs: 2...2, outputs: 1...1) { io throws(OperatorError) in try AccuracyOp(io) })
}

import Foundation
import Storage

/// Checks an NC… input and a per-channel parameter; returns (n, c, spatial).
func channelLayout(_ io: OpIO, _ x: Tensor, param i: Int) throws(OpRunError) -> (Int, Int, Int) {
    try io.require(x.rank >= 2, input: 0, "must have at least 2 dimensions (N, C, …), has shape \(x.shape)")
    let (n, c) = (x.shape[0], x.shape[1])
    let p = try io.input(i)
    try io.require(p.count == c, input: i, "has \(p.count) values for \(c) channels")
    return (n, c, x.count / max(1, n * c))
}

/// `AffineChannel(X, scale, bias) -> Y`, `Y[n, c, …] = X[n, c, …]·scale[c] + bias[c]`; may run in place.
/// Detectron's stand-in for frozen BatchNorm: its gradient gives only dX unless `is_learnable`.
final class AffineChannelOp: Operator, Sendable {
    let io: OpIO
    init(_ io: OpIO) { self.io = io }

    func run(_ ctx: ExecutionContext) throws {
        let (x, xd) = try io.inputData(0)
        let (n, c, sp) = try channelLayout(io, x, param: 1)
        _ = try channelLayout(io, x, param: 2)
        let s = try io.inputData(1).1, b = try io.inputData(2).1
        let (_, y) = try io.outputData(0, shape: x.shape)
        ctx.parallelFor(n * c) { nc in
            let ch = nc % c, base = nc * sp
            let sv = s[ch], bv = b[ch]
            for i in 0..<sp { y[base + i] = xd[base + i] * sv + bv }
        }
    }
}

/// `AffineChannelGradient(dY, scale[, X]) -> (dX[, dscale, dbias])`; with `is_learnable` the
/// third input X is required for dscale.
final class AffineChannelGradientOp: Operator, Sendable {
    let io: OpIO
    let learnable: Bool
    init(_ io: OpIO) throws(OperatorError) {
        self.io = io
        learnable = try io.bool("is_learnable", false)
        try io.argument("is_learnable", !learnable || (io.inputCount == 3 && io.outputCount == 3), "needs inputs (dY, scale, X) and outputs (dX, dscale, dbias)")
    }

    func run(_ ctx: ExecutionContext) throws {
        let (dy, dyd) = try io.inputData(0)
        let (n, c, sp) = try channelLayout(io, dy, param: 1)
        let s = try io.inputData(1).1
        var xd: UnsafeBufferPointer<Float>?
        if learnable {
            let (x, d) = try io.inputData(2)
            try io.require(x.shape == dy.shape, input: 2, "has shape \(x.shape) but the gradient has \(dy.shape)")
            xd = d
        }
        if learnable {
            // dscale and dbias first: dX may be written in place over dY.
            let (_, ds) = try io.outputData(1, shape: [c])
            let (_, db) = try io.outputData(2, shape: [c])
            for ch in 0..<c {
                var accS = 0.0, accB = 0.0
                for img in 0..<n {
                    let base = (img * c + ch) * sp
                    for i in 0..<sp {
                        accS += Double(dyd[base + i] * xd![base + i])
                        accB += Double(dyd[base + i])
                    }
                }
                ds[ch] = Float(accS)
                db[ch] = Float(accB)
            }
        }
        let (_, dx) = try io.outputData(0, shape: dy.shape)
        ctx.parallelFor(n * c) { nc in
            let sv = s[nc % c], base = nc * sp
            for i in 0..<sp { dx[base + i] = dyd[base + i] * sv }
        }
    }
}

/// `GroupNorm(X, gamma, beta; group=32, epsilon=1e-5) -> (Y, mean, rstd)`, NCHW; mean and rstd
/// (1/σ) are (N, G), kept for the gradient.
final class GroupNormOp: Operator, Sendable {
    let io: OpIO
    let groups: Int
    let epsilon: Double
    init(_ io: OpIO) throws(OperatorError) {
        self.io = io
        groups = try io.int("group", 32)
        epsilon = try io.float("epsilon", 1e-5)
        try io.argument("group", groups > 0, "must be positive")
    }

    func run(_ ctx: ExecutionContext) throws {
        let (x, xd) = try io.inputData(0)
        let (n, c, sp) = try channelLayout(io, x, param: 1)
        _ = try channelLayout(io, x, param: 2)
        try io.require(c % groups == 0, input: 0, "has \(c) channels, not divisible into \(groups) groups")
        let gamma = try io.inputData(1).1, beta = try io.inputData(2).1
        let (_, y) = try io.outputData(0, shape: x.shape)
        let (_, mean) = try io.outputData(1, shape: [n, groups])
        let (_, rstd) = try io.outputData(2, shape: [n, groups])
        let cpg = c / groups, d = cpg * sp, eps = epsilon
        ctx.parallelFor(n * groups) { ng in
            let base = ng * d
            var sum = 0.0, sq = 0.0
            for i in 0..<d {
                let v = Double(xd[base + i])
                sum += v
                sq += v * v
            }
            let mu = sum / Double(d)
            let variance = max(0, sq / Double(d) - mu * mu)
            let r = 1 / (variance + eps).squareRoot()
            mean[ng] = Float(mu)
            rstd[ng] = Float(r)
            let g0 = (ng % groups) * cpg
            for cc in 0..<cpg {
                let ch = g0 + cc
                let a = Float(r) * gamma[ch], b = beta[ch] - Float(mu * r) * gamma[ch]
                let off = base + cc * sp
                for i in 0..<sp { y[off + i] = xd[off + i] * a + b }
            }
        }
    }
}

/// `GroupNormGradient(dY, X, gamma, beta, mean, rstd) -> (dX, dgamma, dbeta)`.
final class GroupNormGradientOp: Operator, Sendable {
    let io: OpIO
    let groups: Int
    init(_ io: OpIO) throws(OperatorError) {
        self.io = io
        groups = try io.int("group", 32)
    }

    func run(_ ctx: ExecutionContext) throws {
        let (dy, dyd) = try io.inputData(0)
        let (x, xd) = try io.inputData(1)
        try io.require(dy.shape == x.shape, input: 0, "has shape \(dy.shape) but X has \(x.shape)")
        let (n, c, sp) = try channelLayout(io, x, param: 2)
        let gamma = try io.inputData(2).1
        let mean = try io.inputData(4).1, rstd = try io.inputData(5).1
        try io.require(mean.count == n * groups, input: 4, "has \(mean.count) values, expected \(n * groups)")
        let cpg = c / groups, d = cpg * sp
        // dgamma, dbeta per channel.
        let (_, dg) = try io.outputData(1, shape: [c])
        let (_, db) = try io.outputData(2, shape: [c])
        for ch in 0..<c {
            var ag = 0.0, ab = 0.0
            for img in 0..<n {
                let ng = img * groups + ch / cpg
                let mu = mean[ng], r = rstd[ng]
                let base = (img * c + ch) * sp
                for i in 0..<sp {
                    let g = Double(dyd[base + i])
                    ag += g * Double((xd[base + i] - mu) * r)
                    ab += g
                }
            }
            dg[ch] = Float(ag)
            db[ch] = Float(ab)
        }
        let (_, dx) = try io.outputData(0, shape: x.shape)
        ctx.parallelFor(n * groups) { ng in
            let base = ng * d, g0 = (ng % groups) * cpg
            let mu = Double(mean[ng]), r = Double(rstd[ng])
            // dx = r·(dy·γ − mean(dy·γ) − x̂·mean(dy·γ·x̂))
            var m1 = 0.0, m2 = 0.0
            for cc in 0..<cpg {
                let gm = Double(gamma[g0 + cc]), off = base + cc * sp
                for i in 0..<sp {
                    let gy = Double(dyd[off + i]) * gm
                    m1 += gy
                    m2 += gy * (Double(xd[off + i]) - mu) * r
                }
            }
            m1 /= Double(d)
            m2 /= Double(d)
            for cc in 0..<cpg {
                let gm = Double(gamma[g0 + cc]), off = base + cc * sp
                for i in 0..<sp {
                    let xhat = (Double(xd[off + i]) - mu) * r
                    dx[off + i] = Float(r * (Double(dyd[off + i]) * gm - m1 - xhat * m2))
                }
            }
        }
    }
}

/// `SpatialBN`: batch normalisation over (N, H, W) per channel.
/// - Test (`is_test=1`): `(X, scale, bias, mean, var) -> Y` with the given statistics.
/// - Train: `(X, scale, bias, running_mean, running_var) -> (Y, running_mean, running_var,
///   saved_mean, saved_inv_std)`; running statistics are updated in place,
///   `running = momentum·running + (1 − momentum)·batch` (biased batch variance, as Caffe2).
final class SpatialBNOp: Operator, Sendable {
    let io: OpIO
    let isTest: Bool
    let epsilon: Double
    let momentum: Double
    init(_ io: OpIO) throws(OperatorError) {
        self.io = io
        isTest = try io.bool("is_test", false)
        epsilon = try io.float("epsilon", 1e-5)
        momentum = try io.float("momentum", 0.9)
        try io.argument("outputs", isTest ? io.outputCount == 1 : io.outputCount == 5,
                        isTest ? "must be (Y) in test mode" : "must be (Y, running_mean, running_var, saved_mean, saved_inv_std) in training")
    }

    func run(_ ctx: ExecutionContext) throws {
        let (x, xd) = try io.inputData(0)
        let (n, c, sp) = try channelLayout(io, x, param: 1)
        for i in 2...4 { _ = try channelLayout(io, x, param: i) }
        let scale = try io.inputData(1).1, bias = try io.inputData(2).1
        let rm = try io.inputData(3).1, rv = try io.inputData(4).1
        var mean = [Double](repeating: 0, count: c), inv = [Double](repeating: 0, count: c)
        if isTest {
            for ch in 0..<c {
                mean[ch] = Double(rm[ch])
                inv[ch] = 1 / (Double(rv[ch]) + epsilon).squareRoot()
            }
        } else {
            let count = Double(n * sp)
            var variance = [Double](repeating: 0, count: c)
            for ch in 0..<c {
                var s = 0.0, q = 0.0
                for img in 0..<n {
                    let base = (img * c + ch) * sp
                    for i in 0..<sp {
                        let v = Double(xd[base + i])
                        s += v
                        q += v * v
                    }
                }
                mean[ch] = s / count
                variance[ch] = max(0, q / count - mean[ch] * mean[ch])
                inv[ch] = 1 / (variance[ch] + epsilon).squareRoot()
            }
            // Read the old running statistics before writing (the outputs alias the inputs).
            let oldMean = (0..<c).map { Double(rm[$0]) }, oldVar = (0..<c).map { Double(rv[$0]) }
            let (_, nm) = try io.outputData(1, shape: [c])
            let (_, nv) = try io.outputData(2, shape: [c])
            let (_, sm) = try io.outputData(3, shape: [c])
            let (_, si) = try io.outputData(4, shape: [c])
            for ch in 0..<c {
                nm[ch] = Float(momentum * oldMean[ch] + (1 - momentum) * mean[ch])
                nv[ch] = Float(momentum * oldVar[ch] + (1 - momentum) * variance[ch])
                sm[ch] = Float(mean[ch])
                si[ch] = Float(inv[ch])
            }
        }
        let (_, y) = try io.outputData(0, shape: x.shape)
        for img in 0..<n {
            for ch in 0..<c {
                let a = Float(inv[ch]) * scale[ch], b = bias[ch] - Float(mean[ch] * inv[ch]) * scale[ch]
                let base = (img * c + ch) * sp
                for i in 0..<sp { y[base + i] = xd[base + i] * a + b }
            }
        }
    }
}

/// `SpatialBNGradient(X, scale, dY, mean, inv_std_or_var) -> (dX, dscale, dbias)`. In training the
/// last two inputs are the saved batch statistics; with `is_test=1` they are the fixed mean and
/// variance, and the statistics are constants.
final class SpatialBNGradientOp: Operator, Sendable {
    let io: OpIO
    let isTest: Bool
    let epsilon: Double
    init(_ io: OpIO) throws(OperatorError) {
        self.io = io
        isTest = try io.bool("is_test", false)
        epsilon = try io.float("epsilon", 1e-5)
    }

    func run(_ ctx: ExecutionContext) throws {
        let (x, xd) = try io.inputData(0)
        let (n, c, sp) = try channelLayout(io, x, param: 1)
        let scale = try io.inputData(1).1
        let (dy, dyd) = try io.inputData(2)
        try io.require(dy.shape == x.shape, input: 2, "has shape \(dy.shape) but X has \(x.shape)")
        let m = try io.inputData(3).1, s = try io.inputData(4).1
        let (_, ds) = try io.outputData(1, shape: [c])
        let (_, db) = try io.outputData(2, shape: [c])
        var sumDy = [Double](repeating: 0, count: c), sumDyXhat = [Double](repeating: 0, count: c)
        var inv = [Double](repeating: 0, count: c)
        for ch in 0..<c {
            inv[ch] = isTest ? 1 / (Double(s[ch]) + epsilon).squareRoot() : Double(s[ch])
            for img in 0..<n {
                let base = (img * c + ch) * sp
                for i in 0..<sp {
                    let g = Double(dyd[base + i])
                    sumDy[ch] += g
                    sumDyXhat[ch] += g * (Double(xd[base + i]) - Double(m[ch])) * inv[ch]
                }
            }
            ds[ch] = Float(sumDyXhat[ch])
            db[ch] = Float(sumDy[ch])
        }
        let (_, dx) = try io.outputData(0, shape: x.shape)
        let count = Double(n * sp)
        for img in 0..<n {
            for ch in 0..<c {
                let base = (img * c + ch) * sp
                let g = Double(scale[ch]) * inv[ch]
                for i in 0..<sp {
                    if isTest {
                        dx[base + i] = Float(Double(dyd[base + i]) * g)
                    } else {
                        let xhat = (Double(xd[base + i]) - Double(m[ch])) * inv[ch]
                        dx[base + i] = Float(g * (Double(dyd[base + i]) - sumDy[ch] / count - xhat * sumDyXhat[ch] / count))
                    }
                }
            }
        }
    }
}

func registerNormalization(_ r: inout OperatorRegistry) {
    r.register("AffineChannel", OperatorSchema(inputs: 3...3, outputs: 1...1, allowsInPlace: true, gradient: { g in
        let learnable = g.def.arguments["is_learnable"] == .int(1)
        if learnable {
            return GradientResult(ops: [OperatorDef("AffineChannelGradient", inputs: [g.outputGradient(0)!, g.input(1), g.input(0)],
                                                    outputs: [g.inputGradient(0), g.inputGradient(1), g.inputGradient(2)],
                                                    arguments: ["is_learnable": .int(1)])], inputsWithGradient: [0, 1, 2])
        }
        return GradientResult(ops: [OperatorDef("AffineChannelGradient", inputs: [g.outputGradient(0)!, g.input(1)],
                                                outputs: [g.inputGradient(0)])], inputsWithGradient: [0])
    }) { io throws(OperatorError) in
        if try io.bool("is_learnable", false), io.def.inputs[0] == io.def.outputs[0] {
            throw .badArgument(name: "is_learnable", at: io.location, reason: "cannot be set on an in-place AffineChannel (the gradient of scale needs X)")
        }
        return AffineChannelOp(io)
    })
    r.register("AffineChannelGradient", OperatorSchema(inputs: 2...3, outputs: 1...3, allowsInPlace: true) { io throws(OperatorError) in
        try AffineChannelGradientOp(io)
    })
    r.register("GroupNorm", OperatorSchema(inputs: 3...3, outputs: 3...3, gradient: { g in
        GradientResult(ops: [OperatorDef("GroupNormGradient",
                                         inputs: [g.outputGradient(0)!, g.input(0), g.input(1), g.input(2), g.output(1), g.output(2)],
                                         outputs: [g.inputGradient(0), g.inputGradient(1), g.inputGradient(2)], arguments: g.def.arguments)],
                       inputsWithGradient: [0, 1, 2])
    }) { io throws(OperatorError) in try GroupNormOp(io) })
    r.register("GroupNormGradient", OperatorSchema(inputs: 6...6, outputs: 3...3) { io throws(OperatorError) in try GroupNormGradientOp(io) })
    r.register("SpatialBN", OperatorSchema(inputs: 5...5, outputs: 1...5, allowsInPlace: true, gradient: { g in
        let isTest = g.def.arguments["is_test"] == .int(1)
        let stats = isTest ? [g.input(3), g.input(4)] : [g.output(3), g.output(4)]
        return GradientResult(ops: [OperatorDef("SpatialBNGradient", inputs: [g.input(0), g.input(1), g.outputGradient(0)!] + stats,
                                                outputs: [g.inputGradient(0), g.inputGradient(1), g.inputGradient(2)], arguments: g.def.arguments)],
                              inputsWithGradient: [0, 1, 2])
    }) { io throws(OperatorError) in try SpatialBNOp(io) })
    r.register("SpatialBNGradient", OperatorSchema(inputs: 5...5, outputs: 3...3) { io throws(OperatorError) in try SpatialBNGradientOp(io) })
}

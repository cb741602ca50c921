import Foundation
import Storage

extension ExecutionContext {
    /// Splits `0..<count` into contiguous chunks run in parallel when the work is large enough.
    func chunks(_ count: Int, minimumChunk: Int = 16_384, _ body: (Range<Int>) -> Void) {
        let threads = (pool?.liveThreadCount ?? 0) + 1
        let parts = max(1, min(threads * 2, count / minimumChunk))
        if parts == 1 {
            body(0..<count)
            return
        }
        parallelFor(parts) { p in body(count * p / parts..<count * (p + 1) / parts) }
    }
}

/// `Y = f(X)` elementwise; may run in place.
final class UnaryOp: Operator, Sendable {
    let io: OpIO
    let f: @Sendable (UnsafePointer<Float>, UnsafeMutablePointer<Float>, Range<Int>) -> Void
    init(_ io: OpIO, _ f: @escaping @Sendable (UnsafePointer<Float>, UnsafeMutablePointer<Float>, Range<Int>) -> Void) {
        self.io = io
        self.f = f
    }

    func run(_ ctx: ExecutionContext) throws {
        let (x, xd) = try io.inputData(0)
        let (_, yd) = try io.outputData(0, shape: x.shape)
        guard let xp = xd.baseAddress, let yp = yd.baseAddress else { return }
        ctx.chunks(x.count) { f(xp, yp, $0) }
    }
}

/// `dX = g(Y, dY)` elementwise; may run in place on dY.
final class UnaryGradientOp: Operator, Sendable {
    let io: OpIO
    let g: @Sendable (UnsafePointer<Float>, UnsafePointer<Float>, UnsafeMutablePointer<Float>, Range<Int>) -> Void
    init(_ io: OpIO, _ g: @escaping @Sendable (UnsafePointer<Float>, UnsafePointer<Float>, UnsafeMutablePointer<Float>, Range<Int>) -> Void) {
        self.io = io
        self.g = g
    }

    func run(_ ctx: ExecutionContext) throws {
        let (y, yd) = try io.inputData(0)
        let (dy, dyd) = try io.inputData(1)
        try io.require(dy.shape == y.shape, input: 1, "has shape \(dy.shape) but \(io.def.inputs[0]) has \(y.shape)")
        let (_, dxd) = try io.outputData(0, shape: y.shape)
        guard let yp = yd.baseAddress, let dyp = dyd.baseAddress, let dxp = dxd.baseAddress else { return }
        ctx.chunks(y.count) { g(yp, dyp, dxp, $0) }
    }
}

/// Sum of any number of same-shaped inputs (`Sum`), optionally in place on the first.
final class SumOp: Operator, Sendable {
    let io: OpIO
    /// A fused Relu (``NetDef/fusedForInference(keeping:)``), with Relu's arithmetic.
    let relu: Bool
    init(_ io: OpIO) throws(OperatorError) {
        self.io = io
        relu = try io.bool("fused_relu", false)
    }

    func run(_ ctx: ExecutionContext) throws {
        let inputs = try (0..<io.inputCount).map { i throws(OpRunError) in try io.inputData(i) }
        let shape = inputs[0].0.shape
        for (i, input) in inputs.enumerated() {
            try io.require(input.0.shape == shape, input: i, "has shape \(input.0.shape) but \(io.def.inputs[0]) has \(shape)")
        }
        let (_, yd) = try io.outputData(0, shape: shape)
        let pointers = inputs.map { $0.1.baseAddress }
        guard let y = yd.baseAddress else { return }
        ctx.chunks(yd.count) { r in
            for i in r {
                var acc: Float = 0
                for p in pointers { acc += p![i] }
                y[i] = relu && !(acc > 0) ? 0 : acc
            }
        }
    }
}

/// The arguments `Add`/`Mul` and their gradient share: Caffe2's legacy broadcasting, where B
/// matches A's dimensions from `axis` on.
struct BinaryArguments {
    let isMul: Bool
    let broadcast: Bool
    let axis: Int?

    init(_ io: OpIO, mul: Bool) throws(OperatorError) {
        isMul = mul
        broadcast = try io.bool("broadcast", false)
        axis = io.has("axis") ? try io.int("axis") : nil
    }

    /// (outer, bCount, inner) such that A[o, b, i] pairs with B[b].
    func layout(a: [Int], b: [Int], io: OpIO) throws(OpRunError) -> (Int, Int, Int) {
        if a == b { return (1, a.reduce(1, *), 1) }
        try io.require(broadcast, input: 1, "has shape \(b) but \(io.def.inputs[0]) has \(a) (set broadcast: 1 to broadcast it)")
        let bCount = b.reduce(1, *)
        if bCount == 1 { return (a.reduce(1, *), 1, 1) }
        let ax = axis ?? (a.count - b.count)
        try io.require(ax >= 0 && ax + b.count <= a.count && Array(a[ax..<ax + b.count]) == b, input: 1,
                       "shape \(b) does not match \(io.def.inputs[0])'s \(a) from axis \(ax)")
        return (a[..<ax].reduce(1, *), bCount, a[(ax + b.count)...].reduce(1, *))
    }
}

/// Caffe2's `Add`/`Mul` with legacy broadcasting (``BinaryArguments``).
final class BinaryOp: Operator, Sendable {
    let io: OpIO
    let args: BinaryArguments

    init(_ io: OpIO, mul: Bool) throws(OperatorError) {
        self.io = io
        args = try BinaryArguments(io, mul: mul)
    }

    func run(_ ctx: ExecutionContext) throws {
        let (a, ad) = try io.inputData(0)
        let (b, bd) = try io.inputData(1)
        let (outer, nb, inner) = try args.layout(a: a.shape, b: b.shape, io: io)
        let (_, yd) = try io.outputData(0, shape: a.shape)
        guard let ap = ad.baseAddress, let bp = bd.baseAddress, let yp = yd.baseAddress else { return }
        let mul = args.isMul
        ctx.chunks(outer * nb) { r in
            for ob in r {
                let bv = bp[ob % nb]
                let base = ob * inner
                for k in 0..<inner { yp[base + k] = mul ? ap[base + k] * bv : ap[base + k] + bv }
            }
        }
    }
}

/// Gradients of `Add`/`Mul`: inputs (dY, A, B), outputs (dA, dB); dB is reduced over the
/// broadcast dimensions.
final class BinaryGradientOp: Operator, Sendable {
    let io: OpIO
    let args: BinaryArguments

    init(_ io: OpIO, mul: Bool) throws(OperatorError) {
        self.io = io
        args = try BinaryArguments(io, mul: mul)
    }

    func run(_ ctx: ExecutionContext) throws {
        let (_, dyd) = try io.inputData(0)
        let (a, ad) = try io.inputData(1)
        let (b, bd) = try io.inputData(2)
        let (outer, nb, inner) = try args.layout(a: a.shape, b: b.shape, io: io)
        let (_, da) = try io.outputData(0, shape: a.shape)
        let (_, db) = try io.outputData(1, shape: b.shape)
        var dbAcc = [Double](repeating: 0, count: nb)
        for o in 0..<outer {
            for j in 0..<nb {
                let base = (o * nb + j) * inner
                var acc = 0.0
                for k in 0..<inner {
                    let g = dyd[base + k]
                    if args.isMul {
                        da[base + k] = g * bd[j]
                        acc += Double(g * ad[base + k])
                    } else {
                        da[base + k] = g
                        acc += Double(g)
                    }
                }
                dbAcc[j] += acc
            }
        }
        for j in 0..<nb { db[j] = Float(dbAcc[j]) }
    }
}

/// `WeightedSum(X0, w0, X1, w1, …)`: `Y = Σ w_i · X_i`, with each `w_i` a one-element tensor.
final class WeightedSumOp: Operator, Sendable {
    let io: OpIO
    init(_ io: OpIO) { self.io = io }

    func run(_ ctx: ExecutionContext) throws {
        let (x0, _) = try io.inputData(0)
        let shape = x0.shape
        var terms: [(UnsafePointer<Float>?, Float)] = []
        for k in stride(from: 0, to: io.inputCount, by: 2) {
            let (x, xd) = try io.inputData(k)
            let (w, wd) = try io.inputData(k + 1)
            try io.require(x.shape == shape, input: k, "has shape \(x.shape) but \(io.def.inputs[0]) has \(shape)")
            try io.require(w.count == 1, input: k + 1, "must hold one weight, has shape \(w.shape)")
            terms.append((xd.baseAddress, wd[0]))
        }
        let (_, yd) = try io.outputData(0, shape: shape)
        guard let y = yd.baseAddress else { return }
        ctx.chunks(yd.count) { r in
            for i in r {
                var acc: Float = 0
                for (p, w) in terms { acc += p![i] * w }
                y[i] = acc
            }
        }
    }
}

/// `Copy`, `StopGradient` (identity, in place allowed) and `ResizeLike`-style reshaping copies.
final class CopyOp: Operator, Sendable {
    let io: OpIO
    /// When set, the output takes the shape of this input instead of input 0's.
    let shapeFrom: Int?
    init(_ io: OpIO, shapeFrom: Int? = nil) {
        self.io = io
        self.shapeFrom = shapeFrom
    }

    func run(_ ctx: ExecutionContext) throws {
        let x = try io.input(0)
        let shape = try shapeFrom.map { i throws(OpRunError) in try io.input(i).shape } ?? x.shape
        try io.require(shape.reduce(1, *) == x.count, input: 0, "has \(x.count) elements, cannot take shape \(shape)")
        if io.def.outputs[0] == io.def.inputs[0] {
            try io.check(0, isInput: false) { () throws(StorageError) in try x.reshape(shape) }
            return
        }
        let y = try io.output(0, shape: shape, dtype: x.dtype)
        try io.check(0, isInput: false) { () throws(StorageError) in
            try y.copy(from: x)
            try y.reshape(shape)
        }
    }
}

func registerElementwise(_ r: inout OperatorRegistry) {
    r.register("Relu", OperatorSchema(inputs: 1...1, outputs: 1...1, allowsInPlace: true, gradient: { g in
        GradientResult(ops: [OperatorDef("ReluGradient", inputs: [g.output(0), g.outputGradient(0)!], outputs: [g.inputGradient(0)])],
                       inputsWithGradient: [0])
    }) { io in
        UnaryOp(io) { x, y, r in for i in r { y[i] = x[i] > 0 ? x[i] : 0 } }
    })
    r.register("ReluGradient", OperatorSchema(inputs: 2...2, outputs: 1...1, allowsInPlace: true) { io in
        UnaryGradientOp(io) { y, dy, dx, r in for i in r { dx[i] = y[i] > 0 ? dy[i] : 0 } }
    })
    r.register("Sigmoid", OperatorSchema(inputs: 1...1, outputs: 1...1, allowsInPlace: true, gradient: { g in
        GradientResult(ops: [OperatorDef("SigmoidGradient", inputs: [g.output(0), g.outputGradient(0)!], outputs: [g.inputGradient(0)])],
                       inputsWithGradient: [0])
    }) { io in
        UnaryOp(io) { x, y, r in for i in r { y[i] = 1 / (1 + exp(-x[i])) } }
    })
    r.register("SigmoidGradient", OperatorSchema(inputs: 2...2, outputs: 1...1, allowsInPlace: true) { io in
        UnaryGradientOp(io) { y, dy, dx, r in for i in r { dx[i] = dy[i] * y[i] * (1 - y[i]) } }
    })
    r.register("Scale", OperatorSchema(inputs: 1...1, outputs: 1...1, allowsInPlace: true, gradient: { g in
        GradientResult(ops: [OperatorDef("Scale", inputs: [g.outputGradient(0)!], outputs: [g.inputGradient(0)], arguments: g.def.arguments)],
                       inputsWithGradient: [0])
    }) { io throws(OperatorError) in
        let s = Float(try io.float("scale", 1))
        return UnaryOp(io) { x, y, r in for i in r { y[i] = x[i] * s } }
    })
    r.register("Sum", OperatorSchema(inputs: 1...Int.max, outputs: 1...1, allowsInPlace: true, gradient: { g throws(GradientRefusal) in
        try GradientRefusal.ifFused(g.def, ["fused_relu"])
        return GradientResult(ops: g.def.inputs.indices.map { OperatorDef("Copy", inputs: [g.outputGradient(0)!], outputs: [g.inputGradient($0)]) },
                       inputsWithGradient: Set(g.def.inputs.indices))
    }) { io throws(OperatorError) in try SumOp(io) })
    for (name, mul) in [("Add", false), ("Mul", true)] {
        r.register(name, OperatorSchema(inputs: 2...2, outputs: 1...1, allowsInPlace: true, gradient: { g in
            GradientResult(ops: [OperatorDef(name + "Gradient", inputs: [g.outputGradient(0)!, g.input(0), g.input(1)],
                                             outputs: [g.inputGradient(0), g.inputGradient(1)], arguments: g.def.arguments)],
                           inputsWithGradient: [0, 1])
        }) { io throws(OperatorError) in try BinaryOp(io, mul: mul) })
        r.register(name + "Gradient", OperatorSchema(inputs: 3...3, outputs: 2...2) { io throws(OperatorError) in try BinaryGradientOp(io, mul: mul) })
    }
    r.register("WeightedSum", OperatorSchema(inputs: 2...Int.max, outputs: 1...1, allowsInPlace: true) { io throws(OperatorError) in
        try io.argument("inputs", io.inputCount % 2 == 0, "must come in (X, weight) pairs, got \(io.inputCount) inputs")
        return WeightedSumOp(io)
    })
    r.register("Copy", OperatorSchema(inputs: 1...1, outputs: 1...1, gradient: { g in
        GradientResult(ops: [OperatorDef("Copy", inputs: [g.outputGradient(0)!], outputs: [g.inputGradient(0)])], inputsWithGradient: [0])
    }) { io in CopyOp(io) })
    r.register("StopGradient", OperatorSchema(inputs: 1...1, outputs: 1...1, allowsInPlace: true, gradient: { _ in .none }) { io in CopyOp(io) })
    // Copies input 0 with the shape of input 1 (the gradient of Flatten and Reshape-like ops).
    r.register("ResizeLike", OperatorSchema(inputs: 2...2, outputs: 1...1, allowsInPlace: true) { io in CopyOp(io, shapeFrom: 1) })
}

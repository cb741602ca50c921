import Foundation
import Portability
import Storage

extension SplitMix64 {
    /// Standard normal (Box–Muller), for the Gaussian fillers.
    mutating func gaussian() -> Double {
        let u1 = max(unit(), 1e-300), u2 = unit()
        return (-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2)
    }
}

/// FNV-1a: a stable hash of a blob name (Swift's `Hasher` changes every run).
func stableHash(_ s: String) -> UInt64 {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for b in s.utf8 {
        h ^= UInt64(b)
        h &*= 0x100_0000_01b3
    }
    return h
}

/// `ConstantFill`, `GaussianFill`, `XavierFill`, `MSRAFill`, `UniformFill`: fill the output with
/// `shape` (or input 0's shape, or with `input_as_shape` input 0's int64 values).
/// Xavier is U(±√(3/fan_in)), fan_in = numel/dim0; MSRA is N(0, √(2/fan_out)),
/// fan_out = numel/dim1 — Caffe2's definitions. Random fills are seeded by the `seed` argument,
/// else by the net's seed mixed with the output's name, so they are reproducible.
final class FillOp: Operator, Sendable {
    enum Kind { case constant, gaussian, xavier, msra, uniform }
    let io: OpIO
    let kind: Kind
    let shape: [Int]?
    let inputAsShape: Bool
    let value: Double
    let mean: Double
    let std: Double
    let low: Double
    let high: Double
    let dtype: DType
    let seed: UInt64?

    init(_ io: OpIO, _ kind: Kind) throws(OperatorError) {
        self.io = io
        self.kind = kind
        shape = io.has("shape") ? try io.ints("shape") : nil
        inputAsShape = try io.bool("input_as_shape", false)
        value = try io.float("value", 0)
        mean = try io.float("mean", 0)
        std = try io.float("std", 1)
        low = try io.float("min", 0)
        high = try io.float("max", 1)
        seed = io.has("seed") ? UInt64(bitPattern: Int64(try io.int("seed"))) : nil
        switch io.def.arguments["dtype"] {
        case nil, .int(1)?, .string("float32")?, .string("float")?: dtype = .float32
        case .int(2)?, .string("int32")?: dtype = .int32
        case .int(10)?, .string("int64")?: dtype = .int64
        case .int(6)?, .string("uint8")?: dtype = .uint8
        case let v?: throw .badArgument(name: "dtype", at: io.location, reason: "must be float32 (1), int32 (2), int64 (10) or uint8 (6), got \(v)")
        }
        try io.argument("shape", shape != nil || io.inputCount == 1, "is required when there is no input to take the shape from")
        try io.argument("dtype", kind == .constant || dtype == .float32, "must be float32 for random fills")
        if let shape { try io.argument("shape", shape.allSatisfy { $0 >= 0 }, "must not be negative, got \(shape)") }
    }

    func run(_ ctx: ExecutionContext) throws {
        var outShape = shape ?? []
        if shape == nil {
            let x = try io.input(0)
            if inputAsShape {
                outShape = try io.check(0, isInput: true) { () throws(StorageError) in try x.toArray(as: Int64.self).map(Int.init) }
            } else {
                outShape = x.shape
            }
        }
        let y = try io.output(0, shape: outShape, dtype: dtype)
        var rng = SplitMix64(seed: seed ?? (ctx.seed ^ stableHash(io.def.outputs[0])))
        switch (kind, dtype) {
        case (.constant, .int32):
            try io.check(0, isInput: false) { () throws(StorageError) in try y.mutableData(as: Int32.self).update(repeating: Int32(value)) }
        case (.constant, .int64):
            try io.check(0, isInput: false) { () throws(StorageError) in try y.mutableData(as: Int64.self).update(repeating: Int64(value)) }
        case (.constant, .uint8):
            try io.check(0, isInput: false) { () throws(StorageError) in try y.mutableData(as: UInt8.self).update(repeating: UInt8(value)) }
        default:
            let p = try io.check(0, isInput: false) { () throws(StorageError) in try y.mutableData(as: Float.self) }
            let count = p.count
            switch kind {
            case .constant:
                p.update(repeating: Float(value))
            case .gaussian:
                for i in 0..<count { p[i] = Float(mean + std * rng.gaussian()) }
            case .uniform:
                for i in 0..<count { p[i] = Float(low + (high - low) * rng.unit()) }
            case .xavier:
                let fanIn = outShape.isEmpty || outShape[0] == 0 ? 1 : count / outShape[0]
                let s = (3 / Double(max(fanIn, 1))).squareRoot()
                for i in 0..<count { p[i] = Float(-s + 2 * s * rng.unit()) }
            case .msra:
                let fanOut = outShape.count < 2 || outShape[1] == 0 ? max(count, 1) : count / outShape[1]
                let s = (2 / Double(max(fanOut, 1))).squareRoot()
                for i in 0..<count { p[i] = Float(s * rng.gaussian()) }
            }
        }
    }
}

/// `GivenTensorFill(; shape, values) -> Y`: Y of `shape` holding `values` (row-major), as Caffe2's
/// op (Detectron's fixed bilinear upsampling weights).
final class GivenTensorFillOp: Operator, Sendable {
    let io: OpIO
    let shape: [Int]
    let values: [Float]
    init(_ io: OpIO) throws(OperatorError) {
        self.io = io
        shape = try io.ints("shape")
        values = try io.floats("values").map(Float.init)
        try io.argument("values", shape.allSatisfy { $0 >= 0 } && values.count == shape.reduce(1, *),
                        "hold \(values.count) values for shape \(shape)")
    }

    func run(_ ctx: ExecutionContext) throws {
        _ = try io.outputData(0, shape: shape).1.update(fromContentsOf: values)
    }
}

/// `MomentumSGDUpdate(grad, moment, lr, param; momentum=0.9, nesterov=0) -> (grad, moment, param)`,
/// in place, as Caffe2: `m' = lr·g + μ·m; param −= m'; grad = m'` (Nesterov:
/// `m' = μ·m + lr·g; g' = (1 + μ)·m' − μ·m; param −= g'`).
final class MomentumSGDUpdateOp: Operator, Sendable {
    let io: OpIO
    let momentum: Float
    let nesterov: Bool
    init(_ io: OpIO) throws(OperatorError) {
        self.io = io
        momentum = Float(try io.float("momentum", 0.9))
        nesterov = try io.bool("nesterov", false)
    }

    func run(_ ctx: ExecutionContext) throws {
        let (g, gd) = try io.inputData(0)
        let (m, _) = try io.inputData(1)
        let (lrT, lrd) = try io.inputData(2)
        let (p, _) = try io.inputData(3)
        try io.require(m.shape == g.shape, input: 1, "has shape \(m.shape) but the gradient has \(g.shape)")
        try io.require(p.shape == g.shape, input: 3, "has shape \(p.shape) but the gradient has \(g.shape)")
        try io.require(lrT.count == 1, input: 2, "must hold one learning rate, has shape \(lrT.shape)")
        let lr = lrd[0], mu = momentum, nesterov = self.nesterov
        let (_, ng) = try io.outputData(0, shape: g.shape)
        let (_, nm) = try io.outputData(1, shape: g.shape)
        let (_, np) = try io.outputData(2, shape: g.shape)
        let gp = gd.baseAddress!
        let md = try io.inputData(1).1.baseAddress!, pd = try io.inputData(3).1.baseAddress!
        ctx.chunks(g.count) { r in
            for i in r {
                let grad = gp[i], old = md[i]
                if nesterov {
                    let mNew = mu * old + lr * grad
                    let step = (1 + mu) * mNew - mu * old
                    nm[i] = mNew
                    ng[i] = step
                    np[i] = pd[i] - step
                } else {
                    let adjusted = lr * grad + mu * old
                    nm[i] = adjusted
                    ng[i] = adjusted
                    np[i] = pd[i] - adjusted
                }
            }
        }
    }
}

func registerFillersAndSolver(_ r: inout OperatorRegistry) {
    for (name, kind) in [("ConstantFill", FillOp.Kind.constant), ("GaussianFill", .gaussian), ("XavierFill", .xavier),
                         ("MSRAFill", .msra), ("UniformFill", .uniform)] {
        r.register(name, OperatorSchema(inputs: 0...1, outputs: 1...1) { io throws(OperatorError) in try FillOp(io, kind) })
    }
    r.register("GivenTensorFill", OperatorSchema(inputs: 0...0, outputs: 1...1) { io throws(OperatorError) in try GivenTensorFillOp(io) })
    r.register("MomentumSGDUpdate", OperatorSchema(inputs: 4...4, outputs: 3...3, allowsInPlace: true) { io throws(OperatorError) in
        try MomentumSGDUpdateOp(io)
    })
}

import Foundation
@testable import Operators
import Portability
import Storage
import Testing

/// A deterministic generator for test data.
struct TestRNG {
    var core: SplitMix64
    init(_ seed: UInt64) { core = SplitMix64(seed: seed) }
    mutating func next() -> UInt64 { core.next() }
    mutating func uniform(_ lo: Float = -1, _ hi: Float = 1) -> Float { lo + (hi - lo) * Float(next() >> 40) / Float(1 << 24) }
    mutating func array(_ n: Int, _ lo: Float = -1, _ hi: Float = 1) -> [Float] { (0..<n).map { _ in uniform(lo, hi) } }
    /// Values at least `gap` from zero (away from Relu's kink).
    mutating func awayFromZero(_ n: Int, gap: Float = 0.1) -> [Float] {
        (0..<n).map { _ in let v = uniform(gap, 1); return next() & 1 == 0 ? v : -v }
    }
    /// Distinct values spaced by `step`, shuffled (no ties for max pooling).
    mutating func distinct(_ n: Int, step: Float = 0.05) -> [Float] {
        var v = (0..<n).map { Float($0) * step - Float(n) * step / 2 }
        for i in stride(from: n - 1, to: 0, by: -1) { v.swapAt(i, Int(next() % UInt64(i + 1))) }
        return v
    }
}

/// An input of a gradient check: its blob, value, and whether its gradient is checked.
struct CheckInput {
    var name: String
    var tensor: Tensor
    var check: Bool
}

/// Checks an op's analytic input gradients against central differences.
///
/// The scalar is `L = Σ r·Y` over the checked output (r fixed random weights, in double), so
/// `dL/dY = r` is fed as the output gradient and the op's own gradient maker produces `dL/dX`.
/// Each checked input element is perturbed by ±eps and L recomputed by running the forward op.
func checkGradient(_ def: OperatorDef, inputs: [CheckInput], output: Int = 0, eps: Float = 1e-2,
                   tolerance: Double = 1e-2, seed: UInt64 = 7, sourceLocation: SourceLocation = #_sourceLocation) throws {
    let ctx = CPUContext()
    let ws = Workspace(context: ctx)
    for i in inputs { ws.feedBlob(i.name, i.tensor) }
    let forward = try Net(NetDef(name: "forward", ops: [def]), workspace: ws)
    try forward.run()
    let y = try ws.fetchBlob(def.outputs[output])
    var rng = TestRNG(seed)
    let r = rng.array(y.count).map(Double.init)
    func loss() throws -> Double {
        try forward.run()
        let out = try ws.fetchBlob(def.outputs[output]).toArray(as: Float.self)
        return zip(out, r).reduce(0) { $0 + Double($1.0) * $1.1 }
    }
    // Analytic: the op's gradient maker with dL/dY = r.
    let schema = try #require(OperatorRegistry.standard.schema(def.type), sourceLocation: sourceLocation)
    let maker = try #require(schema.gradient, "\(def.type) has no gradient", sourceLocation: sourceLocation)
    var outGrads = [String?](repeating: nil, count: def.outputs.count)
    outGrads[output] = def.outputs[output] + "_grad"
    let names = def.inputs.map { $0 + "_grad" }
    let result = try maker(GradientRequest(def: def, outputGradients: outGrads, inputGradientNames: names))
    ws.feedBlob(outGrads[output]!, try Tensor(r.map(Float.init), shape: y.shape, context: ctx))
    try Net(NetDef(name: "backward", ops: result.ops), workspace: ws).run()

    for (k, input) in inputs.enumerated() where input.check {
        #expect(result.inputsWithGradient.contains(k), "\(def.type): no gradient for input \(k)", sourceLocation: sourceLocation)
        guard result.inputsWithGradient.contains(k) else { continue }
        let analytic = try ws.fetchBlob(names[k]).toArray(as: Float.self)
        #expect(analytic.count == input.tensor.count, "\(def.type): gradient of \(input.name) has \(analytic.count) values", sourceLocation: sourceLocation)
        let data = try input.tensor.mutableData(as: Float.self)
        var worst = 0.0, worstAt = -1
        for i in 0..<data.count {
            let saved = data[i]
            data[i] = saved + eps
            let lp = try loss()
            data[i] = saved - eps
            let lm = try loss()
            data[i] = saved
            let numeric = (lp - lm) / (2 * Double(eps))
            let err = abs(numeric - Double(analytic[i])) / max(1, abs(numeric), abs(Double(analytic[i])))
            if err > worst { (worst, worstAt) = (err, i) }
        }
        #expect(worst < tolerance, "\(def.type): gradient of \(input.name) off by \(worst) (relative) at element \(worstAt)", sourceLocation: sourceLocation)
    }
}

func tensor(_ values: [Float], _ shape: [Int], _ ctx: any Context = CPUContext()) -> Tensor {
    try! Tensor(values, shape: shape, context: ctx)
}

func intTensor(_ values: [Int32], _ shape: [Int], _ ctx: any Context = CPUContext()) -> Tensor {
    try! Tensor(values, shape: shape, context: ctx)
}

import Foundation
@testable import Operators
import Storage
import Testing

@Suite("RetinaNet's losses")
struct FocalLossTests {
    /// Runs one op on the given inputs and returns its scalar output.
    func scalar(_ def: OperatorDef, _ inputs: [(String, Tensor)]) throws -> Float {
        let ws = Workspace(context: CPUContext())
        for (name, t) in inputs { ws.feedBlob(name, t) }
        try Net(NetDef(name: "n", ops: [def]), workspace: ws).run()
        return try ws.fetchBlob(def.outputs[0]).toArray(as: Float.self)[0]
    }

    @Test("SigmoidFocalLoss: Detectron's per-logit terms by hand (1-based labels, other classes negative, −1 ignored), / max(fg_num, 1)")
    func focalValues() throws {
        // One image, 2 anchors × 2 classes, one position: logits for (a0 k0, a0 k1, a1 k0, a1 k1).
        let x: [Float] = [0.5, -1.0, 2.0, 0.25]
        let (alpha, gamma) = (0.25, 2.0)
        func sig(_ v: Float) -> Double { 1 / (1 + exp(-Double(v))) }
        func pos(_ v: Float) -> Double { -alpha * pow(1 - sig(v), gamma) * log(sig(v)) }
        func neg(_ v: Float) -> Double { -(1 - alpha) * pow(sig(v), gamma) * log(1 - sig(v)) }
        let def = OperatorDef("SigmoidFocalLoss", inputs: ["x", "t", "n"], outputs: ["l"],
                              arguments: ["num_classes": .int(2), "gamma": .float(gamma), "alpha": .float(alpha), "scale": .float(0.5)])
        for (labels, fg, expected) in [
            ([2, 0] as [Int32], Float(3), (neg(x[0]) + pos(x[1]) + neg(x[2]) + neg(x[3])) / 3 * 0.5),   // a0 class 2, a1 background
            ([-1, 1], 0.25, (pos(x[2]) + neg(x[3])) / 1 * 0.5),                                         // a0 ignored; fg_num < 1 → 1
        ] {
            let got = try scalar(def, [("x", tensor(x, [1, 4, 1, 1])), ("t", intTensor(labels, [1, 2, 1, 1])), ("n", tensor([fg], [1]))])
            #expect(abs(Double(got) - expected) < 1e-6 * max(1, expected), "labels \(labels): \(got) vs \(expected)")
        }
        // A very confident wrong logit stays finite (stable log(1 − p)).
        let big = try scalar(def, [("x", tensor([40, -40, 0, 0], [1, 4, 1, 1])), ("t", intTensor([0, 0], [1, 2, 1, 1])), ("n", tensor([1], [1]))])
        #expect(abs(Double(big) - 0.5 * (0.75 * 40 + 2 * neg(0))) < 1e-4)
    }

    @Test("SigmoidFocalLoss and SelectSmoothL1Loss gradients against central differences")
    func gradients() throws {
        var rng = TestRNG(21)
        let (n, a, k, h, w) = (2, 3, 2, 2, 3)
        let labels = (0..<(n * a * h * w)).map { Int32($0 % 4) - 1 }   // −1, 0, 1, 2
        for gamma in [0.0, 2.0] {
            try checkGradient(OperatorDef("SigmoidFocalLoss", inputs: ["x", "t", "n"], outputs: ["l"],
                                          arguments: ["num_classes": .int(k), "gamma": .float(gamma), "alpha": .float(0.25), "scale": .float(0.5)]), inputs: [
                CheckInput(name: "x", tensor: tensor(rng.array(n * a * k * h * w, -3, 3), [n, a * k, h, w]), check: true),
                CheckInput(name: "t", tensor: intTensor(labels, [n, a, h, w]), check: false),
                CheckInput(name: "n", tensor: tensor([5], [1]), check: false),
            ], eps: 1e-3, tolerance: 1e-2)
        }
        // Three rows on a (2, 8, 3, 3) prediction (two anchors' 4 coordinates), kept away from β's kink.
        let target: [Float] = [0.1, -0.2, 0.3, 0.05, 0.5, 0.5, -0.5, 0.0, -0.3, 0.2, 0.1, 0.4]
        let locations: [Float] = [0, 0, 1, 2, 1, 4, 0, 0, 1, 0, 2, 1]
        var pred = rng.array(2 * 8 * 3 * 3)
        let loc = stride(from: 0, to: 12, by: 4).map { Array(locations[$0..<$0 + 4]).map(Int.init) }
        for (i, l) in loc.enumerated() {
            for j in 0..<4 { pred[((l[0] * 8 + l[1] + j) * 3 + l[2]) * 3 + l[3]] = target[4 * i + j] + (j % 2 == 0 ? 0.03 : -0.4) }
        }
        try checkGradient(OperatorDef("SelectSmoothL1Loss", inputs: ["p", "y", "loc", "n"], outputs: ["l"],
                                      arguments: ["beta": .float(0.11), "scale": .float(0.5)]), inputs: [
            CheckInput(name: "p", tensor: tensor(pred, [2, 8, 3, 3]), check: true),
            CheckInput(name: "y", tensor: tensor(target, [3, 4]), check: false),
            CheckInput(name: "loc", tensor: tensor(locations, [3, 4]), check: false),
            CheckInput(name: "n", tensor: tensor([2], [1]), check: false),
        ], eps: 1e-3)
    }

    @Test("SoftmaxFocalLoss: per anchor −(1 − p_t)^γ·log p_t, α for classes and 1 − α for the background, −1 ignored, / max(fg_num, 1); P its per-anchor softmax")
    func softmaxFocalValues() throws {
        // One image, 2 anchors × 3 classes (background first), one position.
        let x: [Float] = [0.5, -1.0, 2.0, 0.25, 1.5, -0.5]
        let (alpha, gamma) = (0.25, 2.0)
        func softmax(_ v: ArraySlice<Float>) -> [Double] {
            let e = v.map { exp(Double($0)) }
            return e.map { $0 / e.reduce(0, +) }
        }
        let p0 = softmax(x[0..<3]), p1 = softmax(x[3..<6])
        func term(_ p: Double, _ z: Double) -> Double { -pow(1 - p, gamma) * log(p) * z }
        let def = OperatorDef("SoftmaxFocalLoss", inputs: ["x", "t", "n"], outputs: ["l", "p"],
                              arguments: ["num_classes": .int(3), "gamma": .float(gamma), "alpha": .float(alpha), "scale": .float(0.5)])
        for (labels, fg, expected) in [
            ([2, 0] as [Int32], Float(4), (term(p0[2], alpha) + term(p1[0], 1 - alpha)) / 4 * 0.5),
            ([-1, 1], 0.5, term(p1[1], alpha) * 0.5),
        ] {
            let ws = Workspace(context: CPUContext())
            ws.feedBlob("x", tensor(x, [1, 6, 1, 1]))
            ws.feedBlob("t", intTensor(labels, [1, 2, 1, 1]))
            ws.feedBlob("n", tensor([fg], [1]))
            try Net(NetDef(name: "n", ops: [def]), workspace: ws).run()
            let got = try ws.fetchBlob("l").toArray(as: Float.self)[0]
            #expect(abs(Double(got) - expected) < 1e-6 * max(1, expected), "labels \(labels): \(got) vs \(expected)")
            let probs = try ws.fetchBlob("p").toArray(as: Float.self)
            #expect(zip(probs, p0 + p1).allSatisfy { abs(Double($0) - $1) < 1e-6 })
        }
        // GroupSpatialSoftmax gives the same per-anchor softmax.
        let ws = Workspace(context: CPUContext())
        ws.feedBlob("x", tensor(x, [1, 6, 1, 1]))
        try Net(NetDef(name: "n", ops: [OperatorDef("GroupSpatialSoftmax", inputs: ["x"], outputs: ["p"], arguments: ["num_classes": .int(3)])]),
                workspace: ws).run()
        #expect(zip(try ws.fetchBlob("p").toArray(as: Float.self), p0 + p1).allSatisfy { abs(Double($0) - $1) < 1e-6 })
    }

    @Test("SoftmaxFocalLoss gradient against central differences (γ 0 and 2)")
    func softmaxFocalGradient() throws {
        var rng = TestRNG(22)
        let (n, a, c, h, w) = (2, 2, 3, 2, 3)
        let labels = (0..<(n * a * h * w)).map { Int32($0 % 4) - 1 }   // −1, 0, 1, 2
        for gamma in [0.0, 2.0] {
            try checkGradient(OperatorDef("SoftmaxFocalLoss", inputs: ["x", "t", "n"], outputs: ["l", "p"],
                                          arguments: ["num_classes": .int(c), "gamma": .float(gamma), "alpha": .float(0.25), "scale": .float(0.5)]), inputs: [
                CheckInput(name: "x", tensor: tensor(rng.array(n * a * c * h * w, -3, 3), [n, a * c, h, w]), check: true),
                CheckInput(name: "t", tensor: intTensor(labels, [n, a, h, w]), check: false),
                CheckInput(name: "n", tensor: tensor([5], [1]), check: false),
            ], eps: 1e-3, tolerance: 1e-2)
        }
    }

    @Test("SelectSmoothL1Loss: the selected coordinates by hand; no rows give 0; a row outside the map is an error naming it")
    func selectValues() throws {
        var p = [Float](repeating: 0, count: 1 * 4 * 2 * 2)
        for j in 0..<4 { p[(j * 2 + 1) * 2 + 0] = Float(j) * 0.1 }   // channel j at (y 1, x 0)
        let y: [Float] = [0.05, 0.1, 0.5, 0.3]
        let def = OperatorDef("SelectSmoothL1Loss", inputs: ["p", "y", "loc", "n"], outputs: ["l"], arguments: ["beta": .float(0.11), "scale": .float(1)])
        let got = try scalar(def, [("p", tensor(p, [1, 4, 2, 2])), ("y", tensor(y, [1, 4])), ("loc", tensor([0, 0, 1, 0], [1, 4])), ("n", tensor([2], [1]))])
        func sl1(_ d: Double) -> Double { abs(d) < 0.11 ? 0.5 * d * d / 0.11 : abs(d) - 0.055 }
        let expected = (sl1(0 - 0.05) + sl1(0.1 - 0.1) + sl1(0.2 - 0.5) + sl1(Double(Float(0.3)) - 0.3)) / 2
        #expect(abs(Double(got) - expected) < 1e-6)
        let empty = try scalar(def, [("p", tensor(p, [1, 4, 2, 2])), ("y", tensor([], [0, 4])), ("loc", tensor([], [0, 4])), ("n", tensor([0], [1]))])
        #expect(empty == 0)
        #expect(throws: (any Error).self) {
            _ = try scalar(def, [("p", tensor(p, [1, 4, 2, 2])), ("y", tensor(y, [1, 4])), ("loc", tensor([0, 1, 1, 0], [1, 4])), ("n", tensor([2], [1]))])
        }
    }
}

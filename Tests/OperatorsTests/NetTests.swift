import Foundation
@testable import Operators
import Portability
import Storage
import Testing

/// A small conv net: conv → relu → (branch A: conv, branch B: 1×1 conv) → sum → pool → FC → loss.
func smallNet(executor: NetDef.ExecutorKind) -> NetDef {
    var net = NetDef(name: "small", externalInputs: ["data", "label", "c1_w", "c1_b", "c2_w", "c3_w", "fc_w", "fc_b"], executor: executor)
    net.add("Conv", ["data", "c1_w", "c1_b"], ["c1"], ["kernel": .int(3), "pad": .int(1)])
    net.add("Relu", ["c1"], ["c1"])
    net.add("Conv", ["c1", "c2_w"], ["c2"], ["kernel": .int(3), "pad": .int(1)])
    net.add("Conv", ["c1", "c3_w"], ["c3"], ["kernel": .int(1)])
    net.add("Sum", ["c2", "c3"], ["s"])
    net.add("AveragePool", ["s"], ["pool"], ["kernel": .int(2), "stride": .int(2)])
    net.add("FC", ["pool", "fc_w", "fc_b"], ["logits"])
    net.add("SoftmaxWithLoss", ["logits", "label"], ["prob", "loss"])
    net.add("Accuracy", ["prob", "label"], ["accuracy"])
    return net
}

/// Feeds the small net's parameters and a batch.
func feedSmallNet(_ ws: Workspace, seed: UInt64 = 11) throws {
    var rng = TestRNG(seed)
    let ctx = ws.context
    func feed(_ name: String, _ shape: [Int], scale: Float = 0.3) throws {
        ws.feedBlob(name, try Tensor(rng.array(shape.reduce(1, *), -scale, scale), shape: shape, context: ctx))
    }
    try feed("data", [4, 3, 8, 8], scale: 1)
    ws.feedBlob("label", try Tensor([0, 1, 2, 1] as [Int32], shape: [4], context: ctx))
    try feed("c1_w", [6, 3, 3, 3]); try feed("c1_b", [6])
    try feed("c2_w", [5, 6, 3, 3]); try feed("c3_w", [5, 6, 1, 1])
    try feed("fc_w", [3, 5 * 4 * 4]); try feed("fc_b", [3])
}

@Suite("Nets and gradients")
struct NetTests {
    @Test("the text form names ops, blobs and arguments; NetDef is Codable")
    func textForm() throws {
        let net = smallNet(executor: .dag)
        let text = net.description
        #expect(text.contains("#0 Conv(data, c1_w, c1_b) -> (c1) {kernel: 3, pad: 1}"))
        #expect(text.contains("net \"small\" (dag)"))
        let data = try JSONEncoder().encode(net)
        #expect(try JSONDecoder().decode(NetDef.self, from: data) == net)
    }

    @Test("creating a net validates types, inputs, counts and arguments, naming the op and blob")
    func validation() throws {
        let ws = Workspace(context: CPUContext())
        ws.feedBlob("x", try Tensor([1, 2] as [Float], shape: [2], context: ws.context))
        func make(_ ops: [OperatorDef]) throws(OperatorError) { _ = try Net(NetDef(name: "n", ops: ops), workspace: ws) }
        do {
            try make([OperatorDef("Rleu", inputs: ["x"], outputs: ["y"])])
            Issue.record("unknown op accepted")
        } catch {
            #expect(error.description == "op #0 Rleu in net 'n': unknown operator type 'Rleu' (did you mean 'Relu'?)")
        }
        do {
            try make([OperatorDef("Relu", inputs: ["x"], outputs: ["y"]), OperatorDef("Relu", inputs: ["z"], outputs: ["w"], name: "second")])
            Issue.record("missing input accepted")
        } catch {
            #expect(error.description.hasPrefix("op #1 Relu 'second' in net 'n': input blob 'z' is neither in the workspace"))
        }
        do {
            try make([OperatorDef("Conv", inputs: ["x", "x"], outputs: ["y"])])
            Issue.record("conv without kernel accepted")
        } catch {
            #expect(error.description == "op #0 Conv in net 'n': argument 'kernel' is required (an integer)")
        }
        do {
            try make([OperatorDef("Conv", inputs: ["x", "x"], outputs: ["y"], arguments: ["kernel": .string("3")])])
            Issue.record("string kernel accepted")
        } catch {
            #expect(error.description.contains("argument 'kernel' must be an integer, got \"3\""))
        }
        do {
            try make([OperatorDef("FC", inputs: ["x"], outputs: ["y"])])
            Issue.record("FC with one input accepted")
        } catch {
            #expect(error.description.contains("expects 3 inputs, got 1"))
        }
        do {
            try make([OperatorDef("Conv", inputs: ["x", "x"], outputs: ["x"], arguments: ["kernel": .int(1)])])
            Issue.record("in-place conv accepted")
        } catch {
            #expect(error.description.contains("input 'x' cannot be both an input and an output of Conv"))
        }
    }

    @Test("a run-time error names the op and the blob")
    func runError() throws {
        let ws = Workspace(context: CPUContext())
        ws.feedBlob("x", try Tensor([1, 2, 3] as [Float], shape: [3], context: ws.context))
        ws.feedBlob("w", try Tensor([1, 2] as [Float], shape: [1, 2], context: ws.context))
        ws.feedBlob("b", try Tensor([0] as [Float], shape: [1], context: ws.context))
        let net = try Net(NetDef(name: "n", ops: [OperatorDef("FC", inputs: ["x", "w", "b"], outputs: ["y"], name: "fc6")]), workspace: ws)
        #expect(throws: OperatorError.self) { try net.run() }
        do { try net.run() } catch {
            #expect(error.description == "op #0 FC 'fc6' in net 'n' failed on blob 'w': input 'w' has shape [1, 2], expected (N, 3) for input [3]"
                || error.description.hasPrefix("op #0 FC 'fc6' in net 'n' failed on blob 'w'"))
        }
    }

    @Test("gradients of a blob read twice are summed; StopGradient cuts; labels get none")
    func gradientStructure() throws {
        var net = NetDef(name: "g", externalInputs: ["x", "label"])
        net.add("Relu", ["x"], ["a"])
        net.add("Sigmoid", ["x"], ["b"])
        net.add("StopGradient", ["b"], ["b"])
        net.add("Sum", ["a", "b"], ["s"])
        net.add("SoftmaxWithLoss", ["s", "label"], ["p", "loss"])
        let grads = try addGradientOperators(to: &net, losses: ["loss"])
        let backward = net.ops.filter(\.isGradientOp)
        #expect(grads == ["x": "x_grad"])
        // x is read by Relu and Sigmoid, but the Sigmoid path is cut: one contribution, no Sum.
        #expect(!backward.contains { $0.type == "SigmoidGradient" })
        #expect(backward.contains { $0.type == "ReluGradient" && $0.outputs == ["x_grad"] })
        #expect(!backward.contains { $0.outputs.contains("label_grad") })
        #expect(backward.first?.type == "ConstantFill")

        var twice = NetDef(name: "t", externalInputs: ["x", "label"])
        twice.add("Relu", ["x"], ["a"])
        twice.add("Sigmoid", ["x"], ["b"])
        twice.add("Sum", ["a", "b"], ["s"])
        twice.add("SoftmaxWithLoss", ["s", "label"], ["p", "loss"])
        try addGradientOperators(to: &twice, losses: ["loss"])
        let sum = twice.ops.last { $0.type == "Sum" }
        #expect(sum?.outputs == ["x_grad"])
        #expect(sum?.inputs.count == 2)
        #expect(sum?.inputs.allSatisfy { $0.hasPrefix("x_grad_autosplit_") } == true)
    }

    @Test("an op without a gradient on the loss path is an error naming it; a non-loss blob is refused")
    func noGradient() throws {
        var net = NetDef(name: "ng", externalInputs: ["p", "label"])
        net.add("Accuracy", ["p", "label"], ["acc"])
        #expect(throws: OperatorError.self) { try addGradientOperators(to: &net, losses: ["acc"]) }
        do { try addGradientOperators(to: &net, losses: ["acc"]) } catch {
            #expect(error.description.contains("operator type 'Accuracy' has no gradient"))
        }
        #expect(throws: OperatorError.self) { try addGradientOperators(to: &net, losses: ["nothing"]) }
    }

    @Test("in-place ops get correct gradients (whole small net against central differences)")
    func wholeNetGradient() throws {
        let ws = Workspace(context: CPUContext())
        try feedSmallNet(ws)
        var def = smallNet(executor: .simple)
        let forwardOps = def.ops
        let grads = try addGradientOperators(to: &def, losses: ["loss"])
        let net = try Net(def, workspace: ws)
        let forward = try Net(NetDef(name: "f", ops: forwardOps), workspace: ws)
        try net.run()
        let w = try ws.fetchBlob("c1_w")
        let analytic = try ws.fetchBlob(grads["c1_w"]!).toArray(as: Float.self)
        let data = try w.mutableData(as: Float.self)
        var worst = 0.0
        for i in stride(from: 0, to: data.count, by: 7) {
            let saved = data[i]
            data[i] = saved + 1e-3
            try forward.run()
            let lp = Double(try ws.fetchBlob("loss").toArray(as: Float.self)[0])
            data[i] = saved - 1e-3
            try forward.run()
            let lm = Double(try ws.fetchBlob("loss").toArray(as: Float.self)[0])
            data[i] = saved
            let numeric = (lp - lm) / 2e-3
            // Relative, with an absolute floor for the float32 noise of the loss difference.
            worst = max(worst, abs(numeric - Double(analytic[i])) / max(0.1, abs(numeric) * 10))
        }
        #expect(worst < 2e-3, "error \(worst)")
    }

    @Test("a profile counts every op run by type, with both executors")
    func profile() throws {
        for kind in [NetDef.ExecutorKind.simple, .dag] {
            let ws = Workspace(context: CPUContext())
            try feedSmallNet(ws)
            let def = smallNet(executor: kind)
            let net = try Net(def, workspace: ws, pool: ThreadPool(threadCount: 2, name: "prof"))
            let profile = OpProfile()
            net.profile = profile
            for _ in 0..<3 { try net.run() }
            var expected: [String: Int] = [:]
            for op in def.ops { expected[op.type, default: 0] += 3 }
            #expect(Dictionary(uniqueKeysWithValues: profile.entries.map { ($0.type, $0.count) }) == expected, "\(kind)")
            #expect(profile.entries.allSatisfy { $0.seconds >= 0 })
            #expect(profile.entries.map(\.seconds) == profile.entries.map(\.seconds).sorted(by: >))
        }
    }

    @Test("simple and dag executors give identical results, forward and backward")
    func executorsAgree() throws {
        let pool = ThreadPool(threadCount: 3, name: "agree")
        var results: [[Float]] = []
        for kind in [NetDef.ExecutorKind.simple, .dag] {
            let ws = Workspace(context: CPUContext())
            try feedSmallNet(ws)
            var def = smallNet(executor: kind)
            let grads = try addGradientOperators(to: &def, losses: ["loss"])
            let net = try Net(def, workspace: ws, pool: pool)
            try net.run()
            var all: [Float] = try ws.fetchBlob("loss").toArray(as: Float.self)
            for name in grads.keys.sorted() where name != "data" { all += try ws.fetchBlob(grads[name]!).toArray(as: Float.self) }
            results.append(all)
        }
        #expect(results[0] == results[1])
    }

    @Test("dependencies follow program order: read-after-write, write-after-write, write-after-read")
    func dependencies() {
        let ops = [
            OperatorDef("Relu", inputs: ["a"], outputs: ["b"]),   // 0
            OperatorDef("Relu", inputs: ["b"], outputs: ["c"]),   // 1: RAW on b
            OperatorDef("Relu", inputs: ["a"], outputs: ["b"]),   // 2: WAR on b (1 reads it), WAW (0)
            OperatorDef("Relu", inputs: ["x"], outputs: ["y"]),   // 3: independent
        ]
        let (counts, succ) = Net.dependencies(ops)
        #expect(counts == [0, 1, 2, 0])
        #expect(succ[0].sorted() == [1, 2])
        #expect(succ[1] == [2])
        #expect(succ[3].isEmpty)
    }
}

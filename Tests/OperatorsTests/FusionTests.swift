@testable import Operators
import Portability
import Storage
import Testing

@Suite("Op fusion for inference nets")
struct FusionTests {
    /// A ResNet bottleneck-like block: conv (bias) → AffineChannel → Relu (in place), a 3×3 Winograd
    /// conv → AffineChannel (in place) → Relu, a 1×1 conv → AffineChannel, the shortcut (the input,
    /// or a 1×1 conv with bias → AffineChannel after the branch), Sum → Relu, then a 3×3 im2col conv with
    /// stride 2 → Relu.
    static func block(projection: Bool) -> NetDef {
        var net = NetDef(name: "block", externalInputs: ["x", "w1", "b1", "s1", "t1", "w2", "s2", "t2", "w3", "s3", "t3", "w4", "w5", "b5", "s5", "t5"])
        net.add("Conv", ["x", "w1", "b1"], ["c1"], ["kernel": .int(1)])
        net.add("AffineChannel", ["c1", "s1", "t1"], ["c1_bn"])
        net.add("Relu", ["c1_bn"], ["c1_bn"])
        net.add("Conv", ["c1_bn", "w2"], ["c2"], ["kernel": .int(3), "pad": .int(1), "algo": .string("winograd_f4")])
        net.add("AffineChannel", ["c2", "s2", "t2"], ["c2"])
        net.add("Relu", ["c2"], ["c2"])
        net.add("Conv", ["c2", "w3"], ["c3"], ["kernel": .int(1)])
        net.add("AffineChannel", ["c3", "s3", "t3"], ["c3_bn"])
        var shortcut = "x"
        if projection {
            net.add("Conv", ["x", "w5", "b5"], ["sc"], ["kernel": .int(1)])
            net.add("AffineChannel", ["sc", "s5", "t5"], ["sc_bn"])
            shortcut = "sc_bn"
        }
        net.add("Sum", ["c3_bn", shortcut], ["sum"])
        net.add("Relu", ["sum"], ["sum"])
        net.add("Conv", ["sum", "w4"], ["c4"], ["kernel": .int(3), "pad": .int(1), "stride": .int(2)])
        net.add("Relu", ["c4"], ["out"])
        net.externalOutputs = ["out"]
        return net
    }

    /// Runs `net` on seeded inputs (channels 8, a 2 × 8 × 13 × 17 input) and returns the named blobs.
    static func run(_ net: NetDef, fetching names: [String], threads: Int = 1) throws -> [[Float]] {
        var rng = TestRNG(21)
        let ctx = CPUContext()
        let ws = Workspace(context: ctx)
        let c = 8
        func feed(_ name: String, _ shape: [Int]) { ws.feedBlob(name, tensor(rng.array(shape.reduce(1, *)), shape, ctx)) }
        feed("x", [2, c, 13, 17])
        for (w, shape) in [("w1", [c, c, 1, 1]), ("w2", [c, c, 3, 3]), ("w3", [c, c, 1, 1]), ("w4", [c, c, 3, 3]), ("w5", [c, c, 1, 1])] {
            feed(w, shape)
        }
        for p in ["b1", "s1", "t1", "s2", "t2", "s3", "t3", "b5", "s5", "t5"] { feed(p, [c]) }
        try Net(net, workspace: ws, pool: ThreadPool(threadCount: threads, name: "fuse")).run()
        return try names.map { try ws.fetchBlob($0).toArray(as: Float.self) }
    }

    @Test("the fused net computes bitwise the same blobs with fewer ops, with one thread or two", arguments: [false, true], [1, 2])
    func bitwiseSame(projection: Bool, threads: Int) throws {
        let net = Self.block(projection: projection), fused = net.fusedForInference()
        #expect(fused.ops.map(\.type) == Array(repeating: "Conv", count: projection ? 5 : 4))
        #expect(fused.ops[0].inputs == ["x", "w1", "b1", "s1", "t1"] && fused.ops[0].outputs == ["c1_bn"])
        #expect(fused.ops[0].arguments["fused_affine"] == .int(1) && fused.ops[0].arguments["fused_relu"] == .int(1))
        if projection {
            // The shortcut is written after the branch's last conv: the Sum moves up to the shortcut's conv.
            #expect(fused.ops[2].outputs == ["c3_bn"] && fused.ops[2].arguments["fused_residual"] == nil)
            #expect(fused.ops[3].inputs == ["x", "w5", "b5", "s5", "t5", "c3_bn"] && fused.ops[3].outputs == ["sum"])
        } else {
            #expect(fused.ops[2].inputs == ["c2", "w3", "s3", "t3", "x"] && fused.ops[2].outputs == ["sum"])
        }
        let sumConv = fused.ops[projection ? 3 : 2]
        #expect(sumConv.arguments["fused_residual"] == .int(1) && sumConv.arguments["fused_relu"] == .int(1))
        #expect(fused.ops.last?.outputs == ["out"])
        let names = projection ? ["c1_bn", "c2", "c3_bn", "sum", "out"] : ["c1_bn", "c2", "sum", "out"]
        let plain = try Self.run(net, fetching: names, threads: threads), fast = try Self.run(fused, fetching: names, threads: threads)
        for (name, (a, b)) in zip(names, zip(plain, fast)) {
            #expect(a.map(\.bitPattern) == b.map(\.bitPattern), "blob \(name) differs")
        }
        #expect(plain.last!.contains { $0 > 0 } && plain.last!.contains { $0 == 0 })
    }

    @Test("a value read twice, or kept by name, is not fused away")
    func respectsReaders() {
        var net = Self.block(projection: false)
        net.add("Copy", ["c1"], ["c1_copy"])  // c1 now has a second reader: its AffineChannel stays.
        let fused = net.fusedForInference(keeping: ["c3"])  // c3 must survive: its AffineChannel and the Sum stay.
        #expect(fused.ops.map(\.type) == ["Conv", "AffineChannel", "Relu", "Conv", "Conv", "AffineChannel", "Sum", "Conv", "Copy"])
        #expect(fused.ops[0].outputs == ["c1"] && fused.ops[2].outputs == ["c1_bn"])
        #expect(fused.ops[6].arguments["fused_relu"] == .int(1))
    }

    @Test("a fused net is refused by autodiff, naming the argument")
    func refusedInTraining() throws {
        var net = Self.block(projection: true).fusedForInference()
        #expect(throws: OperatorError.self) { try addGradientOperators(to: &net, losses: ["out"]) }
        do {
            _ = try addGradientOperators(to: &net, losses: ["out"])
        } catch {
            #expect(String(describing: error).contains("fused_relu") && String(describing: error).contains("unfused"))
        }
    }

    @Test("an op that would write one of the conv's inputs is not fused into it")
    func noInPlaceConv() {
        var net = NetDef(name: "alias", externalInputs: ["x", "w"])
        net.add("Conv", ["x", "w"], ["c"], ["kernel": .int(1)])
        net.add("Relu", ["c"], ["x"])
        #expect(net.fusedForInference().ops.map(\.type) == ["Conv", "Relu"])
        net.ops[1] = OperatorDef("Sum", inputs: ["c", "x"], outputs: ["x"])
        #expect(net.fusedForInference().ops.map(\.type) == ["Conv", "Sum"])
    }
}

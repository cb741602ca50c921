import Foundation
@testable import Operators
import Portability
import Storage
import Testing

@Suite("Numerical gradient checks")
struct GradientTests {
    @Test("elementwise: Relu, Sigmoid, Scale, Copy")
    func elementwise() throws {
        var rng = TestRNG(1)
        try checkGradient(OperatorDef("Relu", inputs: ["x"], outputs: ["y"]),
                          inputs: [CheckInput(name: "x", tensor: tensor(rng.awayFromZero(24), [2, 3, 4]), check: true)])
        try checkGradient(OperatorDef("Sigmoid", inputs: ["x"], outputs: ["y"]),
                          inputs: [CheckInput(name: "x", tensor: tensor(rng.array(24, -3, 3), [2, 3, 4]), check: true)])
        try checkGradient(OperatorDef("Scale", inputs: ["x"], outputs: ["y"], arguments: ["scale": .float(-2.5)]),
                          inputs: [CheckInput(name: "x", tensor: tensor(rng.array(6), [6]), check: true)])
        try checkGradient(OperatorDef("Copy", inputs: ["x"], outputs: ["y"]),
                          inputs: [CheckInput(name: "x", tensor: tensor(rng.array(6), [2, 3]), check: true)])
    }

    @Test("Sum, Add and Mul, same shape and broadcast")
    func binary() throws {
        var rng = TestRNG(2)
        try checkGradient(OperatorDef("Sum", inputs: ["a", "b", "c"], outputs: ["y"]), inputs: [
            CheckInput(name: "a", tensor: tensor(rng.array(6), [2, 3]), check: true),
            CheckInput(name: "b", tensor: tensor(rng.array(6), [2, 3]), check: true),
            CheckInput(name: "c", tensor: tensor(rng.array(6), [2, 3]), check: true),
        ])
        for type in ["Add", "Mul"] {
            try checkGradient(OperatorDef(type, inputs: ["a", "b"], outputs: ["y"]), inputs: [
                CheckInput(name: "a", tensor: tensor(rng.array(12), [2, 6]), check: true),
                CheckInput(name: "b", tensor: tensor(rng.array(12), [2, 6]), check: true),
            ])
            try checkGradient(OperatorDef(type, inputs: ["a", "b"], outputs: ["y"], arguments: ["broadcast": .int(1), "axis": .int(1)]), inputs: [
                CheckInput(name: "a", tensor: tensor(rng.array(24), [2, 3, 4]), check: true),
                CheckInput(name: "b", tensor: tensor(rng.array(3), [3]), check: true),
            ])
        }
    }

    @Test("shape ops: Concat, Split, Reshape, Flatten, Transpose, SpatialNarrowAs, BatchPermutation")
    func shapeOps() throws {
        var rng = TestRNG(3)
        try checkGradient(OperatorDef("Concat", inputs: ["a", "b"], outputs: ["y", "info"], arguments: ["axis": .int(1)]), inputs: [
            CheckInput(name: "a", tensor: tensor(rng.array(12), [2, 2, 3]), check: true),
            CheckInput(name: "b", tensor: tensor(rng.array(6), [2, 1, 3]), check: true),
        ])
        try checkGradient(OperatorDef("Concat", inputs: ["a", "b"], outputs: ["y"], arguments: ["axis": .int(0)]), inputs: [
            CheckInput(name: "a", tensor: tensor(rng.array(6), [2, 3]), check: true),
            CheckInput(name: "b", tensor: tensor(rng.array(3), [1, 3]), check: true),
        ])
        try checkGradient(OperatorDef("Split", inputs: ["x"], outputs: ["p", "q"], arguments: ["axis": .int(1), "split": .ints([1, 3])]),
                          inputs: [CheckInput(name: "x", tensor: tensor(rng.array(16), [2, 4, 2]), check: true)], output: 1)
        try checkGradient(OperatorDef("Reshape", inputs: ["x"], outputs: ["y", "old"], arguments: ["shape": .ints([0, -1])]),
                          inputs: [CheckInput(name: "x", tensor: tensor(rng.array(24), [2, 3, 4]), check: true)])
        try checkGradient(OperatorDef("Flatten", inputs: ["x"], outputs: ["y"]),
                          inputs: [CheckInput(name: "x", tensor: tensor(rng.array(24), [2, 3, 4]), check: true)])
        try checkGradient(OperatorDef("Transpose", inputs: ["x"], outputs: ["y"], arguments: ["axes": .ints([1, 2, 0])]),
                          inputs: [CheckInput(name: "x", tensor: tensor(rng.array(24), [2, 3, 4]), check: true)])
        try checkGradient(OperatorDef("SpatialNarrowAs", inputs: ["a", "b"], outputs: ["y"]), inputs: [
            CheckInput(name: "a", tensor: tensor(rng.array(2 * 2 * 5 * 6), [2, 2, 5, 6]), check: true),
            CheckInput(name: "b", tensor: tensor(rng.array(3 * 4), [1, 1, 3, 4]), check: false),
        ])
        try checkGradient(OperatorDef("BatchPermutation", inputs: ["x", "idx"], outputs: ["y"]), inputs: [
            CheckInput(name: "x", tensor: tensor(rng.array(4 * 3), [4, 3]), check: true),
            CheckInput(name: "idx", tensor: intTensor([2, 0, 3, 1], [4]), check: false),
        ])
    }

    @Test("Concat and BatchPermutation of RoI-feature sizes copy in pieces over a pool: equal to direct loops; a gradient's indices must be a permutation")
    func largeCopies() throws {
        var rng = TestRNG(11)
        let ctx = CPUContext(), ws = Workspace(context: ctx)
        let rows = [40, 30, 50], row = 256 * 7 * 7, n = rows.reduce(0, +)
        let parts = rows.map { rng.array($0 * row) }
        for (k, r) in rows.enumerated() { ws.feedBlob("p\(k)", tensor(parts[k], [r, 256, 7, 7])) }
        var perm = Array(0..<n)
        for i in stride(from: n - 1, to: 0, by: -1) { perm.swapAt(i, Int(rng.next() % UInt64(i + 1))) }
        ws.feedBlob("idx", intTensor(perm.map(Int32.init), [n]))
        // Axis 1 of [1, rows, …] views: many blocks per input.
        for k in 0..<3 { ws.feedBlob("q\(k)", tensor(parts[k], [2, rows[k] / 2, 256, 7, 7])) }
        var def = NetDef(name: "copies")
        def.add("Concat", ["p0", "p1", "p2"], ["cat0"], ["axis": .int(0)])
        def.add("Concat", ["q0", "q1", "q2"], ["cat1"], ["axis": .int(1)])
        def.add("BatchPermutation", ["cat0", "idx"], ["perm"])
        def.add("BatchPermutationGradient", ["idx", "perm"], ["back"])
        try Net(def, workspace: ws, pool: ThreadPool(threadCount: 1, name: "copies")).run()
        let all = parts.flatMap { $0 }
        #expect(try ws.fetchBlob("cat0").toArray(as: Float.self) == all)
        var halves: [Float] = []
        for h in 0..<2 {
            for k in 0..<3 {
                let half = rows[k] / 2 * row
                halves += parts[k][(h * half)..<((h + 1) * half)]
            }
        }
        #expect(try ws.fetchBlob("cat1").toArray(as: Float.self) == halves)
        var permuted: [Float] = []
        for j in perm { permuted += all[(j * row)..<((j + 1) * row)] }
        #expect(try ws.fetchBlob("perm").toArray(as: Float.self) == permuted)
        #expect(try ws.fetchBlob("back").toArray(as: Float.self) == all)
        ws.feedBlob("idx", intTensor(perm.map(Int32.init).dropLast() + [Int32(perm[0])], [n]))
        var grad = NetDef(name: "twice")
        grad.add("BatchPermutationGradient", ["idx", "perm"], ["back"])
        do {
            try Net(grad, workspace: ws).run()
            Issue.record("a repeated index was accepted")
        } catch {
            #expect("\(error)".contains("appears twice") && "\(error)".contains("not a permutation"), "\(error)")
        }
    }

    @Test("Conv: padding, stride, dilation, groups, bias, and the 1×1 path",
          arguments: [
            ["kernel": ArgumentValue.int(3), "pad": .int(1)],
            ["kernel": .int(3), "stride": .int(2), "pad": .int(1)],
            ["kernel": .int(3), "dilation": .int(2), "pad": .int(2)],
            ["kernel": .int(1)],
            ["kernel": .int(1), "stride": .int(2)],
            ["kernels": .ints([3, 1]), "pad_t": .int(1), "pad_b": .int(0), "group": .int(2)],
          ])
    func conv(_ args: [String: ArgumentValue]) throws {
        var rng = TestRNG(4)
        let group = args["group"] == .int(2) ? 2 : 1
        let (kh, kw): (Int, Int) = {
            if case let .ints(k)? = args["kernels"] { return (k[0], k[1]) }
            if case let .int(k)? = args["kernel"] { return (k, k) }
            return (1, 1)
        }()
        let (n, c, h, w, m) = (2, 4, 6, 5, 6)
        try checkGradient(OperatorDef("Conv", inputs: ["x", "w", "b"], outputs: ["y"], arguments: args), inputs: [
            CheckInput(name: "x", tensor: tensor(rng.array(n * c * h * w), [n, c, h, w]), check: true),
            CheckInput(name: "w", tensor: tensor(rng.array(m * c / group * kh * kw), [m, c / group, kh, kw]), check: true),
            CheckInput(name: "b", tensor: tensor(rng.array(m), [m]), check: true),
        ])
        try checkGradient(OperatorDef("Conv", inputs: ["x", "w"], outputs: ["y"], arguments: args), inputs: [
            CheckInput(name: "x", tensor: tensor(rng.array(n * c * h * w), [n, c, h, w]), check: true),
            CheckInput(name: "w", tensor: tensor(rng.array(m * c / group * kh * kw), [m, c / group, kh, kw]), check: true),
        ])
    }

    @Test("Conv on many small maps (RoI features) unfolds them into one GEMM: bitwise each image's own result; gradients against central differences")
    func convManySmallMaps() throws {
        var rng = TestRNG(7)
        let (n, c, h, w, m) = (9, 3, 4, 3, 5)
        let x = rng.array(n * c * h * w), wts = rng.array(m * c * 9), b = rng.array(m)
        let def = OperatorDef("Conv", inputs: ["x", "w", "b"], outputs: ["y"], arguments: ["kernel": .int(3), "pad": .int(1)])
        let ctx = CPUContext(), ws = Workspace(context: ctx)
        ws.feedBlob("x", tensor(x, [n, c, h, w]))
        ws.feedBlob("w", tensor(wts, [m, c, 3, 3]))
        ws.feedBlob("b", tensor(b, [m]))
        try Net(NetDef(name: "t", ops: [def]), workspace: ws).run()
        let all = try ws.fetchBlob("y").toArray(as: Float.self)
        for i in 0..<n {
            ws.feedBlob("x", tensor(Array(x[(i * c * h * w)..<((i + 1) * c * h * w)]), [1, c, h, w]))
            try Net(NetDef(name: "t", ops: [def]), workspace: ws).run()
            #expect(try ws.fetchBlob("y").toArray(as: Float.self) == Array(all[(i * m * h * w)..<((i + 1) * m * h * w)]), "image \(i)")
        }
        try checkGradient(def, inputs: [
            CheckInput(name: "x", tensor: tensor(x, [n, c, h, w]), check: true),
            CheckInput(name: "w", tensor: tensor(wts, [m, c, 3, 3]), check: true),
            CheckInput(name: "b", tensor: tensor(b, [m]), check: true),
        ])
    }

    @Test("ConvTranspose on many small maps (conv5_mask on every RoI) runs them in one GEMM: bitwise each image's own result",
          arguments: [["kernel": ArgumentValue.int(2), "stride": .int(2)], ["kernel": .int(3), "stride": .int(2), "pad": .int(1), "adj": .int(1)]])
    func convTransposeManySmallMaps(_ args: [String: ArgumentValue]) throws {
        var rng = TestRNG(11)
        let (n, c, h, w, m) = (9, 3, 4, 3, 5)
        let k = args["kernel"] == .int(2) ? 2 : 3
        let x = rng.array(n * c * h * w), wts = rng.array(c * m * k * k), b = rng.array(m)
        let def = OperatorDef("ConvTranspose", inputs: ["x", "w", "b"], outputs: ["y"], arguments: args)
        let ws = Workspace(context: CPUContext())
        ws.feedBlob("x", tensor(x, [n, c, h, w]))
        ws.feedBlob("w", tensor(wts, [c, m, k, k]))
        ws.feedBlob("b", tensor(b, [m]))
        try Net(NetDef(name: "t", ops: [def]), workspace: ws).run()
        let all = try ws.fetchBlob("y").toArray(as: Float.self), per = all.count / n
        for i in 0..<n {
            ws.feedBlob("x", tensor(Array(x[(i * c * h * w)..<((i + 1) * c * h * w)]), [1, c, h, w]))
            try Net(NetDef(name: "t", ops: [def]), workspace: ws).run()
            #expect(try ws.fetchBlob("y").toArray(as: Float.self) == Array(all[(i * per)..<((i + 1) * per)]), "image \(i)")
        }
    }

    @Test("ConvTranspose: Caffe2's (C_in, C_out, kH, kW) weights; stride, padding, adj, bias",
          arguments: [
            ["kernel": ArgumentValue.int(2), "stride": .int(2)],
            ["kernel": .int(3), "stride": .int(2), "pad": .int(1), "adj": .int(1)],
            ["kernel": .int(4), "stride": .int(2), "pad": .int(1)],
            ["kernels": .ints([3, 2]), "stride_h": .int(1), "stride_w": .int(3), "pad_t": .int(1), "pad_b": .int(0)],
          ])
    func convTranspose(_ args: [String: ArgumentValue]) throws {
        var rng = TestRNG(6)
        let (kh, kw): (Int, Int) = {
            if case let .ints(k)? = args["kernels"] { return (k[0], k[1]) }
            if case let .int(k)? = args["kernel"] { return (k, k) }
            return (1, 1)
        }()
        let (n, c, h, w, m) = (2, 3, 4, 3, 2)
        try checkGradient(OperatorDef("ConvTranspose", inputs: ["x", "w", "b"], outputs: ["y"], arguments: args), inputs: [
            CheckInput(name: "x", tensor: tensor(rng.array(n * c * h * w), [n, c, h, w]), check: true),
            CheckInput(name: "w", tensor: tensor(rng.array(c * m * kh * kw), [c, m, kh, kw]), check: true),
            CheckInput(name: "b", tensor: tensor(rng.array(m), [m]), check: true),
        ])
        try checkGradient(OperatorDef("ConvTranspose", inputs: ["x", "w"], outputs: ["y"], arguments: args), inputs: [
            CheckInput(name: "x", tensor: tensor(rng.array(n * c * h * w), [n, c, h, w]), check: true),
            CheckInput(name: "w", tensor: tensor(rng.array(c * m * kh * kw), [c, m, kh, kw]), check: true),
        ])
    }

    @Test("ConvTranspose by hand: kernel 2, stride 2 (the mask head's conv5_mask) puts W·x in each 2×2 block, plus the bias; sizes with pad and adj")
    func convTransposeValues() throws {
        let ctx = CPUContext(), ws = Workspace(context: ctx)
        // Two input channels, one output channel, a 1×2 map.
        ws.feedBlob("x", try Tensor([1, 2, 10, 20] as [Float], shape: [1, 2, 1, 2], context: ctx))
        ws.feedBlob("w", try Tensor([1, 2, 3, 4, 0.5, 0, 0, -1] as [Float], shape: [2, 1, 2, 2], context: ctx))
        ws.feedBlob("b", try Tensor([100] as [Float], shape: [1], context: ctx))
        let op = OperatorDef("ConvTranspose", inputs: ["x", "w", "b"], outputs: ["y"], arguments: ["kernel": .int(2), "stride": .int(2)])
        try Net(NetDef(name: "t", ops: [op]), workspace: ws).run()
        let y = try ws.fetchBlob("y")
        #expect(y.shape == [1, 1, 2, 4])
        // out[2i + a, 2j + b] = b + Σ_c x[c, i, j]·W[c, 0, a, b].
        #expect(try y.toArray(as: Float.self) == [106, 102, 112, 104, 103, 94, 106, 88])
        // Output size (in − 1)·stride + kernel + adj − pads: 1×2 → 2×4 for both.
        for (k, adj) in [(3, 1), (4, 0)] {
            ws.feedBlob("w2", try Tensor([Float](repeating: 1, count: 2 * k * k), shape: [2, 1, k, k], context: ctx))
            let op = OperatorDef("ConvTranspose", inputs: ["x", "w2"], outputs: ["y2"],
                                 arguments: ["kernel": .int(k), "stride": .int(2), "pad": .int(1), "adj": .int(adj)])
            try Net(NetDef(name: "t", ops: [op]), workspace: ws).run()
            #expect(try ws.fetchBlob("y2").shape == [1, 1, 2, 4], "kernel \(k)")
        }
    }

    @Test("gradients only with respect to what is asked: Conv skips dX of the net's input (compute_dX 0), parameters still get theirs")
    func gradientsWithRespectTo() throws {
        var net = NetDef(name: "n", ops: [OperatorDef("Conv", inputs: ["data", "w1"], outputs: ["h"], arguments: ["kernel": .int(3), "pad": .int(1)]),
                                          OperatorDef("Conv", inputs: ["h", "w2"], outputs: ["y"], arguments: ["kernel": .int(1)])])
        let grads = try addGradientOperators(to: &net, losses: ["y"], wrt: ["w1", "w2"])
        #expect(grads["w1"] == "w1_grad" && grads["w2"] == "w2_grad" && grads["data"] == nil)
        let first = try #require(net.ops.first { $0.type == "ConvGradient" && $0.inputs.first == "data" })
        #expect(first.arguments["compute_dX"] == .int(0) && first.outputs == ["w1_grad"])
        let second = try #require(net.ops.first { $0.type == "ConvGradient" && $0.inputs.first == "h" })
        #expect(second.arguments["compute_dX"] == nil && second.outputs == ["w2_grad", "h_grad"])
    }

    @Test("FC")
    func fc() throws {
        var rng = TestRNG(5)
        try checkGradient(OperatorDef("FC", inputs: ["x", "w", "b"], outputs: ["y"]), inputs: [
            CheckInput(name: "x", tensor: tensor(rng.array(3 * 2 * 2 * 2), [3, 2, 2, 2]), check: true),
            CheckInput(name: "w", tensor: tensor(rng.array(5 * 8), [5, 8]), check: true),
            CheckInput(name: "b", tensor: tensor(rng.array(5), [5]), check: true),
        ])
    }

    @Test("AffineChannel (frozen and learnable), GroupNorm, SpatialBN (train and test)")
    func normalization() throws {
        var rng = TestRNG(6)
        let x = { (r: inout TestRNG) in tensor(r.array(2 * 4 * 3 * 3, -2, 2), [2, 4, 3, 3]) }
        try checkGradient(OperatorDef("AffineChannel", inputs: ["x", "s", "b"], outputs: ["y"]), inputs: [
            CheckInput(name: "x", tensor: x(&rng), check: true),
            CheckInput(name: "s", tensor: tensor(rng.array(4), [4]), check: false),
            CheckInput(name: "b", tensor: tensor(rng.array(4), [4]), check: false),
        ])
        try checkGradient(OperatorDef("AffineChannel", inputs: ["x", "s", "b"], outputs: ["y"], arguments: ["is_learnable": .int(1)]), inputs: [
            CheckInput(name: "x", tensor: x(&rng), check: true),
            CheckInput(name: "s", tensor: tensor(rng.array(4), [4]), check: true),
            CheckInput(name: "b", tensor: tensor(rng.array(4), [4]), check: true),
        ])
        try checkGradient(OperatorDef("GroupNorm", inputs: ["x", "g", "b"], outputs: ["y", "mu", "rsig"], arguments: ["group": .int(2)]), inputs: [
            CheckInput(name: "x", tensor: x(&rng), check: true),
            CheckInput(name: "g", tensor: tensor(rng.array(4, 0.5, 1.5), [4]), check: true),
            CheckInput(name: "b", tensor: tensor(rng.array(4), [4]), check: true),
        ], eps: 1e-2, tolerance: 2e-2)
        try checkGradient(OperatorDef("SpatialBN", inputs: ["x", "s", "b", "rm", "rv"], outputs: ["y", "rm", "rv", "sm", "si"]), inputs: [
            CheckInput(name: "x", tensor: x(&rng), check: true),
            CheckInput(name: "s", tensor: tensor(rng.array(4, 0.5, 1.5), [4]), check: true),
            CheckInput(name: "b", tensor: tensor(rng.array(4), [4]), check: true),
            CheckInput(name: "rm", tensor: tensor([0, 0, 0, 0], [4]), check: false),
            CheckInput(name: "rv", tensor: tensor([1, 1, 1, 1], [4]), check: false),
        ], tolerance: 2e-2)
        try checkGradient(OperatorDef("SpatialBN", inputs: ["x", "s", "b", "m", "v"], outputs: ["y"], arguments: ["is_test": .int(1)]), inputs: [
            CheckInput(name: "x", tensor: x(&rng), check: true),
            CheckInput(name: "s", tensor: tensor(rng.array(4), [4]), check: true),
            CheckInput(name: "b", tensor: tensor(rng.array(4), [4]), check: true),
            CheckInput(name: "m", tensor: tensor(rng.array(4), [4]), check: false),
            CheckInput(name: "v", tensor: tensor(rng.array(4, 0.5, 2), [4]), check: false),
        ])
    }

    @Test("MaxPool, AveragePool (padded and global), UpsampleNearest")
    func pooling() throws {
        var rng = TestRNG(7)
        try checkGradient(OperatorDef("MaxPool", inputs: ["x"], outputs: ["y"], arguments: ["kernel": .int(3), "stride": .int(2), "pad": .int(1)]),
                          inputs: [CheckInput(name: "x", tensor: tensor(rng.distinct(2 * 2 * 7 * 6), [2, 2, 7, 6]), check: true)])
        try checkGradient(OperatorDef("MaxPool", inputs: ["x"], outputs: ["y"], arguments: ["kernel": .int(1), "stride": .int(2)]),
                          inputs: [CheckInput(name: "x", tensor: tensor(rng.distinct(1 * 2 * 5 * 5), [1, 2, 5, 5]), check: true)])
        try checkGradient(OperatorDef("AveragePool", inputs: ["x"], outputs: ["y"], arguments: ["kernel": .int(3), "stride": .int(2), "pad": .int(1)]),
                          inputs: [CheckInput(name: "x", tensor: tensor(rng.array(2 * 2 * 7 * 6), [2, 2, 7, 6]), check: true)])
        try checkGradient(OperatorDef("AveragePool", inputs: ["x"], outputs: ["y"], arguments: ["global_pooling": .int(1)]),
                          inputs: [CheckInput(name: "x", tensor: tensor(rng.array(2 * 3 * 4 * 4), [2, 3, 4, 4]), check: true)])
        try checkGradient(OperatorDef("UpsampleNearest", inputs: ["x"], outputs: ["y"], arguments: ["scale": .int(2)]),
                          inputs: [CheckInput(name: "x", tensor: tensor(rng.array(2 * 2 * 3 * 4), [2, 2, 3, 4]), check: true)])
    }

    @Test("MaxPool's gradient with ties: each window's dY goes to its first maximal cell once (a flat region's shift moves the max by the shift)")
    func maxPoolTies() throws {
        let ctx = CPUContext(), ws = Workspace(context: ctx)
        // A flat 3 × 3 plane but for one larger cell, 2 × 2 windows at stride 1.
        ws.feedBlob("x", try Tensor([1, 1, 1, 1, 1, 1, 1, 1, 2] as [Float], shape: [1, 1, 3, 3], context: ctx))
        ws.feedBlob("dy", try Tensor([1, 10, 100, 1000] as [Float], shape: [1, 1, 2, 2], context: ctx))
        let args: [String: ArgumentValue] = ["kernel": .int(2), "stride": .int(1)]
        try Net(NetDef(name: "pool", ops: [OperatorDef("MaxPool", inputs: ["x"], outputs: ["y"], arguments: args),
                                           OperatorDef("MaxPoolGradient", inputs: ["x", "y", "dy"], outputs: ["dx"], arguments: args)]),
                workspace: ws).run()
        #expect(try ws.fetchBlob("y").toArray(as: Float.self) == [1, 1, 1, 2])
        // Windows at (0,0), (0,1), (1,0) are flat: their first cells are (0,0), (0,1), (1,0); the last one's max is (2,2).
        #expect(try ws.fetchBlob("dx").toArray(as: Float.self) == [1, 10, 0, 100, 0, 0, 0, 0, 1000])
    }

    @Test("Softmax and the losses")
    func softmaxAndLosses() throws {
        var rng = TestRNG(8)
        try checkGradient(OperatorDef("Softmax", inputs: ["x"], outputs: ["y"]),
                          inputs: [CheckInput(name: "x", tensor: tensor(rng.array(3 * 5, -2, 2), [3, 5]), check: true)])
        try checkGradient(OperatorDef("SoftmaxWithLoss", inputs: ["x", "l"], outputs: ["p", "loss"], arguments: ["scale": .float(0.5)]), inputs: [
            CheckInput(name: "x", tensor: tensor(rng.array(4 * 5, -2, 2), [4, 5]), check: true),
            CheckInput(name: "l", tensor: intTensor([0, 4, 2, 2], [4]), check: false),
        ], output: 1)
        try checkGradient(OperatorDef("SoftmaxWithLoss", inputs: ["x", "l", "w"], outputs: ["p", "loss"]), inputs: [
            CheckInput(name: "x", tensor: tensor(rng.array(4 * 5, -2, 2), [4, 5]), check: true),
            CheckInput(name: "l", tensor: intTensor([1, 3, 0, 2], [4]), check: false),
            CheckInput(name: "w", tensor: tensor([1, 0.5, 2, 0], [4]), check: false),
        ], output: 1)
        for normalize in [0, 1] {
            try checkGradient(OperatorDef("SigmoidCrossEntropyLoss", inputs: ["x", "t"], outputs: ["loss"],
                                          arguments: ["normalize": .int(normalize), "scale": .float(1.0 / 512)]), inputs: [
                CheckInput(name: "x", tensor: tensor(rng.array(2 * 3 * 2 * 2, -3, 3), [2, 3, 2, 2]), check: true),
                CheckInput(name: "t", tensor: intTensor((0..<24).map { Int32($0 % 3) - 1 }, [2, 3, 2, 2]), check: false),
            ], tolerance: 1e-2)
        }
        // SmoothL1 with |in_w·(ŷ − y)| kept away from β (the kink of the gradient).
        let n = 16
        let target = rng.array(n)
        let pred = target.enumerated().map { i, t in t + (i % 2 == 0 ? 1 : -1) * (i % 4 < 2 ? 0.03 : 0.4) }
        for beta in [1.0 / 9, 1.0] {
            try checkGradient(OperatorDef("SmoothL1Loss", inputs: ["p", "t", "wi", "wo"], outputs: ["loss"], arguments: ["beta": .float(beta), "scale": .float(0.5)]), inputs: [
                CheckInput(name: "p", tensor: tensor(pred, [4, 4]), check: true),
                CheckInput(name: "t", tensor: tensor(target, [4, 4]), check: false),
                CheckInput(name: "wi", tensor: tensor((0..<n).map { Float($0 % 3 == 0 ? 0 : 1) }, [4, 4]), check: false),
                CheckInput(name: "wo", tensor: tensor((0..<n).map { _ in 0.25 }, [4, 4]), check: false),
            ], eps: 1e-3)
        }
    }

    @Test("RoIAlign, including boxes that cross the feature-map edge")
    func roiAlign() throws {
        var rng = TestRNG(9)
        let rois: [Float] = [
            0, 1.5, 2.0, 10.5, 9.0,      // inside
            1, -6.0, -3.0, 5.0, 4.0,     // crosses the top-left edge
            0, 8.0, 6.0, 20.0, 15.0,     // crosses the bottom-right edge
            1, 3.0, 3.0, 3.2, 3.1,       // smaller than a cell: roi size clamps to 1
        ]
        try checkGradient(OperatorDef("RoIAlign", inputs: ["x", "rois"], outputs: ["y"],
                                      arguments: ["spatial_scale": .float(0.5), "pooled_h": .int(3), "pooled_w": .int(2), "sampling_ratio": .int(2)]), inputs: [
            CheckInput(name: "x", tensor: tensor(rng.array(2 * 2 * 6 * 7), [2, 2, 6, 7]), check: true),
            CheckInput(name: "rois", tensor: tensor(rois, [4, 5]), check: false),
        ])
        try checkGradient(OperatorDef("RoIAlign", inputs: ["x", "rois"], outputs: ["y"],
                                      arguments: ["spatial_scale": .float(0.5), "pooled_h": .int(2), "pooled_w": .int(2), "sampling_ratio": .int(0)]), inputs: [
            CheckInput(name: "x", tensor: tensor(rng.array(2 * 2 * 6 * 7), [2, 2, 6, 7]), check: true),
            CheckInput(name: "rois", tensor: tensor(rois, [4, 5]), check: false),
        ])
    }

    @Test("RoIAlign's channels-last path (many rois) gives bitwise the per-channel path's results", arguments: [20, 16])
    func roiAlignChannelsLast(channels: Int) throws {
        var rng = TestRNG(11)
        let ctx = CPUContext()
        let (n, h, w) = (2, 6, 7)
        let x = rng.array(n * channels * h * w)
        // 12 rois (edges crossed, cells smaller than one): 12·3·2·8 ≥ 2·6·7 takes the channels-last path.
        var rois: [Float] = []
        for i in 0..<12 {
            let x1 = Float(i % 5) * 2.5 - 3, y1 = Float(i % 4) * 2 - 2
            rois += [Float(i % 2), x1, y1, x1 + Float(i % 3) * 4 + 0.3, y1 + Float(i % 4) * 3 + 0.2]
        }
        func align(_ rois: [Float]) throws -> [Float] {
            let ws = Workspace(context: ctx)
            ws.feedBlob("x", tensor(x, [n, channels, h, w]))
            ws.feedBlob("rois", tensor(rois, [rois.count / 5, 5]))
            let op = OperatorDef("RoIAlign", inputs: ["x", "rois"], outputs: ["y"],
                                 arguments: ["spatial_scale": .float(0.5), "pooled_h": .int(3), "pooled_w": .int(2), "sampling_ratio": .int(0)])
            try Net(NetDef(name: "roi", ops: [op]), workspace: ws, pool: ThreadPool(threadCount: 1, name: "roi")).run()
            return try ws.fetchBlob("y").toArray(as: Float.self)
        }
        let together = try align(rois)
        // One roi at a time: 1·3·2·8 < 2·6·7, the per-channel path.
        let oneByOne = try (0..<12).flatMap { i in try align(Array(rois[(5 * i)..<(5 * i + 5)])) }
        #expect(together.count == 12 * channels * 6)
        #expect(together == oneByOne)
        #expect(together.contains { $0 != 0 })
    }
}

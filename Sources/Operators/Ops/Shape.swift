import Storage

/// Normalises a possibly negative axis; the error names the argument.
func resolveAxis(_ axis: Int, rank: Int, io: OpIO, input: Int = 0) throws(OpRunError) -> Int {
    let a = axis < 0 ? axis + rank : axis
    try io.require(a >= 0 && a < rank, input: input, "has rank \(rank); axis \(axis) is out of range")
    return a
}

/// `Concat(X0, X1, …; axis) -> (Y, split_info)`: joins along `axis`; `split_info` (int32) holds each
/// input's size on that axis.
final class ConcatOp: Operator, Sendable {
    let io: OpIO
    let axisArg: Int
    init(_ io: OpIO) throws(OperatorError) {
        self.io = io
        axisArg = try io.int("axis", 1)
    }

    func run(_ ctx: ExecutionContext) throws {
        let inputs = try (0..<io.inputCount).map { i throws(OpRunError) in try io.inputData(i) }
        let first = inputs[0].0.shape
        let axis = try resolveAxis(axisArg, rank: first.count, io: io)
        var total = 0
        for (i, (t, _)) in inputs.enumerated() {
            var a = t.shape, b = first
            try io.require(a.count == b.count, input: i, "has rank \(a.count) but \(io.def.inputs[0]) has \(b.count)")
            a[axis] = 0
            b[axis] = 0
            try io.require(a == b, input: i, "has shape \(t.shape), which differs from \(first) off axis \(axis)")
            total += t.shape[axis]
        }
        var outShape = first
        outShape[axis] = total
        let (_, y) = try io.outputData(0, shape: outShape)
        let outer = first[..<axis].reduce(1, *)
        let inner = first[(axis + 1)...].reduce(1, *)
        var offset = 0
        var copies: [Copy] = []
        for (t, d) in inputs {
            let block = t.shape[axis] * inner
            for o in 0..<outer where block > 0 {
                copies.append(Copy(to: y.baseAddress! + o * total * inner + offset, from: d.baseAddress! + o * block, count: block))
            }
            offset += block
        }
        Copy.run(copies, ctx)
        if io.outputCount > 1 {
            let info = try io.output(1, shape: [inputs.count], dtype: .int32)
            let p = try io.check(1, isInput: false) { () throws(StorageError) in try info.mutableData(as: Int32.self) }
            for (i, (t, _)) in inputs.enumerated() { p[i] = Int32(t.shape[axis]) }
        }
    }
}

/// `Split(X[, split]; axis, split) -> (Y0, Y1, …)`: sizes from the `split` argument, a second
/// int32 input, or equal parts.
final class SplitOp: Operator, Sendable {
    let io: OpIO
    let axisArg: Int
    let sizes: [Int]?
    /// Sizes from the shapes of inputs 1… (`SplitLike`).
    let like: Bool
    init(_ io: OpIO, like: Bool = false) throws(OperatorError) {
        self.io = io
        self.like = like
        axisArg = try io.int("axis", 1)
        sizes = io.has("split") ? try io.ints("split") : nil
        if let sizes { try io.argument("split", sizes.count == io.outputCount, "has \(sizes.count) sizes for \(io.outputCount) outputs") }
    }

    func run(_ ctx: ExecutionContext) throws {
        let (x, xd) = try io.inputData(0)
        let axis = try resolveAxis(axisArg, rank: x.rank, io: io)
        var parts: [Int]
        if like {
            parts = try (1..<io.inputCount).map { i throws(OpRunError) in
                let t = try io.input(i)
                try io.require(t.rank == x.rank, input: i, "has rank \(t.rank) but \(io.def.inputs[0]) has \(x.rank)")
                return t.shape[axis]
            }
        } else if io.inputCount > 1 {
            let s = try io.input(1)
            parts = try io.check(1, isInput: true) { () throws(StorageError) in try s.toArray(as: Int32.self).map(Int.init) }
        } else if let sizes {
            parts = sizes
        } else {
            try io.require(x.shape[axis] % io.outputCount == 0, input: 0, "size \(x.shape[axis]) on axis \(axis) does not split into \(io.outputCount) equal parts")
            parts = Array(repeating: x.shape[axis] / io.outputCount, count: io.outputCount)
        }
        try io.require(parts.count == io.outputCount && parts.reduce(0, +) == x.shape[axis], input: 0,
                       "size \(x.shape[axis]) on axis \(axis) does not split into \(parts)")
        let outer = x.shape[..<axis].reduce(1, *)
        let inner = x.shape[(axis + 1)...].reduce(1, *)
        var offset = 0
        for (k, n) in parts.enumerated() {
            var shape = x.shape
            shape[axis] = n
            let (_, y) = try io.outputData(k, shape: shape)
            let block = n * inner
            for o in 0..<outer where block > 0 {
                (y.baseAddress! + o * block).update(from: xd.baseAddress! + o * x.shape[axis] * inner + offset, count: block)
            }
            offset += block
        }
    }
}

/// `Reshape(X[, shape]; shape) -> (Y, old_shape)`: Caffe2 rules — 0 copies the input's dimension,
/// -1 is inferred.
final class ReshapeOp: Operator, Sendable {
    let io: OpIO
    let target: [Int]?
    init(_ io: OpIO) throws(OperatorError) {
        self.io = io
        target = io.has("shape") ? try io.ints("shape") : nil
        if target == nil && io.inputCount < 2 { throw .badArgument(name: "shape", at: io.location, reason: "is required (or give the shape as a second input)") }
    }

    func run(_ ctx: ExecutionContext) throws {
        let x = try io.input(0)
        var shape: [Int]
        if let target {
            shape = target
        } else {
            let s = try io.input(1)
            shape = try io.check(1, isInput: true) { () throws(StorageError) in try s.toArray(as: Int64.self).map(Int.init) }
        }
        for (i, d) in shape.enumerated() where d == 0 {
            try io.require(i < x.rank, input: 0, "has rank \(x.rank); shape \(shape) copies dimension \(i)")
            shape[i] = x.shape[i]
        }
        let old = x.shape
        if io.def.outputs[0] == io.def.inputs[0] {
            try io.check(0, isInput: false) { () throws(StorageError) in try x.reshape(shape) }
        } else {
            let y = try io.output(0, shape: old, dtype: x.dtype)
            try io.check(0, isInput: false) { () throws(StorageError) in
                try y.copy(from: x)
                try y.reshape(shape)
            }
        }
        if io.outputCount > 1 {
            let t = try io.output(1, shape: [old.count], dtype: .int64)
            let p = try io.check(1, isInput: false) { () throws(StorageError) in try t.mutableData(as: Int64.self) }
            for (i, d) in old.enumerated() { p[i] = Int64(d) }
        }
    }
}

/// `Flatten(X; axis=1) -> Y` of shape (prod dims before axis, prod from axis).
final class FlattenOp: Operator, Sendable {
    let io: OpIO
    let axis: Int
    init(_ io: OpIO) throws(OperatorError) {
        self.io = io
        axis = try io.int("axis", 1)
    }

    func run(_ ctx: ExecutionContext) throws {
        let x = try io.input(0)
        try io.require(axis >= 0 && axis <= x.rank, input: 0, "has rank \(x.rank); cannot flatten at axis \(axis)")
        let shape = [x.shape[..<axis].reduce(1, *), x.shape[axis...].reduce(1, *)]
        let y = try io.output(0, shape: x.shape, dtype: x.dtype)
        try io.check(0, isInput: false) { () throws(StorageError) in
            try y.copy(from: x)
            try y.reshape(shape)
        }
    }
}

/// `Transpose(X; axes) -> Y`; default axes reverse the dimensions.
final class TransposeOp: Operator, Sendable {
    let io: OpIO
    let axesArg: [Int]?
    init(_ io: OpIO) throws(OperatorError) {
        self.io = io
        axesArg = io.has("axes") ? try io.ints("axes") : nil
    }

    func run(_ ctx: ExecutionContext) throws {
        let (x, xd) = try io.inputData(0)
        let axes = axesArg ?? Array((0..<x.rank).reversed())
        try io.require(axes.sorted() == Array(0..<x.rank), input: 0, "has rank \(x.rank); axes \(axes) are not a permutation of it")
        let outShape = axes.map { x.shape[$0] }
        let (_, y) = try io.outputData(0, shape: outShape)
        var inStrides = [Int](repeating: 1, count: x.rank)
        for d in stride(from: x.rank - 2, through: 0, by: -1) { inStrides[d] = inStrides[d + 1] * x.shape[d + 1] }
        let permStrides = axes.map { inStrides[$0] }
        var index = [Int](repeating: 0, count: x.rank)
        for o in 0..<y.count {
            var src = 0
            for d in 0..<x.rank { src += index[d] * permStrides[d] }
            y[o] = xd[src]
            var d = x.rank - 1
            while d >= 0 {
                index[d] += 1
                if index[d] < outShape[d] { break }
                index[d] = 0
                d -= 1
            }
        }
    }
}

/// `SpatialNarrowAs(A, B) -> C`: A cropped top-left to B's height and width (NCHW).
/// Its gradient, `SpatialNarrowAsGradient(A, B, dC) -> dA`, pads dC with zeros to A's size.
final class SpatialNarrowAsOp: Operator, Sendable {
    let io: OpIO
    let gradient: Bool
    init(_ io: OpIO, gradient: Bool) {
        self.io = io
        self.gradient = gradient
    }

    func run(_ ctx: ExecutionContext) throws {
        let a = try io.input(0)
        let b = try io.input(1)
        try io.require(a.rank == 4, input: 0, "must be NCHW, has shape \(a.shape)")
        try io.require(b.rank >= 2, input: 1, "must have at least 2 dimensions, has shape \(b.shape)")
        let h = b.shape[b.rank - 2], w = b.shape[b.rank - 1]
        let (n, c, ha, wa) = (a.shape[0], a.shape[1], a.shape[2], a.shape[3])
        try io.require(h <= ha && w <= wa, input: 1, "is \(h)×\(w), larger than \(io.def.inputs[0])'s \(ha)×\(wa)")
        if !gradient {
            // Any dtype: the labels narrowed for the RPN loss are int32.
            let size = a.dtype.byteSize
            let y = try io.output(0, shape: [n, c, h, w], dtype: a.dtype)
            let dst = try io.check(0, isInput: false) { () throws(StorageError) in try y.rawMutableData() }
            guard let src = try io.check(0, isInput: true, { () throws(StorageError) in try a.rawData() }) else { return }
            for p in 0..<(n * c) {
                for row in 0..<h {
                    (dst + ((p * h + row) * w) * size).copyMemory(from: src + ((p * ha + row) * wa) * size, byteCount: w * size)
                }
            }
        } else {
            let (dy, dyd) = try io.inputData(2)
            try io.require(dy.shape == [n, c, h, w], input: 2, "has shape \(dy.shape), expected \([n, c, h, w])")
            let (_, dx) = try io.outputData(0, shape: a.shape)
            dx.update(repeating: 0)
            for p in 0..<(n * c) {
                for row in 0..<h {
                    (dx.baseAddress! + (p * ha + row) * wa).update(from: dyd.baseAddress! + (p * h + row) * w, count: w)
                }
            }
        }
    }
}

/// `BatchPermutation(X, indices) -> Y` with `Y[i] = X[indices[i]]` along dimension 0; its gradient
/// `BatchPermutationGradient(indices, dY) -> dX` scatters back.
final class BatchPermutationOp: Operator, Sendable {
    let io: OpIO
    let gradient: Bool
    init(_ io: OpIO, gradient: Bool) {
        self.io = io
        self.gradient = gradient
    }

    func run(_ ctx: ExecutionContext) throws {
        let (src, sd) = try io.inputData(gradient ? 1 : 0)
        let idxT = try io.input(gradient ? 0 : 1)
        let idx = try io.check(gradient ? 0 : 1, isInput: true) { () throws(StorageError) in try idxT.data(as: Int32.self) }
        let n = src.rank > 0 ? src.shape[0] : 0
        try io.require(idx.count == n, input: gradient ? 0 : 1, "holds \(idx.count) indices for \(n) rows")
        let row = n > 0 ? src.count / n : 0
        let (_, y) = try io.outputData(0, shape: src.shape)
        var copies: [Copy] = []
        copies.reserveCapacity(n)
        // The gradient writes row idx[i]: a permutation, or two copies would race for a row.
        var written = [Bool](repeating: false, count: gradient ? n : 0)
        for i in 0..<n {
            let j = Int(idx[i])
            try io.require(j >= 0 && j < n, input: gradient ? 0 : 1, "index \(j) at position \(i) is outside 0..<\(n)")
            if gradient {
                try io.require(!written[j], input: 0, "index \(j) appears twice (at position \(i) again): not a permutation")
                written[j] = true
            }
            let (to, from) = gradient ? (j, i) : (i, j)
            if row > 0 { copies.append(Copy(to: y.baseAddress! + to * row, from: sd.baseAddress! + from * row, count: row)) }
        }
        Copy.run(copies, ctx)
    }
}

/// A copy of `count` floats. `run` spreads a list of them over the pool in pieces of at most
/// 64 Ki floats: the RoI features that Concat and BatchPermutation move (1,000 boxes × 256 × 7 × 7,
/// 50 MB each) took a core for 9–10 ms apiece while the other idled.
struct Copy {
    let to: UnsafeMutablePointer<Float>
    let from: UnsafePointer<Float>
    let count: Int

    static func run(_ copies: [Copy], _ ctx: ExecutionContext) {
        let piece = 1 << 16
        // Up to one piece in all, on the calling thread.
        guard copies.reduce(0, { $0 + $1.count }) > piece else {
            for c in copies { c.to.update(from: c.from, count: c.count) }
            return
        }
        var pieces: [Copy] = []
        for c in copies {
            for start in stride(from: 0, to: c.count, by: piece) {
                pieces.append(Copy(to: c.to + start, from: c.from + start, count: min(piece, c.count - start)))
            }
        }
        ctx.parallelFor(pieces.count) { k in pieces[k].to.update(from: pieces[k].from, count: pieces[k].count) }
    }
}

func registerShapeOps(_ r: inout OperatorRegistry) {
    r.register("Concat", OperatorSchema(inputs: 1...Int.max, outputs: 1...2, gradient: { g in
        GradientResult(ops: [OperatorDef("SplitLike", inputs: [g.outputGradient(0)!] + g.def.inputs,
                                         outputs: g.def.inputs.indices.map(g.inputGradient),
                                         arguments: ["axis": g.def.arguments["axis"] ?? .int(1)])],
                       inputsWithGradient: Set(g.def.inputs.indices))
    }) { io throws(OperatorError) in try ConcatOp(io) })
    // `SplitLike(X, A0, A1, …; axis) -> (Y0, Y1, …)`: X split along axis into the sizes of A0, A1, …
    r.register("SplitLike", OperatorSchema(inputs: 2...Int.max, outputs: 1...Int.max) { io throws(OperatorError) in
        try io.argument("outputs", io.outputCount == io.inputCount - 1, "must number one per shape input")
        return try SplitOp(io, like: true)
    })
    r.register("Split", OperatorSchema(inputs: 1...2, outputs: 1...Int.max, gradient: { g in
        // Missing output gradients are zeros of the matching part's shape.
        var ops: [OperatorDef] = []
        var parts: [String] = []
        for (k, go) in g.outputGradients.enumerated() {
            if let go { parts.append(go) } else {
                let zero = g.inputGradient(0) + "_zero_\(k)"
                ops.append(OperatorDef("ConstantFill", inputs: [g.output(k)], outputs: [zero], arguments: ["value": .float(0)]))
                parts.append(zero)
            }
        }
        ops.append(OperatorDef("Concat", inputs: parts, outputs: [g.inputGradient(0), g.inputGradient(0) + "_split_info"],
                               arguments: ["axis": g.def.arguments["axis"] ?? .int(1)]))
        return GradientResult(ops: ops, inputsWithGradient: [0])
    }) { io throws(OperatorError) in try SplitOp(io) })
    r.register("Reshape", OperatorSchema(inputs: 1...2, outputs: 1...2, allowsInPlace: true, gradient: { g in
        GradientResult(ops: [OperatorDef("ResizeLike", inputs: [g.outputGradient(0)!, g.input(0)], outputs: [g.inputGradient(0)])],
                       inputsWithGradient: [0])
    }) { io throws(OperatorError) in try ReshapeOp(io) })
    r.register("Flatten", OperatorSchema(inputs: 1...1, outputs: 1...1, gradient: { g in
        GradientResult(ops: [OperatorDef("ResizeLike", inputs: [g.outputGradient(0)!, g.input(0)], outputs: [g.inputGradient(0)])],
                       inputsWithGradient: [0])
    }) { io throws(OperatorError) in try FlattenOp(io) })
    r.register("Transpose", OperatorSchema(inputs: 1...1, outputs: 1...1, gradient: { g in
        var args: [String: ArgumentValue] = [:]
        if case let .ints(axes)? = g.def.arguments["axes"] {
            var inverse = [Int](repeating: 0, count: axes.count)
            for (i, a) in axes.enumerated() { inverse[a] = i }
            args["axes"] = .ints(inverse)
        }
        return GradientResult(ops: [OperatorDef("Transpose", inputs: [g.outputGradient(0)!], outputs: [g.inputGradient(0)], arguments: args)],
                              inputsWithGradient: [0])
    }) { io throws(OperatorError) in try TransposeOp(io) })
    r.register("SpatialNarrowAs", OperatorSchema(inputs: 2...2, outputs: 1...1, gradient: { g in
        GradientResult(ops: [OperatorDef("SpatialNarrowAsGradient", inputs: [g.input(0), g.input(1), g.outputGradient(0)!],
                                         outputs: [g.inputGradient(0)])], inputsWithGradient: [0])
    }) { io in SpatialNarrowAsOp(io, gradient: false) })
    r.register("SpatialNarrowAsGradient", OperatorSchema(inputs: 3...3, outputs: 1...1) { io in SpatialNarrowAsOp(io, gradient: true) })
    r.register("BatchPermutation", OperatorSchema(inputs: 2...2, outputs: 1...1, gradient: { g in
        GradientResult(ops: [OperatorDef("BatchPermutationGradient", inputs: [g.input(1), g.outputGradient(0)!],
                                         outputs: [g.inputGradient(0)])], inputsWithGradient: [0])
    }) { io in BatchPermutationOp(io, gradient: false) })
    r.register("BatchPermutationGradient", OperatorSchema(inputs: 2...2, outputs: 1...1) { io in BatchPermutationOp(io, gradient: true) })
}

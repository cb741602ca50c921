/// Op fusion for inference nets, in the spirit of Caffe2's `fuse_conv_bn` / `fuse_conv_relu`
/// transforms: each value is computed with the same arithmetic in the same order, so a fused
/// net's outputs are bitwise those of the original; what goes away is the memory passes between
/// ops (the fused steps run on each band of a convolution's output while it is in cache).
extension NetDef {
    /// The net with
    /// - `Conv [→ AffineChannel] [→ Sum(·, residual)] [→ Relu]` made one `Conv` (arguments
    ///   `fused_affine`, `fused_residual`, `fused_relu`; the affine's scale and shift, then the
    ///   residual, appended to its inputs);
    /// - `Sum → Relu` made one `Sum` (argument `fused_relu`).
    ///
    /// A step is fused only when the value between the two ops has no other reader and the
    /// consumer can move up to its producer. An intermediate blob that would vanish (the conv
    /// output before an AffineChannel that is not in place) is kept, unfused, when it is in
    /// `keeping` or the net's external outputs. Training nets must not be fused: their gradients
    /// read the intermediate blobs.
    public func fusedForInference(keeping: Set<String> = []) -> NetDef {
        let kept = keeping.union(externalOutputs)
        var fused = ops
        var removed = Set<Int>()
        /// The op that reads the value op `index` wrote to `blob`, when it is the only reader of
        /// that value (up to the next write of the blob), has type `type`, takes the blob as one
        /// input (its first, unless `anyInput`), and can move up to `index`: no op in between
        /// reads or writes its outputs or writes its other inputs, and its outputs are none of the
        /// producer's inputs (a Conv cannot run in place). A value that outlives the fusion under
        /// its name (kept or external) stays.
        func soleReader(of blob: String, after index: Int, type: String, anyInput: Bool = false) -> Int? {
            var readers: [Int] = []
            for j in fused.indices where j > index && !removed.contains(j) {
                if fused[j].inputs.contains(blob) { readers.append(j) }
                if fused[j].outputs.contains(blob) { break }
            }
            guard readers.count == 1, let j = readers.first, fused[j].type == type,
                  fused[j].inputs.filter({ $0 == blob }).count == 1, anyInput || fused[j].inputs.first == blob else { return nil }
            if !fused[j].outputs.contains(blob) && kept.contains(blob) { return nil }
            let moved = Set(fused[j].outputs), otherInputs = Set(fused[j].inputs.filter { $0 != blob })
            guard !fused[index].inputs.contains(where: moved.contains), !otherInputs.contains(where: moved.contains) else { return nil }
            for k in (index + 1)..<j where !removed.contains(k) {
                let op = fused[k]
                if op.inputs.contains(where: moved.contains) || op.outputs.contains(where: { moved.contains($0) || otherInputs.contains($0) }) {
                    return nil
                }
            }
            return j
        }
        func fuseRelu(into i: Int) {
            guard fused[i].outputs.count == 1, let j = soleReader(of: fused[i].outputs[0], after: i, type: "Relu"),
                  fused[j].outputs.count == 1 else { return }
            fused[i].outputs = fused[j].outputs
            fused[i].arguments["fused_relu"] = .int(1)
            removed.insert(j)
        }
        for i in fused.indices where !removed.contains(i) {
            switch fused[i].type {
            case "Conv" where fused[i].outputs.count == 1 && fused[i].arguments["fused_affine"] == nil
                && fused[i].arguments["fused_relu"] == nil:
                if let j = soleReader(of: fused[i].outputs[0], after: i, type: "AffineChannel"),
                   fused[j].inputs.count == 3, fused[j].outputs.count == 1, fused[j].arguments.isEmpty {
                    fused[i].inputs += fused[j].inputs[1...]
                    fused[i].outputs = fused[j].outputs
                    fused[i].arguments["fused_affine"] = .int(1)
                    removed.insert(j)
                }
                // A two-input Sum of this value and another blob (either order: Sum's (0 + a) + b is
                // symmetric): the other one is the residual.
                let out = fused[i].outputs[0]
                if let j = soleReader(of: out, after: i, type: "Sum", anyInput: true), fused[j].inputs.count == 2,
                   fused[j].outputs.count == 1, fused[j].arguments.isEmpty {
                    fused[i].inputs.append(fused[j].inputs[0] == out ? fused[j].inputs[1] : fused[j].inputs[0])
                    fused[i].outputs = fused[j].outputs
                    fused[i].arguments["fused_residual"] = .int(1)
                    removed.insert(j)
                }
                fuseRelu(into: i)
            case "Sum" where fused[i].arguments["fused_relu"] == nil:
                fuseRelu(into: i)
            default:
                break
            }
        }
        var net = self
        net.ops = fused.indices.filter { !removed.contains($0) }.map { fused[$0] }
        return net
    }
}

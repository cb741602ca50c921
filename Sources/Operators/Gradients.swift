import Storage

/// Appends the backward part to `net`: for every loss blob, its gradient is seeded with 1, and
/// each op on a path to a loss adds the ops its gradient maker gives, in reverse program order.
///
/// - A blob read by several ops gets the sum of their gradients (`X_grad` = `Sum` of
///   `X_grad_autosplit_*`); a blob read once gets its gradient under `X_grad` directly.
/// - `StopGradient` cuts the path; inputs a maker does not list (integer labels, indices) get no
///   gradient.
/// - A blob written several times (in-place ops) has one gradient per version, all named
///   `X_grad`; program order keeps them apart, as in Caffe2.
///
/// Returns the gradient blob of every blob that had one before the net ran (parameters and
/// external inputs), e.g. `["conv1_w": "conv1_w_grad"]`. With `wrt`, only those of the blobs
/// before the net get gradients (makers may skip the others' work: Conv leaves out `data`'s).
@discardableResult
public func addGradientOperators(to net: inout NetDef, losses: [String], wrt: Set<String>? = nil,
                                 registry: OperatorRegistry = .standard) throws(OperatorError) -> [String: String] {
    struct Key: Hashable {
        let blob: String
        let version: Int
    }
    struct Contribution {
        let temp: String
        let ops: Range<Int>
    }
    let forward = net.ops
    var version: [String: Int] = [:]
    var inputVersions: [[Int]] = []
    var outputVersions: [[Int]] = []
    for op in forward {
        inputVersions.append(op.inputs.map { version[$0, default: 0] })
        var outs: [Int] = []
        for o in op.outputs {
            version[o, default: 0] += 1
            outs.append(version[o]!)
        }
        outputVersions.append(outs)
    }

    var backward: [OperatorDef] = []
    var contributions: [Key: [Contribution]] = [:]
    var tempCounter = 0
    func temp(_ blob: String) -> String {
        defer { tempCounter += 1 }
        return "\(blob)_grad_autosplit_\(tempCounter)"
    }
    /// All contributions to `key` are known: name its gradient `blob_grad`.
    func finalize(_ key: Key) -> String? {
        guard let list = contributions.removeValue(forKey: key), !list.isEmpty else { return nil }
        let final = "\(key.blob)_grad"
        if list.count == 1 {
            let c = list[0]
            for i in c.ops {
                backward[i].inputs = backward[i].inputs.map { $0 == c.temp ? final : $0 }
                backward[i].outputs = backward[i].outputs.map { $0 == c.temp ? final : $0 }
            }
        } else {
            backward.append(OperatorDef("Sum", inputs: list.map(\.temp), outputs: [final], isGradientOp: true))
        }
        return final
    }

    for loss in losses {
        guard let v = version[loss], v > 0 else { throw .notALoss(blob: loss) }
        let name = temp(loss)
        backward.append(OperatorDef("ConstantFill", inputs: [loss], outputs: [name], arguments: ["value": .float(1)], isGradientOp: true))
        contributions[Key(blob: loss, version: v), default: []].append(Contribution(temp: name, ops: backward.count - 1..<backward.count))
    }

    for (index, op) in forward.enumerated().reversed() {
        let outGrads = op.outputs.indices.map { finalize(Key(blob: op.outputs[$0], version: outputVersions[index][$0])) }
        if outGrads.allSatisfy({ $0 == nil }) { continue }
        let at = OpLocation(type: op.type, name: op.name, index: index, net: net.name)
        guard let schema = registry.schema(op.type) else {
            throw .unknownOperator(type: op.type, at: at, suggestion: closestName(to: op.type, in: registry.types))
        }
        guard let maker = schema.gradient else { throw .noGradient(type: op.type, at: at) }
        let names = op.inputs.map(temp)
        let result: GradientResult
        do {
            let needs = op.inputs.indices.map { inputVersions[index][$0] > 0 || wrt?.contains(op.inputs[$0]) ?? true }
            result = try maker(GradientRequest(def: op, outputGradients: outGrads, inputGradientNames: names, inputNeedsGradient: needs))
        } catch {
            throw .badArgument(name: error.argument, at: at, reason: error.reason)
        }
        let start = backward.count
        backward += result.ops.map { var d = $0; d.isGradientOp = true; return d }
        for i in result.inputsWithGradient.sorted() {
            contributions[Key(blob: op.inputs[i], version: inputVersions[index][i]), default: []]
                .append(Contribution(temp: names[i], ops: start..<backward.count))
        }
    }

    var gradients: [String: String] = [:]
    for key in contributions.keys.sorted(by: { ($0.blob, $0.version) < ($1.blob, $1.version) }) where key.version == 0 {
        if let g = finalize(key) { gradients[key.blob] = g }
    }
    net.ops += backward
    return gradients
}

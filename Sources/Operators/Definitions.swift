import Storage

/// An operator argument value, as Caffe2's `Argument` holds them.
public enum ArgumentValue: Hashable, Sendable, Codable, CustomStringConvertible {
    case int(Int)
    case float(Double)
    case string(String)
    case ints([Int])
    case floats([Double])
    case strings([String])

    public var description: String {
        switch self {
        case let .int(v): return String(v)
        case let .float(v): return String(v)
        case let .string(v): return "\"\(v)\""
        case let .ints(v): return "[" + v.map(String.init).joined(separator: ", ") + "]"
        case let .floats(v): return "[" + v.map { String($0) }.joined(separator: ", ") + "]"
        case let .strings(v): return "[" + v.map { "\"\($0)\"" }.joined(separator: ", ") + "]"
        }
    }
}

/// One operator of a net: its Caffe2 type, the blobs it reads and writes, and its arguments.
public struct OperatorDef: Hashable, Sendable, Codable, CustomStringConvertible {
    /// The Caffe2 type name, e.g. `Conv`, `RoIAlign`, `SigmoidCrossEntropyLoss`.
    public var type: String
    /// An optional name, shown in errors.
    public var name: String
    public var inputs: [String]
    public var outputs: [String]
    public var arguments: [String: ArgumentValue]
    public var device: DeviceOption
    /// Set by ``addGradientOperators(to:losses:registry:)`` on the ops it adds.
    public var isGradientOp: Bool

    public init(_ type: String, inputs: [String], outputs: [String], arguments: [String: ArgumentValue] = [:],
                name: String = "", device: DeviceOption = .cpu, isGradientOp: Bool = false) {
        self.type = type
        self.name = name
        self.inputs = inputs
        self.outputs = outputs
        self.arguments = arguments
        self.device = device
        self.isGradientOp = isGradientOp
    }

    /// `Conv(data, conv1_w) -> (conv1) {kernel: 7, pad: 3, stride: 2}`.
    public var description: String {
        let args = arguments.keys.sorted().map { "\($0): \(arguments[$0]!)" }.joined(separator: ", ")
        let label = name.isEmpty ? "" : " \"\(name)\""
        return "\(type)\(label)(\(inputs.joined(separator: ", "))) -> (\(outputs.joined(separator: ", ")))"
            + (args.isEmpty ? "" : " {\(args)}")
    }
}

/// A net: operators in program order, with the blobs it expects from outside and those it exposes.
public struct NetDef: Hashable, Sendable, Codable, CustomStringConvertible {
    public enum ExecutorKind: String, Sendable, Codable {
        /// One op after another on the calling thread.
        case simple
        /// Ops whose inputs are ready run in parallel on the thread pool.
        case dag
    }

    public var name: String
    public var ops: [OperatorDef]
    public var externalInputs: [String]
    public var externalOutputs: [String]
    public var executor: ExecutorKind

    public init(name: String, ops: [OperatorDef] = [], externalInputs: [String] = [], externalOutputs: [String] = [],
                executor: ExecutorKind = .simple) {
        self.name = name
        self.ops = ops
        self.externalInputs = externalInputs
        self.externalOutputs = externalOutputs
        self.executor = executor
    }

    /// Appends an op and returns its outputs' names (for chaining in builders).
    @discardableResult
    public mutating func add(_ type: String, _ inputs: [String], _ outputs: [String], _ arguments: [String: ArgumentValue] = [:]) -> [String] {
        ops.append(OperatorDef(type, inputs: inputs, outputs: outputs, arguments: arguments))
        return outputs
    }

    /// The readable text form, one op a line.
    public var description: String {
        var lines = ["net \"\(name)\" (\(executor.rawValue)) {"]
        if !externalInputs.isEmpty { lines.append("  external_input: " + externalInputs.joined(separator: ", ")) }
        for (i, op) in ops.enumerated() { lines.append("  #\(i) \(op)") }
        if !externalOutputs.isEmpty { lines.append("  external_output: " + externalOutputs.joined(separator: ", ")) }
        lines.append("}")
        return lines.joined(separator: "\n")
    }
}

/// Where an op sits: its type, name and position in its net.
public struct OpLocation: Hashable, Sendable, CustomStringConvertible {
    public var type: String
    public var name: String
    public var index: Int
    public var net: String

    public var description: String {
        "op #\(index) \(type)\(name.isEmpty ? "" : " '\(name)'") in net '\(net)'"
    }
}

/// Every error of the operator layer; messages name the op (type, name, position) and the blob.
public enum OperatorError: Error, Sendable, CustomStringConvertible {
    case unknownOperator(type: String, at: OpLocation, suggestion: String?)
    case missingInput(blob: String, at: OpLocation)
    case badArgument(name: String, at: OpLocation, reason: String)
    case wrongInputCount(at: OpLocation, expected: String, got: Int)
    case badInput(blob: String, at: OpLocation, reason: String)
    case runFailed(at: OpLocation, blob: String?, message: String)
    case noGradient(type: String, at: OpLocation)
    case notALoss(blob: String)

    public var description: String {
        switch self {
        case let .unknownOperator(type, at, suggestion):
            return "\(at): unknown operator type '\(type)'" + (suggestion.map { " (did you mean '\($0)'?)" } ?? "")
        case let .missingInput(blob, at):
            return "\(at): input blob '\(blob)' is neither in the workspace, an external input, nor produced by an earlier op"
        case let .badArgument(name, at, reason):
            return "\(at): argument '\(name)' \(reason)"
        case let .wrongInputCount(at, expected, got):
            return "\(at): expects \(expected) inputs, got \(got)"
        case let .badInput(blob, at, reason):
            return "\(at): input '\(blob)' \(reason)"
        case let .runFailed(at, blob, message):
            return "\(at) failed" + (blob.map { " on blob '\($0)'" } ?? "") + ": \(message)"
        case let .noGradient(type, at):
            return "\(at): operator type '\(type)' has no gradient; put a StopGradient before it or remove it from the loss path"
        case let .notALoss(blob):
            return "loss blob '\(blob)' is not produced by any op of the net"
        }
    }
}

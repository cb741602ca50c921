import Portability
import Storage

/// What an op may use while it runs.
public struct ExecutionContext: Sendable {
    /// The pool for intra-op parallelism (`parallelFor`); nil runs everything on the calling thread.
    public let pool: ThreadPool?
    /// The seed for ops that draw random numbers (fillers); each op mixes in its own position.
    public let seed: UInt64
    /// Scratch memory shared by the ops of a net (nil: each op makes its own for the call).
    public let scratch: ScratchBuffers?

    public init(pool: ThreadPool?, seed: UInt64 = 0, scratch: ScratchBuffers? = nil) {
        self.pool = pool
        self.seed = seed
        self.scratch = scratch
    }

    /// Runs `body(i)` for `i` in `0..<count`, on the pool when there is one.
    public func parallelFor(_ count: Int, _ body: (Int) -> Void) {
        if let pool { pool.parallelFor(count, body) } else { for i in 0..<count { body(i) } }
    }
}

/// Scratch memory for ops (im2col columns), shared by the ops of one net and kept across its
/// runs: an op checks a buffer out for the duration of a call and returns it, so ops running one
/// after another reuse one buffer and ops running at the same time get different ones. Buffers
/// are tensors of the net's context, so its accounting sees them.
public final class ScratchBuffers: Sendable {
    private let context: any Context
    private let free = Locked<[Tensor]>([])

    public init(context: any Context) { self.context = context }

    /// Runs `body` with at least `count` floats of scratch (contents undefined); rethrows its
    /// errors and the allocation's (`StorageError`).
    public func withBuffer<R>(count: Int, _ body: (UnsafeMutablePointer<Float>) throws -> R) throws -> R {
        // The largest free buffer; grown (replaced) when too small.
        var buffer: Tensor? = free.withLock { list in
            guard let i = list.indices.max(by: { list[$0].count < list[$1].count }) else { return nil }
            return list.remove(at: i)
        }
        if buffer == nil || buffer!.count < count { buffer = try Tensor(.float32, shape: [max(count, 1)], context: context) }
        let t = buffer!
        defer { free.withLock { $0.append(t) } }
        return try body(try t.mutableData(as: Float.self).baseAddress!)
    }
}

/// A failure inside an op's `run`, naming the blob if it is about one. The executor adds the op.
public struct OpRunError: Error, Sendable {
    public var blob: String?
    public var message: String
    public init(blob: String? = nil, _ message: String) {
        self.blob = blob
        self.message = message
    }
}

/// An op's view of its blobs and arguments, resolved once when the net is made.
public struct OpIO: Sendable {
    public let def: OperatorDef
    public let location: OpLocation
    public let workspace: Workspace
    public let inputBlobs: [Blob]
    public let outputBlobs: [Blob]

    init(def: OperatorDef, location: OpLocation, workspace: Workspace) {
        self.def = def
        self.location = location
        self.workspace = workspace
        self.inputBlobs = def.inputs.map { workspace.createBlob($0) }
        self.outputBlobs = def.outputs.map { workspace.createBlob($0) }
    }

    public var inputCount: Int { inputBlobs.count }
    public var outputCount: Int { outputBlobs.count }

    // MARK: Tensors at run time

    /// Input `i` as a tensor; the error names the blob.
    public func input(_ i: Int) throws(OpRunError) -> Tensor {
        do throws(StorageError) {
            return try inputBlobs[i].tensor()
        } catch {
            throw OpRunError(blob: def.inputs[i], error.description)
        }
    }

    /// Input `i` as float32 data of any shape.
    public func inputData(_ i: Int) throws(OpRunError) -> (Tensor, UnsafeBufferPointer<Float>) {
        let t = try input(i)
        return (t, try check(i, isInput: true) { () throws(StorageError) in try t.data(as: Float.self) })
    }

    /// Output `i`, resized to `shape` (memory reused when large enough).
    public func output(_ i: Int, shape: [Int], dtype: DType = .float32) throws(OpRunError) -> Tensor {
        do throws(StorageError) {
            let t = try outputBlobs[i].mutableTensor(context: workspace.context, dtype: dtype)
            try t.resize(shape, dtype: dtype)
            return t
        } catch {
            throw OpRunError(blob: def.outputs[i], error.description)
        }
    }

    /// Output `i` resized to `shape`, as writable float32 data.
    public func outputData(_ i: Int, shape: [Int]) throws(OpRunError) -> (Tensor, UnsafeMutableBufferPointer<Float>) {
        let t = try output(i, shape: shape)
        return (t, try check(i, isInput: false) { () throws(StorageError) in try t.mutableData(as: Float.self) })
    }

    /// Runs a storage call, naming input or output `i` in its error.
    public func check<R>(_ i: Int, isInput: Bool, _ body: () throws(StorageError) -> R) throws(OpRunError) -> R {
        do throws(StorageError) {
            return try body()
        } catch {
            throw OpRunError(blob: isInput ? def.inputs[i] : def.outputs[i], error.description)
        }
    }

    /// Throws naming input `i` unless `condition` holds.
    public func require(_ condition: Bool, input i: Int, _ message: @autoclosure () -> String) throws(OpRunError) {
        if !condition { throw OpRunError(blob: def.inputs[i], message()) }
    }

    // MARK: Arguments, checked when the op is made

    private func bad(_ name: String, _ reason: String) -> OperatorError {
        .badArgument(name: name, at: location, reason: reason)
    }

    public func has(_ name: String) -> Bool { def.arguments[name] != nil }

    public func int(_ name: String, _ fallback: Int? = nil) throws(OperatorError) -> Int {
        switch def.arguments[name] {
        case let .int(v)?: return v
        case let .float(v)? where v == v.rounded(): return Int(v)
        case nil:
            guard let fallback else { throw bad(name, "is required (an integer)") }
            return fallback
        case let v?: throw bad(name, "must be an integer, got \(v)")
        }
    }

    public func float(_ name: String, _ fallback: Double? = nil) throws(OperatorError) -> Double {
        switch def.arguments[name] {
        case let .float(v)?: return v
        case let .int(v)?: return Double(v)
        case nil:
            guard let fallback else { throw bad(name, "is required (a number)") }
            return fallback
        case let v?: throw bad(name, "must be a number, got \(v)")
        }
    }

    public func ints(_ name: String, _ fallback: [Int]? = nil) throws(OperatorError) -> [Int] {
        switch def.arguments[name] {
        case let .ints(v)?: return v
        case let .int(v)?: return [v]
        case nil:
            guard let fallback else { throw bad(name, "is required (a list of integers)") }
            return fallback
        case let v?: throw bad(name, "must be a list of integers, got \(v)")
        }
    }

    public func floats(_ name: String, _ fallback: [Double]? = nil) throws(OperatorError) -> [Double] {
        switch def.arguments[name] {
        case let .floats(v)?: return v
        case let .ints(v)?: return v.map(Double.init)
        case nil:
            guard let fallback else { throw bad(name, "is required (a list of numbers)") }
            return fallback
        case let v?: throw bad(name, "must be a list of numbers, got \(v)")
        }
    }

    public func string(_ name: String, _ fallback: String? = nil) throws(OperatorError) -> String {
        switch def.arguments[name] {
        case let .string(v)?: return v
        case nil:
            guard let fallback else { throw bad(name, "is required (a string)") }
            return fallback
        case let v?: throw bad(name, "must be a string, got \(v)")
        }
    }

    public func bool(_ name: String, _ fallback: Bool) throws(OperatorError) -> Bool {
        try int(name, fallback ? 1 : 0) != 0
    }

    /// Throws unless `condition` holds for argument `name`.
    public func argument(_ name: String, _ condition: Bool, _ reason: @autoclosure () -> String) throws(OperatorError) {
        if !condition { throw bad(name, reason()) }
    }
}

/// A runnable operator. One op instance runs on one thread at a time (the executors guarantee
/// it), so ops may keep scratch buffers.
public protocol Operator: AnyObject, Sendable {
    var io: OpIO { get }
    func run(_ ctx: ExecutionContext) throws
}

/// What a gradient maker is given: the forward op, and the gradient blob of each of its outputs
/// (nil where no gradient flows back), plus the names it must write input gradients to.
public struct GradientRequest: Sendable {
    public let def: OperatorDef
    public let outputGradients: [String?]
    /// `inputGradientNames[i]`: where the gradient of input `i` goes, if the maker gives one.
    public let inputGradientNames: [String]
    /// `inputNeedsGradient[i]`: whether anything reads the gradient of input `i` (an external input
    /// the caller did not ask a gradient for, like `data`, needs none); a maker may leave it out.
    public let inputNeedsGradient: [Bool]

    public init(def: OperatorDef, outputGradients: [String?], inputGradientNames: [String], inputNeedsGradient: [Bool]? = nil) {
        self.def = def
        self.outputGradients = outputGradients
        self.inputGradientNames = inputGradientNames
        self.inputNeedsGradient = inputNeedsGradient ?? def.inputs.map { _ in true }
    }

    public func input(_ i: Int) -> String { def.inputs[i] }
    public func output(_ i: Int) -> String { def.outputs[i] }
    /// The gradient of output `i` (`GO(i)` in Caffe2's makers).
    public func outputGradient(_ i: Int) -> String? { outputGradients[i] }
    /// Where to write the gradient of input `i` (`GI(i)`).
    public func inputGradient(_ i: Int) -> String { inputGradientNames[i] }
    public func needsGradient(_ i: Int) -> Bool { inputNeedsGradient[i] }
}

/// The ops that compute an op's input gradients, and which inputs get one.
public struct GradientResult: Sendable {
    public var ops: [OperatorDef]
    public var inputsWithGradient: Set<Int>

    public init(ops: [OperatorDef], inputsWithGradient: Set<Int>) {
        self.ops = ops
        self.inputsWithGradient = inputsWithGradient
    }

    /// No gradient flows through this op (StopGradient, integer inputs only).
    public static let none = GradientResult(ops: [], inputsWithGradient: [])
}

/// Why a gradient maker cannot differentiate one op: the argument that prevents it, and why.
public struct GradientRefusal: Error, Sendable {
    public var argument: String
    public var reason: String

    public init(argument: String, reason: String) {
        self.argument = argument
        self.reason = reason
    }

    /// The op carries one of `arguments`, which mark an op fused for inference
    /// (``NetDef/fusedForInference(keeping:)``): such an op has no gradient.
    static func ifFused(_ def: OperatorDef, _ arguments: [String]) throws(GradientRefusal) {
        guard let fused = arguments.first(where: { def.arguments[$0] != nil }) else { return }
        throw GradientRefusal(argument: fused, reason: "marks an op fused for inference (NetDef.fusedForInference), which has no "
                              + "gradient: build the training net unfused")
    }
}

/// How an op type's gradient is made (or why it cannot be, for this op's arguments). `nil` on a
/// schema means the op type is not differentiable.
public typealias GradientMaker = @Sendable (GradientRequest) throws(GradientRefusal) -> GradientResult

/// One op type: how many blobs it takes, how to make it, and its gradient.
public struct OperatorSchema: Sendable {
    public var inputs: ClosedRange<Int>
    public var outputs: ClosedRange<Int>
    public var make: @Sendable (OpIO) throws(OperatorError) -> any Operator
    public var gradient: GradientMaker?
    /// Whether the op may be given the same blob as an input and an output.
    public var allowsInPlace: Bool

    public init(inputs: ClosedRange<Int>, outputs: ClosedRange<Int>, allowsInPlace: Bool = false,
                gradient: GradientMaker? = nil,
                make: @escaping @Sendable (OpIO) throws(OperatorError) -> any Operator) {
        self.inputs = inputs
        self.outputs = outputs
        self.make = make
        self.gradient = gradient
        self.allowsInPlace = allowsInPlace
    }
}

/// Op types by Caffe2 name.
///
/// The contract an entry meets: `make` validates the arguments and throws
/// ``OperatorError/badArgument(name:at:reason:)`` naming the bad one; `run` reads its inputs and
/// (re)shapes its outputs itself; the gradient maker emits ops whose outputs are exactly the
/// request's ``GradientRequest/inputGradient(_:)`` names for the inputs it lists.
///
/// ``standard`` holds every op of the library; copy it and ``register(_:_:)`` to add your own.
public struct OperatorRegistry: Sendable {
    public private(set) var schemas: [String: OperatorSchema]

    public init(schemas: [String: OperatorSchema] = [:]) { self.schemas = schemas }

    public mutating func register(_ type: String, _ schema: OperatorSchema) { schemas[type] = schema }

    public func schema(_ type: String) -> OperatorSchema? { schemas[type] }

    public var types: [String] { schemas.keys.sorted() }

    /// Every op of the library.
    public static let standard: OperatorRegistry = {
        var r = OperatorRegistry()
        registerElementwise(&r)
        registerShapeOps(&r)
        registerConvAndFC(&r)
        registerNormalization(&r)
        registerPooling(&r)
        registerSoftmaxAndLosses(&r)
        registerFocalLosses(&r)
        registerConvTranspose(&r)
        registerRoIOps(&r)
        registerFillersAndSolver(&r)
        registerDetectionOps(&r)
        return r
    }()
}

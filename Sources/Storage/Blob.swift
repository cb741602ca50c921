import Portability

/// A named, type-erased holder: a ``Tensor``, a scalar, a string or any `Sendable` Swift value.
///
/// Typed access checks the stored type and throws an error naming the blob, the stored type and
/// the requested one. The slot itself is synchronised, so a blob may be read and replaced from
/// several threads; a tensor inside it follows ``Tensor``'s own rules.
public final class Blob: Sendable, CustomStringConvertible {
    /// The blob's name in its workspace.
    public let name: String
    private let slot: Locked<(any Sendable)?>
    /// The context that counts this blob for leak checks (a workspace's), if any.
    private let tracker: (any Context)?

    public init(name: String, value: (any Sendable)? = nil, trackedBy tracker: (any Context)? = nil) {
        self.name = name
        self.slot = Locked(value)
        self.tracker = tracker
        tracker?.track(tensors: 0, blobs: 1)
    }

    deinit { tracker?.track(tensors: 0, blobs: -1) }

    /// Whether the blob holds nothing.
    public var isEmpty: Bool { slot.withLock { $0 == nil } }

    /// The stored value's type name, or `"nothing"`.
    public var storedTypeName: String {
        slot.withLock { v in v.map { String(describing: type(of: $0)) } ?? "nothing" }
    }

    /// Replaces the stored value.
    public func set(_ value: some Sendable) { slot.withLock { $0 = value } }

    /// Empties the blob; a tensor it held is released unless something else keeps it.
    public func reset() { slot.withLock { $0 = nil } }

    /// The stored value as `T`.
    public func get<T>(_ type: T.Type) throws(StorageError) -> T {
        let value = slot.withLock { $0 }
        guard let value else {
            throw .blobEmpty(blob: name, requested: String(describing: T.self))
        }
        guard let typed = value as? T else {
            throw .blobTypeMismatch(blob: name, stored: String(describing: Swift.type(of: value)), requested: String(describing: T.self))
        }
        return typed
    }

    /// The stored tensor.
    public func tensor() throws(StorageError) -> Tensor { try get(Tensor.self) }

    /// Whether the blob holds a tensor.
    public var isTensor: Bool { slot.withLock { $0 is Tensor } }

    /// The stored tensor if it lives in `context`'s device; otherwise a new empty tensor in
    /// `context` replaces whatever was stored (Caffe2's `BlobGetMutableTensor`).
    public func mutableTensor(context: any Context, dtype: DType = .float32) throws(StorageError) -> Tensor {
        let result: Result<Tensor, StorageError> = slot.withLock { value in
            if let t = value as? Tensor, t.context.device == context.device { return .success(t) }
            do throws(StorageError) {
                let t = try Tensor(dtype, shape: [0], context: context)
                value = t
                return .success(t)
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }

    public var description: String { "Blob '\(name)': \(storedTypeName)" }
}

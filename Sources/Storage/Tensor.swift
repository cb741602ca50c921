/// The bytes behind one or more tensors; returned to its context when the last tensor lets go.
final class TensorStorage: @unchecked Sendable {
    let context: any Context
    let pointer: UnsafeMutableRawPointer
    let capacity: Int

    init(context: any Context, capacity: Int) throws(StorageError) {
        self.context = context
        self.capacity = capacity
        self.pointer = try context.allocate(byteCount: capacity)
    }

    deinit { context.free(pointer, byteCount: capacity) }
}

/// An n-dimensional array of one ``DType``, whose memory comes from a ``Context``.
///
/// Tensors follow Caffe2's semantics:
/// - ``resize(_:dtype:)`` only records the new shape. Memory is allocated at the first mutable
///   access (``mutableData(as:)``), so a tensor can be shaped long before it is written.
/// - Shrinking keeps the capacity: no memory is released or reallocated until a later shape needs
///   more bytes than the tensor holds, and then the old bytes are released at once.
/// - ``shareData(with:)`` makes two tensors alias the same bytes (Caffe2's `ShareData`); writes
///   through one are seen by the other until either outgrows the shared capacity.
///   ``copy(from:)`` and ``clone()`` copy the bytes instead.
///
/// Accessing a tensor as another dtype than the one it holds, or checking it against another
/// shape, throws ``StorageError`` naming both.
///
/// A tensor is not internally synchronised. It may be passed between threads, but concurrent
/// writes (or a write concurrent with a read) are the caller's responsibility, as in Caffe2: the
/// executors give each blob one writer at a time.
public final class Tensor: @unchecked Sendable, CustomStringConvertible {
    /// Where this tensor's memory comes from.
    public let context: any Context
    /// The dimensions, outermost first (NCHW for images).
    public private(set) var shape: [Int]
    /// The element type.
    public private(set) var dtype: DType
    private var storage: TensorStorage?

    /// Makes a tensor of the given shape; no memory is allocated until the first mutable access.
    public init(_ dtype: DType = .float32, shape: [Int] = [], context: any Context) throws(StorageError) {
        try Self.validate(shape)
        self.context = context
        self.dtype = dtype
        self.shape = shape
        context.track(tensors: 1, blobs: 0)
    }

    deinit { context.track(tensors: -1, blobs: 0) }

    /// Makes a tensor holding `values` in row-major order.
    public convenience init<T: TensorElement>(_ values: [T], shape: [Int], context: any Context) throws(StorageError) {
        try self.init(T.dtype, shape: shape, context: context)
        guard values.count == count else { throw .elementCountMismatch(shape: shape, count: values.count) }
        let out = try mutableData(as: T.self)
        values.withUnsafeBufferPointer { src in
            guard let base = src.baseAddress, !src.isEmpty else { return }
            out.baseAddress!.update(from: base, count: src.count)
        }
    }

    private static func validate(_ shape: [Int]) throws(StorageError) {
        if shape.contains(where: { $0 < 0 }) { throw .negativeDimension(shape: shape) }
    }

    /// The number of elements (1 for a scalar of shape `[]`).
    public var count: Int { shape.reduce(1, *) }
    /// The number of dimensions.
    public var rank: Int { shape.count }
    /// The bytes the current shape needs.
    public var byteCount: Int { count * dtype.byteSize }
    /// The bytes held now (0 before the first mutable access).
    public var capacityBytes: Int { storage?.capacity ?? 0 }
    /// Whether memory has been allocated.
    public var isAllocated: Bool { storage != nil }

    /// The dimension `axis`; negative axes count from the end.
    public func dim(_ axis: Int) -> Int { shape[axis < 0 ? axis + shape.count : axis] }

    /// Records a new shape (and optionally a new dtype). Memory is kept while it is large enough;
    /// otherwise it is released now and allocated again at the next mutable access.
    public func resize(_ newShape: [Int], dtype newType: DType? = nil) throws(StorageError) {
        try Self.validate(newShape)
        shape = newShape
        if let newType { dtype = newType }
        if let s = storage, s.capacity < byteCount { storage = nil }
    }

    /// Changes the shape without touching memory; the element count must stay the same.
    /// One dimension may be `-1`, inferred from the others.
    public func reshape(_ newShape: [Int]) throws(StorageError) {
        var resolved = newShape
        if let hole = newShape.firstIndex(of: -1) {
            let known = newShape.enumerated().filter { $0.offset != hole }.map(\.element).reduce(1, *)
            guard known > 0, count % known == 0 else { throw .shapeMismatch(stored: shape, expected: newShape) }
            resolved[hole] = count / known
        }
        try Self.validate(resolved)
        guard resolved.reduce(1, *) == count else { throw .shapeMismatch(stored: shape, expected: newShape) }
        shape = resolved
    }

    /// Throws unless the tensor has exactly `expected` as its shape.
    public func checkShape(_ expected: [Int]) throws(StorageError) {
        guard shape == expected else { throw .shapeMismatch(stored: shape, expected: expected) }
    }

    private func checkType<T: TensorElement>(_: T.Type) throws(StorageError) {
        guard T.dtype == dtype else { throw .dtypeMismatch(stored: dtype, requested: T.dtype) }
    }

    /// The raw bytes for writing; allocates them if the current shape needs more than is held.
    public func rawMutableData() throws(StorageError) -> UnsafeMutableRawPointer {
        if let s = storage, s.capacity >= byteCount { return s.pointer }
        let fresh = try TensorStorage(context: context, capacity: byteCount)
        storage = fresh
        return fresh.pointer
    }

    /// The raw bytes for reading. Throws if memory was never written and the tensor is not empty.
    public func rawData() throws(StorageError) -> UnsafeRawPointer? {
        if let s = storage, s.capacity >= byteCount { return UnsafeRawPointer(s.pointer) }
        if count == 0 { return nil }
        throw .uninitialized(shape: shape, dtype: dtype)
    }

    /// The elements for writing, allocating memory on first access.
    public func mutableData<T: TensorElement>(as type: T.Type) throws(StorageError) -> UnsafeMutableBufferPointer<T> {
        try checkType(type)
        let raw = try rawMutableData()
        return UnsafeMutableBufferPointer(start: raw.assumingMemoryBound(to: T.self), count: count)
    }

    /// The elements for reading.
    public func data<T: TensorElement>(as type: T.Type) throws(StorageError) -> UnsafeBufferPointer<T> {
        try checkType(type)
        guard let raw = try rawData() else { return UnsafeBufferPointer(start: nil, count: 0) }
        return UnsafeBufferPointer(start: raw.assumingMemoryBound(to: T.self), count: count)
    }

    /// The elements for reading, after checking the shape.
    public func data<T: TensorElement>(as type: T.Type, shape expected: [Int]) throws(StorageError) -> UnsafeBufferPointer<T> {
        try checkType(type)
        try checkShape(expected)
        return try data(as: type)
    }

    /// The elements copied into an array.
    public func toArray<T: TensorElement>(as type: T.Type) throws(StorageError) -> [T] {
        Array(try data(as: type))
    }

    /// Makes this tensor alias `other`'s memory, shape and dtype (Caffe2's `ShareData`).
    public func shareData(with other: Tensor) throws(StorageError) {
        guard other.context.device == context.device else {
            throw .deviceMismatch(source: other.context.device, destination: context.device)
        }
        shape = other.shape
        dtype = other.dtype
        storage = other.storage
    }

    /// Whether the two tensors alias the same memory.
    public func sharesData(with other: Tensor) -> Bool {
        guard let a = storage, let b = other.storage else { return false }
        return a === b
    }

    /// Copies `other`'s shape, dtype and bytes into this tensor (reusing capacity when it can).
    public func copy(from other: Tensor) throws(StorageError) {
        if other === self { return }
        try resize(other.shape, dtype: other.dtype)
        guard other.count > 0 else { return }
        let dst = try rawMutableData()
        guard let src = try other.rawData() else { return }
        switch (other.context.device.kind, context.device.kind) {
        case (.cpu, .cpu) where other.context.device == context.device:
            context.copy(from: src, to: dst, byteCount: byteCount)
        case (.cpu, _):
            context.copyFromHost(src, to: dst, byteCount: byteCount)
        case (_, .cpu):
            other.context.copyToHost(src, to: dst, byteCount: byteCount)
        default:
            guard other.context.device == context.device else {
                throw .deviceMismatch(source: other.context.device, destination: context.device)
            }
            context.copy(from: src, to: dst, byteCount: byteCount)
        }
    }

    /// A deep copy in the same context.
    public func clone() throws(StorageError) -> Tensor {
        let t = try Tensor(dtype, shape: shape, context: context)
        try t.copy(from: self)
        return t
    }

    /// Releases the memory now (the shape is kept; the next mutable access allocates again).
    public func freeMemory() { storage = nil }

    /// Sets every element to zero, allocating if needed.
    public func zero() throws(StorageError) {
        let raw = try rawMutableData()
        raw.initializeMemory(as: UInt8.self, repeating: 0, count: byteCount)
    }

    public var description: String { "Tensor<\(dtype)>\(shape) on \(context.device)" }
}

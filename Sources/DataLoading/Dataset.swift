import Foundation
import Portability

/// A map-style dataset: a count and an element for each index.
///
/// `element(at:rng:)` may draw random numbers (augmentations) only from `rng`: it is seeded from
/// the loader's seed, the epoch and the sample index, so a sample is the same whichever worker —
/// thread, process or the caller itself — makes it. That is what keeps batches identical across
/// worker counts and kinds.
public protocol Dataset: Sendable {
    associatedtype Element: Sendable
    var count: Int { get }
    func element(at index: Int, rng: inout SampleRNG) throws -> Element
}

/// The per-sample random generator: SplitMix64 seeded by (seed, epoch, index).
public struct SampleRNG: RandomNumberGenerator, Sendable {
    private var core: SplitMix64

    public init(seed: UInt64) { core = SplitMix64(seed: seed) }

    public init(seed: UInt64, epoch: Int, index: Int) {
        var s = SplitMix64(seed: seed ^ 0x5851_F42D_4C95_7F2D)
        s.state ^= UInt64(truncatingIfNeeded: epoch) &* 0x9E37_79B9_7F4A_7C15
        _ = s.next()
        s.state ^= UInt64(truncatingIfNeeded: index) &* 0xBF58_476D_1CE4_E5B9
        _ = s.next()
        core = s
    }

    public mutating func next() -> UInt64 { core.next() }

    /// Uniform in [0, 1).
    public mutating func unit() -> Double { core.unit() }
}

/// Binary encoding for values that cross to and from worker processes.
public protocol ByteCodable: Sendable {
    func encode(to writer: inout ByteWriter)
    init(from reader: inout ByteReader) throws(ByteReader.Truncated)
}

/// Appends little-endian values to a byte buffer.
public struct ByteWriter: Sendable {
    public private(set) var bytes: [UInt8] = []
    public init() {}

    public mutating func write<T: FixedWidthInteger>(_ v: T) {
        withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) }
    }
    public mutating func write(_ v: Float) { write(v.bitPattern) }
    public mutating func write(_ v: Double) { write(v.bitPattern) }
    public mutating func write(_ s: String) {
        let u = Array(s.utf8)
        write(UInt32(u.count))
        bytes += u
    }
    public mutating func write(raw: UnsafeRawBufferPointer) {
        write(UInt64(raw.count))
        bytes.append(contentsOf: raw)
    }
    public mutating func write<T: BitwiseCopyable>(array: [T]) {
        array.withUnsafeBytes { write(raw: $0) }
    }
}

/// Reads what a ``ByteWriter`` wrote.
public struct ByteReader {
    public struct Truncated: Error { public init() {} }
    let bytes: UnsafeRawBufferPointer
    public private(set) var offset = 0

    public init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    public var remaining: Int { bytes.count - offset }

    public mutating func read<T: FixedWidthInteger>(_: T.Type = T.self) throws(Truncated) -> T {
        let n = MemoryLayout<T>.size
        guard remaining >= n else { throw Truncated() }
        var v = T.zero
        withUnsafeMutableBytes(of: &v) { $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + n])) }
        offset += n
        return T(littleEndian: v)
    }
    public mutating func read(_: Float.Type) throws(Truncated) -> Float { Float(bitPattern: try read(UInt32.self)) }
    public mutating func read(_: Double.Type) throws(Truncated) -> Double { Double(bitPattern: try read(UInt64.self)) }
    public mutating func read(_: String.Type) throws(Truncated) -> String {
        let n = Int(try read(UInt32.self))
        guard remaining >= n else { throw Truncated() }
        defer { offset += n }
        return String(decoding: UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + n]), as: UTF8.self)
    }
    public mutating func readArray<T: BitwiseCopyable>(of _: T.Type) throws(Truncated) -> [T] {
        let n = Int(try read(UInt64.self))
        guard remaining >= n, n % MemoryLayout<T>.stride == 0 else { throw Truncated() }
        let out = [T](unsafeUninitializedCapacity: n / MemoryLayout<T>.stride) { buf, count in
            UnsafeMutableRawBufferPointer(buf).copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + n]))
            count = n / MemoryLayout<T>.stride
        }
        offset += n
        return out
    }
}

/// A dataset that worker *processes* can rebuild: it names its kind and describes itself in
/// bytes; the worker executable registers the kind (see ``DataLoaderWorker``). Its elements
/// travel back as bytes.
public protocol TransportableDataset: Dataset where Element: ByteCodable {
    /// A stable name for the registry, e.g. `"image-folder"`.
    static var kind: String { get }
    /// What a worker needs to make the same dataset.
    func describe() -> [UInt8]
    init(description: [UInt8]) throws
}

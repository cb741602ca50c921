import Portability

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The kind and ordinal of the device a ``Context`` allocates on.
public struct DeviceOption: Hashable, Sendable, CustomStringConvertible, Codable {
    public enum Kind: String, Sendable, Codable { case cpu, cuda }
    public var kind: Kind
    public var ordinal: Int

    public init(kind: Kind, ordinal: Int = 0) {
        self.kind = kind
        self.ordinal = ordinal
    }

    public static let cpu = DeviceOption(kind: .cpu)
    public var description: String { kind == .cpu ? "cpu" : "\(kind.rawValue):\(ordinal)" }
}

/// A snapshot of a context's memory accounting.
public struct MemoryAccounting: Equatable, Sendable, CustomStringConvertible {
    /// Bytes currently allocated and not yet freed.
    public var liveBytes: Int = 0
    /// The largest `liveBytes` ever reached.
    public var peakBytes: Int = 0
    /// Allocations currently alive.
    public var liveAllocations: Int = 0
    /// Allocations ever made.
    public var totalAllocations: Int = 0
    /// Tensors made in this context and not yet released.
    public var liveTensors: Int = 0
    /// Blobs of workspaces using this context, not yet released.
    public var liveBlobs: Int = 0
    /// Freed bytes a caching context keeps for reuse (not live: leak checks ignore them).
    public var cachedBytes: Int = 0

    public init() {}

    public var description: String {
        "live \(liveBytes) B in \(liveAllocations) allocations (peak \(peakBytes) B, \(totalAllocations) ever), \(liveTensors) tensors, \(liveBlobs) blobs"
    }
}

/// Where all tensor memory comes from.
///
/// A context owns one device's memory: it allocates, frees and copies raw bytes, and keeps live
/// accounting that can be read at any time (``accounting``). Every byte a ``Tensor`` holds is
/// allocated through its context, so a workspace's memory can be checked for leaks by comparing
/// accounting snapshots.
///
/// ## Implementing a GPU context
/// A CUDA context implements the same protocol: `device` is `.init(kind: .cuda, ordinal: n)`;
/// `allocate` calls `cudaMalloc` (or a caching allocator, as Caffe2's `CUDAContext` does with
/// cub) after `cudaSetDevice(ordinal)`; `free` calls `cudaFree`; `copy(from:to:byteCount:)` is a
/// device-to-device `cudaMemcpyAsync` on the context's stream followed by a stream
/// synchronisation, and ``copyFromHost(_:to:byteCount:)`` / ``copyToHost(_:to:byteCount:)`` are
/// the host↔device variants. Operators never touch raw pointers of another device: they ask the
/// tensor's context to move the bytes.
public protocol Context: AnyObject, Sendable {
    /// The device this context allocates on.
    var device: DeviceOption { get }
    /// Allocates `byteCount` bytes (aligned to at least 64 bytes). Zero bytes gives a valid,
    /// unique pointer.
    func allocate(byteCount: Int) throws(StorageError) -> UnsafeMutableRawPointer
    /// Returns memory obtained from ``allocate(byteCount:)`` with the same `byteCount`.
    func free(_ pointer: UnsafeMutableRawPointer, byteCount: Int)
    /// Copies bytes between two buffers of this context's device.
    func copy(from source: UnsafeRawPointer, to destination: UnsafeMutableRawPointer, byteCount: Int)
    /// Copies host bytes into this context's device memory.
    func copyFromHost(_ source: UnsafeRawPointer, to destination: UnsafeMutableRawPointer, byteCount: Int)
    /// Copies this context's device memory to host bytes.
    func copyToHost(_ source: UnsafeRawPointer, to destination: UnsafeMutableRawPointer, byteCount: Int)
    /// The accounting as it stands now.
    var accounting: MemoryAccounting { get }
    /// Counts tensors and blobs coming and going (`delta` is +1 or -1), for leak checks.
    func track(tensors: Int, blobs: Int)
}

/// Host memory: 64-byte aligned, with live accounting.
///
/// There is no shared default instance: whoever builds a workspace chooses its context, so two
/// workspaces (or two tests) never see each other's accounting.
///
/// With `cacheBytes > 0` the context keeps freed blocks of 1 MiB or more (up to that many bytes)
/// and hands them out again for requests of the same size, as PyTorch's caching allocators do —
/// for a data loader's batches, made by worker threads and freed by the consumer: glibc puts them
/// in per-thread heaps that it unmaps when they empty, and the next batch faults every page back
/// in (see `MallocTuning`). Cached blocks are freed with the context.
public final class CPUContext: Context {
    /// The alignment of every allocation, in bytes (a cache line; enough for AVX-512).
    public static let alignment = 64
    /// The smallest block a caching context keeps.
    public static let cachedBlockMinimum = 1 << 20

    private let stats = Locked(MemoryAccounting())
    /// An optional ceiling on live bytes; allocations past it throw ``StorageError/outOfMemory(requested:limit:device:)``.
    public let byteLimit: Int?
    /// The most freed bytes kept for reuse.
    public let cacheBytes: Int
    /// Freed blocks by size, as addresses (raw pointers are not Sendable).
    private let cache = Locked<[Int: [UInt]]>([:])

    public init(byteLimit: Int? = nil, cacheBytes: Int = 0) {
        self.byteLimit = byteLimit
        self.cacheBytes = cacheBytes
    }

    deinit {
        cache.withLock { c in
            for address in c.values.joined() { Glibc.free(UnsafeMutableRawPointer(bitPattern: address)) }
        }
    }

    public var device: DeviceOption { .cpu }

    public var accounting: MemoryAccounting { stats.withLock { $0 } }

    public func allocate(byteCount: Int) throws(StorageError) -> UnsafeMutableRawPointer {
        precondition(byteCount >= 0, "negative allocation")
        let limitHit: Bool = stats.withLock { s in
            if let limit = byteLimit, s.liveBytes + byteCount > limit { return true }
            s.liveBytes += byteCount
            s.peakBytes = max(s.peakBytes, s.liveBytes)
            s.liveAllocations += 1
            s.totalAllocations += 1
            return false
        }
        if limitHit {
            throw .outOfMemory(requested: byteCount, limit: byteLimit ?? 0, device: device)
        }
        if cacheBytes > 0, byteCount >= Self.cachedBlockMinimum, let address = cache.withLock({ $0[byteCount]?.popLast() }) {
            stats.withLock { $0.cachedBytes -= byteCount }
            return UnsafeMutableRawPointer(bitPattern: address)!
        }
        var raw: UnsafeMutableRawPointer?
        let rc = posix_memalign(&raw, Self.alignment, max(byteCount, 1))
        guard rc == 0, let raw else {
            stats.withLock { s in
                s.liveBytes -= byteCount
                s.liveAllocations -= 1
            }
            throw .outOfMemory(requested: byteCount, limit: byteLimit ?? 0, device: device)
        }
        return raw
    }

    public func free(_ pointer: UnsafeMutableRawPointer, byteCount: Int) {
        let keep = stats.withLock { s in
            s.liveBytes -= byteCount
            s.liveAllocations -= 1
            guard byteCount >= Self.cachedBlockMinimum, s.cachedBytes + byteCount <= cacheBytes else { return false }
            s.cachedBytes += byteCount
            return true
        }
        if keep {
            cache.withLock { $0[byteCount, default: []].append(UInt(bitPattern: pointer)) }
        } else {
            Glibc.free(pointer)
        }
    }

    public func track(tensors: Int, blobs: Int) {
        stats.withLock { s in
            s.liveTensors += tensors
            s.liveBlobs += blobs
        }
    }

    public func copy(from source: UnsafeRawPointer, to destination: UnsafeMutableRawPointer, byteCount: Int) {
        guard byteCount > 0 else { return }
        destination.copyMemory(from: source, byteCount: byteCount)
    }

    public func copyFromHost(_ source: UnsafeRawPointer, to destination: UnsafeMutableRawPointer, byteCount: Int) {
        copy(from: source, to: destination, byteCount: byteCount)
    }

    public func copyToHost(_ source: UnsafeRawPointer, to destination: UnsafeMutableRawPointer, byteCount: Int) {
        copy(from: source, to: destination, byteCount: byteCount)
    }
}

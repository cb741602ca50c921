import Storage
import Testing

@Suite("Tensor")
struct TensorTests {
    @Test("resize only records the shape; memory comes at the first mutable access")
    func lazyAllocation() throws {
        let ctx = CPUContext()
        let t = try Tensor(.float32, shape: [2, 3, 4], context: ctx)
        #expect(!t.isAllocated)
        #expect(ctx.accounting.liveBytes == 0)
        try t.resize([10, 10])
        #expect(ctx.accounting.liveBytes == 0)
        let p = try t.mutableData(as: Float.self)
        #expect(p.count == 100)
        #expect(ctx.accounting.liveBytes == 400)
        #expect(ctx.accounting.liveAllocations == 1)
        #expect(Int(bitPattern: UnsafeRawPointer(p.baseAddress!)) % 64 == 0)
    }

    @Test("shrinking keeps the capacity; growing past it reallocates")
    func capacityReuse() throws {
        let ctx = CPUContext()
        let t = try Tensor(.float32, shape: [100], context: ctx)
        let first = try t.mutableData(as: Float.self).baseAddress
        try t.resize([10])
        #expect(t.capacityBytes == 400)
        #expect(try t.mutableData(as: Float.self).baseAddress == first)
        try t.resize([100])
        #expect(try t.mutableData(as: Float.self).baseAddress == first)
        #expect(ctx.accounting.totalAllocations == 1)
        try t.resize([101])
        #expect(!t.isAllocated)  // released at once, reallocated lazily
        #expect(ctx.accounting.liveBytes == 0)
        _ = try t.mutableData(as: Float.self)
        #expect(ctx.accounting.totalAllocations == 2)
        #expect(ctx.accounting.liveBytes == 404)
        #expect(ctx.accounting.peakBytes == 404)
    }

    @Test("wrong dtype access throws naming both types")
    func dtypeErrors() throws {
        let t = try Tensor([1, 2, 3] as [Int32], shape: [3], context: CPUContext())
        #expect(throws: StorageError.dtypeMismatch(stored: .int32, requested: .float32)) { try t.data(as: Float.self) }
        #expect(throws: StorageError.dtypeMismatch(stored: .int32, requested: .uint8)) { try t.mutableData(as: UInt8.self) }
        #expect(StorageError.dtypeMismatch(stored: .int32, requested: .float32).description
            == "tensor holds int32 but was accessed as float32 (access it as int32, or resize it with dtype: .float32)")
        try t.resize([3], dtype: .int64)
        #expect(try t.mutableData(as: Int64.self).count == 3)
    }

    @Test("shape checks name both shapes; bad shapes are refused")
    func shapeErrors() throws {
        let ctx = CPUContext()
        let t = try Tensor(.float32, shape: [2, 3], context: ctx)
        _ = try t.mutableData(as: Float.self)
        #expect(throws: StorageError.shapeMismatch(stored: [2, 3], expected: [3, 2])) { try t.data(as: Float.self, shape: [3, 2]) }
        #expect(throws: StorageError.negativeDimension(shape: [2, -1])) { try Tensor(.float32, shape: [2, -1], context: ctx) }
        #expect(throws: StorageError.elementCountMismatch(shape: [2, 2], count: 3)) { try Tensor([1, 2, 3] as [Float], shape: [2, 2], context: ctx) }
        try t.reshape([3, -1])
        #expect(t.shape == [3, 2])
        #expect(throws: StorageError.shapeMismatch(stored: [3, 2], expected: [4, 2])) { try t.reshape([4, 2]) }
    }

    @Test("reading unwritten memory is an error; empty tensors read as empty")
    func uninitialized() throws {
        let ctx = CPUContext()
        let t = try Tensor(.uint8, shape: [4], context: ctx)
        #expect(throws: StorageError.uninitialized(shape: [4], dtype: .uint8)) { try t.data(as: UInt8.self) }
        try t.resize([0])
        #expect(try t.data(as: UInt8.self).isEmpty)
    }

    @Test("shareData aliases; copy and clone copy")
    func sharingAndCopying() throws {
        let ctx = CPUContext()
        let a = try Tensor([1, 2, 3, 4] as [Float], shape: [4], context: ctx)
        let b = try Tensor(.float32, context: ctx)
        try b.shareData(with: a)
        #expect(b.sharesData(with: a))
        try b.mutableData(as: Float.self)[0] = 9
        #expect(try a.toArray(as: Float.self) == [9, 2, 3, 4])
        #expect(ctx.accounting.liveAllocations == 1)

        let c = try a.clone()
        try c.mutableData(as: Float.self)[1] = 7
        #expect(try a.toArray(as: Float.self) == [9, 2, 3, 4])
        #expect(try c.toArray(as: Float.self) == [9, 7, 3, 4])
        #expect(!c.sharesData(with: a))

        // Outgrowing the shared capacity detaches: the other tensor keeps its bytes.
        try b.resize([8])
        _ = try b.mutableData(as: Float.self)
        #expect(!b.sharesData(with: a))
        #expect(try a.toArray(as: Float.self) == [9, 2, 3, 4])
    }

    @Test("memory returns to the context when tensors go away")
    func freeing() throws {
        let ctx = CPUContext()
        do {
            let t = try Tensor(.float32, shape: [1000], context: ctx)
            try t.zero()
            #expect(ctx.accounting.liveBytes == 4000)
            let alias = try Tensor(context: ctx)
            try alias.shareData(with: t)
            t.freeMemory()
            #expect(ctx.accounting.liveBytes == 4000)  // the alias still holds it
        }
        #expect(ctx.accounting.liveBytes == 0)
        #expect(ctx.accounting.liveAllocations == 0)
        #expect(ctx.accounting.peakBytes == 4000)
    }

    @Test("a context with a byte limit refuses past it, naming the sizes")
    func byteLimit() throws {
        let ctx = CPUContext(byteLimit: 1000)
        let t = try Tensor(.float32, shape: [1000], context: ctx)
        #expect(throws: StorageError.outOfMemory(requested: 4000, limit: 1000, device: .cpu)) { try t.zero() }
        #expect(ctx.accounting.liveBytes == 0)
    }

    @Test("a caching context hands a freed block of ≥ 1 MiB back for the same size, up to its cache size; accounting stays live-only")
    func blockCache() throws {
        let mib = 1 << 20
        let ctx = CPUContext(cacheBytes: 3 * mib)
        let a = try ctx.allocate(byteCount: 2 * mib)
        ctx.free(a, byteCount: 2 * mib)
        #expect(ctx.accounting.liveBytes == 0 && ctx.accounting.cachedBytes == 2 * mib)
        let b = try ctx.allocate(byteCount: 2 * mib)
        #expect(b == a)
        #expect(ctx.accounting.liveBytes == 2 * mib && ctx.accounting.cachedBytes == 0)
        // Another size is not served from the cache; a block past the cache size is freed.
        let c = try ctx.allocate(byteCount: 2 * mib + 64)
        #expect(c != a)
        ctx.free(b, byteCount: 2 * mib)
        ctx.free(c, byteCount: 2 * mib + 64)
        #expect(ctx.accounting.cachedBytes == 2 * mib && ctx.accounting.liveBytes == 0 && ctx.accounting.liveAllocations == 0)
        // Small blocks are never cached.
        let small = try ctx.allocate(byteCount: 4096)
        ctx.free(small, byteCount: 4096)
        #expect(ctx.accounting.cachedBytes == 2 * mib)
        // Tensors go through the same path: the leak check sees nothing live.
        let check = LeakCheck(ctx)
        do {
            let t = try Tensor(.float32, shape: [mib / 2], context: ctx)
            try t.zero()
        }
        try check.verify()
        #expect(CPUContext().accounting.cachedBytes == 0)
    }
}

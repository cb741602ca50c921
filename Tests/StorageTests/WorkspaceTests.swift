import Storage
import Testing

final class TestNet: WorkspaceNet {
    let name: String
    init(name: String) { self.name = name }
}

@Suite("Blob and Workspace")
struct WorkspaceTests {
    @Test("blobs hold any Sendable value; typed access names the blob and both types")
    func blobTypes() throws {
        let b = Blob(name: "lr")
        #expect(b.isEmpty)
        #expect(throws: StorageError.blobEmpty(blob: "lr", requested: "Float")) { try b.get(Float.self) }
        b.set(Float(0.02))
        #expect(try b.get(Float.self) == 0.02)
        #expect(throws: StorageError.blobTypeMismatch(blob: "lr", stored: "Float", requested: "String")) { try b.get(String.self) }
        #expect(throws: StorageError.blobTypeMismatch(blob: "lr", stored: "Float", requested: "Tensor")) { try b.tensor() }
        b.set("hello")
        #expect(b.storedTypeName == "String")
        #expect(StorageError.blobTypeMismatch(blob: "lr", stored: "Float", requested: "Tensor").description
            == "blob 'lr' holds Float but Tensor was requested")
    }

    @Test("create, has, feed, fetch, remove, list; a missing blob suggests the closest name")
    func workspaceBasics() throws {
        let ws = Workspace(context: CPUContext())
        let blob = ws.createBlob("data")
        #expect(ws.createBlob("data") === blob)
        ws.feedBlob("res2_0_branch2a_w", try Tensor([1, 2] as [Float], shape: [2], context: ws.context))
        #expect(ws.hasBlob("res2_0_branch2a_w"))
        #expect(try ws.fetchBlob("res2_0_branch2a_w").toArray(as: Float.self) == [1, 2])
        #expect(throws: StorageError.blobNotFound(name: "res2_0_branch2a_b", suggestion: "res2_0_branch2a_w")) {
            try ws.fetchBlob("res2_0_branch2a_b")
        }
        #expect(throws: StorageError.blobNotFound(name: "completely_different", suggestion: nil)) {
            try ws.fetchBlob("completely_different")
        }
        ws.feed("iter", value: 7)
        #expect(try ws.fetch("iter", as: Int.self) == 7)
        #expect(ws.blobNames == ["data", "iter", "res2_0_branch2a_w"])
        #expect(ws.removeBlob("data"))
        #expect(!ws.removeBlob("data"))
        let mt = try ws.createBlob("out").mutableTensor(context: ws.context)
        #expect(try ws.createBlob("out").mutableTensor(context: ws.context) === mt)
    }

    @Test("named nets")
    func nets() throws {
        let ws = Workspace(context: CPUContext())
        try ws.addNet(TestNet(name: "train"))
        #expect(throws: StorageError.netExists(name: "train")) { try ws.addNet(TestNet(name: "train")) }
        try ws.addNet(TestNet(name: "train"), overwrite: true)
        #expect(try ws.net("train").name == "train")
        #expect(throws: StorageError.netNotFound(name: "test", available: ["train"])) { try ws.net("test") }
        #expect(ws.netNames == ["train"])
        #expect(ws.removeNet("train"))
    }

    @Test("reset and release return every byte to the context (leak check)")
    func leakCheck() throws {
        let ctx = CPUContext()
        let start = ctx.accounting
        weak var weakNet: TestNet?
        do {
            let ws = Workspace(context: ctx)
            for i in 0..<50 {
                let t = try Tensor(.float32, shape: [i + 1, 16], context: ctx)
                try t.zero()
                ws.feedBlob("blob\(i)", t)
            }
            do {
                let net = TestNet(name: "n")
                weakNet = net
                try ws.addNet(net)
            }
            #expect(ctx.accounting.liveAllocations == 50)
            ws.reset()
            #expect(ctx.accounting.liveBytes == start.liveBytes)
            #expect(ctx.accounting.liveAllocations == start.liveAllocations)
            #expect(ws.blobNames.isEmpty && ws.netNames.isEmpty)
            #expect(weakNet == nil)
            // Fill again, then release the workspace itself.
            for i in 0..<10 { ws.feedBlob("b\(i)", try Tensor([Float(i)], shape: [1], context: ctx)) }
        }
        #expect(ctx.accounting.liveBytes == start.liveBytes)
        #expect(ctx.accounting.liveAllocations == start.liveAllocations)
        #expect(ctx.accounting.totalAllocations == 60)
    }

    @Test("concurrent feed, fetch, create and remove from many threads stay consistent")
    func concurrentAccess() async throws {
        let ctx = CPUContext()
        let ws = Workspace(context: ctx)
        let errors = await withTaskGroup(of: Int.self) { group in
            for worker in 0..<8 {
                group.addTask {
                    var errors = 0
                    for i in 0..<500 {
                        let name = "w\(worker)_\(i % 20)"
                        do {
                            let t = try Tensor([Float(worker), Float(i)], shape: [2], context: ctx)
                            ws.feedBlob(name, t)
                            let back = try ws.fetchBlob(name).toArray(as: Float.self)
                            if back[0] != Float(worker) { errors += 1 }
                            _ = ws.createBlob("shared")
                            _ = ws.blobNames
                            if i % 7 == 0 { ws.removeBlob(name) }
                        } catch {
                            errors += 1
                        }
                    }
                    return errors
                }
            }
            return await group.reduce(0, +)
        }
        #expect(errors == 0)
        #expect(ws.hasBlob("shared"))
        ws.reset()
        #expect(ctx.accounting.liveBytes == 0)
        #expect(ctx.accounting.liveAllocations == 0)
    }
}

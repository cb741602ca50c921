import Foundation
import Pickle
import Testing

func fixturePath(_ name: String) throws -> String {
    try #require(Bundle.module.url(forResource: name, withExtension: nil, subdirectory: "Fixtures")).path
}

/// What tools/make_pickle_fixtures.py says each file holds: group → name → (dtype, shape, values).
func expected(_ group: String) throws -> [String: (dtype: String, shape: [Int], values: [Double])] {
    let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: try fixturePath("expected.json"))))
    let all = try #require((json as? [String: Any])?[group] as? [String: [String: Any]])
    return all.mapValues { ($0["dtype"] as! String, $0["shape"] as! [Int], ($0["values"] as! [NSNumber]).map(\.doubleValue)) }
}

func checkArrays(_ value: PickleValue?, _ group: String) throws {
    for (name, want) in try expected(group) {
        guard case let .array(a)? = value?[name] else {
            Issue.record("\(group): \(name) is missing or not an array")
            continue
        }
        #expect(a.dtype.rawValue == want.dtype, "\(name): dtype \(a.dtype)")
        #expect(a.shape == want.shape, "\(name): shape \(a.shape)")
        #expect(a.floats() == want.values.map(Float.init), "\(name)")
    }
}

@Suite("Pickle and PyTorch archives")
struct PickleTests {
    @Test("a Detectron-style checkpoint ({'blobs', 'cfg'}) loads at protocols 2, 4 and 5: dtypes, shapes, C and Fortran order, 0-d")
    func detectronStyle() throws {
        for proto in [2, 4, 5] {
            let v = try PickleReader.load(try fixturePath("detectron_p\(proto).pkl"))
            try checkArrays(v["blobs"], "detectron")
            #expect(v["cfg"]?.text == "MODEL:\n  NUM_CLASSES: 81\n")
        }
        try checkArrays(try PickleReader.load(try fixturePath("imagenet_flat.pkl")), "imagenet_flat")
    }

    @Test("a torch zip checkpoint loads: float32, float16, bfloat16, int64, a Parameter, and views sharing one storage")
    func torchArchive() throws {
        let path = try fixturePath("torch_state.pth")
        #expect(TorchArchive.isArchive(path))
        let v = try TorchArchive.load(path)
        try checkArrays(v, "torch")
    }

    @Test("a pickle that names any other global is refused by name; nothing runs")
    func refusesGlobals() throws {
        let path = try fixturePath("evil.pkl")
        #expect(throws: PickleError.refusedGlobal(file: path, global: "os.system")) { try PickleReader.load(path) }
        #expect(try PickleError.refusedGlobal(file: "f", global: "os.system").description.contains("never created"))
    }

    @Test("every truncation of a pickle and of a torch archive is an error, and random corruption never crashes")
    func truncatedAndCorrupted() throws {
        let pkl = [UInt8](try Data(contentsOf: URL(fileURLWithPath: try fixturePath("detectron_p2.pkl"))))
        for cut in 0..<pkl.count {
            #expect(throws: PickleError.self) { try PickleReader(bytes: Array(pkl[..<cut]), file: "cut.pkl").read() }
        }
        let zip = [UInt8](try Data(contentsOf: URL(fileURLWithPath: try fixturePath("torch_state.pth"))))
        let dir = NSTemporaryDirectory() + "sd-pickle-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for cut in stride(from: 0, to: zip.count, by: 7) {
            let path = dir + "/cut.pth"
            try Data(zip[..<cut]).write(to: URL(fileURLWithPath: path))
            #expect(throws: PickleError.self) { try TorchArchive.load(path) }
        }
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<500 {
            var bad = pkl
            for _ in 0..<4 { bad[Int.random(in: 0..<bad.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng) }
            _ = try? PickleReader(bytes: bad, file: "bad.pkl").read()
            var badZip = zip
            for _ in 0..<4 { badZip[Int.random(in: 0..<badZip.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng) }
            let path = dir + "/bad.pth"
            try Data(badZip).write(to: URL(fileURLWithPath: path))
            _ = try? TorchArchive.load(path)
        }
    }
}

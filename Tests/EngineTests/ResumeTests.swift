import COCO
@testable import Engine
import Foundation
import Glibc
import Imaging
import Portability
import Testing

/// Three 64×64 images (one taller than wide), so epochs, shuffling and aspect grouping all matter.
func threeImageDataset() throws -> (spec: String, dir: String) {
    let dir = NSTemporaryDirectory() + "sd-resume-\(UInt32.random(in: 0...UInt32.max))"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    var images: [COCOFile.Image] = [], annotations: [COCOFile.Annotation] = []
    for i in 0..<3 {
        let (w, h) = i == 2 ? (48, 64) : (64, 64)
        var img = Image(width: w, height: h, channels: 3, order: .rgb, fill: UInt8(30 + 10 * i))
        img.fill(x1: 6 + 3 * i, y1: 8, x2: 26 + 3 * i, y2: 30, Color(230, 40, 40))
        img.fill(x1: 28, y1: 32 + i, x2: w - 4, y2: h - 6, Color(40, 60, 230))
        try JPEG.write(img, to: dir + "/\(i).jpg", quality: 95)
        images.append(.init(id: i + 1, fileName: "\(i).jpg", width: w, height: h))
        annotations.append(.init(id: 2 * i + 1, imageID: i + 1, categoryID: 1, bbox: [Double(6 + 3 * i), 8, 21, 23], area: 483))
        annotations.append(.init(id: 2 * i + 2, imageID: i + 1, categoryID: 2, bbox: [28, Double(32 + i), Double(w - 31), Double(h - 37 - i)], area: 500))
    }
    let file = COCOFile(images: images, annotations: annotations, categories: [.init(id: 1, name: "red"), .init(id: 2, name: "blue")])
    try file.encoded().write(to: URL(fileURLWithPath: dir + "/ann.json"))
    return ("\(dir)/ann.json::\(dir)", dir)
}

@Suite("Exact resume", .serialized)
struct ResumeTests {
    static let maxIter = 24

    /// `detectron train` on the three images: 6 roidb entries with flips, 1 per minibatch, a decay
    /// step at 16 (so a resumed run must rescale the momentum there too), a snapshot every 2.
    func arguments(_ spec: String, out: String, extra: [String]) -> [String] {
        ["train", "--skip-test", "--cfg", shapesConfig]
            + tinyConfig(dataset: spec, output: out, maxIter: Self.maxIter, snapshot: 2)
            + ["TRAIN.USE_FLIPPED", "True", "SOLVER.WARM_UP_ITERS", "4", "SOLVER.STEPS", "[0, 16]"] + extra
    }

    var environment: [String: String] {
        var env = ProcessInfo.processInfo.environment
        env["DETECTRON_NUM_THREADS"] = "1"
        return env
    }

    /// Starts training, waits for the snapshot of iteration `after`, lets it go on for a random
    /// few milliseconds, then kills it with SIGKILL.
    func killed(_ args: [String], out: String, after: Int) throws {
        let child = try Processes.spawn(ProcessConfiguration(executable: detectronExecutable, arguments: args, environment: environment))
        let snapshot = out + "/train/model_iter\(after).safetensors"
        let t0 = Date()
        while !FileManager.default.fileExists(atPath: snapshot), child.poll() == nil, Date().timeIntervalSince(t0) < 300 { usleep(2_000) }
        usleep(UInt32.random(in: 0...40_000))
        child.send(.kill)
        let status = child.wait(timeout: 30)
        // A run that got to the end first is no kill: the point must be earlier.
        #expect(status == .signaled(.kill, coreDumped: false), "training was not killed after iteration \(after): \(String(describing: status))")
    }

    func complete(_ args: [String]) throws -> String {
        let r = try Processes.run(ProcessConfiguration(executable: detectronExecutable, arguments: args, environment: environment), timeout: 600)
        #expect(r.status.isSuccess, "\(r.error.suffix(2000))")
        return r.output
    }

    /// training_stats.jsonl without the timings.
    func stats(_ out: String) throws -> [String] {
        try String(contentsOfFile: out + "/train/training_stats.jsonl", encoding: .utf8).split(separator: "\n").map { line in
            var json = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            for k in ["time", "eta", "data_time"] { json[k] = nil }
            return String(decoding: try JSONSerialization.data(withJSONObject: json, options: [.sortedKeys]), as: UTF8.self)
        }
    }

    /// Trains once without interruption and once killed at three random iterations (each time
    /// resumed by running the same command again); the final weights, momentum and stats match.
    func check(_ extra: [String], snapshotsLeft: Int? = nil) throws {
        let (spec, dir) = try threeImageDataset()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let straight = dir + "/straight", resumed = dir + "/resumed"
        _ = try complete(arguments(spec, out: straight, extra: extra))
        // Three kill points, after the snapshots of odd iterations (snapshots end iterations 1, 3, …).
        let points = Array(stride(from: 1, to: Self.maxIter - 4, by: 2)).shuffled().prefix(3).sorted()
        let args = arguments(spec, out: resumed, extra: extra)
        for p in points { try killed(args, out: resumed, after: p) }
        let output = try complete(args)
        #expect(output.contains("resuming from"), "killed after \(points): \(output.suffix(800))")
        let a = try Checkpoint.read(straight + "/train/model_final.safetensors"), b = try Checkpoint.read(resumed + "/train/model_final.safetensors")
        #expect(a.blobs.keys.sorted() == b.blobs.keys.sorted())
        #expect(a.blobs.keys.contains { $0.hasSuffix("_momentum") })
        let differing = a.blobs.keys.sorted().filter { a.blobs[$0]!.values != b.blobs[$0]?.values }
        #expect(differing.isEmpty, "killed after iterations \(points): \(differing.count) of \(a.blobs.count) arrays differ, e.g. \(differing.prefix(4))")
        #expect(try stats(straight) == stats(resumed), "killed after iterations \(points)")
        #expect(a.metadata["iteration"] == String(Self.maxIter - 1) && b.metadata["iteration"] == a.metadata["iteration"])
        let left = try FileManager.default.contentsOfDirectory(atPath: resumed + "/train")
        // Atomic writes: no temporary file is ever left where checkpoints are read from.
        #expect(!left.contains { $0.hasPrefix(".") && $0.contains("tmp") }, "\(left)")
        if let snapshotsLeft {
            #expect(left.filter { $0.hasPrefix("model_iter") }.count == snapshotsLeft, "\(left.sorted())")
        }
    }

    @Test("kill -9 at 3 random iterations (thread workers, periodic evaluation, SNAPSHOT_KEEP 2): the final weights, momentum and stats equal an uninterrupted run's, bitwise")
    func threadWorkers() throws {
        try check(["DATA_LOADER.NUM_THREADS", "1", "TEST.EVAL_PERIOD", "8", "TRAIN.SNAPSHOT_KEEP", "2"], snapshotsLeft: 2)
    }

    @Test("kill -9 at 3 random iterations with 2 process workers: bitwise the uninterrupted run")
    func processWorkers() throws {
        try check(["DATA_LOADER.NUM_THREADS", "2", "DATA_LOADER.WORKER_KIND", "processes"])
    }

    @Test("kill -9 at 3 random iterations with 2 in-process replicas: bitwise the uninterrupted run")
    func twoReplicas() throws {
        try check(["NUM_GPUS", "2", "DATA_LOADER.NUM_THREADS", "0"])
    }
}

import COCO
import DataLoading
@testable import Engine
import Operators
import Foundation
import Glibc
import Imaging
import Portability
import Testing

/// One 64×64 image with two shapes, as a COCO dataset on disk; returns "ANN::DIR".
func tinyDataset() throws -> (spec: String, boxes: [[Double]], dir: String) {
    let dir = NSTemporaryDirectory() + "sd-overfit-\(UInt32.random(in: 0...UInt32.max))"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    var img = Image(width: 64, height: 64, channels: 3, order: .rgb, fill: 40)
    img.fill(x1: 8, y1: 10, x2: 27, y2: 33, Color(230, 40, 40))      // class 1
    img.fill(x1: 36, y1: 30, x2: 57, y2: 55, Color(40, 60, 230))     // class 2
    try JPEG.write(img, to: dir + "/a.jpg", quality: 95)
    let file = COCOFile(images: [.init(id: 1, fileName: "a.jpg", width: 64, height: 64)],
                        annotations: [.init(id: 1, imageID: 1, categoryID: 1, bbox: [8, 10, 20, 24], area: 480,
                                            segmentation: .polygons([[8, 10, 28, 10, 28, 34, 8, 34]])),
                                      .init(id: 2, imageID: 1, categoryID: 2, bbox: [36, 30, 22, 26], area: 572,
                                            segmentation: .polygons([[36, 30, 58, 30, 58, 56, 36, 56]]))],
                        categories: [.init(id: 1, name: "red"), .init(id: 2, name: "blue")])
    try file.encoded().write(to: URL(fileURLWithPath: dir + "/ann.json"))
    return ("\(dir)/ann.json::\(dir)", [[8, 10, 27, 33], [36, 30, 57, 55]], dir)
}

func tinyConfig(dataset: String, output: String, maxIter: Int, snapshot: Int = 100_000) -> [String] {
    ["MODEL.NUM_CLASSES", "3", "RESNETS.STEM_OUT_DIM", "8", "MODEL.EXECUTION_TYPE", "simple", "RESNETS.RES2_OUT_DIM", "8", "GROUP_NORM.NUM_GROUPS", "4",
     "FPN.DIM", "16", "FAST_RCNN.MLP_HEAD_DIM", "32", "TRAIN.BATCH_SIZE_PER_IM", "32", "TRAIN.RPN_BATCH_SIZE_PER_IM", "64",
     "TRAIN.SCALES", "(64,)", "TRAIN.MAX_SIZE", "64", "TEST.SCALE", "64", "TEST.MAX_SIZE", "64", "TRAIN.IMS_PER_BATCH", "1",
     "TRAIN.USE_FLIPPED", "False", "TRAIN.RPN_PRE_NMS_TOP_N", "200", "TRAIN.RPN_POST_NMS_TOP_N", "100",
     "TEST.RPN_PRE_NMS_TOP_N", "100", "TEST.RPN_POST_NMS_TOP_N", "50", "SOLVER.BASE_LR", "0.01", "SOLVER.WARM_UP_ITERS", "20",
     "SOLVER.MAX_ITER", String(maxIter), "SOLVER.STEPS", "[0, \(maxIter * 4 / 5)]", "TRAIN.SNAPSHOT_ITERS", String(snapshot),
     "DATA_LOADER.NUM_THREADS", "0", "OUTPUT_DIR", output, "TRAIN.DATASETS", "('\(dataset)',)", "TEST.DATASETS", "('\(dataset)',)"]
}

/// The `detectron` executable built beside the test bundle.
var detectronExecutable: String {
    URL(fileURLWithPath: (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0])
        .deletingLastPathComponent().appendingPathComponent("detectron").path
}

let shapesConfig = repoRoot + "/configs/getting_started/tutorial_shapes_gn_R-18-FPN.yaml"

@Suite("Training", .serialized)
struct TrainingTests {
    @Test("overfitting one image in 200 iterations: the loss falls below 10 % of its start and the detections recover the boxes (IoU ≥ 0.7)")
    func overfit() throws {
        let (spec, boxes, dir) = try tinyDataset()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var c = try smallConfig(tinyConfig(dataset: spec, output: dir + "/out", maxIter: 200))
        try c.merge(overrides: ["TRAIN.AUTO_RESUME", "False"])
        let first = Locked<Float?>(nil), last = Locked<Float?>(nil)
        let final = try Trainer(config: c, logger: .silent).run { e in
            first.withLock { if $0 == nil { $0 = e.total } }
            last.withLock { $0 = e.total }
        }
        // Events carry json_stats' loss: the first iteration's, and at the end the median of the last 20.
        let start = try #require(first.current), end = try #require(last.current)
        #expect(end < 0.1 * start, "total loss \(start) → \(end)")
        let detector = try Detector(config: c, weights: final)
        let dets = try detector.detect(try JPEG.decode(contentsOf: dir + "/a.jpg"))
        for (k, gt) in boxes.enumerated() {
            let best = dets.filter { $0.classIndex == k + 1 }.max { $0.score < $1.score }
            let b = try #require(best, "no detection of class \(k + 1): \(dets)")
            let iou = Boxes.iou((Float(b.bbox[0]), Float(b.bbox[1]), Float(b.bbox[2]), Float(b.bbox[3])),
                                (Float(gt[0]), Float(gt[1]), Float(gt[2]), Float(gt[3])))
            #expect(iou >= 0.7, "class \(k + 1): IoU \(iou) for \(b.bbox) vs \(gt)")
        }
    }

    @Test("a NaN loss stops training with a clear message naming the last good snapshot, which stays intact")
    func divergence() throws {
        let (spec, _, dir) = try tinyDataset()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var c = try smallConfig(tinyConfig(dataset: spec, output: dir + "/out", maxIter: 60, snapshot: 5))
        try c.merge(overrides: ["SOLVER.BASE_LR", "1000000.0", "SOLVER.WARM_UP_ITERS", "0", "TRAIN.AUTO_RESUME", "False"])
        do {
            try Trainer(config: c, logger: .silent).run()
            Issue.record("training with a huge learning rate did not diverge")
        } catch let error as EngineError {
            guard case let .diverged(_, _, snapshot) = error else { Issue.record("\(error)"); return }
            #expect(error.description.contains("the total loss is NaN or infinite"))
            if let snapshot {
                #expect(error.description.contains(snapshot))
                #expect(throws: Never.self) { _ = try Checkpoint.read(snapshot) }
            }
        }
        #expect(!FileManager.default.fileExists(atPath: dir + "/out/train/model_final.safetensors"))
    }

    @Test("process workers train exactly as thread workers and the calling thread: same json_stats, no fallback")
    func processWorkers() throws {
        let (spec, _, dir) = try tinyDataset()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let exe = detectronExecutable, cfgPath = shapesConfig
        var stats: [String: [String]] = [:]
        for (name, workers, kind) in [("main", "0", "threads"), ("threads", "2", "threads"), ("processes", "2", "processes")] {
            let out = dir + "/" + name
            var args = ["train", "--skip-test", "--cfg", cfgPath] + tinyConfig(dataset: spec, output: out, maxIter: 40)
            args += ["DATA_LOADER.NUM_THREADS", workers, "DATA_LOADER.WORKER_KIND", kind, "TRAIN.USE_FLIPPED", "True"]
            var env = ProcessInfo.processInfo.environment
            env["DETECTRON_NUM_THREADS"] = "1"
            let r = try Processes.run(ProcessConfiguration(executable: exe, arguments: args, environment: env), timeout: 300)
            #expect(r.status.isSuccess, "\(r.error.suffix(2000))")
            #expect(!r.error.contains("DataLoader:") && !r.output.contains("DataLoader:"), "the loader fell back: \(r.error.suffix(1000))")
            // Everything but the timings.
            let lines = try String(contentsOfFile: out + "/train/training_stats.jsonl", encoding: .utf8).split(separator: "\n")
            stats[name] = try lines.map { line in
                var json = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
                #expect(json["data_time"] is Double, "json_stats lacks data_time (time blocked on the loader)")
                json["time"] = nil
                json["eta"] = nil
                json["data_time"] = nil
                return String(decoding: try JSONSerialization.data(withJSONObject: json, options: [.sortedKeys]), as: UTF8.self)
            }
        }
        #expect(stats["main"]?.count == 3, "\(stats)")
        #expect(stats["threads"] == stats["main"])
        #expect(stats["processes"] == stats["main"])
    }

    @Test("the training dataset survives its description: a rebuilt one gives the same samples, bytes round-trip")
    func trainingDatasetTransport() throws {
        let (spec, _, dir) = try tinyDataset()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var cfg = Config()
        try cfg.merge(file: shapesConfig)
        try cfg.merge(overrides: tinyConfig(dataset: spec, output: "/tmp/unused", maxIter: 1) + ["TRAIN.USE_FLIPPED", "True"])
        let model = try ModelComponents.standard.build(cfg, train: true)
        var roidb: [RoidbEntry] = []
        for d in try loadDatasets(cfg, key: "TRAIN.DATASETS") { roidb += try d.trainingRoidb(flipped: true).entries }
        let dataset = TrainingDataset(roidb: roidb, scales: cfg.ints("TRAIN.SCALES"), maxSize: cfg.int("TRAIN.MAX_SIZE"),
                                      pixelMeans: pixelMeans(cfg),
                                      targets: model.trainingTargets!)
        let rebuilt = try TrainingDataset(description: dataset.describe())
        #expect(rebuilt.roidb == dataset.roidb && rebuilt.count == 2)
        guard case let .rpn(original) = dataset.targets, case let .rpn(copy) = rebuilt.targets else {
            Issue.record("the rebuilt dataset has other targets")
            return
        }
        #expect(copy.anchors == original.anchors)
        #expect(throws: ByteReader.Truncated.self) { try TrainingDataset(description: Array(dataset.describe().dropLast(3))) }
        for index in 0..<dataset.count {
            var a = SampleRNG(seed: 7, epoch: 0, index: index), b = a
            let sample = try dataset.element(at: index, rng: &a)
            var w = ByteWriter()
            try rebuilt.element(at: index, rng: &b).encode(to: &w)
            let decoded = try w.bytes.withUnsafeBytes { raw in var r = ByteReader(raw); return try TrainSample(from: &r) }
            #expect(decoded.image == sample.image && decoded.scale == sample.scale && decoded.seed == sample.seed)
            #expect(decoded.targets == sample.targets)
            #expect(decoded.entry.boxes == sample.entry.boxes && decoded.entry.classes == sample.entry.classes)
            #expect(decoded.entry.crowd == sample.entry.crowd && decoded.entry.scale == sample.entry.scale)
        }
    }
}

import DataLoading
import Foundation
import Imaging
import Operators
import Portability
import Storage

/// Timings of a model on this machine (`detectron benchmark`, like detectron2's tools/benchmark.py).
public struct BenchmarkResult: Sendable {
    public var seconds: [Double]
    public var peakRSSMB: Double
    public var threads: Int
    public var proposals: Int
    /// Inference: the detections of the first image (nil for training).
    public var detections: Int? = nil

    public var median: Double { seconds.sorted()[seconds.count / 2] }
}

public enum ModelBenchmark {
    /// A 640×480 test pattern, for runs without images.
    public static func syntheticImage() -> Image {
        var img = Image(width: 640, height: 480, channels: 3, order: .bgr, fill: 0)
        for y in 0..<480 {
            for x in 0..<640 {
                let i = (y * 640 + x) * 3
                img.pixels[i] = UInt8((x * 255) / 639)
                img.pixels[i + 1] = UInt8((y * 255) / 479)
                img.pixels[i + 2] = UInt8(((x + y) * 7) % 256)
            }
        }
        return img
    }

    static func peakRSSMB() -> Double {
        let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
            let kb = line.split(separator: " ").dropFirst().first.flatMap { Double($0) } ?? 0
            return kb / 1024
        }
        return 0
    }

    /// Inference per image, after warm-up: with random weights (the networks' time does not depend
    /// on them), or with `weights` when the work after them does (Mask R-CNN's mask net runs on as
    /// many detections as the weights give). With `profile`, the timed runs' op times are added to it.
    public static func inference(_ cfg: Config, images: [Image], runs: Int, warmup: Int = 1, threads: Int? = nil,
                                 weights: String? = nil, profile: OpProfile? = nil) throws -> BenchmarkResult {
        let detector = try Detector(config: cfg, weights: weights, threads: threads)
        for i in 0..<warmup { _ = try detector.detect(images[i % images.count]) }
        detector.profile = profile
        var times: [Double] = [], firstImageDetections = 0
        for i in 0..<runs {
            let t0 = Date()
            let found = try detector.detect(images[i % images.count])
            times.append(Date().timeIntervalSince(t0))
            if i == 0 { firstImageDetections = found.count }
        }
        return BenchmarkResult(seconds: times, peakRSSMB: peakRSSMB(), threads: CPUBudget.detect(override: threads).threads,
                               proposals: detector.lastProposalCount, detections: firstImageDetections)
    }

    /// Training iterations of `TRAIN.IMS_PER_BATCH` images (each with one centred ground-truth box
    /// of class 1, its polygon the box), forward, backward and update, after warm-up.
    public static func training(_ cfg: Config, images: [Image], runs: Int, warmup: Int = 1, threads: Int? = nil,
                                profile: OpProfile? = nil) throws -> BenchmarkResult {
        let session = try ModelSession(cfg, train: true, components: .standard, threads: threads)
        let model = session.model, budget = session.budget, ctx = session.context, registry = session.registry
        let pool = session.makePool(threads: budget.threads, name: "sd-bench")
        let ws = try session.makeWorkspace()
        let netDef = try makeTrainingNet(cfg, model: model, ws: ws, registry: registry).combined
        try ws.fetchBlob("lr").mutableData(as: Float.self)[0] = 0.001
        let targets = model.trainingTargets!   // a training net's
        let n = cfg.int("TRAIN.IMS_PER_BATCH")
        var samples: [TrainSample] = []
        var rng = SampleRNG(seed: 1)
        for i in 0..<n {
            let img = images[i % images.count]
            let s = InputBlob.scale(width: img.width, height: img.height, target: cfg.ints("TRAIN.SCALES")[0], maxSize: cfg.int("TRAIN.MAX_SIZE"))
            let prepared = InputBlob.prepare(img, pixelMeans: pixelMeans(cfg), scale: s)
            let box: [Float] = [Float(img.width) / 3, Float(img.height) / 3, Float(img.width) * 2 / 3, Float(img.height) * 2 / 3]
            let computed = targets.compute(gt: box.map { $0 * Float(s) }, classes: [1], height: prepared.height, width: prepared.width, rng: &rng)
            // Mask R-CNN: the box as the object's polygon.
            let polygon = [[box[0], box[1], box[2], box[1], box[2], box[3], box[0], box[3]].map(Double.init)]
            samples.append(TrainSample(image: prepared, scale: Float(s), targets: computed,
                                       entry: .init(boxes: box, classes: [1], crowd: [false], scale: Float(s), polygons: [polygon]), seed: rng.next()))
        }
        let batch = try MinibatchCollate.collate(samples, targets: targets, stride: cfg.int("FPN.COARSEST_STRIDE"), context: ctx)
        for (name, t) in batch.blobs { ws.feedBlob(name, t) }
        ws.feed("roidb", value: batch.roidb)
        let net = try Net(netDef, workspace: ws, registry: registry, pool: pool)
        for _ in 0..<warmup { try net.run() }
        net.profile = profile
        var times: [Double] = []
        for _ in 0..<runs {
            let t0 = Date()
            try net.run()
            times.append(Date().timeIntervalSince(t0))
        }
        return BenchmarkResult(seconds: times, peakRSSMB: peakRSSMB(), threads: budget.threads, proposals: (try? ws.fetchBlob("rois").dim(0)) ?? 0)
    }
}

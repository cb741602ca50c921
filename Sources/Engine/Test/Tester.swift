import COCO
import Foundation
import Imaging
import Logging
import Operators
import Portability
import Storage

/// One detection in original image pixels.
public struct DetectedBox: Sendable, Equatable {
    public var bbox: [Double]      // x1, y1, x2, y2
    public var score: Double
    /// Contiguous class 1…K−1.
    public var classIndex: Int
    /// Mask R-CNN: the detection's mask over the image.
    public var mask: RLE?
}

/// Runs the test net on images, by the rules of the model's semantics (Detectron's
/// `im_detect_bbox` and `box_results_with_nms_and_limit`, or torchvision's): prepare the image,
/// run the net, decode each RoI per class, post-process.
public final class Detector {
    public let cfg: Config
    let settings: TestSettings
    let session: ModelSession
    let model: DetectionModel
    let ws: Workspace
    let net: Net
    /// Mask R-CNN's mask settings and net (made on the first detections, whose blobs it reads).
    let maskSettings: MaskSettings?
    private var maskNetInstance: Net?
    let pool: ThreadPool
    /// Contiguous class → (JSON category id, name), from the checkpoint (or none).
    public let categories: [Int: (id: Int, name: String)]

    /// A detector with `weights`, or with its random initialisation when `weights` is nil
    /// (benchmarks).
    public init(config: Config, weights: String?, components: ModelComponents = .standard, threads: Int? = nil,
                logger: Logger? = nil) throws {
        cfg = config
        settings = TestSettings(config)
        session = try ModelSession(config, train: false, components: components, threads: threads)
        model = session.model
        pool = session.makePool(threads: session.budget.threads, name: "sd-test")
        let ctx = session.context
        ws = try session.makeWorkspace()
        var metadata: [String: String] = [:]
        if let weights { metadata = try loadCheckpoint(weights, into: ws, model: model, momentum: false, logger: logger) }
        var cats: [Int: (Int, String)] = [:]
        if let text = metadata["categories"], let weights {
            let list: [COCOFile.Category]
            do {
                list = try JSONDecoder().decode([COCOFile.Category].self, from: Data(text.utf8))
            } catch {
                throw WeightsError.malformed(file: weights, reason: "its metadata 'categories' is not a JSON list of {id, name} (\(error)); "
                                             + "rewrite it or remove the key to detect without class names")
            }
            for (i, c) in list.enumerated() { cats[i + 1] = (c.id, c.name) }
        }
        categories = cats
        // Shapes are known only once an image is fed: make the net on the first image.
        ws.feedBlob("data", try Tensor(.float32, shape: [1, 3, 32, 32], context: ctx))
        ws.feedBlob("im_info", try Tensor([32, 32, 1] as [Float], shape: [1, 3], context: ctx))
        net = try Net(model.net, workspace: ws, registry: session.registry, pool: pool)
        maskSettings = model.maskNet == nil ? nil : MaskSettings(config)
    }

    /// The mask net, made on first use (its inputs exist once the box net has run).
    func maskNet() throws -> Net {
        if let maskNetInstance { return maskNetInstance }
        let made = try Net(model.maskNet!, workspace: ws, registry: session.registry, pool: pool)
        made.profile = net.profile
        maskNetInstance = made
        return made
    }

    /// Per-op-type wall time of the test net's runs while set (``OpProfile``).
    public var profile: OpProfile? {
        get { net.profile }
        set {
            net.profile = newValue
            maskNetInstance?.profile = newValue
        }
    }

    /// The number of proposals the box head saw for the last image.
    public var lastProposalCount: Int { (try? ws.fetchBlob("rois").dim(0)) ?? 0 }

    /// Detections for one image (BGR or RGB; converted), in its pixel coordinates.
    public func detect(_ image: Image) throws -> [DetectedBox] {
        let semantics = model.semantics
        let input = try semantics.prepare(image, settings, context: ws.context)
        ws.feedBlob("data", input.data)
        ws.feedBlob("im_info", try Tensor(input.imInfo, shape: [1, 3], context: ws.context))
        if semantics.anchorsFollowInput { try session.feedAnchors(into: ws, paddedHeight: input.data.dim(2), paddedWidth: input.data.dim(3)) }
        try net.run()
        let found = try model.readDetections(ws, input, settings)
        let boxes = found.map { d in
            [d.box[0] * input.outputScaleX, d.box[1] * input.outputScaleY, d.box[2] * input.outputScaleX, d.box[3] * input.outputScaleY]
        }
        let masks = try masks(found, imageBoxes: boxes, input: input, imageHeight: image.height, imageWidth: image.width)
        return found.indices.map { i in
            DetectedBox(bbox: boxes[i].map(Double.init), score: Double(found[i].score), classIndex: found[i].classIndex,
                        mask: masks.isEmpty ? nil : masks[i])
        }
    }

    /// A blob of the last image's run, for comparisons with other implementations: any blob of
    /// the net by name, or `p2`…`p7` (the FPN outputs the heads read), `proposals` (the collected
    /// rois' boxes, (R, 4)) and `proposal_scores` (their RPN probabilities, (R)).
    public func inspect(_ name: String) throws -> (shape: [Int], values: [Float]) {
        if name.count == 2, name.first == "p", let level = Int(name.dropFirst()) {
            // The input of the level's first head conv: the RPN's, or RetinaNet's class tower (or predictor).
            let heads = ["conv_rpn_fpn\(level)", "retnet_cls_conv_n0_fpn\(level)", "retnet_cls_pred_fpn\(level)"]
            if let conv = model.net.ops.first(where: { $0.type == "Conv" && heads.contains($0.outputs[0]) }) {
                return try inspect(conv.inputs[0])
            }
        }
        switch name {
        case "proposals":
            let rois = try ws.fetchBlob("rois").toArray(as: Float.self)
            return ([rois.count / 5, 4], (0..<rois.count / 5).flatMap { rois[5 * $0 + 1..<5 * $0 + 5] })
        case "proposal_scores":
            // The collect op's order: every level's probabilities, by descending score, ties by index.
            var probs: [Float] = []
            for level in model.rpnLevels { probs += try ws.fetchBlob(DerivedBlobs.rpnRoiProbs(level)).toArray(as: Float.self) }
            let r = try ws.fetchBlob("rois").dim(0)
            return ([r], Boxes.descendingOrder(probs).prefix(r).map { probs[$0] })
        default:
            guard ws.hasBlob(name) else { throw EngineError.data("no blob '\(name)' in the test net; use a blob name, p2…p6, proposals or proposal_scores") }
            let t = try ws.fetchBlob(name)
            return (t.shape, try t.toArray(as: Float.self))
        }
    }
}

/// `detectron test`: detections for a dataset (or a range of it), the results file, the COCO
/// evaluation and per-category AP, written to OUTPUT_DIR/test/<dataset>/.
public struct Tester {
    public let cfg: Config
    let components: ModelComponents
    let logger: Logger

    public init(config: Config, components: ModelComponents = .standard, logger: Logger) {
        cfg = config
        self.components = components
        self.logger = logger
    }

    public struct Outcome: Sendable {
        /// The dataset's name.
        public var dataset: String
        public var resultsFile: String
        public var evaluation: COCOEvaluator.Result?
        /// Mask R-CNN: the masks' evaluation (COCOeval `segm`).
        public var maskEvaluation: COCOEvaluator.Result?
        public var secondsPerImage: Double
    }

    @discardableResult
    public func run(weights: String, range: Range<Int>? = nil) throws -> [Outcome] {
        var outcomes: [Outcome] = []
        let detector = try Detector(config: cfg, weights: weights, components: components, logger: logger)
        for ds in try loadDatasets(cfg, key: "TEST.DATASETS") {
            let (entries, _) = try ds.roidb()
            let selected = range.map { Array(entries[max(0, $0.lowerBound)..<min(entries.count, $0.upperBound)]) } ?? entries
            var detections: [Detection] = [], segmentations: [Detection] = []
            let t0 = Date()
            for (i, e) in selected.enumerated() {
                let image = try ImageFile.decode(contentsOf: e.image, order: .bgr)
                for d in try detector.detect(image) {
                    let category = ds.jsonID[Int32(d.classIndex)]!
                    detections.append(Detection(imageID: e.imageID, categoryID: category,
                                                x1: d.bbox[0], y1: d.bbox[1], x2: d.bbox[2], y2: d.bbox[3], score: d.score))
                    // Detectron's segm results: the mask and the box's score, no bbox.
                    if let mask = d.mask { segmentations.append(Detection(imageID: e.imageID, categoryID: category, segmentation: mask, score: d.score)) }
                }
                if (i + 1) % 20 == 0 || i + 1 == selected.count {
                    logger.info("\(String(format: "im_detect: %d/%d  %.3f s/image", i + 1, selected.count, Date().timeIntervalSince(t0) / Double(i + 1)))")
                }
            }
            let perImage = Date().timeIntervalSince(t0) / Double(max(1, selected.count))
            outcomes.append(try finish(ds, detections: detections, segmentations: detector.model.maskNet == nil ? nil : segmentations,
                                       range: range, secondsPerImage: perImage))
        }
        return outcomes
    }

    /// Detectron's `--multi-gpu-testing`: each dataset is cut into `workers` contiguous ranges, one
    /// child process per range runs `test --range` (`childArguments(range, TEST.DATASETS entry)` gives its
    /// command line; `threads` is each child's DETECTRON_NUM_THREADS), and their detections are
    /// merged in image order and evaluated once. A failing child stops the others and fails the
    /// run with its error; children die with this process.
    @discardableResult
    public func runMultiWorker(executable: String, workers: Int, threads: Int,
                               childArguments: (Range<Int>, String) -> [String]) throws -> [Outcome] {
        guard workers >= 1 else { throw EngineError.usage("multi-worker testing needs at least one worker, got \(workers)") }
        var outcomes: [Outcome] = []
        // Each child gets one dataset as it was named in TEST.DATASETS (a catalog name or a spec).
        for (spec, ds) in zip(cfg.strings("TEST.DATASETS"), try loadDatasets(cfg, key: "TEST.DATASETS")) {
            let count = try ds.roidb().entries.count
            let per = (count + workers - 1) / workers
            let ranges = (0..<workers).map { i in min(count, i * per)..<min(count, (i + 1) * per) }.filter { !$0.isEmpty }
            let dir = resultsDirectory(ds)
            try Files.makeDirectory(dir)
            logger.info("multi-worker testing of \(ds.name): \(count) images in \(ranges.count) workers × \(threads) threads: \(ranges.map { "\($0.lowerBound):\($0.upperBound)" }.joined(separator: ", "))")
            let t0 = Date()
            struct Worker {
                var child: ChildProcess
                var range: Range<Int>
                var log: String
            }
            var workers: [Worker] = []
            defer { for w in workers where w.child.poll() == nil { _ = w.child.terminate(grace: 1) } }
            for r in ranges {
                let logPath = (dir as NSString).appendingPathComponent("worker_range_\(r.lowerBound)_\(r.upperBound).log")
                _ = FileManager.default.createFile(atPath: logPath, contents: nil)
                guard let logFile = FileHandle(forWritingAtPath: logPath) else { throw EngineError.io("cannot write \(logPath)") }
                defer { try? logFile.close() }   // the child has its own copy
                var env = ProcessInfo.processInfo.environment
                env[CPUBudget.environmentKey] = String(threads)
                var config = ProcessConfiguration(executable: executable, arguments: childArguments(r, spec), environment: env)
                config.standardOutput = .descriptor(logFile.fileDescriptor)
                config.standardError = .descriptor(logFile.fileDescriptor)
                workers.append(Worker(child: try Processes.spawn(config), range: r, log: logPath))
            }
            // Wait for all; the first failure stops the rest (the defer terminates them).
            var pending = Set(workers.indices)
            while !pending.isEmpty {
                for i in pending.sorted() {
                    guard let status = workers[i].child.poll() else { continue }
                    pending.remove(i)
                    guard status.isSuccess else {
                        let w = workers[i]
                        let tail = ((try? String(contentsOfFile: w.log, encoding: .utf8)) ?? "").split(separator: "\n").suffix(5).joined(separator: "\n")
                        throw EngineError.data("test worker for images \(w.range.lowerBound):\(w.range.upperBound) of \(ds.name) \(status) (log \(w.log)):\n\(tail)")
                    }
                }
                if !pending.isEmpty { usleep(20_000) }
            }
            var detections: [Detection] = [], segmentations: [Detection]? = cfg.bool("MODEL.MASK_ON") ? [] : nil
            for w in workers {
                detections += try Detection.load(resultsFile(ds, range: w.range))
                if segmentations != nil { segmentations! += try Detection.load(resultsFile(ds, range: w.range, kind: .segm)) }
            }
            let perImage = Date().timeIntervalSince(t0) / Double(max(1, count))
            logger.info("\(String(format: "multi-worker testing: %d images in %.1f s (%.3f s/image)", count, Date().timeIntervalSince(t0), perImage))")
            outcomes.append(try finish(ds, detections: detections, segmentations: segmentations, range: nil, secondsPerImage: perImage))
        }
        return outcomes
    }

    func resultsDirectory(_ ds: JSONDataset) -> String {
        ((cfg.string("OUTPUT_DIR") as NSString).appendingPathComponent("test") as NSString).appendingPathComponent(ds.name)
    }

    /// Detectron's results file names: `bbox_<dataset>_results.json`, `segmentations_<dataset>_results.json`.
    func resultsFile(_ ds: JSONDataset, range: Range<Int>?, kind: COCOEvaluator.IoUType = .bbox) -> String {
        let suffix = range.map { "_range_\($0.lowerBound)_\($0.upperBound)" } ?? ""
        let prefix = kind == .bbox ? "bbox" : "segmentations"
        return (resultsDirectory(ds) as NSString).appendingPathComponent("\(prefix)_\(ds.name)_results\(suffix).json")
    }

    /// Writes the results files (boxes, and masks for Mask R-CNN) and, for a whole dataset whose
    /// annotation file has an `annotations` list, evaluates each and writes its summary:
    /// `detection_results.json` (boxes) and `segmentation_results.json` (masks). An unlabelled
    /// split such as COCO's test-dev is not evaluated.
    func finish(_ ds: JSONDataset, detections: [Detection], segmentations: [Detection]? = nil, range: Range<Int>?,
                secondsPerImage: Double) throws -> Outcome {
        try Files.makeDirectory(resultsDirectory(ds))
        let file = resultsFile(ds, range: range)
        try Detection.write(detections, to: file)
        logger.info("wrote \(detections.count) detections to \(file)")
        if let segmentations {
            let segmFile = resultsFile(ds, range: range, kind: .segm)
            try Detection.write(segmentations, to: segmFile)
            logger.info("wrote \(segmentations.count) masks to \(segmFile)")
        }
        var evaluation: COCOEvaluator.Result?, maskEvaluation: COCOEvaluator.Result?
        if range == nil && ds.coco.hasAnnotations {
            evaluation = try evaluate(ds, COCOEvaluator(groundTruth: ds.coco, detections: detections), what: "bounding boxes", file: "detection_results.json")
            if let segmentations {
                maskEvaluation = try evaluate(ds, try COCOEvaluator(groundTruth: ds.coco, detections: segmentations, iouType: .segm),
                                              what: "segmentation masks", file: "segmentation_results.json")
            }
        }
        return Outcome(dataset: ds.name, resultsFile: file, evaluation: evaluation, maskEvaluation: maskEvaluation, secondsPerImage: secondsPerImage)
    }

    /// Evaluates, logs the table and per-category AP, and writes the stats as JSON under `file`.
    private func evaluate(_ ds: JSONDataset, _ evaluator: COCOEvaluator, what: String, file: String) throws -> COCOEvaluator.Result {
        let result = evaluator.evaluate()
        logger.info("Evaluating \(what) of \(ds.name):\n\(result.summary)")
        for c in ds.coco.categories {
            logger.info("\(String(format: "  %-12@ AP %.3f", c.name, result.perCategory[c.id] ?? -1))")
        }
        try Files.writeAtomically(Array(EvaluationJSON.object(result).utf8), to: (resultsDirectory(ds) as NSString).appendingPathComponent(file))
        return result
    }
}

/// The evaluation as one JSON object (the same as `detectron evaluate --json`).
public enum EvaluationJSON {
    public static func object(_ r: COCOEvaluator.Result) -> String {
        var obj: [String: Any] = [:]
        for (name, v) in zip(COCOEvaluator.Result.statNames, r.stats) { obj[name] = v }
        var per: [String: Double] = [:]
        for (k, v) in r.perCategory { per[String(k)] = v }
        obj["per_category"] = per
        let data = (try? JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys])) ?? Data()
        return String(decoding: data, as: UTF8.self)
    }
}

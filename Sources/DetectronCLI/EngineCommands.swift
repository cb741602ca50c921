import ArgumentParser
import COCO
import Engine
import Foundation
import Imaging
import Logging
import Portability

/// `--cfg FILE` plus Detectron's trailing `KEY VALUE` overrides.
struct ConfigOptions: ParsableArguments {
    @Option(help: "A Detectron YAML config file.") var cfg: String
    @Argument(parsing: .captureForPassthrough, help: "KEY VALUE overrides, e.g. OUTPUT_DIR out SOLVER.MAX_ITER 100.") var overrides: [String] = []

    func load(print show: Bool = true) throws -> Config { try Self.load(file: cfg, overrides: overrides, print: show) }

    /// The config every command starts from: the file, then the overrides; warnings printed.
    static func load(file: String, overrides: [String], print show: Bool = true) throws -> Config {
        var c = Config()
        try c.merge(file: file)
        try c.merge(overrides: overrides)
        for w in c.warnings + (try c.checkImplemented()) { logger.warning("\(w)") }
        if show { logger.info("Merged config:\n\(c)") }
        return c
    }
}

/// The live status line on a terminal's standard error: rewritten in place, cleared by nil.
@Sendable func terminalStatus(_ line: String?) {
    FileHandle.standardError.write(Data(("\r\u{1B}[K" + (line ?? "")).utf8))
}

/// The CLI's log handler: each message on standard output as `[time] message`, warnings and
/// errors with their level before the message.
struct LineLogHandler: LogHandler {
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .info

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let stamp = ISO8601DateFormatter().string(from: Date())
        let prefix = event.level >= .warning ? "\(event.level): " : ""
        FileHandle.standardOutput.write(Data("[\(stamp)] \(prefix)\(event.message)\n".utf8))
    }
}

/// Where every command's log lines go.
let logger = Logger(label: "detectron") { _ in LineLogHandler() }

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Train a detector (Detectron's train_net.py): snapshots and auto-resume in OUTPUT_DIR/train.")
    @OptionGroup var options: ConfigOptions
    @Flag(name: .customLong("skip-test"), help: "Do not test the final model.") var skipTest = false

    func run() throws {
        let cfg = try options.load()
        do {
            let trainer = Trainer(config: cfg, logger: logger)
            if isatty(2) != 0 { trainer.status = terminalStatus }
            let final = try trainer.run()
            // In an MPI run, the process of replica 0 tests; the other ranks are done.
            if !skipTest && (MPICommunicator.runningRank ?? 0) == 0 {
                try trainer.recordFinalTest(try Tester(config: cfg, logger: logger).run(weights: final))
            }
        } catch {
            // A failing rank stops the whole MPI job, naming itself; the others never wait for it.
            if let rank = MPICommunicator.runningRank {
                FileHandle.standardError.write(Data("Error: MPI rank \(rank) failed: \(error)\n".utf8))
                MPICommunicator.abort()
            }
            throw error
        }
    }
}

struct Test: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Test a model on TEST.DATASETS: detections, results JSON, COCO box AP (written to OUTPUT_DIR/test).")
    @OptionGroup var options: ConfigOptions
    @Option(help: "Weights (else TEST.WEIGHTS).") var weights: String?
    @Option(help: "Only images [start, end) of the dataset, e.g. 0:100.") var range: String?
    @Flag(name: [.customLong("multi-worker-testing"), .customLong("multi-gpu-testing")],
          help: "Split each dataset into NUM_GPUS contiguous ranges, test them in parallel child processes (each with its share of the cores), merge and evaluate once.")
    var multiWorker = false

    func run() throws {
        let cfg = try options.load()
        let w = weights ?? cfg.string("TEST.WEIGHTS")
        guard !w.isEmpty else { throw ValidationError("no weights: pass --weights FILE or TEST.WEIGHTS FILE") }
        if multiWorker {
            guard range == nil else { throw ValidationError("--range and --multi-worker-testing exclude each other: the workers get the ranges") }
            let workers = cfg.int("NUM_GPUS")
            let threads = max(1, CPUBudget.detect().threads / max(1, workers))
            let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
            try Tester(config: cfg, logger: logger).runMultiWorker(executable: exe, workers: workers, threads: threads) { r, dataset in
                ["test", "--weights", w, "--range", "\(r.lowerBound):\(r.upperBound)", "--cfg", options.cfg]
                    + options.overrides + ["TEST.DATASETS", "('\(dataset)',)"]
            }
            return
        }
        var r: Range<Int>?
        if let range {
            let parts = range.split(separator: ":").compactMap { Int($0) }
            guard parts.count == 2, parts[0] <= parts[1] else { throw ValidationError("--range takes START:END, got \(range)") }
            r = parts[0]..<parts[1]
        }
        try Tester(config: cfg, logger: logger).run(weights: w, range: r)
    }
}

/// A float32 array in numpy's `.npy` format (version 1.0, little-endian, C order).
func npy(shape: [Int], values: [Float]) -> [UInt8] {
    let dims = shape.map(String.init).joined(separator: ", ") + (shape.count == 1 ? "," : "")
    var header = "{'descr': '<f4', 'fortran_order': False, 'shape': (\(dims)), }"
    // Magic (6) + version (2) + length (2) + header, padded with spaces to 64 bytes, ending in \n.
    while (10 + header.utf8.count + 1) % 64 != 0 { header += " " }
    header += "\n"
    var out: [UInt8] = [0x93] + Array("NUMPY".utf8) + [1, 0, UInt8(header.utf8.count & 0xFF), UInt8(header.utf8.count >> 8)]
    out += Array(header.utf8)
    values.withUnsafeBytes { out += $0 }
    return out
}

struct Infer: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Detect objects in images (Detectron's infer_simple): per-image JSON and drawn detections.",
        discussion: "IMAGE.json holds {image, width, height, detections: [{bbox: [x1, y1, x2, y2], score, category_id, category}]} sorted by score; with a Mask R-CNN config each detection also has its segmentation, a COCO compressed RLE {size: [h, w], counts}, and the drawing shows the masks as Detectron's vis.py does."
    )
    @Option(help: "A Detectron YAML config file.") var cfg: String
    @Option(help: "Model weights.") var weights: String
    @Option(name: .customLong("output-dir"), help: "Where the JSON and drawn images go.") var outputDir: String
    @Option(help: "Only draw detections scoring at least this.") var thresh = 0.7
    @Flag(name: .customLong("json-only"), help: "Skip the drawing.") var jsonOnly = false
    @Option(name: .customLong("save-blobs"),
            help: ArgumentHelp("Also write these blobs of each image's run as IMAGE_<blob>.npy (float32), comma-separated: any blob of the test net, or p2…p6 (FPN outputs), proposals, proposal_scores.",
                               valueName: "blob,…"))
    var saveBlobs: String?
    @Flag(name: .customLong("fail-fast"), help: "Stop at the first image that cannot be read (default: report it, go on, exit non-zero at the end).")
    var failFast = false
    @Flag(name: .customLong("mask-png"), help: "Mask R-CNN: also write each detection's mask as IMAGE_mask_N.png (N its index in the JSON; 255 inside).")
    var maskPNG = false
    @Argument(parsing: .captureForPassthrough,
              help: "Images (JPEG or PNG, by content) or directories of them, and KEY VALUE config overrides (e.g. TEST.SCALE 800).")
    var arguments: [String] = []

    /// The arguments split into inputs and `KEY VALUE` overrides: a config key is an upper-case
    /// dotted name (`TEST.SCALE`, `NUM_GPUS`) that is not an existing file.
    var inputsAndOverrides: (inputs: [String], overrides: [String]) {
        var inputs: [String] = [], overrides: [String] = []
        var i = 0
        while i < arguments.count {
            let a = arguments[i]
            if i + 1 < arguments.count, a.range(of: "^[A-Z][A-Z0-9_]*(\\.[A-Z0-9_]+)*$", options: .regularExpression) != nil,
               !FileManager.default.fileExists(atPath: a) {
                overrides += [a, arguments[i + 1]]
                i += 2
            } else {
                inputs.append(a)
                i += 1
            }
        }
        return (inputs, overrides)
    }

    func run() throws {
        let (inputs, overrides) = inputsAndOverrides
        guard !inputs.isEmpty else { throw ValidationError("no images: pass image files or directories") }
        var c = try ConfigOptions.load(file: cfg, overrides: overrides, print: false)
        // Fused ops skip intermediate blobs (the conv output before its AffineChannel): keep them all.
        if !(saveBlobs ?? "").isEmpty { try c.merge(overrides: ["TEST.FUSE_OPS", "False"]) }
        let detector = try Detector(config: c, weights: weights, logger: logger)
        try Files.makeDirectory(outputDir)
        var files: [String] = [], failures: [String] = [], badInputs = 0
        // One unreadable input is reported and skipped; the others are still processed.
        func skip(_ input: String, _ error: any Error) throws {
            logger.info("\(input): skipped: \(error)")
            failures.append(input)
            if failFast { throw InferFailures(failed: failures, total: files.count + badInputs, stopped: true) }
        }
        for input in inputs {
            var isDir: ObjCBool = false
            do {
                guard FileManager.default.fileExists(atPath: input, isDirectory: &isDir) else { throw ValidationError("no such file or directory") }
                files += isDir.boolValue ? try ImageFile.list(directory: input) : [input]
            } catch {
                badInputs += 1
                try skip(input, error)
            }
        }
        for file in files {
            do { try infer(file, detector: detector) } catch { try skip(file, error) }
        }
        if !failures.isEmpty { throw InferFailures(failed: failures, total: files.count + badInputs, stopped: false) }
    }

    /// Detects, writes `BASE.json` (and the drawing and blobs) for one image.
    func infer(_ file: String, detector: Detector) throws {
        let t0 = Date()
        let image = try ImageFile.decode(contentsOf: file, order: .bgr)
        let dets = try detector.detect(image).sorted { $0.score > $1.score }
        let elapsed = Date().timeIntervalSince(t0)
        let base = ((file as NSString).lastPathComponent as NSString).deletingPathExtension
        let items: [[String: Any]] = dets.map { d in
            let cat = detector.categories[d.classIndex]
            var item: [String: Any] = ["bbox": d.bbox, "score": d.score,
                                       "category_id": cat?.id ?? d.classIndex, "category": cat?.name ?? "class \(d.classIndex)"]
            if let m = d.mask { item["segmentation"] = ["size": [m.height, m.width], "counts": m.compressedCounts] }
            return item
        }
        let json: [String: Any] = ["image": file, "width": image.width, "height": image.height, "detections": items]
        let data = try JSONSerialization.data(withJSONObject: json, options: [.sortedKeys, .prettyPrinted])
        try Files.writeAtomically([UInt8](data), to: (outputDir as NSString).appendingPathComponent(base + ".json"))
        for blob in (saveBlobs ?? "").split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) where !blob.isEmpty {
            let (shape, values) = try detector.inspect(blob)
            try Files.writeAtomically(npy(shape: shape, values: values), to: (outputDir as NSString).appendingPathComponent("\(base)_\(blob).npy"))
        }
        if maskPNG {
            for (i, d) in dets.enumerated() {
                guard let m = d.mask else { continue }
                let png = try PNG.encode(Image(width: m.width, height: m.height, channels: 1, order: .rgb, pixels: m.decode(order: .rowMajor).map { $0 * 255 }))
                try Files.writeAtomically(png, to: (outputDir as NSString).appendingPathComponent("\(base)_mask_\(i).png"))
            }
        }
        if !jsonOnly {
            var canvas = image
            // Masks as vis.py's vis_one_image_opencv: largest box first, the colormap's next colour for each mask drawn.
            let drawn = dets.filter { $0.score >= thresh && $0.mask != nil }
                .sorted { ($0.bbox[2] - $0.bbox[0]) * ($0.bbox[3] - $0.bbox[1]) > ($1.bbox[2] - $1.bbox[0]) * ($1.bbox[3] - $1.bbox[1]) }
            for (k, d) in drawn.enumerated() {
                canvas.drawMask(d.mask!.decode(order: .rowMajor), color: Image.detectronColormap[k % Image.detectronColormap.count])
            }
            for d in dets.reversed() where d.score >= thresh {
                let name = detector.categories[d.classIndex]?.name ?? "class \(d.classIndex)"
                canvas.drawDetection(x1: d.bbox[0], y1: d.bbox[1], x2: d.bbox[2], y2: d.bbox[3],
                                     label: String(format: "%@ %.2f", name, d.score), color: Color.forClass(d.classIndex))
            }
            try canvas.write(to: (outputDir as NSString).appendingPathComponent(base + ".jpg"))
        }
        logger.info("\(String(format: "%@: %d detections (%d ≥ %.2f) in %.3f s", file, dets.count, dets.filter { $0.score >= thresh }.count, thresh, elapsed))")
    }
}

/// The images `infer` could not process.
struct InferFailures: Error, CustomStringConvertible {
    var failed: [String]
    var total: Int
    var stopped: Bool

    var description: String {
        stopped ? "stopped at \(failed[0]) (--fail-fast); the images after it were not processed"
            : "\(failed.count) of \(total) images could not be processed (each reported above): \(failed.prefix(5).joined(separator: ", "))\(failed.count > 5 ? ", …" : "")"
    }
}

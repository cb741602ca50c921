import ArgumentParser
import Engine
import Foundation
import Imaging
import Operators

/// `detectron benchmark`: seconds per image (or per training iteration) of a config's model.
struct BenchmarkModel: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "benchmark",
        abstract: "Time a config's model: inference per image, or a training iteration with --train (random weights).",
        discussion: "Prints the median, min and max seconds and the peak RSS; the last line is one JSON object: median_s, min_s, max_s, peak_rss_mb, threads, proposals (and detections, for inference). Use a release build."
    )
    @Option(help: "A Detectron YAML config file.") var cfg: String
    @Flag(help: "Time training iterations (TRAIN.IMS_PER_BATCH images) instead of inference.") var train = false
    @Option(parsing: .upToNextOption, help: "JPEG images (default: a 640×480 test pattern).") var images: [String] = []
    @Option(help: "Timed runs after one warm-up.") var runs = 5
    @Option(help: "Threads (default: the usable cores; DETECTRON_NUM_THREADS also works).") var threads: Int?
    @Option(help: "Inference with these weights instead of random ones (Mask R-CNN's mask net runs on as many detections as they give).")
    var weights: String?
    @Flag(help: "Also print the time per run of each op type, largest first (Caffe2's prof_dag); the JSON line stays last.") var profile = false
    @Flag(help: "With --profile, one row per op (its type and first output) instead of per op type.") var perOp = false
    @Argument(parsing: .captureForPassthrough, help: "KEY VALUE overrides.") var overrides: [String] = []

    func run() throws {
        let c = try ConfigOptions.load(file: cfg, overrides: overrides, print: false)
        let imgs = try images.isEmpty ? [ModelBenchmark.syntheticImage()] : images.map { try ImageFile.decode(contentsOf: $0, order: .bgr) }
        let ops = profile ? OpProfile(perOp: perOp) : nil
        let r = train ? try ModelBenchmark.training(c, images: imgs, runs: runs, threads: threads, profile: ops)
                      : try ModelBenchmark.inference(c, images: imgs, runs: runs, threads: threads, weights: weights, profile: ops)
        if let ops {
            let total = ops.entries.reduce(0) { $0 + $1.seconds }
            let width = max(7, ops.entries.map(\.type.count).max() ?? 0)
            print((perOp ? "op" : "op type").padding(toLength: width, withPad: " ", startingAt: 0) + "   ms/run   share  ops/run")
            for e in ops.entries {
                print(e.type.padding(toLength: width, withPad: " ", startingAt: 0)
                      + String(format: " %8.1f  %5.1f %%  %7d", 1000 * e.seconds / Double(runs), 100 * e.seconds / max(total, 1e-12), e.count / runs))
            }
        }
        let sorted = r.seconds.sorted()
        print(String(format: "%@: median %.3f s, min %.3f s, max %.3f s over %d runs; peak RSS %.0f MB; %d threads; %d proposals",
                     train ? "training iteration" : "inference", r.median, sorted.first!, sorted.last!, runs, r.peakRSSMB, r.threads, r.proposals))
        var json: [String: Any] = ["median_s": r.median, "min_s": sorted.first!, "max_s": sorted.last!, "peak_rss_mb": r.peakRSSMB,
                                   "threads": r.threads, "proposals": r.proposals]
        if let d = r.detections { json["detections"] = d }
        print(String(decoding: try JSONSerialization.data(withJSONObject: json, options: [.sortedKeys]), as: UTF8.self))
    }
}

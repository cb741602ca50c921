import ArgumentParser
import COCO
import Engine
import Foundation

/// `detectron make-shapes`: writes the synthetic shapes dataset.
struct MakeShapes: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "make-shapes",
        abstract: "Write the synthetic shapes dataset (JPEG images and COCO train/val JSON).",
        discussion: "Layout: OUT/train/*.jpg, OUT/val/*.jpg, OUT/annotations/instances_{train,val}.json — the shapes_train / shapes_val datasets when OUT is DATA_ROOT/shapes."
    )

    @Option(help: "Output directory.") var out = "data/shapes"
    @Option(help: "Training images.") var train = 600
    @Option(help: "Validation images.") var val = 100
    @Option(help: "Random seed (same seed, same dataset).") var seed: UInt64 = 1

    func run() throws {
        let gen = ShapesDataset(seed: seed)
        for (split, n) in [("train", train), ("val", val)] {
            let file = try gen.write(split: split, count: n, to: out)
            let crowd = file.annotations.filter(\.isCrowd).count
            print("\(split): \(n) images, \(file.annotations.count) annotations (\(crowd) crowd) → \(out)/annotations/instances_\(split).json")
        }
    }
}

/// `detectron evaluate`: COCO box or mask AP of a results file, as pycocotools computes it.
struct Evaluate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "COCO box or mask AP of a results file against ground truth (equal to pycocotools).",
        discussion: "Prints pycocotools' summary table, or with --json one object: AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl (fractions, -1 where undefined) and per_category (category id → AP). --iou-type segm compares masks (COCOeval(gt, dt, 'segm')): the results' segmentations (compressed RLE) against the annotations' polygons or RLE."
    )

    @Option(help: "Ground-truth COCO annotation file.") var gt: String
    @Option(help: "Detections in COCO results format.") var results: String
    @Option(help: "What the IoU compares: bbox (boxes) or segm (masks), as COCOeval's iouType.") var iouType: COCOEvaluator.IoUType = .bbox
    @Flag(help: "Print one JSON object instead of the table.") var json = false
    @Flag(help: "Print the time spent loading and evaluating to standard error.") var timing = false

    func run() throws {
        let t0 = Date()
        let truth = try COCOFile.load(gt)
        let t1 = Date()
        let dets = try Detection.load(results, groundTruth: truth)
        let t2 = Date()
        let r = try COCOEvaluator(groundTruth: truth, detections: dets, iouType: iouType).evaluate()
        let t3 = Date()
        print(json ? EvaluationJSON.object(r) : r.summary)
        if timing {
            FileHandle.standardError.write(Data(String(format: "timing: load gt %.3f s, load results %.3f s, evaluate %.3f s\n",
                                                       t1.timeIntervalSince(t0), t2.timeIntervalSince(t1), t3.timeIntervalSince(t2)).utf8))
        }
    }

}

extension COCOEvaluator.IoUType: ExpressibleByArgument {}

import COCO
import DataLoading
import Foundation
import Imaging
import Storage

/// One training image, ready for the minibatch: the prepared image, its scale and size, its RPN
/// targets and its ground truth.
struct TrainSample: Sendable {
    var image: FloatImage
    var scale: Float
    var rpn: RPNTargetMaker.Output
    var entry: MinibatchRoidb.Entry
    var seed: UInt64
}

/// The training roidb as a data-loader dataset: image read (BGR), flipped when the entry is,
/// scaled to a TRAIN.SCALES choice (longer side ≤ TRAIN.MAX_SIZE), RPN targets computed here —
/// in the loader's workers, as Detectron's loader threads do.
struct TrainingDataset: Dataset {
    let roidb: [RoidbEntry]
    let scales: [Int]
    let maxSize: Int
    let pixelMeans: [Float]
    let targets: RPNTargetMaker

    var count: Int { roidb.count }

    func element(at index: Int, rng: inout SampleRNG) throws -> TrainSample {
        let e = roidb[index]
        var image = try JPEG.decode(contentsOf: e.image, order: .bgr)
        guard image.width == e.width && image.height == e.height else {
            throw EngineError.data("\(e.image) is \(image.width)×\(image.height) but its annotation file says \(e.width)×\(e.height)")
        }
        if e.flipped { image = image.flippedHorizontally() }
        let target = scales[Int(rng.next() % UInt64(scales.count))]
        let s = InputBlob.scale(width: e.width, height: e.height, target: target, maxSize: maxSize)
        let prepared = InputBlob.prepare(image, pixelMeans: pixelMeans, scale: s)
        var gt: [Float] = []
        for i in 0..<e.boxCount where e.gtClasses[i] > 0 && !e.isCrowd[i] {
            gt += e.boxes[4 * i..<4 * i + 4].map { $0 * Float(s) }
        }
        // im_info in training: the unpadded scaled size.
        let h = Int((Double(e.height) * s).rounded(.toNearestOrEven)), w = Int((Double(e.width) * s).rounded(.toNearestOrEven))
        let rpn = targets.compute(gt: gt, imageHeight: h, imageWidth: w, rng: &rng)
        return TrainSample(image: prepared, scale: Float(s), rpn: rpn,
                           entry: MinibatchRoidb.Entry(boxes: e.boxes, classes: e.gtClasses, crowd: e.isCrowd, scale: Float(s)),
                           seed: rng.next())
    }
}

/// The blobs of one training iteration.
struct Minibatch: Sendable {
    var blobs: [(String, Tensor)]
    var roidb: MinibatchRoidb
}

enum MinibatchCollate {
    /// Detectron's minibatch: `data` padded to a multiple of 32, `im_info` (N, 3) = [h, w, scale]
    /// (unpadded in training), the RPN target blobs concatenated on axis 0, and the roidb.
    static func collate(_ samples: [TrainSample], targets: RPNTargetMaker, context: any Context) throws -> Minibatch {
        var blobs: [(String, Tensor)] = []
        blobs.append(("data", try InputBlob.batch(samples.map(\.image), stride: 32, context: context)))
        var info: [Float] = []
        for s in samples {
            info += [(Float(s.image.height)), Float(s.image.width), s.scale]
        }
        blobs.append(("im_info", try Tensor(info, shape: [samples.count, 3], context: context)))
        let a = targets.anchorsPerCell
        for level in targets.levels {
            let f = targets.field[level]!
            let n = samples.count
            blobs.append(("rpn_labels_int32_wide_fpn\(level)", try Tensor(samples.flatMap { $0.rpn.labels[level]! }, shape: [n, a, f, f], context: context)))
            blobs.append(("rpn_bbox_targets_wide_fpn\(level)", try Tensor(samples.flatMap { $0.rpn.targets[level]! }, shape: [n, 4 * a, f, f], context: context)))
            blobs.append(("rpn_bbox_inside_weights_wide_fpn\(level)", try Tensor(samples.flatMap { $0.rpn.inside[level]! }, shape: [n, 4 * a, f, f], context: context)))
            blobs.append(("rpn_bbox_outside_weights_wide_fpn\(level)", try Tensor(samples.flatMap { $0.rpn.outside[level]! }, shape: [n, 4 * a, f, f], context: context)))
        }
        return Minibatch(blobs: blobs, roidb: MinibatchRoidb(entries: samples.map(\.entry), seed: samples.first?.seed ?? 0))
    }
}

/// Errors of the engine: data, configuration, numerical failure.
public enum EngineError: Error, Sendable, CustomStringConvertible {
    case data(String)
    case config(String)
    case diverged(iteration: Int, losses: String, lastSnapshot: String?)
    case io(String)

    public var description: String {
        switch self {
        case let .data(m): return m
        case let .config(m): return m
        case let .diverged(it, losses, snap):
            return "training diverged at iteration \(it): the total loss is NaN or infinite (\(losses)); "
                + (snap.map { "the last good snapshot \($0) is intact; " } ?? "")
                + "lower SOLVER.BASE_LR or lengthen SOLVER.WARM_UP_ITERS"
        case let .io(m): return m
        }
    }
}

import COCO
import DataLoading
import Foundation
import Imaging
import Storage

/// How a model type's per-image training targets are made (in the loader's workers) and put
/// into the minibatch: the RPN's (generalized R-CNN) or RetinaNet's.
enum TrainingTargets: Sendable {
    case rpn(RPNTargetMaker)
    case retinaNet(RetinaNetTargetMaker)

    /// One image's targets.
    enum Output: Sendable, Equatable {
        case rpn(RPNTargetMaker.Output)
        case retinaNet(RetinaNetTargetMaker.Output)
    }

    /// `gt` the image's non-crowd boxes in input space with their classes; `height` × `width`
    /// the scaled image.
    func compute(gt: [Float], classes: [Int32], height: Int, width: Int, rng: inout SampleRNG) -> Output {
        switch self {
        case let .rpn(m): return .rpn(m.compute(gt: gt, imageHeight: height, imageWidth: width, rng: &rng))
        case let .retinaNet(m): return .retinaNet(m.compute(gt: gt, classes: classes))
        }
    }
}

/// One training image, ready for the minibatch: the prepared image, its scale and size, its
/// targets and its ground truth.
struct TrainSample: Sendable {
    var image: FloatImage
    var scale: Float
    var targets: TrainingTargets.Output
    var entry: MinibatchRoidb.Entry
    var seed: UInt64
}

/// The training roidb as a data-loader dataset: image read (BGR), flipped when the entry is,
/// scaled to a TRAIN.SCALES choice (longer side ≤ TRAIN.MAX_SIZE), targets computed here — in
/// the loader's workers, as Detectron's loader threads do.
struct TrainingDataset: Dataset {
    let roidb: [RoidbEntry]
    let scales: [Int]
    let maxSize: Int
    let pixelMeans: [Float]
    let targets: TrainingTargets
    /// Mask R-CNN: the minibatch roidb carries the boxes' polygons (the mask targets are made
    /// from them after the RoIs are sampled).
    var masks = false

    var count: Int { roidb.count }

    func element(at index: Int, rng: inout SampleRNG) throws -> TrainSample {
        let e = roidb[index]
        var image = try ImageFile.decode(contentsOf: e.image, order: .bgr)
        guard image.width == e.width && image.height == e.height else {
            throw EngineError.data("\(e.image) is \(image.width)×\(image.height) but its annotation file says \(e.width)×\(e.height)")
        }
        if e.flipped { image = image.flippedHorizontally() }
        let target = scales[Int(rng.next() % UInt64(scales.count))]
        let s = InputBlob.scale(width: e.width, height: e.height, target: target, maxSize: maxSize)
        let prepared = InputBlob.prepare(image, pixelMeans: pixelMeans, scale: s)
        var gt: [Float] = [], classes: [Int32] = []
        for i in 0..<e.boxCount where e.gtClasses[i] > 0 && !e.isCrowd[i] {
            gt += e.boxes[4 * i..<4 * i + 4].map { $0 * Float(s) }
            classes.append(e.gtClasses[i])
        }
        // im_info in training: the unpadded scaled size.
        let h = Int((Double(e.height) * s).rounded(.toNearestOrEven)), w = Int((Double(e.width) * s).rounded(.toNearestOrEven))
        let computed = targets.compute(gt: gt, classes: classes, height: h, width: w, rng: &rng)
        var entry = MinibatchRoidb.Entry(boxes: e.boxes, classes: e.gtClasses, crowd: e.isCrowd, scale: Float(s))
        if masks {
            entry.polygons = e.segms.enumerated().map { i, segm in
                if case let .polygons(p)? = segm, !e.isCrowd[i] { return p }
                return []
            }
        }
        return TrainSample(image: prepared, scale: Float(s), targets: computed, entry: entry, seed: rng.next())
    }

    /// Mask R-CNN's targets are rasterised from polygons (`segms.polys_to_mask_wrt_box`): every
    /// non-crowd ground truth needs at least one polygon of 3 points. Detectron fails on the
    /// others deep in its loader; here the image and the annotation are named before training.
    static func checkMaskGroundTruth(_ roidb: [RoidbEntry]) throws {
        for e in roidb where !e.flipped {
            for i in 0..<e.boxCount where e.gtClasses[i] > 0 && !e.isCrowd[i] {
                switch e.segms[i] {
                case let .polygons(p)? where !p.isEmpty:
                    continue
                case .polygons?:
                    throw EngineError.data("image \(e.imageID) (\(e.image)): ground truth \(i) (non-crowd) has no polygon of at least 3 points; "
                                           + "Mask R-CNN's targets are made from its polygons (Detectron fails on it): fix the annotation or mark it iscrowd")
                case .uncompressedRLE?, .compressedRLE?:
                    throw EngineError.data("image \(e.imageID) (\(e.image)): ground truth \(i) is not a crowd region but its segmentation is an RLE; "
                                           + "Detectron's Mask R-CNN targets are made from polygons (it fails on this): convert it to polygons or mark it iscrowd")
                case nil:
                    throw EngineError.data("image \(e.imageID) (\(e.image)): ground truth \(i) has no segmentation, which Mask R-CNN (MODEL.MASK_ON) needs")
                }
            }
        }
    }
}

/// Process workers rebuild the training dataset from this description: the roidb, the scale
/// rule, the pixel means and what the RPN target maker was built from.
extension TrainingDataset: TransportableDataset {
    static let kind = "detectron-training"

    func describe() -> [UInt8] {
        var w = ByteWriter()
        w.write(UInt32(roidb.count))
        for e in roidb {
            w.write(Int64(e.imageID)); w.write(e.image); w.write(Int32(e.width)); w.write(Int32(e.height))
            w.write(UInt8(e.flipped ? 1 : 0))
            w.write(array: e.boxes); w.write(array: e.gtClasses); w.write(array: e.isCrowd.map { UInt8($0 ? 1 : 0) })
            w.write(array: e.segAreas)
            // Polygons only: they are all training reads (crowd RLEs and boxes without masks go as none).
            for segm in e.segms {
                guard case let .polygons(parts)? = segm else { w.write(UInt32.max); continue }
                w.write(UInt32(parts.count))
                for p in parts { w.write(array: p) }
            }
        }
        w.write(UInt8(masks ? 1 : 0))
        w.write(array: scales.map(Int64.init)); w.write(Int64(maxSize)); w.write(array: pixelMeans)
        func anchors(_ levels: ClosedRange<Int>, _ cells: [Int: [Float]]) {
            w.write(Int32(levels.lowerBound)); w.write(Int32(levels.upperBound))
            for level in levels { w.write(array: cells[level] ?? []) }
        }
        switch targets {
        case let .rpn(t):
            w.write(UInt8(0))
            anchors(t.levels, t.cellAnchors)
            w.write(Int64(t.maxSize)); w.write(t.positiveOverlap); w.write(t.negativeOverlap)
            w.write(Int64(t.batchSize)); w.write(t.fgFraction); w.write(t.straddle)
        case let .retinaNet(t):
            w.write(UInt8(1))
            anchors(t.levels, t.cellAnchors)
            w.write(Int64(t.maxSize)); w.write(Int64(t.coarsestStride)); w.write(t.positiveOverlap); w.write(t.negativeOverlap)
        }
        return w.bytes
    }

    init(description: [UInt8]) throws {
        var out: TrainingDataset?
        try description.withUnsafeBytes { raw throws in
            var r = ByteReader(raw)
            var roidb: [RoidbEntry] = []
            for _ in 0..<Int(try r.read(UInt32.self)) {
                let id = Int(try r.read(Int64.self)), image = try r.read(String.self)
                let width = Int(try r.read(Int32.self)), height = Int(try r.read(Int32.self))
                let flipped = try r.read(UInt8.self) != 0
                let boxes = try r.readArray(of: Float.self), classes = try r.readArray(of: Int32.self)
                let crowd = try r.readArray(of: UInt8.self).map { $0 != 0 }, areas = try r.readArray(of: Float.self)
                guard boxes.count == 4 * classes.count, crowd.count == classes.count else { throw ByteReader.Truncated() }
                var segms: [COCOFile.Segmentation?] = []
                for _ in 0..<classes.count {
                    let parts = try r.read(UInt32.self)
                    if parts == UInt32.max { segms.append(nil); continue }
                    segms.append(.polygons(try (0..<Int(parts)).map { _ in try r.readArray(of: Double.self) }))
                }
                roidb.append(RoidbEntry(imageID: id, image: image, width: width, height: height, flipped: flipped,
                                        boxes: boxes, gtClasses: classes, isCrowd: crowd, segAreas: areas, segms: segms))
            }
            let masks = try r.read(UInt8.self) != 0
            let scales = try r.readArray(of: Int64.self).map(Int.init), maxSize = Int(try r.read(Int64.self))
            let means = try r.readArray(of: Float.self)
            let kind = try r.read(UInt8.self)
            let levels = Int(try r.read(Int32.self))...Int(try r.read(Int32.self))
            var cells: [Int: [Float]] = [:]
            for level in levels { cells[level] = try r.readArray(of: Float.self) }
            let targets: TrainingTargets
            switch kind {
            case 0:
                targets = .rpn(RPNTargetMaker(cellAnchors: cells, levels: levels, maxSize: Int(try r.read(Int64.self)),
                                              positiveOverlap: try r.read(Float.self), negativeOverlap: try r.read(Float.self),
                                              batchSize: Int(try r.read(Int64.self)), fgFraction: try r.read(Double.self),
                                              straddle: try r.read(Float.self)))
            case 1:
                targets = .retinaNet(RetinaNetTargetMaker(cellAnchors: cells, levels: levels, maxSize: Int(try r.read(Int64.self)),
                                                          coarsestStride: Int(try r.read(Int64.self)), positiveOverlap: try r.read(Float.self),
                                                          negativeOverlap: try r.read(Float.self)))
            default:
                throw ByteReader.Truncated()
            }
            out = TrainingDataset(roidb: roidb, scales: scales, maxSize: maxSize, pixelMeans: means, targets: targets, masks: masks)
        }
        self = out!
    }
}

extension TrainSample: ByteCodable {
    func encode(to w: inout ByteWriter) {
        w.write(Int32(image.width)); w.write(Int32(image.height)); w.write(Int32(image.channels)); w.write(array: image.pixels)
        w.write(scale); w.write(seed)
        switch targets {
        case let .rpn(rpn):
            w.write(UInt8(0))
            w.write(UInt32(rpn.labels.count))
            for level in rpn.labels.keys.sorted() {
                w.write(Int32(level))
                w.write(array: rpn.labels[level]!); w.write(array: rpn.targets[level]!)
                w.write(array: rpn.inside[level]!); w.write(array: rpn.outside[level]!)
            }
        case let .retinaNet(t):
            w.write(UInt8(1))
            w.write(UInt32(t.labels.count))
            for level in t.labels.keys.sorted() {
                w.write(Int32(level))
                w.write(array: t.labels[level]!); w.write(array: t.foreground[level]!)
            }
            w.write(Int64(t.foregroundCount))
        }
        w.write(array: entry.boxes); w.write(array: entry.classes); w.write(array: entry.crowd.map { UInt8($0 ? 1 : 0) })
        w.write(entry.scale)
        w.write(UInt32(entry.polygons.count))
        for parts in entry.polygons {
            w.write(UInt32(parts.count))
            for p in parts { w.write(array: p) }
        }
    }

    init(from r: inout ByteReader) throws(ByteReader.Truncated) {
        let width = Int(try r.read(Int32.self)), height = Int(try r.read(Int32.self)), channels = Int(try r.read(Int32.self))
        let pixels = try r.readArray(of: Float.self)
        guard pixels.count == width * height * channels else { throw ByteReader.Truncated() }
        image = FloatImage(width: width, height: height, channels: channels, pixels: pixels)
        scale = try r.read(Float.self)
        seed = try r.read(UInt64.self)
        if try r.read(UInt8.self) == 0 {
            var rpn = RPNTargetMaker.Output()
            for _ in 0..<Int(try r.read(UInt32.self)) {
                let level = Int(try r.read(Int32.self))
                rpn.labels[level] = try r.readArray(of: Int32.self)
                rpn.targets[level] = try r.readArray(of: Float.self)
                rpn.inside[level] = try r.readArray(of: Float.self)
                rpn.outside[level] = try r.readArray(of: Float.self)
            }
            targets = .rpn(rpn)
        } else {
            var t = RetinaNetTargetMaker.Output()
            for _ in 0..<Int(try r.read(UInt32.self)) {
                let level = Int(try r.read(Int32.self))
                t.labels[level] = try r.readArray(of: Int32.self)
                t.foreground[level] = try r.readArray(of: Float.self)
            }
            t.foregroundCount = Int(try r.read(Int64.self))
            targets = .retinaNet(t)
        }
        entry = MinibatchRoidb.Entry(boxes: try r.readArray(of: Float.self), classes: try r.readArray(of: Int32.self),
                                     crowd: try r.readArray(of: UInt8.self).map { $0 != 0 }, scale: try r.read(Float.self))
        entry.polygons = try (0..<Int(try r.read(UInt32.self))).map { _ throws(ByteReader.Truncated) in
            try (0..<Int(try r.read(UInt32.self))).map { _ throws(ByteReader.Truncated) in try r.readArray(of: Double.self) }
        }
    }
}

/// The blobs of one training iteration.
struct Minibatch: Sendable {
    var blobs: [(String, Tensor)]
    var roidb: MinibatchRoidb
}

enum MinibatchCollate {
    /// Detectron's minibatch: `data` padded to a multiple of FPN.COARSEST_STRIDE (`stride`),
    /// `im_info` (N, 3) = [h, w, scale] (unpadded in training), the target blobs, and the roidb.
    static func collate(_ samples: [TrainSample], targets: TrainingTargets, stride: Int, context: any Context) throws -> Minibatch {
        var blobs: [(String, Tensor)] = []
        let data = try InputBlob.batch(samples.map(\.image), stride: stride, context: context)
        blobs.append(("data", data))
        var info: [Float] = []
        for s in samples {
            info += [(Float(s.image.height)), Float(s.image.width), s.scale]
        }
        blobs.append(("im_info", try Tensor(info, shape: [samples.count, 3], context: context)))
        switch targets {
        case let .rpn(maker):
            // The RPN's targets over the full fields, concatenated on axis 0 (the net narrows them).
            let outputs = samples.map { if case let .rpn(o) = $0.targets { return o } else { preconditionFailure("RPN batch with other targets") } }
            let a = maker.anchorsPerCell, n = samples.count
            for level in maker.levels {
                let f = maker.field[level]!
                let names = DerivedBlobs.rpnTargets(level)
                blobs.append((names[0], try Tensor(outputs.flatMap { $0.labels[level]! }, shape: [n, a, f, f], context: context)))
                blobs.append((names[1], try Tensor(outputs.flatMap { $0.targets[level]! }, shape: [n, 4 * a, f, f], context: context)))
                blobs.append((names[2], try Tensor(outputs.flatMap { $0.inside[level]! }, shape: [n, 4 * a, f, f], context: context)))
                blobs.append((names[3], try Tensor(outputs.flatMap { $0.outside[level]! }, shape: [n, 4 * a, f, f], context: context)))
            }
        case let .retinaNet(maker):
            let outputs = samples.map { if case let .retinaNet(o) = $0.targets { return o } else { preconditionFailure("RetinaNet batch with other targets") } }
            blobs += try maker.collate(outputs, height: data.dim(2), width: data.dim(3), context: context)
        }
        return Minibatch(blobs: blobs, roidb: MinibatchRoidb(entries: samples.map(\.entry), seed: samples.first?.seed ?? 0))
    }
}

/// Errors of the engine: data, configuration, numerical failure.
public enum EngineError: Error, Sendable, CustomStringConvertible {
    case data(String)
    /// A bad config value (the one error type for those, carried where the engine's typed throws need it).
    case config(ConfigError)
    /// A bad command-line value or call (not a config key).
    case usage(String)
    case diverged(iteration: Int, losses: String, lastSnapshot: String?)
    case io(String)
    /// A replica of a data-parallel run failed; the others stopped.
    case replica(Int, String)

    public var description: String {
        switch self {
        case let .data(m): return m
        case let .config(e): return e.description
        case let .usage(m): return m
        case let .diverged(it, losses, snap):
            return "training diverged at iteration \(it): the total loss is NaN or infinite (\(losses)); "
                + (snap.map { "the last good snapshot \($0) is intact; " } ?? "")
                + "lower SOLVER.BASE_LR or lengthen SOLVER.WARM_UP_ITERS"
        case let .io(m): return m
        case let .replica(r, m): return "replica \(r) failed: \(m)"
        }
    }
}

func pixelMeans(_ cfg: Config) -> [Float] { pixelTriple(cfg, "PIXEL_MEANS") ?? [102.9801, 115.9465, 122.7717] }

func pixelStds(_ cfg: Config) -> [Float] { pixelTriple(cfg, "PIXEL_STDS") ?? [1, 1, 1] }

/// The three numbers of a `[[[a, b, c]]]` config key (Detectron's PIXEL_MEANS shape).
private func pixelTriple(_ cfg: Config, _ key: String) -> [Float]? {
    guard case let .list(a, _)? = cfg.value(key), case let .list(b, _)? = a.first, case let .list(c, _)? = b.first else { return nil }
    return c.map { if case let .float(v) = $0 { return Float(v) } else if case let .int(v) = $0 { return Float(v) } else { return 0 } }
}

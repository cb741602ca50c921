import DataLoading
import Foundation
import Operators
import Storage

/// Detectron's RPN training targets (`roi_data/rpn.py`), computed per image in the loader.
struct RPNTargetMaker: Sendable {
    let levels: ClosedRange<Int>
    let anchorsPerCell: Int
    /// F_L: the square grid side per level.
    let field: [Int: Int]
    /// Every anchor of every level, level-major then (y, x, a): x1, y1, x2, y2.
    let anchors: [Float]
    let positiveOverlap: Float
    let negativeOverlap: Float
    let batchSize: Int
    let fgFraction: Double
    let straddle: Float

    /// What the maker was built from (process workers rebuild it from these).
    let cellAnchors: [Int: [Float]]
    let maxSize: Int

    init(cfg: Config, cellAnchors: [Int: [Float]], levels: ClosedRange<Int>) {
        self.init(cellAnchors: cellAnchors, levels: levels, maxSize: cfg.int("TRAIN.MAX_SIZE"),
                  positiveOverlap: Float(cfg.double("TRAIN.RPN_POSITIVE_OVERLAP")),
                  negativeOverlap: Float(cfg.double("TRAIN.RPN_NEGATIVE_OVERLAP")),
                  batchSize: cfg.int("TRAIN.RPN_BATCH_SIZE_PER_IM"), fgFraction: cfg.double("TRAIN.RPN_FG_FRACTION"),
                  straddle: Float(cfg.int("TRAIN.RPN_STRADDLE_THRESH")))
    }

    init(cellAnchors: [Int: [Float]], levels: ClosedRange<Int>, maxSize: Int, positiveOverlap: Float, negativeOverlap: Float,
         batchSize: Int, fgFraction: Double, straddle: Float) {
        self.levels = levels
        self.cellAnchors = cellAnchors
        self.maxSize = maxSize
        anchorsPerCell = cellAnchors[levels.lowerBound]!.count / 4
        let padded = Int((Double(maxSize) / 32).rounded(.up)) * 32
        var field: [Int: Int] = [:], all: [Float] = []
        for level in levels {
            let stride = 1 << level
            let f = Int((Double(padded) / Double(stride)).rounded(.up))
            field[level] = f
            let cell = cellAnchors[level]!
            all.reserveCapacity(all.count + f * f * anchorsPerCell * 4)
            for y in 0..<f {
                for x in 0..<f {
                    let sx = Float(x * stride), sy = Float(y * stride)
                    for a in 0..<anchorsPerCell {
                        all += [cell[4 * a] + sx, cell[4 * a + 1] + sy, cell[4 * a + 2] + sx, cell[4 * a + 3] + sy]
                    }
                }
            }
        }
        self.field = field
        self.anchors = all
        self.positiveOverlap = positiveOverlap
        self.negativeOverlap = negativeOverlap
        self.batchSize = batchSize
        self.fgFraction = fgFraction
        self.straddle = straddle
    }

    /// The per-level blobs of one image: labels (A, F, F) and targets / inside / outside weights
    /// (4A, F, F), flat.
    struct Output: Sendable, Equatable {
        var labels: [Int: [Int32]] = [:]
        var targets: [Int: [Float]] = [:]
        var inside: [Int: [Float]] = [:]
        var outside: [Int: [Float]] = [:]
    }

    /// `gt`: the image's non-crowd gt boxes in input (scaled) space.
    func compute(gt: [Float], imageHeight: Int, imageWidth: Int, rng: inout SampleRNG) -> Output {
        let total = anchors.count / 4, g = gt.count / 4
        let imW = Float(imageWidth), imH = Float(imageHeight)
        var inside: [Int] = []
        for i in 0..<total {
            if anchors[4 * i] >= -straddle && anchors[4 * i + 1] >= -straddle && anchors[4 * i + 2] < imW + straddle && anchors[4 * i + 3] < imH + straddle {
                inside.append(i)
            }
        }
        var labels = [Int32](repeating: -1, count: inside.count)
        var argmax = [Int](repeating: 0, count: inside.count)
        var maxIoU = [Float](repeating: 0, count: inside.count)
        if g > 0 {
            var overlaps = [Float](repeating: 0, count: inside.count * g)
            var gtBest = [Float](repeating: 0, count: g)
            for (k, i) in inside.enumerated() {
                let a = (anchors[4 * i], anchors[4 * i + 1], anchors[4 * i + 2], anchors[4 * i + 3])
                for j in 0..<g {
                    let v = Boxes.iou(a, (gt[4 * j], gt[4 * j + 1], gt[4 * j + 2], gt[4 * j + 3]))
                    overlaps[k * g + j] = v
                    if j == 0 || v > maxIoU[k] {  // numpy argmax: the first maximum
                        maxIoU[k] = v
                        argmax[k] = j
                    }
                    gtBest[j] = max(gtBest[j], v)
                }
            }
            // Every anchor that is some gt's best match (ties count), and every anchor ≥ 0.7.
            for k in 0..<inside.count {
                for j in 0..<g where overlaps[k * g + j] == gtBest[j] {
                    labels[k] = 1
                    break
                }
                if maxIoU[k] >= positiveOverlap { labels[k] = 1 }
            }
            let numFG = Int(fgFraction * Double(batchSize))
            var fg = labels.indices.filter { labels[$0] == 1 }
            if fg.count > numFG {
                // Disable a random surplus, without replacement.
                for i in stride(from: fg.count - 1, to: 0, by: -1) { fg.swapAt(i, Int(rng.next() % UInt64(i + 1))) }
                for k in fg[numFG...] { labels[k] = -1 }
            }
            let numBG = batchSize - labels.filter { $0 == 1 }.count
            let bg = maxIoU.indices.filter { maxIoU[$0] < negativeOverlap }
            if bg.count > numBG {
                // With replacement, as Detectron's randint: duplicates give fewer distinct negatives.
                for _ in 0..<max(0, numBG) { labels[bg[Int(rng.next() % UInt64(bg.count))]] = 0 }
            } else {
                for k in bg { labels[k] = 0 }
            }
        }
        let examples = Float(max(1, labels.filter { $0 >= 0 }.count))
        // Unmap onto every anchor, then split per level into (A, F, F) / (4A, F, F).
        var fullLabels = [Int32](repeating: -1, count: total)
        var fullTargets = [Float](repeating: 0, count: total * 4)
        var fullIn = [Float](repeating: 0, count: total * 4), fullOut = [Float](repeating: 0, count: total * 4)
        for (k, i) in inside.enumerated() {
            fullLabels[i] = labels[k]
            if labels[k] == 1 {
                let t = Boxes.encode(Array(anchors[4 * i..<4 * i + 4]), gt: Array(gt[4 * argmax[k]..<4 * argmax[k] + 4]))
                for c in 0..<4 {
                    fullTargets[4 * i + c] = t[c]
                    fullIn[4 * i + c] = 1
                }
            }
            if labels[k] >= 0 { for c in 0..<4 { fullOut[4 * i + c] = 1 / examples } }
        }
        var out = Output()
        var offset = 0
        let A = anchorsPerCell
        for level in levels {
            let f = field[level]!, cells = f * f
            var lab = [Int32](repeating: -1, count: A * cells)
            var tg = [Float](repeating: 0, count: 4 * A * cells), iw = tg, ow = tg
            for cell in 0..<cells {
                for a in 0..<A {
                    let src = offset + cell * A + a
                    lab[a * cells + cell] = fullLabels[src]
                    for c in 0..<4 {
                        tg[(4 * a + c) * cells + cell] = fullTargets[4 * src + c]
                        iw[(4 * a + c) * cells + cell] = fullIn[4 * src + c]
                        ow[(4 * a + c) * cells + cell] = fullOut[4 * src + c]
                    }
                }
            }
            out.labels[level] = lab
            out.targets[level] = tg
            out.inside[level] = iw
            out.outside[level] = ow
            offset += cells * A
        }
        return out
    }
}

/// The ground truth of the images of one minibatch, as the `roidb` blob carries it to the
/// Fast R-CNN sampling op, with the seed of that op's random choices.
public struct MinibatchRoidb: Sendable {
    public struct Entry: Sendable {
        /// Boxes in original image space, the +1 convention, flat (x1, y1, x2, y2).
        public var boxes: [Float]
        public var classes: [Int32]
        public var crowd: [Bool]
        public var scale: Float
        /// Mask R-CNN: each box's polygons in original image space ([] for crowd regions, and
        /// for every box when the model has no masks).
        public var polygons: [[[Double]]] = []
    }
    public var entries: [Entry]
    public var seed: UInt64
}

/// `CollectAndSampleFastRcnnRois`: Detectron's training-time collect (top RPN_POST_NMS_TOP_N over
/// the whole minibatch) and Fast R-CNN sampling (`roi_data/fast_rcnn.py`), then distribution of
/// the sampled RoIs to FPN levels.
final class CollectAndSampleOp: Operator, Sendable {
    let io: OpIO
    let topN: Int
    let minLevel: Int
    let maxLevel: Int
    let numClasses: Int
    let batchPerImage: Int
    let fgFraction: Double
    let fgThresh: Float
    let bgHi: Float
    let bgLo: Float
    let bboxThresh: Float
    let weights: (Float, Float, Float, Float)
    /// Mask R-CNN: the targets' side M (`mask_resolution`) and whether they are per class.
    let maskResolution: Int?
    let classSpecificMask: Bool

    init(_ io: OpIO) throws(OperatorError) {
        self.io = io
        topN = try io.int("rpn_post_nms_topN")
        minLevel = try io.int("roi_min_level")
        maxLevel = try io.int("roi_max_level")
        numClasses = try io.int("num_classes")
        batchPerImage = try io.int("batch_size_per_im")
        fgFraction = try io.float("fg_fraction")
        fgThresh = Float(try io.float("fg_thresh"))
        bgHi = Float(try io.float("bg_thresh_hi"))
        bgLo = Float(try io.float("bg_thresh_lo"))
        bboxThresh = Float(try io.float("bbox_thresh"))
        let w = try io.floats("bbox_reg_weights")
        try io.argument("bbox_reg_weights", w.count == 4, "must hold 4 values, got \(w.count)")
        weights = (Float(w[0]), Float(w[1]), Float(w[2]), Float(w[3]))
        maskResolution = io.has("mask_resolution") ? try io.int("mask_resolution") : nil
        classSpecificMask = try io.bool("cls_specific_mask", true)
        if let m = maskResolution { try io.argument("mask_resolution", m > 0, "must be positive") }
    }

    func run(_ ctx: ExecutionContext) throws {
        let levels = (io.inputCount - 1) / 2
        var rois: [Float] = [], probs: [Float] = []
        for l in 0..<levels {
            rois += try io.inputData(l).1
            probs += try io.inputData(levels + l).1
        }
        let roidb = try io.inputBlobs[io.inputCount - 1].get(MinibatchRoidb.self)
        let order = Boxes.descendingOrder(probs).prefix(topN)
        var rng = SampleRNG(seed: roidb.seed)
        var outRois: [Float] = [], outLabels: [Int32] = [], outTargets: [Float] = [], outIn: [Float] = [], outOut: [Float] = []
        var masks = MaskTargets()
        let K = numClasses
        for (imageIndex, entry) in roidb.entries.enumerated() {
            // Candidates: the gt boxes, then this image's proposals in original space.
            var boxes = entry.boxes
            for o in order where Int(rois[5 * o]) == imageIndex {
                for c in 1...4 { boxes.append(rois[5 * o + c] / entry.scale) }
            }
            let n = boxes.count / 4, g = entry.classes.count
            var maxOverlap = [Float](repeating: 0, count: n), maxClass = [Int32](repeating: 0, count: n)
            for j in 0..<g {
                maxOverlap[j] = entry.crowd[j] ? -1 : 1
                maxClass[j] = entry.crowd[j] ? 0 : entry.classes[j]
            }
            for i in g..<n {
                var best: Float = 0, arg = -1
                for j in 0..<g where entry.classes[j] > 0 {
                    let v = iou(boxes, i, boxes, j)
                    if arg < 0 || v > best {
                        best = v
                        arg = j
                    }
                }
                if arg >= 0 && best > 0 {
                    maxOverlap[i] = best
                    maxClass[i] = entry.classes[arg]
                }
            }
            // Regression targets for candidates with overlap ≥ BBOX_THRESH, against the best non-crowd gt.
            let gtIdx = (0..<g).filter { entry.classes[$0] > 0 && !entry.crowd[$0] }
            var targetClass = [Int32](repeating: 0, count: n)
            var targets = [Float](repeating: 0, count: 4 * n)
            if !gtIdx.isEmpty {
                for i in 0..<n where maxOverlap[i] >= bboxThresh {
                    var best: Float = -1, arg = gtIdx[0]
                    for j in gtIdx {
                        let v = iou(boxes, i, boxes, j)
                        if v > best { best = v; arg = j }
                    }
                    targetClass[i] = maxClass[i]
                    let t = Boxes.encode(Array(boxes[4 * i..<4 * i + 4]), gt: Array(boxes[4 * arg..<4 * arg + 4]), weights: weights)
                    for c in 0..<4 { targets[4 * i + c] = t[c] }
                }
            }
            // Sample foreground then background, without replacement.
            let quota = Int((fgFraction * Double(batchPerImage)).rounded(.toNearestOrEven))
            var fg = (0..<n).filter { maxOverlap[$0] >= fgThresh }
            shuffle(&fg, &rng)
            fg = Array(fg.prefix(min(quota, fg.count)))
            var bg = (0..<n).filter { maxOverlap[$0] < bgHi && maxOverlap[$0] >= bgLo }
            shuffle(&bg, &rng)
            bg = Array(bg.prefix(min(batchPerImage - fg.count, bg.count)))
            if let m = maskResolution {
                try masks.add(image: imageIndex, entry: entry, candidates: boxes, fg: fg, fgLabels: fg.map { maxClass[$0] }, bg: bg,
                              resolution: m, classes: classSpecificMask ? K : nil)
            }
            for (k, i) in (fg + bg).enumerated() {
                let isFG = k < fg.count
                outRois += [Float(imageIndex)] + boxes[4 * i..<4 * i + 4].map { $0 * entry.scale }
                let label = isFG ? maxClass[i] : 0
                outLabels.append(label)
                var row = [Float](repeating: 0, count: 4 * K), inside = row
                let c = Int(targetClass[i])
                if c > 0 {
                    for d in 0..<4 {
                        row[4 * c + d] = targets[4 * i + d]
                        inside[4 * c + d] = 1
                    }
                }
                outTargets += row
                outIn += inside
                outOut += inside
            }
        }
        let r = outLabels.count
        try write(0, outRois, [r, 5])
        try writeInt32(1, outLabels, [r])
        try write(2, outTargets, [r, 4 * K])
        try write(3, outIn, [r, 4 * K])
        try write(4, outOut, [r, 4 * K])
        // Distribute to levels, as at test time.
        let (perLevel, restore) = Boxes.distribute(outRois, minLevel: minLevel, maxLevel: maxLevel)
        for (k, rows) in perLevel.enumerated() { try write(5 + k, rows, [rows.count / 5, 5]) }
        let roiLevelCount = maxLevel - minLevel + 1
        try writeInt32(5 + roiLevelCount, restore, [r])
        guard maskResolution != nil else { return }
        // mask_rois, roi_has_mask_int32, masks_int32, mask_rois_fpnL…, mask_rois_idx_restore_int32.
        let base = 6 + roiLevelCount, n = masks.rois.count / 5
        try write(base, masks.rois, [n, 5])
        try writeInt32(base + 1, masks.hasMask, [r])
        try writeInt32(base + 2, masks.targets, [n, n == 0 ? 0 : masks.targets.count / n])
        let (maskLevels, maskRestore) = Boxes.distribute(masks.rois, minLevel: minLevel, maxLevel: maxLevel)
        for (k, rows) in maskLevels.enumerated() { try write(base + 3 + k, rows, [rows.count / 5, 5]) }
        try writeInt32(base + 3 + roiLevelCount, maskRestore, [n])
    }

    private func writeInt32(_ i: Int, _ values: [Int32], _ shape: [Int]) throws(OpRunError) {
        let t = try io.output(i, shape: shape, dtype: .int32)
        _ = try io.check(i, isInput: false) { () throws(StorageError) in try t.mutableData(as: Int32.self) }.update(fromContentsOf: values)
    }

    private func write(_ i: Int, _ values: [Float], _ shape: [Int]) throws(OpRunError) {
        let (_, d) = try io.outputData(i, shape: shape)
        _ = d.update(fromContentsOf: values)
    }

    private func iou(_ a: [Float], _ i: Int, _ b: [Float], _ j: Int) -> Float {
        Boxes.iou((a[4 * i], a[4 * i + 1], a[4 * i + 2], a[4 * i + 3]), (b[4 * j], b[4 * j + 1], b[4 * j + 2], b[4 * j + 3]))
    }

    private func shuffle(_ v: inout [Int], _ rng: inout SampleRNG) {
        if v.count > 1 { for i in stride(from: v.count - 1, to: 0, by: -1) { v.swapAt(i, Int(rng.next() % UInt64(i + 1))) } }
    }
}

extension OperatorRegistry {
    /// The standard ops plus the engine's training op (its settings are arguments of the op,
    /// written by the model builder from the config: they show in `print(net)`).
    public static var engine: OperatorRegistry {
        var r = OperatorRegistry.standard
        r.register("CollectAndSampleFastRcnnRois", OperatorSchema(inputs: 3...Int.max, outputs: 7...Int.max) { io throws(OperatorError) in
            try CollectAndSampleOp(io)
        })
        return r
    }
}

import Operators
import Storage

/// Detectron's RetinaNet training targets (`roi_data/retinanet.py`), computed per image in the
/// loader: every anchor of every level (no straddle filter) labelled against the ground truth.
struct RetinaNetTargetMaker: Sendable {
    let levels: ClosedRange<Int>
    /// Per level, the A cell anchors, anchor a = octave · |ASPECT_RATIOS| + aspect.
    let cellAnchors: [Int: [Float]]
    let anchorsPerCell: Int
    /// The square field's side per level: ceil(TRAIN.MAX_SIZE padded to FPN.COARSEST_STRIDE / stride).
    let field: [Int: Int]
    /// Every anchor, in Detectron's order: level, anchor a, then row-major (y, x).
    let anchors: [Float]
    let positiveOverlap: Float
    let negativeOverlap: Float
    /// What the maker was built from (process workers rebuild it from these).
    let maxSize: Int
    let coarsestStride: Int

    init(cfg: Config, cellAnchors: [Int: [Float]], levels: ClosedRange<Int>) {
        self.init(cellAnchors: cellAnchors, levels: levels, maxSize: cfg.int("TRAIN.MAX_SIZE"), coarsestStride: cfg.int("FPN.COARSEST_STRIDE"),
                  positiveOverlap: Float(cfg.double("RETINANET.POSITIVE_OVERLAP")), negativeOverlap: Float(cfg.double("RETINANET.NEGATIVE_OVERLAP")))
    }

    init(cellAnchors: [Int: [Float]], levels: ClosedRange<Int>, maxSize: Int, coarsestStride: Int, positiveOverlap: Float, negativeOverlap: Float) {
        self.levels = levels
        self.cellAnchors = cellAnchors
        self.maxSize = maxSize
        self.coarsestStride = coarsestStride
        self.positiveOverlap = positiveOverlap
        self.negativeOverlap = negativeOverlap
        anchorsPerCell = cellAnchors[levels.lowerBound]!.count / 4
        let padded = Double(coarsestStride) * (Double(maxSize) / Double(coarsestStride)).rounded(.up)
        var field: [Int: Int] = [:], all: [Float] = []
        for level in levels {
            let stride = 1 << level
            let f = Int((padded / Double(stride)).rounded(.up))
            field[level] = f
            let cell = cellAnchors[level]!
            for a in 0..<anchorsPerCell {
                for y in 0..<f {
                    for x in 0..<f {
                        let sx = Float(x * stride), sy = Float(y * stride)
                        all += [cell[4 * a] + sx, cell[4 * a + 1] + sy, cell[4 * a + 2] + sx, cell[4 * a + 3] + sy]
                    }
                }
            }
        }
        self.field = field
        self.anchors = all
    }

    /// One image's targets over the full fields.
    struct Output: Sendable, Equatable {
        /// Per level: labels (A, F, F): −1 ignored, 0 background, 1…K the class.
        var labels: [Int: [Int32]] = [:]
        /// Per level: one row per anchor labelled foreground — a, y, x, then its 4 box targets.
        var foreground: [Int: [Float]] = [:]
        /// Detectron's num_fg: the anchors labelled foreground before the background override
        /// (so it can count best matches that end up background).
        var foregroundCount = 0
    }

    /// `gt` the image's non-crowd boxes in input (scaled) space, `classes` their contiguous classes.
    /// An image without boxes has every anchor background (Detectron asserts instead).
    func compute(gt: [Float], classes: [Int32]) -> Output {
        let total = anchors.count / 4, g = gt.count / 4
        var labels = [Int32](repeating: g > 0 ? -1 : 0, count: total)
        var argmax = [Int](repeating: 0, count: total)
        var maxIoU = [Float](repeating: 0, count: total)
        var foregroundCount = 0
        if g > 0 {
            var overlaps = [Float](repeating: 0, count: total * g)
            var gtBest = [Float](repeating: 0, count: g)
            for i in 0..<total {
                let a = (anchors[4 * i], anchors[4 * i + 1], anchors[4 * i + 2], anchors[4 * i + 3])
                for j in 0..<g {
                    let v = Boxes.iou(a, (gt[4 * j], gt[4 * j + 1], gt[4 * j + 2], gt[4 * j + 3]))
                    overlaps[i * g + j] = v
                    if j == 0 || v > maxIoU[i] {  // numpy argmax: the first maximum
                        maxIoU[i] = v
                        argmax[i] = j
                    }
                    gtBest[j] = max(gtBest[j], v)
                }
            }
            for i in 0..<total {
                // Some gt's best anchor (ties count) takes the class of its own best gt; then ≥ POSITIVE_OVERLAP.
                if (0..<g).contains(where: { overlaps[i * g + $0] == gtBest[$0] }) || maxIoU[i] >= positiveOverlap {
                    labels[i] = classes[argmax[i]]
                }
            }
            foregroundCount = labels.reduce(0) { $0 + ($1 >= 1 ? 1 : 0) }
            for i in 0..<total where maxIoU[i] < negativeOverlap { labels[i] = 0 }
        }
        var out = Output(foregroundCount: foregroundCount)
        var offset = 0
        for level in levels {
            let cells = field[level]! * field[level]!, f = field[level]!
            out.labels[level] = Array(labels[offset..<offset + anchorsPerCell * cells])
            var rows: [Float] = []
            for a in 0..<anchorsPerCell {
                for cell in 0..<cells where labels[offset + a * cells + cell] > 0 {
                    let i = offset + a * cells + cell
                    let t = Boxes.encode(Array(anchors[4 * i..<4 * i + 4]), gt: Array(gt[4 * argmax[i]..<4 * argmax[i] + 4]))
                    rows += [Float(a), Float(cell / f), Float(cell % f)] + t
                }
            }
            out.foreground[level] = rows
            offset += anchorsPerCell * cells
        }
        return out
    }

    /// The batch's target blobs for a padded input of `height` × `width`: per level the labels
    /// cropped to the level's map (N, A, height/s, width/s), the foreground box targets (M, 4) and
    /// their locations [image, 4a, y, x] (M, 4) — foreground inside the map only (Detectron reads
    /// past the map for the rare ones outside) — and `retnet_fg_num` = Σ (num_fg + 1).
    func collate(_ outputs: [Output], height: Int, width: Int, context: any Context) throws -> [(String, Tensor)] {
        var blobs: [(String, Tensor)] = []
        let a = anchorsPerCell, n = outputs.count
        for level in levels {
            let f = field[level]!, s = 1 << level
            let h = min(f, height / s), w = min(f, width / s)
            var labels: [Int32] = []
            labels.reserveCapacity(n * a * h * w)
            var targets: [Float] = [], locations: [Float] = []
            for (img, o) in outputs.enumerated() {
                let full = o.labels[level]!
                for anchor in 0..<a {
                    for y in 0..<h { labels += full[(anchor * f + y) * f..<(anchor * f + y) * f + w] }
                }
                let rows = o.foreground[level]!
                for r in stride(from: 0, to: rows.count, by: 7) where Int(rows[r + 1]) < h && Int(rows[r + 2]) < w {
                    targets += rows[r + 3..<r + 7]
                    locations += [Float(img), 4 * rows[r], rows[r + 1], rows[r + 2]]
                }
            }
            let names = DerivedBlobs.retinaNetTargets(level)
            blobs.append((names[0], try Tensor(labels, shape: [n, a, h, w], context: context)))
            blobs.append((names[1], try Tensor(targets, shape: [targets.count / 4, 4], context: context)))
            blobs.append((names[2], try Tensor(locations, shape: [locations.count / 4, 4], context: context)))
        }
        let fg = outputs.reduce(0) { $0 + $1.foregroundCount + 1 }
        blobs.append((DerivedBlobs.retinaNetForegroundCount, try Tensor([Float(fg)], shape: [1], context: context)))
        return blobs
    }
}

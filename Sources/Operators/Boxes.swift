import Foundation

/// Detectron's box arithmetic (`utils/boxes.py`, `generate_anchors.py`, `cython_nms`), with its
/// +1 convention: a box (x1, y1, x2, y2) is x2 − x1 + 1 pixels wide. Boxes are flat
/// `[x1, y1, x2, y2, …]` float32 arrays.
public enum Boxes {
    /// ln(1000/16): the upper bound of decoded dw and dh.
    public static let transformClip = Float(log(1000.0 / 16.0))

    /// Widths × heights, the +1 way.
    public static func area(_ b: UnsafeBufferPointer<Float>, _ i: Int) -> Float {
        (b[4 * i + 2] - b[4 * i] + 1) * (b[4 * i + 3] - b[4 * i + 1] + 1)
    }

    /// IoU of two boxes, the +1 way (0 unless the overlap is positive on both axes).
    public static func iou(_ a: (Float, Float, Float, Float), _ b: (Float, Float, Float, Float)) -> Float {
        let iw = min(a.2, b.2) - max(a.0, b.0) + 1
        let ih = min(a.3, b.3) - max(a.1, b.1) + 1
        guard iw > 0 && ih > 0 else { return 0 }
        let inter = iw * ih
        let ua = (a.2 - a.0 + 1) * (a.3 - a.1 + 1) + (b.2 - b.0 + 1) * (b.3 - b.1 + 1) - inter
        return inter / ua
    }

    /// Applies deltas (dx, dy, dw, dh)/weights to reference boxes (`bbox_transform`): dw and dh
    /// are clipped above at `clip`; x2 = cx + w/2 − 1.
    public static func decode(_ boxes: [Float], deltas: [Float], weights: (Float, Float, Float, Float) = (1, 1, 1, 1),
                              clip: Float = transformClip) -> [Float] {
        precondition(boxes.count == deltas.count && boxes.count % 4 == 0)
        var out = [Float](repeating: 0, count: boxes.count)
        for i in 0..<(boxes.count / 4) {
            let w = boxes[4 * i + 2] - boxes[4 * i] + 1, h = boxes[4 * i + 3] - boxes[4 * i + 1] + 1
            let cx = boxes[4 * i] + 0.5 * w, cy = boxes[4 * i + 1] + 0.5 * h
            let dx = deltas[4 * i] / weights.0, dy = deltas[4 * i + 1] / weights.1
            let dw = min(deltas[4 * i + 2] / weights.2, clip), dh = min(deltas[4 * i + 3] / weights.3, clip)
            let pcx = dx * w + cx, pcy = dy * h + cy, pw = exp(dw) * w, ph = exp(dh) * h
            out[4 * i] = pcx - 0.5 * pw
            out[4 * i + 1] = pcy - 0.5 * ph
            out[4 * i + 2] = pcx + 0.5 * pw - 1
            out[4 * i + 3] = pcy + 0.5 * ph - 1
        }
        return out
    }

    /// The regression targets that turn `boxes` into `gt` (`bbox_transform_inv`).
    public static func encode(_ boxes: [Float], gt: [Float], weights: (Float, Float, Float, Float) = (1, 1, 1, 1)) -> [Float] {
        precondition(boxes.count == gt.count && boxes.count % 4 == 0)
        var out = [Float](repeating: 0, count: boxes.count)
        for i in 0..<(boxes.count / 4) {
            let w = boxes[4 * i + 2] - boxes[4 * i] + 1, h = boxes[4 * i + 3] - boxes[4 * i + 1] + 1
            let cx = boxes[4 * i] + 0.5 * w, cy = boxes[4 * i + 1] + 0.5 * h
            let gw = gt[4 * i + 2] - gt[4 * i] + 1, gh = gt[4 * i + 3] - gt[4 * i + 1] + 1
            let gcx = gt[4 * i] + 0.5 * gw, gcy = gt[4 * i + 1] + 0.5 * gh
            out[4 * i] = weights.0 * (gcx - cx) / w
            out[4 * i + 1] = weights.1 * (gcy - cy) / h
            out[4 * i + 2] = weights.2 * log(gw / w)
            out[4 * i + 3] = weights.3 * log(gh / h)
        }
        return out
    }

    /// Clips every box into [0, width − 1] × [0, height − 1].
    public static func clip(_ boxes: inout [Float], height: Float, width: Float) {
        for i in 0..<(boxes.count / 4) {
            boxes[4 * i] = min(max(boxes[4 * i], 0), width - 1)
            boxes[4 * i + 1] = min(max(boxes[4 * i + 1], 0), height - 1)
            boxes[4 * i + 2] = min(max(boxes[4 * i + 2], 0), width - 1)
            boxes[4 * i + 3] = min(max(boxes[4 * i + 3], 0), height - 1)
        }
    }

    /// Indices sorted by descending score, as numpy's `argsort(-scores)` orders them (the
    /// proposal op and collect): equal scores keep index order, lower index first.
    public static func descendingOrder(_ scores: [Float]) -> [Int] {
        scores.indices.sorted { scores[$0] != scores[$1] ? scores[$0] > scores[$1] : $0 < $1 }
    }

    /// Indices sorted as numpy's `argsort(scores)[::-1]` orders them (NMS): descending score,
    /// equal scores higher index first. (numpy sorts small arrays stably; for large ones its
    /// order of ties is unspecified, so this is the deterministic reading of it.)
    public static func reversedAscendingOrder(_ scores: [Float]) -> [Int] {
        scores.indices.sorted { scores[$0] != scores[$1] ? scores[$0] > scores[$1] : $0 > $1 }
    }

    /// Greedy NMS (`cython_nms.nms`): candidates by descending score, a candidate is suppressed
    /// when its IoU with a kept box is ≥ `threshold`; returns the kept indices in **ascending index
    /// order**, as Detectron does.
    public static func nms(_ boxes: [Float], scores: [Float], threshold: Float) -> [Int] {
        let n = scores.count
        precondition(boxes.count == 4 * n)
        var suppressed = [Bool](repeating: false, count: n)
        for i in reversedAscendingOrder(scores) where !suppressed[i] {
            let a = (boxes[4 * i], boxes[4 * i + 1], boxes[4 * i + 2], boxes[4 * i + 3])
            for j in 0..<n where j != i && !suppressed[j] {
                // Only lower-ranked candidates can be suppressed by i.
                if scores[j] > scores[i] || (scores[j] == scores[i] && j > i) { continue }
                if iou(a, (boxes[4 * j], boxes[4 * j + 1], boxes[4 * j + 2], boxes[4 * j + 3])) >= threshold { suppressed[j] = true }
            }
        }
        return (0..<n).filter { !suppressed[$0] }
    }

    /// The cell anchors of one FPN level (`generate_anchors`): base box (0, 0, stride−1, stride−1),
    /// for each aspect ratio r = h/w: w = round(√(stride²/r)), h = round(w·r) (round half to even),
    /// scaled by size/stride, same centre. Order: ratios, then sizes.
    public static func cellAnchors(stride: Int, sizes: [Double], aspectRatios: [Double]) -> [Float] {
        let base = Double(stride)
        let ctr = (base - 1) / 2
        var out: [Float] = []
        for r in aspectRatios {
            let ws = (base * base / r).squareRoot().rounded(.toNearestOrEven)
            let hs = (ws * r).rounded(.toNearestOrEven)
            for size in sizes {
                let scale = size / base
                let w = ws * scale, h = hs * scale
                out += [Float(ctr - 0.5 * (w - 1)), Float(ctr - 0.5 * (h - 1)), Float(ctr + 0.5 * (w - 1)), Float(ctr + 0.5 * (h - 1))]
            }
        }
        return out
    }

    /// The FPN level of each box (FPN eq. 1 with Detectron's constants): ⌊4 + log₂(√area/224 + 1e−6)⌋
    /// clipped to [minLevel, maxLevel], area the +1 way.
    public static func fpnLevels(_ boxes: [Float], minLevel: Int = 2, maxLevel: Int = 5,
                                 canonicalScale: Double = 224, canonicalLevel: Int = 4) -> [Int] {
        (0..<(boxes.count / 4)).map { i in
            let w = Double(boxes[4 * i + 2] - boxes[4 * i] + 1), h = Double(boxes[4 * i + 3] - boxes[4 * i + 1] + 1)
            let s = (w * h).squareRoot()
            let lvl = Int((Double(canonicalLevel) + log2(s / canonicalScale + 1e-6)).rounded(.down))
            return min(max(lvl, minLevel), maxLevel)
        }
    }

    /// Distributes rois (R, 5) = [batch, x1, y1, x2, y2] to FPN levels (``fpnLevels(_:minLevel:maxLevel:canonicalScale:canonicalLevel:)``),
    /// keeping their relative order; `restore[i]` is where roi i sits in the concatenation of the
    /// levels (Detectron's `rois_idx_restore_int32`).
    public static func distribute(_ rois: [Float], minLevel: Int, maxLevel: Int, canonicalScale: Double = 224,
                                  canonicalLevel: Int = 4) -> (levels: [[Float]], restore: [Int32]) {
        let r = rois.count / 5
        let lvl = fpnLevels((0..<r).flatMap { Array(rois[5 * $0 + 1..<5 * $0 + 5]) }, minLevel: minLevel, maxLevel: maxLevel,
                            canonicalScale: canonicalScale, canonicalLevel: canonicalLevel)
        var levels: [[Float]] = [], concatenated: [Int] = []
        for level in minLevel...maxLevel {
            let idx = lvl.indices.filter { lvl[$0] == level }
            concatenated += idx
            levels.append(idx.flatMap { Array(rois[5 * $0..<5 * $0 + 5]) })
        }
        var restore = [Int32](repeating: 0, count: r)
        for (position, original) in concatenated.enumerated() { restore[original] = Int32(position) }
        return (levels, restore)
    }

    /// Detectron's `box_results_with_nms_and_limit` for one image. `scores` is (R, K) and `boxes`
    /// (R, 4K), row-major. For each class j ≥ 1: rows with score > `threshold` (strict), NMS at
    /// `nms` (kept in ascending row order); then, if more than `limit` remain, each class keeps
    /// the scores ≥ the limit-th largest (ties may exceed the cap). Returns (class, score, box)
    /// grouped by class in class order.
    public static func nmsAndLimit(scores: [Float], boxes: [Float], rows: Int, classes k: Int, threshold: Float, nms: Float,
                                   limit: Int) -> [(classIndex: Int, score: Float, box: [Float])] {
        var perClass: [[(Int, Float, [Float])]] = []
        for j in 1..<max(k, 1) {
            let keepRows = (0..<rows).filter { scores[$0 * k + j] > threshold }
            let s = keepRows.map { scores[$0 * k + j] }
            let b = keepRows.flatMap { Array(boxes[($0 * k + j) * 4..<($0 * k + j) * 4 + 4]) }
            perClass.append(self.nms(b, scores: s, threshold: nms).map { (j, s[$0], Array(b[4 * $0..<4 * $0 + 4])) })
        }
        let all = perClass.flatMap { $0 }
        if limit > 0 && all.count > limit {
            let cut = all.map(\.1).sorted(by: >)[limit - 1]
            return perClass.flatMap { $0.filter { $0.1 >= cut } }.map { (classIndex: $0.0, score: $0.1, box: $0.2) }
        }
        return all.map { (classIndex: $0.0, score: $0.1, box: $0.2) }
    }
}

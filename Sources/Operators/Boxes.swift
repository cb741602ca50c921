import Foundation

/// How box arithmetic counts pixels: Detectron's +1 convention (a box (x1, y1, x2, y2) is
/// x2 − x1 + 1 pixels wide, boxes are clipped to width − 1, NMS suppresses at IoU ≥ threshold) or
/// torchvision's (x2 − x1 wide, clipped to width, NMS suppresses at IoU > threshold) — Caffe2's
/// `legacy_plus_one` argument.
public struct BoxConvention: Sendable, Equatable {
    /// Added to x2 − x1 for a width (1 or 0).
    public var offset: Float
    /// Whether NMS suppresses a box whose IoU equals the threshold.
    public var suppressAtThreshold: Bool

    public static let detectron = BoxConvention(offset: 1, suppressAtThreshold: true)
    public static let torchvision = BoxConvention(offset: 0, suppressAtThreshold: false)

    /// `.detectron` for `legacy_plus_one` 1, `.torchvision` for 0.
    public init(legacyPlusOne: Bool) { self = legacyPlusOne ? .detectron : .torchvision }

    public init(offset: Float, suppressAtThreshold: Bool) {
        self.offset = offset
        self.suppressAtThreshold = suppressAtThreshold
    }
}

/// Detectron's box arithmetic (`utils/boxes.py`, `generate_anchors.py`, `cython_nms`), with its
/// +1 convention unless a ``BoxConvention`` says otherwise. Boxes are flat `[x1, y1, x2, y2, …]`
/// float32 arrays.
public enum Boxes {
    /// ln(1000/16): the upper bound of decoded dw and dh.
    public static let transformClip = Float(log(1000.0 / 16.0))

    /// Widths × heights (+1 each, the Detectron way, unless `convention` says otherwise).
    public static func area(_ b: UnsafeBufferPointer<Float>, _ i: Int, _ convention: BoxConvention = .detectron) -> Float {
        (b[4 * i + 2] - b[4 * i] + convention.offset) * (b[4 * i + 3] - b[4 * i + 1] + convention.offset)
    }

    /// IoU of two boxes (0 unless the overlap is positive on both axes).
    public static func iou(_ a: (Float, Float, Float, Float), _ b: (Float, Float, Float, Float),
                           _ convention: BoxConvention = .detectron) -> Float {
        let o = convention.offset
        let iw = min(a.2, b.2) - max(a.0, b.0) + o
        let ih = min(a.3, b.3) - max(a.1, b.1) + o
        guard iw > 0 && ih > 0 else { return 0 }
        let inter = iw * ih
        let ua = (a.2 - a.0 + o) * (a.3 - a.1 + o) + (b.2 - b.0 + o) * (b.3 - b.1 + o) - inter
        return inter / ua
    }

    /// Applies deltas (dx, dy, dw, dh)/weights to reference boxes (`bbox_transform`; torchvision's
    /// `BoxCoder.decode`): dw and dh are clipped above at `clip`; x2 = cx + w/2 − offset.
    public static func decode(_ boxes: [Float], deltas: [Float], weights: (Float, Float, Float, Float) = (1, 1, 1, 1),
                              clip: Float = transformClip, convention: BoxConvention = .detectron) -> [Float] {
        precondition(boxes.count == deltas.count && boxes.count % 4 == 0)
        let o = convention.offset
        var out = [Float](repeating: 0, count: boxes.count)
        for i in 0..<(boxes.count / 4) {
            let w = boxes[4 * i + 2] - boxes[4 * i] + o, h = boxes[4 * i + 3] - boxes[4 * i + 1] + o
            let cx = boxes[4 * i] + 0.5 * w, cy = boxes[4 * i + 1] + 0.5 * h
            let dx = deltas[4 * i] / weights.0, dy = deltas[4 * i + 1] / weights.1
            let dw = min(deltas[4 * i + 2] / weights.2, clip), dh = min(deltas[4 * i + 3] / weights.3, clip)
            let pcx = dx * w + cx, pcy = dy * h + cy, pw = exp(dw) * w, ph = exp(dh) * h
            out[4 * i] = pcx - 0.5 * pw
            out[4 * i + 1] = pcy - 0.5 * ph
            out[4 * i + 2] = pcx + 0.5 * pw - o
            out[4 * i + 3] = pcy + 0.5 * ph - o
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

    /// Clips every box into [0, width − offset] × [0, height − offset] (Detectron: width − 1;
    /// torchvision: width).
    public static func clip(_ boxes: inout [Float], height: Float, width: Float, convention: BoxConvention = .detectron) {
        let xMax = width - convention.offset, yMax = height - convention.offset
        for i in 0..<(boxes.count / 4) {
            boxes[4 * i] = min(max(boxes[4 * i], 0), xMax)
            boxes[4 * i + 1] = min(max(boxes[4 * i + 1], 0), yMax)
            boxes[4 * i + 2] = min(max(boxes[4 * i + 2], 0), xMax)
            boxes[4 * i + 3] = min(max(boxes[4 * i + 3], 0), yMax)
        }
    }

    /// Indices sorted by descending score, as numpy's `argsort(-scores)` orders them (the
    /// proposal op and collect): equal scores keep index order, lower index first.
    public static func descendingOrder(_ scores: [Float]) -> [Int] {
        scores.indices.sorted { scores[$0] != scores[$1] ? scores[$0] > scores[$1] : $0 < $1 }
    }

    /// The first `count` of ``descendingOrder(_:)`` without sorting the rest: the count-th
    /// largest score found by selection, then only the scores at or above it sorted.
    public static func topIndices(_ scores: [Float], count: Int) -> [Int] {
        guard count > 0 && count < scores.count else { return descendingOrder(scores) }
        var values = scores
        // Quickselect for the value of rank `count` − 1 (descending), with middle-of-three pivots.
        var lo = 0, hi = values.count - 1, k = count - 1
        while lo < hi {
            let mid = lo + (hi - lo) / 2
            let pivot = max(min(values[lo], values[mid]), min(max(values[lo], values[mid]), values[hi]))
            var i = lo, j = hi
            while i <= j {
                while values[i] > pivot { i += 1 }
                while values[j] < pivot { j -= 1 }
                if i <= j { values.swapAt(i, j); i += 1; j -= 1 }
            }
            if k <= j { hi = j } else if k >= i { lo = i } else { break }
        }
        let cut = values[k]
        let candidates = scores.indices.filter { scores[$0] >= cut }
        let sorted = candidates.sorted { scores[$0] != scores[$1] ? scores[$0] > scores[$1] : $0 < $1 }
        return Array(sorted.prefix(count))
    }

    /// Indices sorted as numpy's `argsort(scores)[::-1]` orders them (NMS): descending score,
    /// equal scores higher index first. (numpy sorts small arrays stably; for large ones its
    /// order of ties is unspecified, so this is the deterministic reading of it.)
    public static func reversedAscendingOrder(_ scores: [Float]) -> [Int] {
        scores.indices.sorted { scores[$0] != scores[$1] ? scores[$0] > scores[$1] : $0 > $1 }
    }

    /// Greedy NMS (`cython_nms.nms`): candidates by descending score, a candidate is suppressed
    /// when its IoU with a kept box is ≥ `threshold`; returns the kept indices in **ascending index
    /// order**, as Detectron does. With torchvision's convention (`torchvision.ops.nms`): IoU >
    /// threshold, equal scores ranked by index (a stable sort), kept indices by descending score.
    /// With `limit` > 0, only the first `limit` of that result (Caffe2's `nms_cpu` with `topN` on
    /// GenerateProposals' score-sorted candidates), found without visiting the candidates that
    /// cannot be among them.
    public static func nms(_ boxes: [Float], scores: [Float], threshold: Float, convention: BoxConvention = .detectron,
                           limit: Int = 0) -> [Int] {
        let n = scores.count
        precondition(boxes.count == 4 * n)
        let torchvision = convention == .torchvision
        let order = torchvision ? descendingOrder(scores) : reversedAscendingOrder(scores)
        // The candidates in processing order as columns, with their areas: the inner loop reads
        // them contiguously. The IoU is ``iou(_:_:_:)``'s arithmetic, term for term.
        let o = convention.offset
        var x1 = [Float](repeating: 0, count: n), y1 = x1, x2 = x1, y2 = x1, area = x1
        for (r, i) in order.enumerated() {
            (x1[r], y1[r], x2[r], y2[r]) = (boxes[4 * i], boxes[4 * i + 1], boxes[4 * i + 2], boxes[4 * i + 3])
            area[r] = (x2[r] - x1[r] + o) * (y2[r] - y1[r] + o)
        }
        var suppressed = [UInt8](repeating: 0, count: n)
        var kept: [Int] = []
        let atThreshold = convention.suppressAtThreshold
        // Stopping early is exact when the result's order is the processing order (torchvision),
        // or when scores do not increase with the index (Detectron's ascending-index result is
        // then by descending score; ties at the cut are still visited).
        let stopsEarly = limit > 0 && (torchvision || zip(scores, scores.dropFirst()).allSatisfy { $0 >= $1 })
        x1.withUnsafeBufferPointer { x1 in y1.withUnsafeBufferPointer { y1 in x2.withUnsafeBufferPointer { x2 in
        y2.withUnsafeBufferPointer { y2 in area.withUnsafeBufferPointer { area in suppressed.withUnsafeMutableBufferPointer { suppressed in
            for r in 0..<n where suppressed[r] == 0 {
                if stopsEarly && kept.count >= limit && (torchvision || scores[order[r]] < scores[kept[limit - 1]]) { break }
                kept.append(order[r])
                let (ax1, ay1, ax2, ay2, aa) = (x1[r], y1[r], x2[r], y2[r], area[r])
                // Every later candidate, suppressed or not (a branch-free loop the compiler vectorises).
                for q in (r + 1)..<n {
                    let iw = min(ax2, x2[q]) - max(ax1, x1[q]) + o
                    let ih = min(ay2, y2[q]) - max(ay1, y1[q]) + o
                    let inter = iw * ih
                    let v: Float = iw > 0 && ih > 0 ? inter / (aa + area[q] - inter) : 0
                    let drop = v > threshold || (atThreshold && v == threshold)
                    suppressed[q] |= drop ? 1 : 0
                }
            }
        } } } } } }
        let result = torchvision ? kept : kept.sorted()
        return limit > 0 ? Array(result.prefix(limit)) : result
    }

    /// torchvision's `batched_nms`: NMS within each group (class or level) only; returns the kept
    /// indices by descending score (stable). Like torchvision, with more than 1,000 boxes each
    /// group runs on its own; with fewer, all run at once on boxes offset by
    /// group × (largest coordinate + 1), whose float32 rounding can differ slightly — kept for parity.
    public static func batchedNMS(_ boxes: [Float], scores: [Float], groups: [Int], threshold: Float) -> [Int] {
        let n = scores.count
        precondition(boxes.count == 4 * n && groups.count == n)
        guard n > 0 else { return [] }
        var kept: [Int]
        if 4 * n > 4000 {
            kept = []
            var members: [Int: [Int]] = [:]
            for i in 0..<n { members[groups[i], default: []].append(i) }
            for (_, idx) in members {
                let b = idx.flatMap { Array(boxes[4 * $0..<4 * $0 + 4]) }
                kept += nms(b, scores: idx.map { scores[$0] }, threshold: threshold, convention: .torchvision).map { idx[$0] }
            }
        } else {
            let maxCoordinate = boxes.max()!
            var shifted = boxes
            for i in 0..<n {
                let o = Float(groups[i]) * (maxCoordinate + 1)
                for k in 0..<4 { shifted[4 * i + k] += o }
            }
            kept = nms(shifted, scores: scores, threshold: threshold, convention: .torchvision)
        }
        return kept.sorted { scores[$0] != scores[$1] ? scores[$0] > scores[$1] : $0 < $1 }
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

    /// torchvision's cell anchors of one FPN level (`AnchorGenerator.generate_anchors`), in float32:
    /// for each aspect ratio r = h/w, then each size: h = √r·size, w = size/√r, and the box
    /// (−w/2, −h/2, w/2, h/2) rounded half to even — centred on 0, with no +1.
    public static func torchvisionCellAnchors(sizes: [Double], aspectRatios: [Double]) -> [Float] {
        var out: [Float] = []
        for r in aspectRatios {
            let hRatio = Float(r).squareRoot(), wRatio = 1 / hRatio
            for size in sizes {
                let w = wRatio * Float(size), h = hRatio * Float(size)
                out += [-w / 2, -h / 2, w / 2, h / 2].map { $0.rounded(.toNearestOrEven) }
            }
        }
        return out
    }

    /// torchvision's anchors over a feature map (`AnchorGenerator.grid_anchors`): the cell anchors
    /// shifted by (x·strideW, y·strideH) for every location, ordered (y, x, anchor) as the RPN
    /// head's outputs are flattened.
    public static func anchorGrid(cell: [Float], height: Int, width: Int, strideH: Int, strideW: Int) -> [Float] {
        let a = cell.count / 4
        var out = [Float](repeating: 0, count: height * width * a * 4)
        for y in 0..<height {
            for x in 0..<width {
                let sx = Float(x * strideW), sy = Float(y * strideH)
                for k in 0..<a {
                    let o = ((y * width + x) * a + k) * 4
                    out[o] = sx + cell[4 * k]
                    out[o + 1] = sy + cell[4 * k + 1]
                    out[o + 2] = sx + cell[4 * k + 2]
                    out[o + 3] = sy + cell[4 * k + 3]
                }
            }
        }
        return out
    }

    /// The FPN level of each box (FPN eq. 1), clipped to [minLevel, maxLevel]. Detectron:
    /// ⌊4 + log₂(√area/224 + 1e−6)⌋ with the +1 area, in double. torchvision (`LevelMapper`):
    /// ⌊4 + log₂(√area/224) + 1e−6⌋ with the plain area, in float32.
    public static func fpnLevels(_ boxes: [Float], minLevel: Int = 2, maxLevel: Int = 5,
                                 canonicalScale: Double = 224, canonicalLevel: Int = 4, convention: BoxConvention = .detectron) -> [Int] {
        (0..<(boxes.count / 4)).map { i in
            let lvl: Int
            if convention == .torchvision {
                let s = ((boxes[4 * i + 2] - boxes[4 * i]) * (boxes[4 * i + 3] - boxes[4 * i + 1])).squareRoot()
                let v = (Float(canonicalLevel) + log2(s / Float(canonicalScale)) + Float(1e-6)).rounded(.down)
                // An empty box gives −∞ (torchvision clamps it to the lowest level), a degenerate one NaN.
                lvl = v.isFinite ? Int(v) : minLevel
            } else {
                let o = Double(convention.offset)
                let w = Double(boxes[4 * i + 2] - boxes[4 * i]) + o, h = Double(boxes[4 * i + 3] - boxes[4 * i + 1]) + o
                let s = (w * h).squareRoot()
                lvl = Int((Double(canonicalLevel) + log2(s / canonicalScale + 1e-6)).rounded(.down))
            }
            return min(max(lvl, minLevel), maxLevel)
        }
    }

    /// Distributes rois (R, 5) = [batch, x1, y1, x2, y2] to FPN levels (``fpnLevels(_:minLevel:maxLevel:canonicalScale:canonicalLevel:)``),
    /// keeping their relative order; `restore[i]` is where roi i sits in the concatenation of the
    /// levels (Detectron's `rois_idx_restore_int32`).
    public static func distribute(_ rois: [Float], minLevel: Int, maxLevel: Int, canonicalScale: Double = 224,
                                  canonicalLevel: Int = 4, convention: BoxConvention = .detectron) -> (levels: [[Float]], restore: [Int32]) {
        let r = rois.count / 5
        let lvl = fpnLevels((0..<r).flatMap { Array(rois[5 * $0 + 1..<5 * $0 + 5]) }, minLevel: minLevel, maxLevel: maxLevel,
                            canonicalScale: canonicalScale, canonicalLevel: canonicalLevel, convention: convention)
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

extension Boxes {
    /// torchvision's `RoIHeads.postprocess_detections` for one image, on decoded and clipped
    /// boxes: `scores` (R, K) and `boxes` (R, 4K) row-major; every (row, class ≥ 1) scoring above
    /// `threshold` (strict) with both sides ≥ 0.01 px (`remove_small_boxes`), then
    /// ``batchedNMS(_:scores:groups:threshold:)`` per class, then the first `limit` by descending
    /// score. Returns (class, score, box) in that order.
    public static func torchvisionDetections(scores: [Float], boxes: [Float], rows: Int, classes k: Int, threshold: Float,
                                             nms: Float, limit: Int) -> [(classIndex: Int, score: Float, box: [Float])] {
        var b: [Float] = [], s: [Float] = [], labels: [Int] = []
        for i in 0..<rows {
            for j in 1..<max(k, 1) where scores[i * k + j] > threshold {
                let o = (i * k + j) * 4
                guard boxes[o + 2] - boxes[o] >= 1e-2 && boxes[o + 3] - boxes[o + 1] >= 1e-2 else { continue }
                b += boxes[o..<o + 4]
                s.append(scores[i * k + j])
                labels.append(j)
            }
        }
        var keep = batchedNMS(b, scores: s, groups: labels, threshold: nms)
        if limit > 0 { keep = Array(keep.prefix(limit)) }
        return keep.map { (classIndex: labels[$0], score: s[$0], box: Array(b[4 * $0..<4 * $0 + 4])) }
    }
}

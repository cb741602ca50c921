import Foundation

/// COCO box AP, computed exactly as pycocotools' `COCOeval(gt, dt, 'bbox')` does: 10 IoU
/// thresholds 0.50:0.05:0.95 (numpy `linspace` values), 101 recall points, area ranges all /
/// small / medium / large, maxDets 1 / 10 / 100, crowd regions matched with IoU over the
/// detection's area, ties in score kept in input order (mergesort), and pycocotools' quirks — a
/// ground truth's `ignore` flag is replaced by its `iscrowd`, detections get `area = w·h`.
public struct COCOEvaluator: Sendable {
    public static let iouThresholds: [Double] = linspace(0.5, 0.95, 10)
    public static let recallThresholds: [Double] = linspace(0, 1, 101)
    public static let maxDets = [1, 10, 100]
    public static let areaRanges: [(String, Double, Double)] = [
        ("all", 0, 1e10), ("small", 0, 32 * 32), ("medium", 32 * 32, 96 * 96), ("large", 96 * 96, 1e10),
    ]

    /// numpy's `linspace(start, stop, num)`: `start + k·step`, the last value exactly `stop`.
    static func linspace(_ start: Double, _ stop: Double, _ num: Int) -> [Double] {
        let step = (stop - start) / Double(num - 1)
        var v = (0..<num).map { Double($0) * step + start }
        v[num - 1] = stop
        return v
    }

    public let groundTruth: COCOFile
    public let detections: [Detection]

    public init(groundTruth: COCOFile, detections: [Detection]) {
        self.groundTruth = groundTruth
        self.detections = detections
    }

    /// The result: pycocotools' 12 summary stats, per-category AP and the raw arrays.
    public struct Result: Sendable {
        /// AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl (−1 where undefined).
        public var stats: [Double]
        /// Category id → AP at IoU 0.50:0.95, area all, 100 detections (−1 without ground truth),
        /// as Detectron logs it.
        public var perCategory: [Int: Double]
        /// precision[t][r][k][a][m], flattened in that order.
        public var precision: [Double]
        /// recall[t][k][a][m], flattened.
        public var recall: [Double]
        public var categoryIDs: [Int]

        public static let statNames = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]

        /// pycocotools' `summarize()` table.
        public var summary: String {
            var lines: [String] = []
            let specs: [(Bool, Double?, String, Int)] = [
                (true, nil, "all", 100), (true, 0.5, "all", 100), (true, 0.75, "all", 100),
                (true, nil, "small", 100), (true, nil, "medium", 100), (true, nil, "large", 100),
                (false, nil, "all", 1), (false, nil, "all", 10), (false, nil, "all", 100),
                (false, nil, "small", 100), (false, nil, "medium", 100), (false, nil, "large", 100),
            ]
            for (i, (ap, thr, area, md)) in specs.enumerated() {
                let title = ap ? "Average Precision" : "Average Recall"
                let type = ap ? "(AP)" : "(AR)"
                let iou = thr.map { String(format: "%0.2f", $0) } ?? "0.50:0.95"
                lines.append(" \(title.padding(toLength: 18, withPad: " ", startingAt: 0)) \(type) @[ IoU=\(iou.padding(toLength: 9, withPad: " ", startingAt: 0)) | area=\(String(repeating: " ", count: max(0, 6 - area.count)) + area) | maxDets=\(String(repeating: " ", count: max(0, 3 - String(md).count)) + String(md)) ] = \(String(format: "%0.3f", stats[i]))")
            }
            return lines.joined(separator: "\n")
        }
    }

    /// One image × category × area range, as `evaluateImg` returns it; per-threshold rows are
    /// flattened [t · D + d].
    private struct ImageEval {
        var dtMatched: [Bool]
        var dtIgnore: [Bool]
        var unignoredGT: Int
    }

    /// Indices in descending score, ties in input order (numpy's stable mergesort on −score).
    static func stableDescending(_ scores: [Double]) -> [Int] {
        scores.indices.sorted { scores[$0] != scores[$1] ? scores[$0] > scores[$1] : $0 < $1 }
    }

    /// IoU of boxes in xywh (pycocotools' `bbIou`): crowd gt divides by the detection's area.
    static func iou(_ d: [Double], _ g: [Double], crowd: Bool) -> Double {
        let w = min(d[0] + d[2], g[0] + g[2]) - max(d[0], g[0])
        guard w > 0 else { return 0 }
        let h = min(d[1] + d[3], g[1] + g[3]) - max(d[1], g[1])
        guard h > 0 else { return 0 }
        let inter = w * h
        let union = crowd ? d[2] * d[3] : d[2] * d[3] + g[2] * g[3] - inter
        return inter / union
    }

    public func evaluate() -> Result {
        let imageIDs = Array(Set(groundTruth.images.map(\.id))).sorted()
        let categoryIDs = Array(Set(groundTruth.categories.map(\.id))).sorted()
        let imageIndex = Dictionary(uniqueKeysWithValues: imageIDs.enumerated().map { ($1, $0) })
        let categoryIndex = Dictionary(uniqueKeysWithValues: categoryIDs.enumerated().map { ($1, $0) })
        let T = Self.iouThresholds.count, R = Self.recallThresholds.count, K = categoryIDs.count
        let A = Self.areaRanges.count, M = Self.maxDets.count
        let maxDet = Self.maxDets.last!
        // Per category, per image: ground truth and detections (detections keep file order).
        var gts = [[Int: [COCOFile.Annotation]]](repeating: [:], count: K)
        for a in groundTruth.annotations {
            guard let k = categoryIndex[a.categoryID], let i = imageIndex[a.imageID] else { continue }
            gts[k][i, default: []].append(a)
        }
        var dts = [[Int: [Detection]]](repeating: [:], count: K)
        for d in detections {
            guard let k = categoryIndex[d.categoryID], let i = imageIndex[d.imageID] else { continue }
            dts[k][i, default: []].append(d)
        }

        var precision = [Double](repeating: -1, count: T * R * K * A * M)
        var recall = [Double](repeating: -1, count: T * K * A * M)
        for k in 0..<K {
            // The images with anything to evaluate, in image-id order (evaluateImg's non-None ones).
            let images = Set(gts[k].keys).union(dts[k].keys).sorted()
            if images.isEmpty { continue }
            // Detections of each image, best first (stable), at most maxDet; and their IoUs.
            var scores: [Double] = [], rank: [Int] = [], imageOf: [Int] = []
            var evals = [[ImageEval]](repeating: [], count: A)
            for (slot, img) in images.enumerated() {
                let gt = gts[k][img] ?? []
                let dtAll = dts[k][img] ?? []
                let dt = Self.stableDescending(dtAll.map(\.score)).prefix(maxDet).map { dtAll[$0] }
                let D = dt.count, G = gt.count
                for (r, d) in dt.enumerated() {
                    scores.append(d.score)
                    rank.append(r)
                    imageOf.append(slot)
                }
                var ious = [Double](repeating: 0, count: D * G)
                for di in 0..<D { for gi in 0..<G { ious[di * G + gi] = Self.iou(dt[di].bbox, gt[gi].bbox, crowd: gt[gi].isCrowd) } }
                for (a, range) in Self.areaRanges.enumerated() {
                    let ignore = gt.map { g in g.isCrowd || g.evaluationArea < range.1 || g.evaluationArea > range.2 }
                    let gtOrder = gt.indices.sorted { (ignore[$0] ? 1 : 0, $0) < (ignore[$1] ? 1 : 0, $1) }
                    let gtIgnore = gtOrder.map { ignore[$0] }
                    let gtCrowd = gtOrder.map { gt[$0].isCrowd }
                    var gtMatched = [Bool](repeating: false, count: T * G)
                    var dtMatched = [Bool](repeating: false, count: T * D)
                    var dtIgnore = [Bool](repeating: false, count: T * D)
                    if D > 0 && G > 0 {
                        for (t, thr) in Self.iouThresholds.enumerated() {
                            for di in 0..<D {
                                var best = min(thr, 1 - 1e-10)
                                var m = -1
                                for gi in 0..<G {
                                    if gtMatched[t * G + gi] && !gtCrowd[gi] { continue }
                                    if m > -1 && !gtIgnore[m] && gtIgnore[gi] { break }
                                    let v = ious[di * G + gtOrder[gi]]
                                    if v < best { continue }
                                    best = v
                                    m = gi
                                }
                                if m == -1 { continue }
                                dtIgnore[t * D + di] = gtIgnore[m]
                                // pycocotools stores gt ids; an id of 0 reads as "unmatched".
                                dtMatched[t * D + di] = gt[gtOrder[m]].id != 0
                                gtMatched[t * G + m] = true
                            }
                        }
                    }
                    for di in 0..<D {
                        let area = dt[di].bbox[2] * dt[di].bbox[3]
                        if area < range.1 || area > range.2 {
                            for t in 0..<T where !dtMatched[t * D + di] { dtIgnore[t * D + di] = true }
                        }
                    }
                    evals[a].append(ImageEval(dtMatched: dtMatched, dtIgnore: dtIgnore, unignoredGT: gtIgnore.filter { !$0 }.count))
                }
            }
            // accumulate: one stable sort of all kept detections serves every area range and,
            // filtered by rank within the image, every maxDets.
            let order = Self.stableDescending(scores)
            var offsets = [Int](repeating: 0, count: images.count + 1)
            for slot in imageOf { offsets[slot + 1] += 1 }
            for s in 0..<images.count { offsets[s + 1] += offsets[s] }
            for a in 0..<A {
                let npig = evals[a].reduce(0) { $0 + $1.unignoredGT }
                if npig == 0 { continue }
                for (m, md) in Self.maxDets.enumerated() {
                    let kept = order.filter { rank[$0] < md }
                    for t in 0..<T {
                        var tp = 0.0, fp = 0.0
                        var rc = [Double](), pr = [Double]()
                        rc.reserveCapacity(kept.count)
                        pr.reserveCapacity(kept.count)
                        for j in kept {
                            let e = evals[a][imageOf[j]]
                            let D = offsets[imageOf[j] + 1] - offsets[imageOf[j]]
                            let cell = t * D + rank[j]
                            if !e.dtIgnore[cell] {
                                if e.dtMatched[cell] { tp += 1 } else { fp += 1 }
                            }
                            rc.append(tp / Double(npig))
                            pr.append(tp / (fp + tp + Double.ulpOfOne))
                        }
                        let nd = rc.count
                        recall[((t * K + k) * A + a) * M + m] = nd > 0 ? rc[nd - 1] : 0
                        if nd > 1 {
                            for i in stride(from: nd - 1, to: 0, by: -1) where pr[i] > pr[i - 1] { pr[i - 1] = pr[i] }
                        }
                        // searchsorted(rc, recThrs, side='left'); points past the end stay 0.
                        var pi = 0
                        for (ri, thr) in Self.recallThresholds.enumerated() {
                            while pi < nd && rc[pi] < thr { pi += 1 }
                            precision[(((t * R + ri) * K + k) * A + a) * M + m] = pi < nd ? pr[pi] : 0
                        }
                    }
                }
            }
        }

        func meanValid(_ values: [Double]) -> Double {
            let v = values.filter { $0 > -1 }
            return v.isEmpty ? -1 : v.reduce(0, +) / Double(v.count)
        }
        func ap(threshold: Double? = nil, area: Int = 0, maxDets md: Int = 100, category: Int? = nil) -> Double {
            let m = Self.maxDets.firstIndex(of: md)!
            var values: [Double] = []
            for t in 0..<T where threshold == nil || Self.iouThresholds[t] == threshold! {
                for r in 0..<R {
                    for k in 0..<K where category == nil || category! == k {
                        values.append(precision[(((t * R + r) * K + k) * A + area) * M + m])
                    }
                }
            }
            return meanValid(values)
        }
        func ar(area: Int = 0, maxDets md: Int = 100) -> Double {
            let m = Self.maxDets.firstIndex(of: md)!
            var values: [Double] = []
            for t in 0..<T { for k in 0..<K { values.append(recall[((t * K + k) * A + area) * M + m]) } }
            return meanValid(values)
        }
        let stats = [ap(), ap(threshold: 0.5), ap(threshold: 0.75), ap(area: 1), ap(area: 2), ap(area: 3),
                     ar(maxDets: 1), ar(maxDets: 10), ar(), ar(area: 1), ar(area: 2), ar(area: 3)]
        var perCategory: [Int: Double] = [:]
        for (k, cat) in categoryIDs.enumerated() { perCategory[cat] = ap(category: k) }
        return Result(stats: stats, perCategory: perCategory, precision: precision, recall: recall, categoryIDs: categoryIDs)
    }
}

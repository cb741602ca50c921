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

    private struct Key: Hashable {
        let image: Int
        let category: Int
    }

    /// One image × category × area range, as `evaluateImg` returns it.
    private struct ImageEval {
        var dtScores: [Double]
        var dtMatched: [[Bool]]   // [t][d]
        var dtIgnore: [[Bool]]    // [t][d]
        var gtIgnore: [Bool]
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
        let imageSet = Set(imageIDs), categorySet = Set(categoryIDs)
        var gts: [Key: [COCOFile.Annotation]] = [:]
        for a in groundTruth.annotations where imageSet.contains(a.imageID) && categorySet.contains(a.categoryID) {
            gts[Key(image: a.imageID, category: a.categoryID), default: []].append(a)
        }
        // Detections numbered 1… in file order, as loadRes does.
        var dts: [Key: [(id: Int, det: Detection)]] = [:]
        for (i, d) in detections.enumerated() where imageSet.contains(d.imageID) && categorySet.contains(d.categoryID) {
            dts[Key(image: d.imageID, category: d.categoryID), default: []].append((i + 1, d))
        }
        let T = Self.iouThresholds.count, R = Self.recallThresholds.count, K = categoryIDs.count
        let A = Self.areaRanges.count, M = Self.maxDets.count
        let maxDet = Self.maxDets.last!

        // evaluateImg for every (category, area, image); nil where nothing to evaluate.
        var evals = [ImageEval?](repeating: nil, count: K * A * imageIDs.count)
        for (k, cat) in categoryIDs.enumerated() {
            for img in 0..<imageIDs.count {
                let key = Key(image: imageIDs[img], category: cat)
                let gt = gts[key] ?? []
                let dtAll = dts[key] ?? []
                if gt.isEmpty && dtAll.isEmpty { continue }
                let dtOrder = Self.stableDescending(dtAll.map(\.det.score))
                let dt = dtOrder.prefix(maxDet).map { dtAll[$0] }
                // IoU matrix [d][g] in the original gt order.
                let ious = dt.map { d in gt.map { g in Self.iou(d.det.bbox, g.bbox, crowd: g.isCrowd) } }
                for (a, range) in Self.areaRanges.enumerated() {
                    let ignore = gt.map { g in g.isCrowd || g.evaluationArea < range.1 || g.evaluationArea > range.2 }
                    // gt sorted with ignored last (stable).
                    let gtOrder = gt.indices.sorted { (ignore[$0] ? 1 : 0, $0) < (ignore[$1] ? 1 : 0, $1) }
                    let gtIgnore = gtOrder.map { ignore[$0] }
                    let gtCrowd = gtOrder.map { gt[$0].isCrowd }
                    var gtMatched = [[Bool]](repeating: [Bool](repeating: false, count: gt.count), count: T)
                    var dtMatched = [[Bool]](repeating: [Bool](repeating: false, count: dt.count), count: T)
                    var dtIgnore = [[Bool]](repeating: [Bool](repeating: false, count: dt.count), count: T)
                    if !dt.isEmpty && !gt.isEmpty {
                        for (t, thr) in Self.iouThresholds.enumerated() {
                            for di in 0..<dt.count {
                                var best = min(thr, 1 - 1e-10)
                                var m = -1
                                for gi in 0..<gt.count {
                                    if gtMatched[t][gi] && !gtCrowd[gi] { continue }
                                    if m > -1 && !gtIgnore[m] && gtIgnore[gi] { break }
                                    let v = ious[di][gtOrder[gi]]
                                    if v < best { continue }
                                    best = v
                                    m = gi
                                }
                                if m == -1 { continue }
                                dtIgnore[t][di] = gtIgnore[m]
                                // pycocotools stores gt/dt ids; an id of 0 reads as "unmatched".
                                dtMatched[t][di] = gt[gtOrder[m]].id != 0
                                gtMatched[t][m] = true
                            }
                        }
                    }
                    for di in 0..<dt.count {
                        let area = dt[di].det.bbox[2] * dt[di].det.bbox[3]
                        if area < range.1 || area > range.2 {
                            for t in 0..<T where !dtMatched[t][di] { dtIgnore[t][di] = true }
                        }
                    }
                    evals[(k * A + a) * imageIDs.count + img] = ImageEval(dtScores: dt.map(\.det.score), dtMatched: dtMatched,
                                                                          dtIgnore: dtIgnore, gtIgnore: gtIgnore)
                }
            }
        }

        // accumulate
        var precision = [Double](repeating: -1, count: T * R * K * A * M)
        var recall = [Double](repeating: -1, count: T * K * A * M)
        for k in 0..<K {
            for a in 0..<A {
                let list = (0..<imageIDs.count).compactMap { evals[(k * A + a) * imageIDs.count + $0] }
                if list.isEmpty { continue }
                let npig = list.reduce(0) { $0 + $1.gtIgnore.filter { !$0 }.count }
                for (m, md) in Self.maxDets.enumerated() {
                    var scores: [Double] = []
                    var matched = [[Bool]](repeating: [], count: T), ignored = [[Bool]](repeating: [], count: T)
                    for e in list {
                        let n = min(md, e.dtScores.count)
                        scores += e.dtScores[..<n]
                        for t in 0..<T {
                            matched[t] += e.dtMatched[t][..<n]
                            ignored[t] += e.dtIgnore[t][..<n]
                        }
                    }
                    if npig == 0 { continue }
                    let order = Self.stableDescending(scores)
                    for t in 0..<T {
                        var tp = 0.0, fp = 0.0
                        var rc = [Double](), pr = [Double]()
                        rc.reserveCapacity(order.count)
                        pr.reserveCapacity(order.count)
                        for i in order {
                            if ignored[t][i] {
                                // counts as neither
                            } else if matched[t][i] {
                                tp += 1
                            } else {
                                fp += 1
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
                            let index = (((t * R + ri) * K + k) * A + a) * M + m
                            precision[index] = pi < nd ? pr[pi] : 0
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

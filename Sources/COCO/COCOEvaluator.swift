import Foundation

/// COCO box and mask AP, computed exactly as pycocotools' `COCOeval(gt, dt, 'bbox')` and
/// `COCOeval(gt, dt, 'segm')` do: 10 IoU thresholds 0.50:0.05:0.95 (numpy `linspace` values),
/// 101 recall points, area ranges all / small / medium / large, maxDets 1 / 10 / 100, crowd
/// regions matched with IoU over the detection's area, ties in score kept in input order
/// (mergesort), and pycocotools' quirks — a ground truth's `ignore` flag is replaced by its
/// `iscrowd`, and its area is the file's `area` in both modes; a detection's area is w·h of its
/// box when the first result has a bbox, else its mask's pixel count (`loadRes`).
///
/// The two modes differ only in the IoU: boxes (`bbIou`) or masks (`rleIou`, ground-truth
/// polygons rasterised at their image's size and merged as `annToRLE` does).
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

    /// What the IoU compares: COCOeval's `iouType`.
    public enum IoUType: String, Sendable, CaseIterable {
        /// Boxes [x, y, w, h]; a mask result's box is its mask's (``RLE/toBbox()``).
        case bbox
        /// Masks; a box result's mask is its box rasterised (``RLE/frBbox(_:height:width:)``).
        case segm
    }

    public let groundTruth: COCOFile
    public let detections: [Detection]
    public private(set) var iouType: IoUType
    /// Each detection's box and area as pycocotools' `loadRes` makes them.
    private let boxes: [[Double]]
    private let areas: [Double]
    /// segm: the masks of the annotations and detections (nil where unused) and their boxes
    /// (``RLE/toBbox()``, which `rleIou` checks first); empty for bbox.
    private var gtMasks: [RLE?] = [], gtMaskBoxes: [[Double]] = []
    private var dtMasks: [RLE?] = [], dtMaskBoxes: [[Double]] = []

    /// Box AP.
    public init(groundTruth: COCOFile, detections: [Detection]) {
        self.groundTruth = groundTruth
        self.detections = detections
        iouType = .bbox
        (boxes, areas) = Self.boxesAndAreas(detections)
    }

    /// Box or mask AP. For masks, every annotation needs a segmentation pycocotools can
    /// rasterise; errors name the annotation or detection.
    public init(groundTruth: COCOFile, detections: [Detection], iouType: IoUType) throws(COCOError) {
        self.init(groundTruth: groundTruth, detections: detections)
        guard iouType == .segm else { return }
        var sizes: [Int: (Int, Int)] = [:]
        for img in groundTruth.images { sizes[img.id] = (img.height, img.width) }
        var gtMasks: [RLE?] = []
        gtMasks.reserveCapacity(groundTruth.annotations.count)
        for a in groundTruth.annotations {
            guard let (h, w) = sizes[a.imageID] else { gtMasks.append(nil); continue }
            guard let segmentation = a.segmentation else {
                throw .badSegmentation(entry: "annotation \(a.id) (image \(a.imageID))", reason: "it has no segmentation (segm evaluation needs one for every annotation, as pycocotools' annToRLE)")
            }
            do throws(MaskError) {
                gtMasks.append(try segmentation.rle(imageHeight: h, imageWidth: w))
            } catch {
                throw .badSegmentation(entry: "annotation \(a.id) (image \(a.imageID))", reason: error.description)
            }
        }
        var dtMasks: [RLE?] = []
        dtMasks.reserveCapacity(detections.count)
        for (i, d) in detections.enumerated() {
            guard let (h, w) = sizes[d.imageID] else { dtMasks.append(nil); continue }
            if let rle = d.segmentation {
                dtMasks.append(rle)
                continue
            }
            // loadRes gives a box result the polygon of its box.
            do throws(MaskError) {
                dtMasks.append(try RLE.frBbox(boxes[i], height: h, width: w))
            } catch {
                throw .badSegmentation(entry: "detection #\(i) (image \(d.imageID))", reason: error.description)
            }
        }
        self.iouType = .segm
        self.gtMasks = gtMasks
        self.dtMasks = dtMasks
        gtMaskBoxes = gtMasks.map { $0?.toBbox() ?? [] }
        // A mask result's box is already its mask's.
        dtMaskBoxes = detections.indices.map { detections[$0].bbox == nil ? boxes[$0] : dtMasks[$0]?.toBbox() ?? [] }
    }

    /// `loadRes`: with a bbox in the first result, boxes from the file and area w·h; else boxes
    /// from the masks where absent and area the mask's pixel count.
    static func boxesAndAreas(_ detections: [Detection]) -> ([[Double]], [Double]) {
        let boxResults = detections.first?.bbox != nil
        var boxes: [[Double]] = [], areas: [Double] = []
        boxes.reserveCapacity(detections.count)
        areas.reserveCapacity(detections.count)
        for d in detections {
            let box = d.bbox ?? d.segmentation?.toBbox() ?? [0, 0, 0, 0]
            boxes.append(box)
            areas.append(boxResults ? box[2] * box[3] : Double(d.segmentation?.area ?? 0))
        }
        return (boxes, areas)
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

    /// Indices in descending score, ties in input order (numpy's stable mergesort on −score).
    static func stableDescending(_ scores: [Double]) -> [Int] {
        scores.indices.sorted { scores[$0] != scores[$1] ? scores[$0] > scores[$1] : $0 < $1 }
    }

    public func evaluate() -> Result {
        let imageIDs = Array(Set(groundTruth.images.map(\.id))).sorted()
        let categoryIDs = Array(Set(groundTruth.categories.map(\.id))).sorted()
        let imageIndex = Dictionary(uniqueKeysWithValues: imageIDs.enumerated().map { ($1, $0) })
        let categoryIndex = Dictionary(uniqueKeysWithValues: categoryIDs.enumerated().map { ($1, $0) })
        let T = Self.iouThresholds.count, R = Self.recallThresholds.count, K = categoryIDs.count
        let A = Self.areaRanges.count, M = Self.maxDets.count
        let maxDet = Self.maxDets.last!
        // Per category, per image: indices of the ground truth and of the detections (in file order).
        var gts = [[Int: [Int]]](repeating: [:], count: K)
        for (n, a) in groundTruth.annotations.enumerated() {
            guard let k = categoryIndex[a.categoryID], let i = imageIndex[a.imageID] else { continue }
            gts[k][i, default: []].append(n)
        }
        var dts = [[Int: [Int]]](repeating: [:], count: K)
        for (n, d) in detections.enumerated() {
            guard let k = categoryIndex[d.categoryID], let i = imageIndex[d.imageID] else { continue }
            dts[k][i, default: []].append(n)
        }
        let gtCrowd = groundTruth.annotations.map(\.isCrowd), gtArea = groundTruth.annotations.map(\.evaluationArea)
        let gtID = groundTruth.annotations.map(\.id), dtScore = detections.map(\.score)

        var precision = [Double](repeating: -1, count: T * R * K * A * M)
        var recall = [Double](repeating: -1, count: T * K * A * M)
        // Scratch space reused across images and categories.
        var ignored: [Bool] = [], gtOrder: [Int] = [], gtMatched: [Bool] = [], rc: [Double] = [], pr: [Double] = []
        for k in 0..<K {
            // The images with anything to evaluate, in image-id order (evaluateImg's non-None ones).
            let images = Set(gts[k].keys).union(dts[k].keys).sorted()
            if images.isEmpty { continue }
            // evaluateImg for each image and area range: every image's detections, best first
            // (stable), at most maxDet, appended to `scores`; whether each is matched and whether
            // it is ignored at each threshold, [area][j · T + t] for the j-th of `scores`.
            var scores: [Double] = [], rank: [Int] = []
            var dtMatched = [[Bool]](repeating: [], count: A), dtIgnore = [[Bool]](repeating: [], count: A)
            var unignoredGT = [Int](repeating: 0, count: A)
            for img in images {
                let gt = gts[k][img] ?? []
                let dtAll = dts[k][img] ?? []
                let dt = Self.stableDescending(dtAll.map { dtScore[$0] }).prefix(maxDet).map { dtAll[$0] }
                let D = dt.count, G = gt.count, base = scores.count
                for (r, d) in dt.enumerated() {
                    scores.append(dtScore[d])
                    rank.append(r)
                }
                let ious: [Double] = if D == 0 || G == 0 {
                    []
                } else if iouType == .bbox {
                    RLE.iou(boxes: dt.map { boxes[$0] }, gt.map { groundTruth.annotations[$0].bbox }, isCrowd: gt.map { gtCrowd[$0] })
                } else {
                    RLE.iou(dt.map { dtMasks[$0]! }, gt.map { gtMasks[$0]! }, dtBoxes: dt.map { dtMaskBoxes[$0] },
                            gtBoxes: gt.map { gtMaskBoxes[$0] }, isCrowd: gt.map { gtCrowd[$0] })
                }
                for (a, range) in Self.areaRanges.enumerated() {
                    // Ground truth not ignored first, each group in file order (a stable sort on ignore).
                    ignored.removeAll(keepingCapacity: true)
                    for g in gt { ignored.append(gtCrowd[g] || gtArea[g] < range.1 || gtArea[g] > range.2) }
                    gtOrder.removeAll(keepingCapacity: true)
                    for pass in [false, true] { for gi in 0..<G where ignored[gi] == pass { gtOrder.append(gi) } }
                    unignoredGT[a] += ignored.filter { !$0 }.count
                    gtMatched.removeAll(keepingCapacity: true)
                    gtMatched.append(contentsOf: repeatElement(false, count: T * G))
                    dtMatched[a].append(contentsOf: repeatElement(false, count: T * D))
                    dtIgnore[a].append(contentsOf: repeatElement(false, count: T * D))
                    if D > 0 && G > 0 {
                        for (t, thr) in Self.iouThresholds.enumerated() {
                            for di in 0..<D {
                                var best = min(thr, 1 - 1e-10)
                                var m = -1
                                for oi in 0..<G {
                                    let gi = gtOrder[oi]
                                    if gtMatched[t * G + oi] && !gtCrowd[gt[gi]] { continue }
                                    if m > -1 && !ignored[gtOrder[m]] && ignored[gi] { break }
                                    let v = ious[di * G + gi]
                                    if v < best { continue }
                                    best = v
                                    m = oi
                                }
                                if m == -1 { continue }
                                let cell = (base + di) * T + t
                                dtIgnore[a][cell] = ignored[gtOrder[m]]
                                // pycocotools stores gt ids; an id of 0 reads as "unmatched".
                                dtMatched[a][cell] = gtID[gt[gtOrder[m]]] != 0
                                gtMatched[t * G + m] = true
                            }
                        }
                    }
                    // Unmatched detections outside the area range are ignored.
                    for di in 0..<D where areas[dt[di]] < range.1 || areas[dt[di]] > range.2 {
                        for t in 0..<T where !dtMatched[a][(base + di) * T + t] { dtIgnore[a][(base + di) * T + t] = true }
                    }
                }
            }
            // accumulate: one stable sort of all kept detections serves every area range and,
            // filtered by rank within the image, every maxDets.
            let order = Self.stableDescending(scores)
            let kept = Self.maxDets.map { md in order.filter { rank[$0] < md } }
            if rc.count < order.count {
                rc = [Double](repeating: 0, count: order.count)
                pr = rc
            }
            for a in 0..<A where unignoredGT[a] > 0 {
                let npig = Double(unignoredGT[a])
                let ignore = dtIgnore[a], matched = dtMatched[a]
                for m in 0..<M {
                    let nd = kept[m].count
                    for t in 0..<T {
                        // Recall and precision after each detection, precision made monotone from the right.
                        rc.withUnsafeMutableBufferPointer { rc in
                            pr.withUnsafeMutableBufferPointer { pr in
                                var tp = 0.0, fp = 0.0
                                for (q, j) in kept[m].enumerated() {
                                    let cell = j * T + t
                                    if !ignore[cell] {
                                        if matched[cell] { tp += 1 } else { fp += 1 }
                                    }
                                    rc[q] = tp / npig
                                    pr[q] = tp / (fp + tp + Double.ulpOfOne)
                                }
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

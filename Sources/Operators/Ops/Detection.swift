import Foundation
import Storage

/// Detectron's proposal op (`ops/generate_proposals.py`), for one FPN level.
///
/// `GenerateProposals(rpn_cls_probs (N, A, H, W), rpn_bbox_pred (N, 4A, H, W), im_info (N, 3),
/// cell_anchors (A, 4); spatial_scale, pre_nms_topN, post_nms_topN, nms_thresh, min_size)
/// -> (rois (R, 5), roi_probs (R, 1))`. Per image: scores and deltas flattened in (y, x, a) order;
/// the top pre_nms_topN by score; decoded with weights (1, 1, 1, 1); clipped to im_info's height
/// and width; kept if both sides measured in the original image ((x2 − x1)/scale + 1) are
/// ≥ max(min_size, 1) and the centre lies inside im_info; NMS at nms_thresh; the first
/// post_nms_topN survivors. Equal scores keep index order (numpy `argsort(-scores)`).
///
/// With `legacy_plus_one` 0 it is torchvision's `RegionProposalNetwork.filter_proposals` for one
/// level: the anchors input holds every location's anchors ((H·W·A, 4), ``Boxes/anchorGrid(cell:height:width:strideH:strideW:)``),
/// boxes are decoded and clipped to im_info's height and width without +1, kept if both sides
/// are ≥ min_size in the resized image, NMS drops IoU > nms_thresh, and post_nms_topN ≤ 0 keeps
/// every survivor (torchvision limits the total after collecting the levels).
final class GenerateProposalsOp: Operator, Sendable {
    let io: OpIO
    let stride: Float
    let preTopN: Int
    let postTopN: Int
    let nmsThresh: Float
    let minSize: Float
    let convention: BoxConvention

    init(_ io: OpIO) throws(OperatorError) {
        self.io = io
        let scale = try io.float("spatial_scale")
        try io.argument("spatial_scale", scale > 0, "must be positive")
        stride = Float(1 / scale)
        preTopN = try io.int("pre_nms_topN", 6000)
        postTopN = try io.int("post_nms_topN", 300)
        nmsThresh = Float(try io.float("nms_thresh", 0.7))
        minSize = Float(try io.float("min_size", 0))
        convention = BoxConvention(legacyPlusOne: try io.int("legacy_plus_one", 1) != 0)
    }

    func run(_ ctx: ExecutionContext) throws {
        let legacy = convention == .detectron
        let (scoresT, scores) = try io.inputData(0)
        let (deltasT, deltas) = try io.inputData(1)
        let (infoT, info) = try io.inputData(2)
        let (anchorsT, cell) = try io.inputData(3)
        try io.require(scoresT.rank == 4, input: 0, "must be (N, A, H, W), has shape \(scoresT.shape)")
        let (n, a, h, w) = (scoresT.shape[0], scoresT.shape[1], scoresT.shape[2], scoresT.shape[3])
        try io.require(deltasT.shape == [n, 4 * a, h, w], input: 1, "has shape \(deltasT.shape), expected \([n, 4 * a, h, w])")
        try io.require(infoT.shape == [n, 3], input: 2, "has shape \(infoT.shape), expected \([n, 3])")
        let anchorShape = legacy ? [a, 4] : [h * w * a, 4]
        try io.require(anchorsT.shape == anchorShape, input: 3, "has shape \(anchorsT.shape), expected \(anchorShape)")
        let k = h * w * a
        // One image's proposals: (boxes as rows of 4, scores). Only the pre-NMS top N are decoded.
        func proposals(_ img: Int) -> ([Float], [Float]) {
            var s = [Float](repeating: 0, count: k)
            for ai in 0..<a {
                let plane = scores.baseAddress! + (img * a + ai) * h * w
                for p in 0..<h * w { s[p * a + ai] = plane[p] }
            }
            let order = preTopN > 0 ? Boxes.topIndices(s, count: preTopN) : Boxes.descendingOrder(s)
            var anchors = [Float](), d = [Float]()
            anchors.reserveCapacity(4 * order.count)
            d.reserveCapacity(4 * order.count)
            for idx in order {
                let ai = idx % a, p = idx / a
                if legacy {
                    let sx = Float(p % w) * stride, sy = Float(p / w) * stride
                    anchors += [cell[4 * ai] + sx, cell[4 * ai + 1] + sy, cell[4 * ai + 2] + sx, cell[4 * ai + 3] + sy]
                } else {
                    for c in 0..<4 { anchors.append(cell[4 * idx + c]) }
                }
                for c in 0..<4 { d.append(deltas[(img * 4 * a + 4 * ai + c) * h * w + p]) }
            }
            var boxes = Boxes.decode(anchors, deltas: d, convention: convention)
            let (imH, imW, imScale) = (info[img * 3], info[img * 3 + 1], info[img * 3 + 2])
            Boxes.clip(&boxes, height: imH, width: imW, convention: convention)
            let minOrig = max(minSize, 1)
            var keptBoxes: [Float] = [], keptScores: [Float] = []
            keptBoxes.reserveCapacity(boxes.count)
            keptScores.reserveCapacity(order.count)
            for (j, o) in order.enumerated() {
                let (x1, y1, x2, y2) = (boxes[4 * j], boxes[4 * j + 1], boxes[4 * j + 2], boxes[4 * j + 3])
                let keep: Bool
                if legacy {
                    let wsOrig = (x2 - x1) / imScale + 1, hsOrig = (y2 - y1) / imScale + 1
                    let xc = x1 + (x2 - x1 + 1) / 2, yc = y1 + (y2 - y1 + 1) / 2
                    keep = wsOrig >= minOrig && hsOrig >= minOrig && xc < imW && yc < imH
                } else {
                    keep = x2 - x1 >= minSize && y2 - y1 >= minSize
                }
                if keep {
                    keptBoxes += boxes[4 * j..<4 * j + 4]
                    keptScores.append(s[o])
                }
            }
            var keep = Array(keptScores.indices)
            if nmsThresh > 0 {
                keep = Boxes.nms(keptBoxes, scores: keptScores, threshold: nmsThresh, convention: convention, limit: max(postTopN, 0))
            } else if postTopN > 0 {
                keep = Array(keep.prefix(postTopN))
            }
            return (keep.flatMap { keptBoxes[4 * $0..<4 * $0 + 4] }, keep.map { keptScores[$0] })
        }
        // The images run in parallel; their proposals are concatenated in image order.
        var perImage = [([Float], [Float])](repeating: ([], []), count: n)
        perImage.withUnsafeMutableBufferPointer { out in ctx.parallelFor(n) { out[$0] = proposals($0) } }
        var rois: [Float] = [], probs: [Float] = []
        for (img, (boxes, imageScores)) in perImage.enumerated() {
            for j in imageScores.indices { rois += [Float(img)] + boxes[4 * j..<4 * j + 4] }
            probs += imageScores
        }
        let (_, r) = try io.outputData(0, shape: [probs.count, 5])
        _ = r.update(fromContentsOf: rois)
        let (_, p) = try io.outputData(1, shape: [probs.count, 1])
        _ = p.update(fromContentsOf: probs)
    }
}

/// Detectron's test-time `CollectAndDistributeFpnRpnProposals`:
/// `(rpn_rois_fpn2…6, rpn_roi_probs_fpn2…6; rpn_post_nms_topN, roi_min_level=2, roi_max_level=5,
/// roi_canonical_scale=224, roi_canonical_level=4) -> (rois, rois_fpn2…5, rois_idx_restore_int32)`.
/// Collect: all levels' rois sorted by descending probability, the top rpn_post_nms_topN kept
/// (over the whole batch). Distribute: each roi to its FPN level (``Boxes/fpnLevels``) keeping
/// the relative order; `rois_idx_restore_int32` is the permutation that restores the collected
/// order from the per-level concatenation. With `legacy_plus_one` 0, levels follow torchvision's
/// `LevelMapper` (``Boxes/fpnLevels(_:minLevel:maxLevel:canonicalScale:canonicalLevel:convention:)``).
final class CollectAndDistributeOp: Operator, Sendable {
    let io: OpIO
    let topN: Int
    let minLevel: Int
    let maxLevel: Int
    let canonicalScale: Double
    let canonicalLevel: Int
    let convention: BoxConvention

    init(_ io: OpIO) throws(OperatorError) {
        self.io = io
        convention = BoxConvention(legacyPlusOne: try io.int("legacy_plus_one", 1) != 0)
        topN = try io.int("rpn_post_nms_topN", 2000)
        minLevel = try io.int("roi_min_level", 2)
        maxLevel = try io.int("roi_max_level", 5)
        canonicalScale = try io.float("roi_canonical_scale", 224)
        canonicalLevel = try io.int("roi_canonical_level", 4)
        try io.argument("inputs", io.inputCount % 2 == 0, "must be the rois of each level, then their probabilities")
        try io.argument("outputs", io.outputCount == maxLevel - minLevel + 3,
                        "must be rois, rois_fpn\(minLevel)…rois_fpn\(maxLevel) and rois_idx_restore_int32")
    }

    func run(_ ctx: ExecutionContext) throws {
        let inputLevels = io.inputCount / 2
        var rois: [Float] = [], probs: [Float] = []
        for l in 0..<inputLevels {
            let (r, rd) = try io.inputData(l)
            let (p, pd) = try io.inputData(inputLevels + l)
            try io.require(r.rank == 2 && r.shape[1] == 5, input: l, "must be (R, 5), has shape \(r.shape)")
            try io.require(p.count == r.shape[0], input: inputLevels + l, "holds \(p.count) probabilities for \(r.shape[0]) rois")
            rois += rd
            probs += pd
        }
        let order = Array(Boxes.descendingOrder(probs).prefix(topN))
        let collected = order.flatMap { Array(rois[5 * $0..<5 * $0 + 5]) }
        let (_, all) = try io.outputData(0, shape: [order.count, 5])
        _ = all.update(fromContentsOf: collected)
        let (levels, restore) = Boxes.distribute(collected, minLevel: minLevel, maxLevel: maxLevel,
                                                 canonicalScale: canonicalScale, canonicalLevel: canonicalLevel, convention: convention)
        for (k, rows) in levels.enumerated() {
            let (_, out) = try io.outputData(1 + k, shape: [rows.count / 5, 5])
            _ = out.update(fromContentsOf: rows)
        }
        let t = try io.output(io.outputCount - 1, shape: [restore.count], dtype: .int32)
        let p = try io.check(io.outputCount - 1, isInput: false) { () throws(StorageError) in try t.mutableData(as: Int32.self) }
        _ = p.update(fromContentsOf: restore)
    }
}

/// Detectron's `box_results_with_nms_and_limit` as an op, for one image:
/// `BoxWithNMSLimit(scores (R, K), boxes (R, 4K); score_thresh=0.05, nms=0.5, detections_per_im=100)
/// -> (scores (D), boxes (D, 4), classes (D))`. For each class j ≥ 1: rows with score > thresh
/// (strict), NMS at `nms` (kept in ascending row order); then if more than detections_per_im
/// remain, each class keeps the rows scoring ≥ the detections_per_im-th largest score (ties may
/// exceed the cap). Output is grouped by class in class order.
final class BoxWithNMSLimitOp: Operator, Sendable {
    let io: OpIO
    let scoreThresh: Float
    let nmsThresh: Float
    let limit: Int

    init(_ io: OpIO) throws(OperatorError) {
        self.io = io
        scoreThresh = Float(try io.float("score_thresh", 0.05))
        nmsThresh = Float(try io.float("nms", 0.5))
        limit = try io.int("detections_per_im", 100)
    }

    func run(_ ctx: ExecutionContext) throws {
        let (s, sd) = try io.inputData(0)
        let (b, bd) = try io.inputData(1)
        try io.require(s.rank == 2, input: 0, "must be (R, K), has shape \(s.shape)")
        let (r, k) = (s.shape[0], s.shape[1])
        try io.require(b.shape == [r, 4 * k], input: 1, "has shape \(b.shape), expected \([r, 4 * k])")
        let kept = Boxes.nmsAndLimit(scores: Array(sd), boxes: Array(bd), rows: r, classes: k, threshold: scoreThresh,
                                     nms: nmsThresh, limit: limit)
        let (_, os) = try io.outputData(0, shape: [kept.count])
        _ = os.update(fromContentsOf: kept.map(\.score))
        let (_, ob) = try io.outputData(1, shape: [kept.count, 4])
        _ = ob.update(fromContentsOf: kept.flatMap(\.box))
        let (_, oc) = try io.outputData(2, shape: [kept.count])
        _ = oc.update(fromContentsOf: kept.map { Float($0.classIndex) })
    }
}

func registerDetectionOps(_ r: inout OperatorRegistry) {
    r.register("GenerateProposals", OperatorSchema(inputs: 4...4, outputs: 2...2) { io throws(OperatorError) in try GenerateProposalsOp(io) })
    r.register("CollectAndDistributeFpnRpnProposals", OperatorSchema(inputs: 2...Int.max, outputs: 3...Int.max) { io throws(OperatorError) in
        try CollectAndDistributeOp(io)
    })
    r.register("BoxWithNMSLimit", OperatorSchema(inputs: 2...2, outputs: 3...3) { io throws(OperatorError) in try BoxWithNMSLimitOp(io) })
}

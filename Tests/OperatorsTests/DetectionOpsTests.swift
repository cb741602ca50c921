import Foundation
@testable import Operators
import Storage
import Testing

@Suite("Detection ops and box arithmetic")
struct DetectionOpsTests {
    @Test("cell anchors equal Detectron's table for every FPN level")
    func anchorTable() {
        let expected: [Int: [Float]] = [
            4: [-22, -10, 25, 13, -14, -14, 17, 17, -10, -22, 13, 25],
            8: [-40, -20, 47, 27, -28, -28, 35, 35, -20, -44, 27, 51],
            16: [-84, -40, 99, 55, -56, -56, 71, 71, -36, -80, 51, 95],
            32: [-164, -72, 195, 103, -112, -112, 143, 143, -76, -168, 107, 199],
            64: [-332, -152, 395, 215, -224, -224, 287, 287, -148, -328, 211, 391],
        ]
        for (level, stride) in [2: 4, 3: 8, 4: 16, 5: 32, 6: 64] {
            let size = 32 * Double(1 << (level - 2))
            #expect(Boxes.cellAnchors(stride: stride, sizes: [size], aspectRatios: [0.5, 1, 2]) == expected[stride]!, "P\(level)")
        }
    }

    @Test("IoU and areas use the +1 convention")
    func iou() {
        // Two 10×10 boxes overlapping in a 5×10 strip: 50 / (100 + 100 − 50).
        #expect(Boxes.iou((0, 0, 9, 9), (5, 0, 14, 9)) == Float(50) / 150)
        // Touching at one pixel column counts as overlap 1 wide.
        #expect(Boxes.iou((0, 0, 9, 9), (9, 0, 18, 9)) == Float(10) / 190)
        #expect(Boxes.iou((0, 0, 9, 9), (10, 0, 19, 9)) == 0)
    }

    @Test("decode subtracts 1 from x2 and y2, clips only dw and dh above, and inverts encode")
    func coder() throws {
        let anchors: [Float] = [0, 0, 15, 15]
        #expect(Boxes.decode(anchors, deltas: [0, 0, 0, 0]) == [0, 0, 15, 15])
        // dx = 0.5 moves the centre by half a width (16 px): 8 px.
        #expect(Boxes.decode(anchors, deltas: [0.5, 0, 0, 0]) == [8, 0, 23, 15])
        // dw far above ln(1000/16) is clipped; a large negative dw is not.
        let big = Boxes.decode(anchors, deltas: [0, 0, 100, 0])
        #expect(abs((big[2] - big[0] + 1) - 1000) < 0.01)
        let small = Boxes.decode(anchors, deltas: [0, 0, -5, 0])
        #expect(abs((small[2] - small[0] + 1) - 16 * exp(-5)) < 1e-4)
        let gt: [Float] = [3, 5, 40, 30, 10, 10, 12, 50]
        let boxes: [Float] = [0, 0, 31, 31, 8, 8, 20, 40]
        for weights in [(Float(1), Float(1), Float(1), Float(1)), (10, 10, 5, 5)] {
            let round = Boxes.decode(boxes, deltas: Boxes.encode(boxes, gt: gt, weights: weights), weights: weights)
            #expect(zip(round, gt).allSatisfy { abs($0 - $1) < 1e-4 }, "\(round)")
        }
        var clipped: [Float] = [-5, -2, 700, 300]
        Boxes.clip(&clipped, height: 240, width: 320)
        #expect(clipped == [0, 0, 319, 239])
    }

    @Test("NMS: descending score, suppress at IoU ≥ threshold, keep in ascending index order, ties by higher index")
    func nms() {
        // Box 0 and 1 overlap with IoU exactly 0.5; box 2 is alone.
        let boxes: [Float] = [0, 0, 9, 9, 5, 0, 14, 9, 100, 100, 109, 109,
                              0, 0, 9, 9]  // box 3 duplicates box 0
        let scores: [Float] = [0.6, 0.9, 0.3, 0.6]
        // IoU(0,1) = 50/150 = 1/3 < 0.5: both kept; box 3 ties box 0 and wins (higher index first),
        // suppressing box 0 (IoU 1).
        #expect(Boxes.nms(boxes, scores: scores, threshold: 0.5) == [1, 2, 3])
        // At threshold 1/3 the suppression is inclusive (≥): box 1 (0.9) suppresses 0 and 3.
        #expect(Boxes.nms(boxes, scores: scores, threshold: Float(50) / 150) == [1, 2])
    }

    @Test("topIndices is descendingOrder's prefix (ties included); NMS with a limit keeps the first `limit` of the full result, ties at the cut too")
    func selectionAndLimit() throws {
        var rng = TestRNG(31)
        for trial in 0..<20 {
            // Scores on a coarse grid: many ties.
            let scores = (0..<(50 + trial * 37)).map { _ in Float(Int(rng.array(1, 0, 1)[0] * 12)) / 12 }
            for count in [1, 7, scores.count / 2, scores.count - 1, scores.count] {
                #expect(Boxes.topIndices(scores, count: count) == Array(Boxes.descendingOrder(scores).prefix(count)), "trial \(trial), count \(count)")
            }
            let boxes = (0..<scores.count).flatMap { _ -> [Float] in
                let v = rng.array(4, 0, 60)
                return [v[0], v[1], v[0] + v[2], v[1] + v[3]]
            }
            // As given, and sorted by descending score as GenerateProposals hands them over (the early stop's case).
            let byScore = Boxes.descendingOrder(scores)
            let sortedBoxes = byScore.flatMap { Array(boxes[4 * $0..<4 * $0 + 4]) }, sortedScores = byScore.map { scores[$0] }
            for (b, sc) in [(boxes, scores), (sortedBoxes, sortedScores)] {
                for convention in [BoxConvention.detectron, .torchvision] {
                    let full = Boxes.nms(b, scores: sc, threshold: 0.5, convention: convention)
                    for limit in [1, 5, 20] {
                        #expect(Boxes.nms(b, scores: sc, threshold: 0.5, convention: convention, limit: limit) == Array(full.prefix(limit)))
                    }
                }
            }
        }
    }

    @Test("torchvision's convention: no +1, clip to the size, NMS suppresses above the threshold, kept by score")
    func torchvisionConvention() {
        // Two 10×10 boxes overlapping in a 5×10 strip: 50 / (100 + 100 − 50) = 1/3.
        #expect(Boxes.iou((0, 0, 10, 10), (5, 0, 15, 10), .torchvision) == Float(50) / 150)
        #expect(Boxes.iou((0, 0, 10, 10), (10, 0, 20, 10), .torchvision) == 0)
        #expect(Boxes.decode([0, 0, 16, 16], deltas: [0.5, 0, 0, 0], convention: .torchvision) == [8, 0, 24, 16])
        var clipped: [Float] = [-5, -2, 700, 300]
        Boxes.clip(&clipped, height: 240, width: 320, convention: .torchvision)
        #expect(clipped == [0, 0, 320, 240])
        let boxes: [Float] = [0, 0, 10, 10, 5, 0, 15, 10, 100, 100, 110, 110]
        let scores: [Float] = [0.6, 0.9, 0.3]
        // IoU exactly at the threshold is kept (torchvision: IoU > threshold suppresses); order by score.
        #expect(Boxes.nms(boxes, scores: scores, threshold: Float(50) / 150, convention: .torchvision) == [1, 0, 2])
        #expect(Boxes.nms(boxes, scores: scores, threshold: 0.3, convention: .torchvision) == [1, 2])
        // Equal scores: the lower index first (a stable descending sort).
        #expect(Boxes.nms(boxes, scores: [0.5, 0.5, 0.5], threshold: 0.3, convention: .torchvision) == [0, 2])
    }

    @Test("levels: ⌊4 + log₂(√area/224)⌋ in [2, 5], area the +1 way")
    func levels() {
        let boxes: [Float] = [0, 0, 223, 223, 0, 0, 111, 111, 0, 0, 447, 447, 0, 0, 9, 9, 0, 0, 2000, 2000, 0, 0, 110, 110]
        #expect(Boxes.fpnLevels(boxes) == [4, 3, 5, 2, 5, 2])
    }

    @Test("GenerateProposals: (y, x, a) order, clipping, the min-size and centre filters, NMS and the caps")
    func generateProposals() throws {
        let ctx = CPUContext()
        let ws = Workspace(context: ctx)
        // One image, A = 1 anchor of 16×16 at stride 16, a 2×2 map; im_info 32×32 at scale 2.
        ws.feedBlob("anchors", try Tensor([-0, 0, 15, 15] as [Float], shape: [1, 4], context: ctx))
        ws.feedBlob("probs", try Tensor([0.9, 0.8, 0.7, 0.95] as [Float], shape: [1, 1, 2, 2], context: ctx))
        // Deltas: cell (0,1) shrinks to width exp(-3)·16 ≈ 0.8 px (filtered: (x2−x1)/2 + 1 < 1? no:
        // 0.8 wide → (x2 − x1) = −0.2 → −0.1 + 1 = 0.9 < 1, filtered); the others stay.
        var d = [Float](repeating: 0, count: 16)
        d[2 * 4 + 1] = -3  // channel dw (2), cell y=0, x=1
        ws.feedBlob("deltas", try Tensor(d, shape: [1, 4, 2, 2], context: ctx))
        ws.feedBlob("im_info", try Tensor([32, 32, 2] as [Float], shape: [1, 3], context: ctx))
        let op = OperatorDef("GenerateProposals", inputs: ["probs", "deltas", "im_info", "anchors"], outputs: ["rois", "roi_probs"],
                             arguments: ["spatial_scale": .float(1.0 / 16), "pre_nms_topN": .int(3), "post_nms_topN": .int(10),
                                         "nms_thresh": .float(0.7), "min_size": .float(0)])
        try Net(NetDef(name: "p", ops: [op]), workspace: ws).run()
        let rois = try ws.fetchBlob("rois").toArray(as: Float.self)
        let probs = try ws.fetchBlob("roi_probs").toArray(as: Float.self)
        // pre_nms_topN = 3 keeps scores 0.95 (y1,x1), 0.9 (y0,x0), 0.8 (y0,x1); 0.8 is filtered.
        #expect(probs == [0.95, 0.9])
        #expect(rois == [0, 16, 16, 31, 31, 0, 0, 0, 15, 15])
    }

    @Test("GenerateProposals drops boxes whose centre is outside im_info")
    func centreFilter() throws {
        let ctx = CPUContext()
        let ws = Workspace(context: ctx)
        ws.feedBlob("anchors", try Tensor([0, 0, 15, 15] as [Float], shape: [1, 4], context: ctx))
        ws.feedBlob("probs", try Tensor([0.5, 0.6] as [Float], shape: [1, 1, 1, 2], context: ctx))
        ws.feedBlob("deltas", try Tensor([Float](repeating: 0, count: 8), shape: [1, 4, 1, 2], context: ctx))
        // im_info width 20: the second cell's box (16…31) is clipped to 16…19, centre 18 < 20 kept;
        // with width 16 it would be clipped to x1 = x2 = 15, centre 15.5 < 16 kept too, so use a
        // width of 10: box 2 clips to 9…9, centre 9.5 < 10 kept, box 1 clips to 0…9.
        ws.feedBlob("im_info", try Tensor([16, 10, 1] as [Float], shape: [1, 3], context: ctx))
        let op = OperatorDef("GenerateProposals", inputs: ["probs", "deltas", "im_info", "anchors"], outputs: ["rois", "roi_probs"],
                             arguments: ["spatial_scale": .float(1.0 / 16), "pre_nms_topN": .int(0), "post_nms_topN": .int(0), "nms_thresh": .float(0)])
        try Net(NetDef(name: "p", ops: [op]), workspace: ws).run()
        #expect(try ws.fetchBlob("roi_probs").toArray(as: Float.self) == [0.6, 0.5])
        #expect(try ws.fetchBlob("rois").toArray(as: Float.self) == [0, 9, 0, 9, 15, 0, 0, 0, 9, 15])
    }

    @Test("CollectAndDistribute: top-N over all levels, per-level rois in order, and the restore permutation")
    func collectAndDistribute() throws {
        let ctx = CPUContext()
        let ws = Workspace(context: ctx)
        // Level-2 input: a big box (→ level 5) and a small one (→ level 2); level-3 input: a 224 box (→ 4).
        ws.feedBlob("r2", try Tensor([0, 0, 0, 499, 499, 0, 0, 0, 9, 9] as [Float], shape: [2, 5], context: ctx))
        ws.feedBlob("p2", try Tensor([0.5, 0.9] as [Float], shape: [2, 1], context: ctx))
        ws.feedBlob("r3", try Tensor([0, 10, 10, 233, 233] as [Float], shape: [1, 5], context: ctx))
        ws.feedBlob("p3", try Tensor([0.7] as [Float], shape: [1, 1], context: ctx))
        let op = OperatorDef("CollectAndDistributeFpnRpnProposals", inputs: ["r2", "r3", "p2", "p3"],
                             outputs: ["rois", "f2", "f3", "f4", "f5", "restore"], arguments: ["rpn_post_nms_topN": .int(3)])
        try Net(NetDef(name: "c", ops: [op]), workspace: ws).run()
        // Collected by probability: small (0.9), 224 (0.7), big (0.5).
        #expect(try ws.fetchBlob("rois").toArray(as: Float.self) == [0, 0, 0, 9, 9, 0, 10, 10, 233, 233, 0, 0, 0, 499, 499])
        #expect(try ws.fetchBlob("f2").shape == [1, 5])
        #expect(try ws.fetchBlob("f3").shape == [0, 5])
        #expect(try ws.fetchBlob("f4").toArray(as: Float.self) == [0, 10, 10, 233, 233])
        #expect(try ws.fetchBlob("f5").toArray(as: Float.self) == [0, 0, 0, 499, 499])
        // Concatenation order is [f2, f3, f4, f5] = [roi 0, roi 1, roi 2]: restore is the identity here.
        #expect(try ws.fetchBlob("restore").toArray(as: Int32.self) == [0, 1, 2])
    }

    @Test("BoxWithNMSLimit: strict score threshold, NMS per class, the per-image cap keeps ties")
    func boxWithNMSLimit() throws {
        let ctx = CPUContext()
        let ws = Workspace(context: ctx)
        // 3 rows, 3 classes (0 = background).
        let scores: [Float] = [0.1, 0.05, 0.9,
                               0.1, 0.6, 0.6,
                               0.1, 0.6, 0.2]
        var boxes = [Float](repeating: 0, count: 3 * 12)
        for row in 0..<3 { for j in 0..<3 { for (c, v) in [Float(row * 20), 0, Float(row * 20 + 9), 9].enumerated() { boxes[row * 12 + 4 * j + c] = v } } }
        ws.feedBlob("s", try Tensor(scores, shape: [3, 3], context: ctx))
        ws.feedBlob("b", try Tensor(boxes, shape: [3, 12], context: ctx))
        let op = OperatorDef("BoxWithNMSLimit", inputs: ["s", "b"], outputs: ["ds", "db", "dc"], arguments: ["detections_per_im": .int(2)])
        try Net(NetDef(name: "d", ops: [op]), workspace: ws).run()
        // Class 1: rows 1, 2 (0.05 is not > 0.05); class 2: rows 0 (0.9), 1 (0.6), 2 (0.2).
        // Cap 2: the 2nd score is 0.6, so everything ≥ 0.6 stays: 4 detections (ties exceed the cap).
        #expect(try ws.fetchBlob("ds").toArray(as: Float.self) == [0.6, 0.6, 0.9, 0.6])
        #expect(try ws.fetchBlob("dc").toArray(as: Float.self) == [1, 1, 2, 2])
        #expect(try ws.fetchBlob("db").shape == [4, 4])
    }
}

import COCO
import DataLoading
@testable import Engine
import Foundation
import Operators
import Storage
import Testing

func smallConfig(_ overrides: [String] = []) throws -> Config {
    var c = Config()
    try c.merge(file: shapesConfig)
    try c.merge(overrides: overrides)
    return c
}

@Suite("Training targets")
struct TargetTests {
    @Test("the model's cell anchors follow the configured sizes per level")
    func anchors() throws {
        var c = try smallConfig()
        try c.merge(overrides: ["FPN.RPN_ANCHOR_START_SIZE", "32"])
        let m = try ModelComponents.standard.build(c, train: true)
        #expect(m.cellAnchors[2] == [-22, -10, 25, 13, -14, -14, 17, 17, -10, -22, 13, 25])
        #expect(m.cellAnchors[6] == [-332, -152, 395, 215, -224, -224, 287, 287, -148, -328, 211, 391])
    }

    @Test("bodies of depth 18, 34, 50, 101 and 152 build with Detectron's names, AffineChannel or GN, FREEZE_AT")
    func bodies() throws {
        for (depth, last, probe) in [(18, "res5_1_sum", "res4_1_branch2b_w"), (34, "res5_2_sum", "res4_5_branch2b_w"),
                                      (50, "res5_2_sum", "res4_5_branch2c_w"), (101, "res5_2_sum", "res4_22_branch2c_w"),
                                      (152, "res5_2_sum", "res3_7_branch2c_w")] {
            var c = Config()
            try c.merge(file: repoRoot + "/configs/getting_started/tutorial_1gpu_e2e_faster_rcnn_R-50-FPN.yaml")
            try c.merge(overrides: ["MODEL.CONV_BODY", "FPN.add_fpn_ResNet\(depth)_conv5_body"]
                        + (depth < 50 ? ["RESNETS.TRANS_FUNC", "basic_bn_transformation"] : []))
            let m = try ModelComponents.standard.build(c, train: true)
            let names = Set(m.params.map(\.name))
            #expect(names.contains(probe), "R-\(depth) lacks \(probe)")
            #expect(names.contains("fpn_inner_\(last)_w") && names.contains("conv_rpn_fpn2_w") && names.contains("bbox_pred_w"))
            #expect(!names.contains("conv_rpn_fpn3_w"), "the RPN head is shared across levels")
            // FREEZE_AT 2: conv1 and res2 are frozen; AffineChannel always is.
            #expect(m.params.first { $0.name == "conv1_w" }?.trainable == false)
            #expect(m.params.first { $0.name == "res3_0_branch2a_w" }?.trainable == true)
            #expect(m.params.filter { $0.name.hasSuffix("_bn_s") }.allSatisfy { !$0.trainable })
            if depth == 50 {
                #expect(m.params.first { $0.name == "res2_0_branch2a_w" }?.shape == [64, 64, 1, 1])
                #expect(m.params.first { $0.name == "fc6_w" }?.shape == [1024, 12544])
                #expect(m.params.first { $0.name == "bbox_pred_w" }?.shape == [324, 1024])
                #expect(m.params.first { $0.name == "rpn_bbox_pred_fpn2_w" }?.shape == [12, 256, 1, 1])
            }
        }
        #expect(throws: ConfigError.self) { try ModelComponents.standard.build(try smallConfig(["MODEL.CONV_BODY", "FPN.add_fpn_ResNet42_conv5_body"]), train: false) }
        // A basic-block body with a bottleneck TRANS_FUNC is refused, not built as something else.
        #expect(throws: ConfigError.self) {
            try ModelComponents.standard.build(try smallConfig(["RESNETS.TRANS_FUNC", "bottleneck_gn_transformation"]), train: false)
        }
    }

    @Test("ResNeXt (RESNETS.NUM_GROUPS > 1) groups the 3×3 convolutions with Detectron's parameter shapes")
    func resnext() throws {
        var c = Config()
        try c.merge(file: repoRoot + "/configs/getting_started/tutorial_1gpu_e2e_faster_rcnn_R-50-FPN.yaml")
        try c.merge(overrides: ["MODEL.CONV_BODY", "FPN.add_fpn_ResNet101_conv5_body", "RESNETS.NUM_GROUPS", "64",
                                "RESNETS.WIDTH_PER_GROUP", "4", "RESNETS.STRIDE_1X1", "False"])
        for train in [true, false] {
            let m = try ModelComponents.standard.build(c, train: train)
            let shapes = Dictionary(uniqueKeysWithValues: m.params.map { ($0.name, $0.shape) })
            // X-101-64x4d: res2's inner width 64 · 4 = 256 in 64 groups of 4; doubling per stage.
            #expect(shapes["res2_0_branch2a_w"] == [256, 64, 1, 1])
            #expect(shapes["res2_0_branch2b_w"] == [256, 4, 3, 3])
            #expect(shapes["res5_2_branch2b_w"] == [2048, 32, 3, 3])
            #expect(shapes["res5_2_branch2c_w"] == [2048, 2048, 1, 1])
            let conv = m.net.ops.first { $0.inputs.contains("res3_1_branch2b_w") }
            #expect(conv?.arguments["group"] == .int(64))
            #expect(conv?.arguments["algo"] == nil, "Winograd is for one group only")
            // STRIDE_1X1 False: the stride on the 3×3 of the first block of a stage.
            #expect(m.net.ops.first { $0.inputs.contains("res3_0_branch2b_w") }?.arguments["stride"] == .int(2))
        }
    }

    @Test("RPN labels: straddling anchors ignored, best matches positive, 256 sampled, targets and weights")
    func rpnLabels() throws {
        let c = try smallConfig(["TRAIN.MAX_SIZE", "64", "FPN.RPN_ANCHOR_START_SIZE", "16"])
        let m = try ModelComponents.standard.build(c, train: true)
        let maker = RPNTargetMaker(cfg: c, cellAnchors: m.cellAnchors, levels: m.rpnLevels)
        #expect(maker.field == [2: 16, 3: 8, 4: 4, 5: 2, 6: 1])
        // The gt equals a P2 anchor exactly: cell (y 5, x 6), ratio 1 → (-6, -6, 9, 9) + (24, 20).
        let gt: [Float] = [18, 14, 33, 29]
        var rng = SampleRNG(seed: 1)
        let out = maker.compute(gt: gt, imageHeight: 40, imageWidth: 48, rng: &rng)
        let labels = out.labels[2]!
        let cells = 16 * 16
        // Anchor a = 1 (ratio 1) of cell (5, 6) is positive with zero regression target.
        #expect(labels[1 * cells + 5 * 16 + 6] == 1)
        for k in 0..<4 { #expect(out.targets[2]![(4 * 1 + k) * cells + 5 * 16 + 6] == 0) }
        #expect(out.inside[2]![(4 * 1 + 0) * cells + 5 * 16 + 6] == 1)
        // Cells past the 48×40 image (x ≥ 12 or y ≥ 10 on P2) hold no label.
        #expect((0..<3).allSatisfy { a in labels[a * cells + 0 * 16 + 15] == -1 && labels[a * cells + 12 * 16 + 3] == -1 })
        // Every label over all levels: positives ≤ 128; fg + distinct bg ≤ 256; outside weights 1/count.
        let all = m.rpnLevels.flatMap { out.labels[$0]! }
        let pos = all.filter { $0 == 1 }.count, neg = all.filter { $0 == 0 }.count
        #expect(pos >= 1 && pos <= 128)
        #expect(pos + neg <= 256 && neg > 0)
        let w = m.rpnLevels.flatMap { out.outside[$0]! }.filter { $0 > 0 }
        #expect(Set(w) == [1 / Float(pos + neg)])
        #expect(w.count == 4 * (pos + neg))
    }

    @Test("Fast R-CNN sampling: gt among the candidates, fg ≥ 0.5, bg below, class-specific targets, rois in input space")
    func fastRcnnSampling() throws {
        // The builder writes the sampling settings of the config into the op's arguments.
        let built = try ModelComponents.standard.build(try smallConfig(["TRAIN.BATCH_SIZE_PER_IM", "4", "MODEL.NUM_CLASSES", "3"]), train: true)
        let sampler = try #require(built.net.ops.first { $0.type == "CollectAndSampleFastRcnnRois" })
        #expect(sampler.arguments["num_classes"] == .int(3) && sampler.arguments["batch_size_per_im"] == .int(4))
        #expect(sampler.arguments["fg_fraction"] == .float(0.25) && sampler.arguments["bbox_reg_weights"] == .floats([10, 10, 5, 5]))
        let ctx = CPUContext()
        let ws = Workspace(context: ctx)
        // One gt of class 2 at (10, 10, 29, 29); proposals (input space, scale 2): a near match and a far box.
        ws.feed("roidb", value: MinibatchRoidb(entries: [.init(boxes: [10, 10, 29, 29], classes: [2], crowd: [false], scale: 2)], seed: 7))
        ws.feedBlob("r2", try Tensor([0, 22, 22, 60, 60, 0, 100, 100, 120, 120] as [Float], shape: [2, 5], context: ctx))
        ws.feedBlob("p2", try Tensor([0.9, 0.8] as [Float], shape: [2, 1], context: ctx))
        let outs = ["rois", "labels", "targets", "inw", "outw", "f2", "f3", "f4", "f5", "restore"]
        let op = OperatorDef("CollectAndSampleFastRcnnRois", inputs: ["r2", "p2", "roidb"], outputs: outs,
                             arguments: ["rpn_post_nms_topN": .int(10), "roi_min_level": .int(2), "roi_max_level": .int(5),
                                         "num_classes": .int(3), "batch_size_per_im": .int(4), "fg_fraction": .float(0.25),
                                         "fg_thresh": .float(0.5), "bg_thresh_hi": .float(0.5), "bg_thresh_lo": .float(0),
                                         "bbox_thresh": .float(0.5), "bbox_reg_weights": .floats([10, 10, 5, 5])])
        try Net(NetDef(name: "s", ops: [op]), workspace: ws, registry: .engine).run()
        let labels = try ws.fetchBlob("labels").toArray(as: Int32.self)
        let rois = try ws.fetchBlob("rois").toArray(as: Float.self)
        // fg quota round(0.25·4) = 1: one of {gt, near proposal} (both overlap ≥ 0.5), then 3 bg at most (only the far box).
        #expect(labels == [2, 0])
        #expect(rois.count == 10)
        #expect(Array(rois[5..<10]) == [0, 100, 100, 120, 120])
        let t = try ws.fetchBlob("targets").toArray(as: Float.self)
        #expect(t.count == 2 * 12)
        #expect(t[0..<8].allSatisfy { $0 == 0 })  // background and class-1 columns empty
        let inw = try ws.fetchBlob("inw").toArray(as: Float.self)
        #expect(Array(inw[8..<12]) == [1, 1, 1, 1] && inw[12...].allSatisfy { $0 == 0 })
        #expect(try ws.fetchBlob("restore").toArray(as: Int32.self).sorted() == [0, 1])
    }

    @Test("loss normalisations: RPN cls divides by 256·IMS_PER_BATCH, RPN bbox by N with β = 1/9")
    func lossNormalisation() throws {
        let ctx = CPUContext()
        let ws = Workspace(context: ctx)
        // Two valid logits 0 with targets 1 and 0, one ignored: BCE = 2·ln 2, times 1/(256·2).
        ws.feedBlob("x", try Tensor([0, 0, 5] as [Float], shape: [1, 3, 1, 1], context: ctx))
        ws.feedBlob("t", try Tensor([1, 0, -1] as [Int32], shape: [1, 3, 1, 1], context: ctx))
        try Net(NetDef(name: "l", ops: [OperatorDef("SigmoidCrossEntropyLoss", inputs: ["x", "t"], outputs: ["l"],
                                                     arguments: ["normalize": .int(0), "scale": .float(1.0 / 512)])]), workspace: ws).run()
        #expect(abs(try ws.fetchBlob("l").toArray(as: Float.self)[0] - Float(2 * log(2.0) / 512)) < 1e-7)
        // SmoothL1 with β = 1/9 over N = 2 images: |d| = 1 ≥ β → 1 − 0.5/9, times out_w 0.5, over 2.
        ws.feedBlob("p", try Tensor([1, 0, 0, 0] as [Float], shape: [2, 2], context: ctx))
        ws.feedBlob("y", try Tensor([0, 0, 0, 0] as [Float], shape: [2, 2], context: ctx))
        ws.feedBlob("wi", try Tensor([1, 1, 1, 1] as [Float], shape: [2, 2], context: ctx))
        ws.feedBlob("wo", try Tensor([0.5, 0.5, 0.5, 0.5] as [Float], shape: [2, 2], context: ctx))
        try Net(NetDef(name: "s", ops: [OperatorDef("SmoothL1Loss", inputs: ["p", "y", "wi", "wo"], outputs: ["s"],
                                                     arguments: ["beta": .float(1.0 / 9)])]), workspace: ws).run()
        #expect(abs(try ws.fetchBlob("s").toArray(as: Float.self)[0] - Float((1 - 0.5 / 9) * 0.5 / 2)) < 1e-6)
    }
}

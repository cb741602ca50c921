import Foundation
import Operators

/// A built detector: its net (train or test), parameters and the names the engine feeds and reads.
public struct DetectionModel: Sendable {
    public var net: NetDef
    public var initNet: NetDef
    public var params: [ParamInfo]
    /// Loss blobs (train).
    public var losses: [String]
    /// FPN levels with RPN heads, and with RoI features.
    public var rpnLevels: ClosedRange<Int>
    public var roiLevels: ClosedRange<Int>
    /// Cell anchors per RPN level (what the `anchors_fpnL` blobs are made from).
    public var cellAnchors: [Int: [Float]]
    public var numClasses: Int
    /// Whose rules the model follows (`MODEL.SEMANTICS`).
    public var semantics: any DetectionSemantics
}

/// Detectron's `model_builder.generalized_rcnn` with FPN: the body (`MODEL.CONV_BODY`), the RPN
/// head, proposals collected and distributed over the RoI levels, multi-level RoIAlign, the box
/// head (`FAST_RCNN.ROI_BOX_HEAD`) and its class and box predictors.
enum GeneralizedRCNN {
    static let modelType = ModelType(check: check, build: build)

    /// Detectron picks the RPN head by FPN.FPN_ON and FPN.MULTILEVEL_RPN.
    static func rpnHeadName(_ cfg: Config) -> String {
        cfg.bool("FPN.FPN_ON") && cfg.bool("FPN.MULTILEVEL_RPN") ? "FPN.add_fpn_rpn_outputs" : "rpn_heads.add_single_scale_rpn_outputs"
    }

    static func check(_ components: ModelComponents, _ cfg: Config) throws(ConfigError) {
        try components.named(components.bodies, key: "MODEL.CONV_BODY", feature: "The body", cfg).check(cfg)
        try ModelComponents.entry(components.rpnHeads, rpnHeadName(cfg), key: "FPN.MULTILEVEL_RPN", value: "\(cfg.bool("FPN.MULTILEVEL_RPN"))",
                                  feature: "The RPN head").check(cfg)
        try components.named(components.roiHeads, key: "FAST_RCNN.ROI_BOX_HEAD", feature: "The box head", cfg).check(cfg)
        try cfg.checkChoice("FAST_RCNN.ROI_XFORM_METHOD", among: ["RoIAlign"], feature: "The RoI transform")
        _ = try components.semantics(cfg)
    }

    static func build(_ components: ModelComponents, _ cfg: Config, train: Bool) throws(ConfigError) -> DetectionModel {
        let K = cfg.int("MODEL.NUM_CLASSES")
        guard K >= 2 else { throw .invalid(key: "MODEL.NUM_CLASSES", reason: "must count the background too (≥ 2), got \(K)") }
        let semantics = try components.semantics(cfg)
        if train && !semantics.trains {
            throw .invalid(key: "MODEL.SEMANTICS", reason: "is '\(cfg.string("MODEL.SEMANTICS"))', which is for inference with its weights; "
                           + "train with MODEL.SEMANTICS detectron")
        }
        let algo = cfg.string("TEST.CONV_ALGO")
        guard ["winograd", "winograd_f4", "winograd_f2", "im2col"].contains(algo) else {
            throw .invalid(key: "TEST.CONV_ALGO", reason: "is '\(algo)'; use winograd, winograd_f4, winograd_f2 or im2col")
        }
        let b = ModelBuilder(name: train ? "train" : "test", train: train, winograd: !train && algo != "im2col" ? algo : nil)
        let features = try components.named(components.bodies, key: "MODEL.CONV_BODY", feature: "The body", cfg).build(b, cfg)
        let rpnHead = try ModelComponents.entry(components.rpnHeads, rpnHeadName(cfg), key: "FPN.MULTILEVEL_RPN",
                                                value: "\(cfg.bool("FPN.MULTILEVEL_RPN"))", feature: "The RPN head")
        let rpn = rpnHead.build(b, cfg, features, semantics)
        let roiLevels = cfg.int("FPN.ROI_MIN_LEVEL")...cfg.int("FPN.ROI_MAX_LEVEL")
        proposals(b, cfg, levels: rpn.levels, roiLevels: roiLevels, train: train, semantics: semantics)
        let roi = roiFeatures(b, cfg, features, roiLevels: roiLevels)
        let head = try components.named(components.roiHeads, key: "FAST_RCNN.ROI_BOX_HEAD", feature: "The box head", cfg).build(b, cfg, roi)
        var losses = rpn.losses
        b.fc(head.blob, "cls_score", dimIn: head.dim, dimOut: K, weightFill: ParamInfo.gauss(0.01))
        b.fc(head.blob, "bbox_pred", dimIn: head.dim, dimOut: cfg.bool("MODEL.CLS_AGNOSTIC_BBOX_REG") ? 8 : 4 * K, weightFill: ParamInfo.gauss(0.001))
        if train {
            b.op("SoftmaxWithLoss", ["cls_score", "labels_int32"], ["cls_prob", "loss_cls"], ["scale": .float(1.0 / Double(cfg.int("NUM_GPUS")))])
            b.op("SmoothL1Loss", ["bbox_pred", "bbox_targets", "bbox_inside_weights", "bbox_outside_weights"], ["loss_bbox"],
                 ["scale": .float(1.0 / Double(cfg.int("NUM_GPUS")))])
            b.op("Accuracy", ["cls_prob", "labels_int32"], ["accuracy_cls"])
            losses += ["loss_cls", "loss_bbox"]
        } else {
            b.op("Softmax", ["cls_score"], ["cls_prob"])
        }
        b.net.executor = cfg.string("MODEL.EXECUTION_TYPE") == "simple" ? .simple : .dag
        if !train && cfg.bool("TEST.FUSE_OPS") { b.net = b.net.fusedForInference() }
        // The blobs the engine feeds: the minibatch (or image), and the anchors.
        b.net.externalInputs = ["data", "im_info"] + rpn.levels.map(DerivedBlobs.anchors)
        if train {
            b.net.externalInputs += ["roidb"] + rpn.levels.flatMap(DerivedBlobs.rpnTargets)
        }
        b.net.externalInputs += b.params.map(\.name)
        return DetectionModel(net: b.net, initNet: b.initNet(), params: b.params, losses: losses, rpnLevels: rpn.levels,
                              roiLevels: roiLevels, cellAnchors: rpn.cellAnchors, numClasses: K, semantics: semantics)
    }

    /// Proposals per level, then collect (and, in training, sample Fast R-CNN RoIs) and distribute.
    /// The semantics filter each level's proposals (``DetectionSemantics/proposalFilter(postNMSTopN:minSize:)``)
    /// and choose the box arithmetic.
    static func proposals(_ b: ModelBuilder, _ cfg: Config, levels: ClosedRange<Int>, roiLevels: ClosedRange<Int>, train: Bool,
                          semantics: any DetectionSemantics) {
        let mode = train ? "TRAIN" : "TEST"
        let plusOne: ArgumentValue = .int(semantics.boxConvention == .detectron ? 1 : 0)
        let filter = semantics.proposalFilter(postNMSTopN: cfg.int("\(mode).RPN_POST_NMS_TOP_N"), minSize: cfg.int("\(mode).RPN_MIN_SIZE"))
        for level in levels {
            let s = "\(level)"
            b.op("GenerateProposals", ["rpn_cls_probs_fpn" + s, "rpn_bbox_pred_fpn" + s, "im_info", DerivedBlobs.anchors(level)],
                 [DerivedBlobs.rpnRois(level), DerivedBlobs.rpnRoiProbs(level)],
                 ["spatial_scale": .float(1.0 / Double(1 << level)), "pre_nms_topN": .int(cfg.int("\(mode).RPN_PRE_NMS_TOP_N")),
                  "post_nms_topN": .int(filter.postNMSTopN),
                  "nms_thresh": .float(cfg.double("\(mode).RPN_NMS_THRESH")),
                  "min_size": .float(filter.minSize),
                  "legacy_plus_one": plusOne])
        }
        let inputs = levels.map(DerivedBlobs.rpnRois) + levels.map(DerivedBlobs.rpnRoiProbs)
        let distributed = roiLevels.map(DerivedBlobs.rois) + ["rois_idx_restore_int32"]
        var args: [String: ArgumentValue] = ["rpn_post_nms_topN": .int(cfg.int("\(mode).RPN_POST_NMS_TOP_N")),
                                             "roi_min_level": .int(roiLevels.lowerBound), "roi_max_level": .int(roiLevels.upperBound),
                                             "roi_canonical_scale": .float(Double(cfg.int("FPN.ROI_CANONICAL_SCALE"))),
                                             "roi_canonical_level": .int(cfg.int("FPN.ROI_CANONICAL_LEVEL"))]
        if train {
            let w = cfg.doubles("MODEL.BBOX_REG_WEIGHTS")
            for (name, key) in [("fg_fraction", "TRAIN.FG_FRACTION"), ("fg_thresh", "TRAIN.FG_THRESH"), ("bg_thresh_hi", "TRAIN.BG_THRESH_HI"),
                                ("bg_thresh_lo", "TRAIN.BG_THRESH_LO"), ("bbox_thresh", "TRAIN.BBOX_THRESH")] {
                args[name] = .float(cfg.double(key))
            }
            args["num_classes"] = .int(cfg.int("MODEL.NUM_CLASSES"))
            args["batch_size_per_im"] = .int(cfg.int("TRAIN.BATCH_SIZE_PER_IM"))
            args["bbox_reg_weights"] = .floats(w)
            b.op("CollectAndSampleFastRcnnRois", inputs + ["roidb"],
                 ["rois", "labels_int32", "bbox_targets", "bbox_inside_weights", "bbox_outside_weights"] + distributed, args)
        } else {
            args["legacy_plus_one"] = plusOne
            b.op("CollectAndDistributeFpnRpnProposals", inputs, ["rois"] + distributed, args)
        }
    }

    /// Multi-level RoIAlign (`FPN.map_rois_to_fpn_levels` and `add_multilevel_roi_blobs` in the
    /// net): each level's RoIs pooled from its feature map, restored to the RoIs' order.
    static func roiFeatures(_ b: ModelBuilder, _ cfg: Config, _ features: FeatureMaps, roiLevels: ClosedRange<Int>) -> RoIFeatures {
        let res = cfg.int("FAST_RCNN.ROI_XFORM_RESOLUTION")
        var feats: [String] = []
        for level in roiLevels {
            feats.append(b.op("RoIAlign", [features.blobs[level]!, DerivedBlobs.rois(level)], ["roi_feat_fpn\(level)"],
                              ["spatial_scale": .float(1.0 / Double(1 << level)), "pooled_h": .int(res), "pooled_w": .int(res),
                               "sampling_ratio": .int(cfg.int("FAST_RCNN.ROI_XFORM_SAMPLING_RATIO"))]))
        }
        b.op("Concat", feats, ["roi_feat_shuffled", "_concat_roi_feat"], ["axis": .int(0)])
        b.op("BatchPermutation", ["roi_feat_shuffled", "rois_idx_restore_int32"], ["roi_feat"])
        return RoIFeatures(blob: "roi_feat", dim: features.dim, resolution: res)
    }
}

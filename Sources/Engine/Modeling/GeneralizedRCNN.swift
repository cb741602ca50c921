import Foundation
import Operators
import Storage

/// A built detector: its net (train or test), parameters and the names the engine feeds and reads.
public struct DetectionModel: Sendable {
    public var net: NetDef
    public var initNet: NetDef
    public var params: [ParamInfo]
    /// Loss blobs (train).
    public var losses: [String]
    /// Scalar blobs logged beside the losses, averaged over replicas (train).
    public var metrics: [String]
    /// FPN levels with RPN heads, and with RoI features.
    public var rpnLevels: ClosedRange<Int>
    public var roiLevels: ClosedRange<Int>
    /// Cell anchors per RPN level (what the `anchors_fpnL` blobs are made from).
    public var cellAnchors: [Int: [Float]]
    public var numClasses: Int
    /// Whose rules the model follows (`MODEL.SEMANTICS`).
    public var semantics: any DetectionSemantics
    /// The model type's training targets (training nets).
    var trainingTargets: TrainingTargets?
    /// The model type's reading of a test net's outputs: detections in the prepared frame
    /// (clipped), before the semantics' output scale.
    var readDetections: @Sendable (Workspace, PreparedInput, TestSettings) throws -> [(classIndex: Int, score: Float, box: [Float])]
    /// Mask R-CNN at test: the mask branch as its own net, run on the final detections
    /// (`mask_rois_fpnL`, `mask_rois_idx_restore_int32`) after `net` (Detectron's `mask_net`).
    var maskNet: NetDef? = nil
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
        guard cfg.bool("MODEL.FASTER_RCNN") else {
            throw cfg.unsupported("MODEL.FASTER_RCNN", "Fast R-CNN on precomputed proposals", hint: "set MODEL.FASTER_RCNN True for Faster R-CNN")
        }
        for key in ["FPN.FPN_ON", "FPN.MULTILEVEL_RPN", "FPN.MULTILEVEL_ROIS"] where !cfg.bool(key) {
            throw cfg.unsupported(key, "A single-scale (C4) model",
                                  hint: "this version builds FPN models (FPN.FPN_ON, FPN.MULTILEVEL_RPN and FPN.MULTILEVEL_ROIS True)")
        }
        if cfg.bool("RETINANET.RETINANET_ON") {
            throw .invalid(key: "RETINANET.RETINANET_ON", reason: "is True, which Detectron pairs with MODEL.TYPE retinanet, but MODEL.TYPE is generalized_rcnn")
        }
        // The RPN runs on P2–P6 and RoIs are pooled from P2–P5 (Detectron's FPN configs).
        if cfg.int("FPN.RPN_MIN_LEVEL") != 2 || cfg.int("FPN.RPN_MAX_LEVEL") != 6 {
            throw .unsupported(key: "FPN.RPN_MIN_LEVEL", value: "\(cfg.int("FPN.RPN_MIN_LEVEL"))…\(cfg.int("FPN.RPN_MAX_LEVEL"))",
                               feature: "RPN levels other than P2–P6", hint: "set FPN.RPN_MIN_LEVEL 2 and FPN.RPN_MAX_LEVEL 6")
        }
        if cfg.int("FPN.ROI_MIN_LEVEL") != 2 || cfg.int("FPN.ROI_MAX_LEVEL") != 5 {
            throw .unsupported(key: "FPN.ROI_MIN_LEVEL", value: "\(cfg.int("FPN.ROI_MIN_LEVEL"))…\(cfg.int("FPN.ROI_MAX_LEVEL"))",
                               feature: "RoI levels other than P2–P5", hint: "set FPN.ROI_MIN_LEVEL 2 and FPN.ROI_MAX_LEVEL 5")
        }
        try components.named(components.bodies, key: "MODEL.CONV_BODY", feature: "The body", cfg).check(cfg)
        try ModelComponents.entry(components.rpnHeads, rpnHeadName(cfg), key: "FPN.MULTILEVEL_RPN", value: "\(cfg.bool("FPN.MULTILEVEL_RPN"))",
                                  feature: "The RPN head").check(cfg)
        try components.named(components.roiHeads, key: "FAST_RCNN.ROI_BOX_HEAD", feature: "The box head", cfg).check(cfg)
        try cfg.checkChoice("FAST_RCNN.ROI_XFORM_METHOD", among: ["RoIAlign"], feature: "The RoI transform")
        try MaskRCNN.check(components, cfg)
        _ = try components.semantics(cfg)
    }

    static func build(_ components: ModelComponents, _ cfg: Config, train: Bool) throws(ConfigError) -> DetectionModel {
        let b = try ModelBuilder(cfg, train: train)
        let K = cfg.int("MODEL.NUM_CLASSES")
        let semantics = try components.semantics(cfg)
        if train && !semantics.trains {
            throw .invalid(key: "MODEL.SEMANTICS", reason: "is '\(cfg.string("MODEL.SEMANTICS"))', which is for inference with its weights; "
                           + "train with MODEL.SEMANTICS detectron")
        }
        let features = try components.named(components.bodies, key: "MODEL.CONV_BODY", feature: "The body", cfg).build(b, cfg)
        let rpnHead = try ModelComponents.entry(components.rpnHeads, rpnHeadName(cfg), key: "FPN.MULTILEVEL_RPN",
                                                value: "\(cfg.bool("FPN.MULTILEVEL_RPN"))", feature: "The RPN head")
        let rpn = rpnHead.build(b, cfg, features, semantics)
        let roiLevels = cfg.int("FPN.ROI_MIN_LEVEL")...cfg.int("FPN.ROI_MAX_LEVEL")
        let mask = cfg.bool("MODEL.MASK_ON")
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
        // The mask branch: in the training net, or the ops after `boxOps` that become the mask net.
        let boxOps = b.net.ops.count
        if mask {
            let head = try components.named(components.maskHeads, key: "MRCNN.ROI_MASK_HEAD", feature: "The mask head", cfg)
                .build(b, cfg, features, roiLevels)
            if let loss = MaskRCNN.outputs(b, cfg, head: head) { losses.append(loss) }
        }
        let executor: NetDef.ExecutorKind = cfg.string("MODEL.EXECUTION_TYPE") == "simple" ? .simple : .dag
        var maskNet: NetDef?
        if mask && !train {
            var m = NetDef(name: b.net.name + "_mask", ops: Array(b.net.ops[boxOps...]), executor: executor)
            b.net.ops.removeSubrange(boxOps...)
            let made = Set(m.ops.flatMap(\.outputs))
            var seen = Set<String>()
            m.externalInputs = m.ops.flatMap(\.inputs).filter { !made.contains($0) && seen.insert($0).inserted }
            maskNet = cfg.bool("TEST.FUSE_OPS") ? m.fusedForInference() : m
        }
        b.net.executor = executor
        if !train && cfg.bool("TEST.FUSE_OPS") { b.net = b.net.fusedForInference(keeping: Set(features.blobs.values)) }
        // The blobs the engine feeds: the minibatch (or image), and the anchors.
        b.net.externalInputs = ["data", "im_info"] + rpn.levels.map(DerivedBlobs.anchors)
        if train {
            b.net.externalInputs += ["roidb"] + rpn.levels.flatMap(DerivedBlobs.rpnTargets)
        }
        b.net.externalInputs += b.params.map(\.name)
        return DetectionModel(net: b.net, initNet: b.initNet(), params: b.params, losses: losses, metrics: train ? ["accuracy_cls"] : [],
                              rpnLevels: rpn.levels,
                              roiLevels: roiLevels, cellAnchors: rpn.cellAnchors, numClasses: K, semantics: semantics,
                              trainingTargets: train ? .rpn(RPNTargetMaker(cfg: cfg, cellAnchors: rpn.cellAnchors, levels: rpn.levels)) : nil,
                              readDetections: { ws, input, settings in try detections(ws, input, settings, semantics: semantics) },
                              maskNet: maskNet)
    }

    /// Detectron's `im_detect_bbox` after the net (or torchvision's): each RoI decoded per class
    /// by the box head's deltas, clipped, then the semantics' post-processing.
    static func detections(_ ws: Workspace, _ input: PreparedInput, _ settings: TestSettings,
                           semantics: any DetectionSemantics) throws -> [(classIndex: Int, score: Float, box: [Float])] {
        let rois = try ws.fetchBlob("rois").toArray(as: Float.self)
        let boxes = classBoxes(rois: rois, deltas: try ws.fetchBlob("bbox_pred").toArray(as: Float.self), input: input, settings,
                               convention: semantics.boxConvention)
        return semantics.detections(scores: try ws.fetchBlob("cls_prob").toArray(as: Float.self), boxes: boxes, rows: rois.count / 5, settings)
    }

    /// Each roi, divided by the input's RoI scale, decoded per class (R, 4K) by the box head's
    /// deltas (or the roi itself without TEST.BBOX_REG), clipped to the input's clip size.
    static func classBoxes(rois: [Float], deltas: [Float], input: PreparedInput, _ settings: TestSettings, convention: BoxConvention) -> [Float] {
        let r = rois.count / 5, K = settings.numClasses
        let agnostic = settings.classAgnosticBoxes
        // Every (roi, class) pair in one decode call: roi i's box repeated for each class, beside
        // the class's deltas (the class-agnostic model's second column for every foreground class).
        var refs = [Float](), classDeltas = agnostic ? [Float]() : deltas
        refs.reserveCapacity(r * K * 4)
        if agnostic { classDeltas.reserveCapacity(r * K * 4) }
        for i in 0..<r {
            let ref = (1...4).map { rois[5 * i + $0] / input.roiScale }
            for c in 0..<K {
                refs += ref
                if agnostic {
                    let start = (2 * i + (c > 0 ? 1 : 0)) * 4
                    classDeltas += deltas[start..<start + 4]
                }
            }
        }
        var boxes = settings.bboxReg
            ? Boxes.decode(refs, deltas: classDeltas, weights: settings.bboxRegWeights, clip: settings.bboxTransformClip, convention: convention)
            : refs
        Boxes.clip(&boxes, height: input.clipHeight, width: input.clipWidth, convention: convention)
        return boxes
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
            var outputs = ["rois", "labels_int32", "bbox_targets", "bbox_inside_weights", "bbox_outside_weights"] + distributed
            if cfg.bool("MODEL.MASK_ON") {
                args["mask_resolution"] = .int(cfg.int("MRCNN.RESOLUTION"))
                args["cls_specific_mask"] = .int(cfg.bool("MRCNN.CLS_SPECIFIC_MASK") ? 1 : 0)
                outputs += MaskRCNN.trainingBlobs(roiLevels: roiLevels)
            }
            b.op("CollectAndSampleFastRcnnRois", inputs + ["roidb"], outputs, args)
        } else {
            args["legacy_plus_one"] = plusOne
            b.op("CollectAndDistributeFpnRpnProposals", inputs, ["rois"] + distributed, args)
        }
    }

    /// The box head's RoI features (`RoIFeatureTransform` on `rois`, FAST_RCNN.ROI_XFORM_*).
    static func roiFeatures(_ b: ModelBuilder, _ cfg: Config, _ features: FeatureMaps, roiLevels: ClosedRange<Int>) -> RoIFeatures {
        let res = cfg.int("FAST_RCNN.ROI_XFORM_RESOLUTION")
        let blob = roiTransform(b, features, roiLevels: roiLevels, rois: "rois", output: "roi_feat", resolution: res,
                                samplingRatio: cfg.int("FAST_RCNN.ROI_XFORM_SAMPLING_RATIO"))
        return RoIFeatures(blob: blob, dim: features.dim, resolution: res)
    }

    /// Detectron's multi-level `RoIFeatureTransform` (with `FPN.map_rois_to_fpn_levels` and
    /// `add_multilevel_roi_blobs` done where the RoIs are made): each level's `<rois>_fpnL` pooled
    /// by RoIAlign from its feature map into `<output>_fpnL`, concatenated into
    /// `<output>_shuffled` and restored to the RoIs' order by `<rois>_idx_restore_int32`.
    static func roiTransform(_ b: ModelBuilder, _ features: FeatureMaps, roiLevels: ClosedRange<Int>, rois: String, output: String,
                             resolution: Int, samplingRatio: Int) -> String {
        var feats: [String] = []
        for level in roiLevels {
            feats.append(b.op("RoIAlign", [features.blobs[level]!, "\(rois)_fpn\(level)"], ["\(output)_fpn\(level)"],
                              ["spatial_scale": .float(1.0 / Double(1 << level)), "pooled_h": .int(resolution), "pooled_w": .int(resolution),
                               "sampling_ratio": .int(samplingRatio)]))
        }
        b.op("Concat", feats, ["\(output)_shuffled", "_concat_\(output)"], ["axis": .int(0)])
        return b.op("BatchPermutation", ["\(output)_shuffled", "\(rois)_idx_restore_int32"], [output])
    }
}

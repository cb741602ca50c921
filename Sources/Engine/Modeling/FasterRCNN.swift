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
    /// Cell anchors per RPN level (the `anchors_fpnL` blobs).
    public var cellAnchors: [Int: [Float]]
    public var numClasses: Int
}

/// Whose semantics a model follows (`MODEL.SEMANTICS`): Detectron's, or torchvision's
/// `fasterrcnn_resnet50_fpn` at inference — no +1 in box arithmetic, its anchors, RPN filtering,
/// FPN level rule, input transform and detection post-processing (the structure and the numeric
/// settings come from the ordinary config keys; see configs/torchvision/).
public enum ModelSemantics: String, Sendable {
    case detectron, torchvision

    public static func of(_ cfg: Config) throws(ConfigError) -> ModelSemantics {
        let v = cfg.string("MODEL.SEMANTICS")
        guard let s = ModelSemantics(rawValue: v) else {
            throw .invalid(key: "MODEL.SEMANTICS", reason: "is '\(v)'; use detectron or torchvision")
        }
        return s
    }

    /// torchvision's RPN drops proposals with a side under this many pixels of the resized image
    /// (`RegionProposalNetwork.min_size`, fixed in torchvision).
    static let torchvisionRPNMinSize = 1e-3
}

/// Detectron's generalized R-CNN with FPN (`model_builder.generalized_rcnn`): ResNet body,
/// FPN P2–P6, shared multi-level RPN head, multi-level RoIAlign, 2mlp (or GN conv) box head.
enum FasterRCNN {
    struct Body {
        var depth: Int
        var bottleneck: Bool
        var blocks: [Int]
    }

    /// The bodies by Detectron's builder names (`MODEL.CONV_BODY`); ResNeXt is a ResNet with
    /// RESNETS.NUM_GROUPS > 1. ResNet-18 and -34 are ours (basic blocks, He et al.).
    static let bodies: [String: Body] = [
        "FPN.add_fpn_ResNet18_conv5_body": Body(depth: 18, bottleneck: false, blocks: [2, 2, 2, 2]),
        "FPN.add_fpn_ResNet34_conv5_body": Body(depth: 34, bottleneck: false, blocks: [3, 4, 6, 3]),
        "FPN.add_fpn_ResNet50_conv5_body": Body(depth: 50, bottleneck: true, blocks: [3, 4, 6, 3]),
        "FPN.add_fpn_ResNet101_conv5_body": Body(depth: 101, bottleneck: true, blocks: [3, 4, 23, 3]),
        "FPN.add_fpn_ResNet152_conv5_body": Body(depth: 152, bottleneck: true, blocks: [3, 8, 36, 3]),
    ]

    /// The box heads by Detectron's builder names (`FAST_RCNN.ROI_BOX_HEAD`).
    static let boxHeads = ["fast_rcnn_heads.add_roi_2mlp_head", "fast_rcnn_heads.add_roi_Xconv1fc_gn_head"]

    static func groupsFor(_ cfg: Config, _ dim: Int) -> Int {
        let perGroup = cfg.int("GROUP_NORM.DIM_PER_GP")
        return perGroup > 0 ? max(1, dim / perGroup) : min(cfg.int("GROUP_NORM.NUM_GROUPS"), dim)
    }

    static func build(_ cfg: Config, train: Bool) throws(ConfigError) -> DetectionModel {
        _ = try cfg.checkImplemented()
        let K = cfg.int("MODEL.NUM_CLASSES")
        guard K >= 2 else { throw .invalid(key: "MODEL.NUM_CLASSES", reason: "must count the background too (≥ 2), got \(K)") }
        let semantics = try ModelSemantics.of(cfg)
        if train && semantics == .torchvision {
            throw .invalid(key: "MODEL.SEMANTICS", reason: "is 'torchvision', which is for inference with torchvision weights; "
                           + "train with MODEL.SEMANTICS detectron")
        }
        let algo = cfg.string("TEST.CONV_ALGO")
        guard ["winograd", "winograd_f4", "winograd_f2", "im2col"].contains(algo) else {
            throw .invalid(key: "TEST.CONV_ALGO", reason: "is '\(algo)'; use winograd, winograd_f4, winograd_f2 or im2col")
        }
        let b = ModelBuilder(name: train ? "train" : "test", train: train, winograd: !train && algo != "im2col" ? algo : nil)
        let stages = resnet(b, cfg)
        let fpn = fpnLevels(b, cfg, stages: stages)
        let rpnLevels = cfg.int("FPN.RPN_MIN_LEVEL")...cfg.int("FPN.RPN_MAX_LEVEL")
        let roiLevels = cfg.int("FPN.ROI_MIN_LEVEL")...cfg.int("FPN.ROI_MAX_LEVEL")
        let anchors = rpnHead(b, cfg, fpn: fpn, levels: rpnLevels, semantics: semantics)
        var losses: [String] = []
        if train { losses += rpnLosses(b, cfg, levels: rpnLevels) }
        proposals(b, cfg, levels: rpnLevels, roiLevels: roiLevels, train: train, semantics: semantics)
        let headOut = boxHead(b, cfg, fpn: fpn, roiLevels: roiLevels)
        let dim = cfg.int("FAST_RCNN.MLP_HEAD_DIM")
        b.fc(headOut, "cls_score", dimIn: dim, dimOut: K, weightFill: ParamInfo.gauss(0.01))
        b.fc(headOut, "bbox_pred", dimIn: dim, dimOut: cfg.bool("MODEL.CLS_AGNOSTIC_BBOX_REG") ? 8 : 4 * K, weightFill: ParamInfo.gauss(0.001))
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
        // The blobs the engine feeds: the minibatch (or image), and the cell anchors.
        b.net.externalInputs = ["data", "im_info"] + rpnLevels.map(DerivedBlobs.anchors)
        if train {
            b.net.externalInputs += ["roidb"] + rpnLevels.flatMap(DerivedBlobs.rpnTargets)
        }
        b.net.externalInputs += b.params.map(\.name)
        return DetectionModel(net: b.net, initNet: b.initNet(), params: b.params, losses: losses,
                              rpnLevels: rpnLevels, roiLevels: roiLevels, cellAnchors: anchors, numClasses: K)
    }

    /// The ResNet body; returns the output blob and channels of res2…res5.
    static func resnet(_ b: ModelBuilder, _ cfg: Config) -> [(blob: String, dim: Int)] {
        let body = bodies[cfg.builderName("MODEL.CONV_BODY")]!   // checked by checkImplemented
        let gn = cfg.string("RESNETS.STEM_FUNC").contains("gn")
        let gnTrans = cfg.string("RESNETS.TRANS_FUNC").contains("gn")
        let gnShortcut = cfg.string("RESNETS.SHORTCUT_FUNC").contains("gn")
        let eps = cfg.double("GROUP_NORM.EPSILON")
        let msra = ("MSRAFill", [String: ArgumentValue]())
        // Pretrained bodies are overwritten by their weights; from scratch (GN), He init.
        let fill = gn || gnTrans ? msra : ParamInfo.gauss(0.01)
        let freezeAt = cfg.int("TRAIN.FREEZE_AT")
        // Stem: conv1 7×7/2, norm, relu, max pool 3×3/2.
        let stemDim = cfg.int("RESNETS.STEM_OUT_DIM")
        var x: String
        if gn {
            x = b.convGN("data", "conv1", dimIn: 3, dimOut: stemDim, kernel: 7, stride: 2, pad: 3, groups: groupsFor(cfg, stemDim), epsilon: eps, weightFill: fill)
        } else {
            b.conv("data", "conv1", dimIn: 3, dimOut: stemDim, kernel: 7, stride: 2, pad: 3, weightFill: fill, noBias: true)
            x = b.affineChannel("conv1", "res_conv1_bn", dim: stemDim, inPlace: false)
        }
        b.relu(x)
        x = b.op("MaxPool", [x], ["pool1"], ["kernel": .int(3), "stride": .int(2), "pad": .int(1)])
        var dimIn = stemDim
        var dimOut = cfg.int("RESNETS.RES2_OUT_DIM")
        var inner = body.bottleneck ? cfg.int("RESNETS.NUM_GROUPS") * cfg.int("RESNETS.WIDTH_PER_GROUP") : dimOut
        var outputs: [(String, Int)] = []
        if freezeAt == 1 {
            b.op("StopGradient", [x], [x])
            b.freezeAll()
        }
        for (si, n) in body.blocks.enumerated() {
            let stage = si + 2
            for i in 0..<n {
                let prefix = "res\(stage)_\(i)"
                let stride = (i == 0 && stage > 2) ? 2 : 1
                x = residualBlock(b, cfg, x, prefix: prefix, dimIn: dimIn, dimOut: dimOut, inner: inner, stride: stride,
                                  bottleneck: body.bottleneck, gnTrans: gnTrans, gnShortcut: gnShortcut, eps: eps, fill: fill)
                dimIn = dimOut
            }
            if freezeAt == stage {
                b.op("StopGradient", [x], [x])
                b.freezeAll()
            }
            outputs.append((x, dimOut))
            dimOut *= 2
            inner *= 2
        }
        return outputs
    }

    static func norm(_ b: ModelBuilder, _ cfg: Config, _ conv: String, dim: Int, gn: Bool, eps: Double) -> String {
        gn ? b.groupNorm(conv, conv + "_gn", dim: dim, groups: groupsFor(cfg, dim), epsilon: eps)
           : b.affineChannel(conv, conv + "_bn", dim: dim, inPlace: true)
    }

    static func residualBlock(_ b: ModelBuilder, _ cfg: Config, _ input: String, prefix: String, dimIn: Int, dimOut: Int, inner: Int,
                              stride: Int, bottleneck: Bool, gnTrans: Bool, gnShortcut: Bool, eps: Double,
                              fill: (String, [String: ArgumentValue])) -> String {
        var t: String
        if bottleneck {
            // MSRA style: the stride on the first 1×1 (RESNETS.STRIDE_1X1).
            let s1 = cfg.bool("RESNETS.STRIDE_1X1") ? stride : 1, s3 = cfg.bool("RESNETS.STRIDE_1X1") ? 1 : stride
            b.conv(input, prefix + "_branch2a", dimIn: dimIn, dimOut: inner, kernel: 1, stride: s1, weightFill: fill, noBias: true)
            t = b.relu(norm(b, cfg, prefix + "_branch2a", dim: inner, gn: gnTrans, eps: eps))
            // ResNeXt: the 3×3 convolution in RESNETS.NUM_GROUPS groups.
            b.conv(t, prefix + "_branch2b", dimIn: inner, dimOut: inner, kernel: 3, stride: s3, pad: 1, group: cfg.int("RESNETS.NUM_GROUPS"),
                   weightFill: fill, noBias: true)
            t = b.relu(norm(b, cfg, prefix + "_branch2b", dim: inner, gn: gnTrans, eps: eps))
            b.conv(t, prefix + "_branch2c", dimIn: inner, dimOut: dimOut, kernel: 1, weightFill: fill, noBias: true)
            t = norm(b, cfg, prefix + "_branch2c", dim: dimOut, gn: gnTrans, eps: eps)
        } else {
            b.conv(input, prefix + "_branch2a", dimIn: dimIn, dimOut: dimOut, kernel: 3, stride: stride, pad: 1, weightFill: fill, noBias: true)
            t = b.relu(norm(b, cfg, prefix + "_branch2a", dim: dimOut, gn: gnTrans, eps: eps))
            b.conv(t, prefix + "_branch2b", dimIn: dimOut, dimOut: dimOut, kernel: 3, pad: 1, weightFill: fill, noBias: true)
            t = norm(b, cfg, prefix + "_branch2b", dim: dimOut, gn: gnTrans, eps: eps)
        }
        var shortcut = input
        if dimIn != dimOut || stride != 1 {
            b.conv(input, prefix + "_branch1", dimIn: dimIn, dimOut: dimOut, kernel: 1, stride: stride, weightFill: fill, noBias: true)
            shortcut = norm(b, cfg, prefix + "_branch1", dim: dimOut, gn: gnShortcut, eps: eps)
        }
        b.op("Sum", [t, shortcut], [prefix + "_sum"])
        return b.relu(prefix + "_sum")
    }

    /// FPN (`FPN.add_fpn`): laterals, nearest ×2 top-down, 3×3 outputs, P6 by subsampling P5.
    /// Returns the output blob of each level 2…6.
    static func fpnLevels(_ b: ModelBuilder, _ cfg: Config, stages: [(blob: String, dim: Int)]) -> [Int: String] {
        let dim = cfg.int("FPN.DIM")
        let gn = cfg.bool("FPN.USE_GN")
        let eps = cfg.double("GROUP_NORM.EPSILON")
        let xavier = ("XavierFill", [String: ArgumentValue]())
        func conv(_ input: String, _ output: String, _ dimIn: Int, kernel: Int, pad: Int,
                  fill: (String, [String: ArgumentValue]) = xavier) -> String {
            if gn {
                return b.convGN(input, output, dimIn: dimIn, dimOut: dim, kernel: kernel, pad: pad, groups: groupsFor(cfg, dim), epsilon: eps,
                                weightFill: fill)
            }
            return b.conv(input, output, dimIn: dimIn, dimOut: dim, kernel: kernel, pad: pad, weightFill: fill)
        }
        let lateralFill = cfg.bool("FPN.ZERO_INIT_LATERAL") ? ("ConstantFill", ["value": ArgumentValue.float(0)]) : xavier
        let c5 = stages[3]
        var inner = conv(c5.blob, "fpn_inner_" + c5.blob, c5.dim, kernel: 1, pad: 0)
        var inners: [Int: String] = [5: inner]
        for (level, stage) in [(4, stages[2]), (3, stages[1]), (2, stages[0])] {
            let lateral = conv(stage.blob, "fpn_inner_" + stage.blob + "_lateral", stage.dim, kernel: 1, pad: 0, fill: lateralFill)
            let topdown = b.op("UpsampleNearest", [inner], ["fpn_inner_" + stage.blob + "_topdown"], ["scale": .int(2)])
            inner = b.op("Sum", [lateral, topdown], ["fpn_inner_" + stage.blob])
            inners[level] = inner
        }
        var out: [Int: String] = [:]
        for (level, stage) in [(5, stages[3]), (4, stages[2]), (3, stages[1]), (2, stages[0])] {
            out[level] = conv(inners[level]!, "fpn_" + stage.blob, dim, kernel: 3, pad: 1)
        }
        out[6] = b.op("MaxPool", [out[5]!], [out[5]! + "_subsampled_2x"], ["kernel": .int(1), "stride": .int(2), "pad": .int(0)])
        return out
    }

    /// The shared RPN head on every level (weights made at the lowest level, `ConvShared` above).
    /// Returns each level's cell anchors (Detectron's, or torchvision's centred on 0).
    static func rpnHead(_ b: ModelBuilder, _ cfg: Config, fpn: [Int: String], levels: ClosedRange<Int>,
                        semantics: ModelSemantics) -> [Int: [Float]] {
        let dim = cfg.int("FPN.DIM")
        let ratios = cfg.doubles("FPN.RPN_ASPECT_RATIOS")
        let a = ratios.count
        let k = levels.lowerBound
        var anchors: [Int: [Float]] = [:]
        for level in levels {
            let s = "\(level)", base = "\(k)"
            b.conv(fpn[level]!, "conv_rpn_fpn" + s, dimIn: dim, dimOut: dim, kernel: 3, pad: 1, weightFill: ParamInfo.gauss(0.01),
                   weightName: "conv_rpn_fpn" + base + "_w", biasName: "conv_rpn_fpn" + base + "_b")
            b.relu("conv_rpn_fpn" + s)
            b.conv("conv_rpn_fpn" + s, "rpn_cls_logits_fpn" + s, dimIn: dim, dimOut: a, kernel: 1, weightFill: ParamInfo.gauss(0.01),
                   weightName: "rpn_cls_logits_fpn" + base + "_w", biasName: "rpn_cls_logits_fpn" + base + "_b")
            b.conv("conv_rpn_fpn" + s, "rpn_bbox_pred_fpn" + s, dimIn: dim, dimOut: 4 * a, kernel: 1, weightFill: ParamInfo.gauss(0.01),
                   weightName: "rpn_bbox_pred_fpn" + base + "_w", biasName: "rpn_bbox_pred_fpn" + base + "_b")
            b.op("Sigmoid", ["rpn_cls_logits_fpn" + s], ["rpn_cls_probs_fpn" + s])
            let stride = 1 << level
            let size = Double(cfg.int("FPN.RPN_ANCHOR_START_SIZE")) * Double(1 << (level - k))
            anchors[level] = semantics == .torchvision ? Boxes.torchvisionCellAnchors(sizes: [size], aspectRatios: ratios)
                                                       : Boxes.cellAnchors(stride: stride, sizes: [size], aspectRatios: ratios)
        }
        return anchors
    }

    /// RPN losses per level, against the full-size target blobs narrowed to the feature map.
    static func rpnLosses(_ b: ModelBuilder, _ cfg: Config, levels: ClosedRange<Int>) -> [String] {
        var losses: [String] = []
        let g = Double(cfg.int("NUM_GPUS"))
        for level in levels {
            let s = "\(level)"
            for kind in DerivedBlobs.rpnTargetKinds {
                let like = kind == "labels_int32" ? "rpn_cls_logits_fpn" + s : "rpn_bbox_pred_fpn" + s
                b.op("SpatialNarrowAs", [DerivedBlobs.rpnTarget(kind, level: level), like], [DerivedBlobs.rpnTarget(kind, level: level, wide: false)])
            }
            b.op("SigmoidCrossEntropyLoss", ["rpn_cls_logits_fpn" + s, "rpn_labels_int32_fpn" + s], ["loss_rpn_cls_fpn" + s],
                 ["normalize": .int(0), "scale": .float(1 / g / Double(cfg.int("TRAIN.RPN_BATCH_SIZE_PER_IM")) / Double(cfg.int("TRAIN.IMS_PER_BATCH")))])
            b.op("SmoothL1Loss", ["rpn_bbox_pred_fpn" + s, "rpn_bbox_targets_fpn" + s, "rpn_bbox_inside_weights_fpn" + s, "rpn_bbox_outside_weights_fpn" + s],
                 ["loss_rpn_bbox_fpn" + s], ["beta": .float(1.0 / 9.0), "scale": .float(1 / g)])
            losses += ["loss_rpn_cls_fpn" + s, "loss_rpn_bbox_fpn" + s]
        }
        return losses
    }

    /// Proposals per level, then collect (and, in training, sample Fast R-CNN RoIs) and distribute.
    /// With torchvision's semantics each level keeps every NMS survivor (the limit applies after
    /// collecting) and the anchors input holds the whole grid (fed per image by the detector).
    static func proposals(_ b: ModelBuilder, _ cfg: Config, levels: ClosedRange<Int>, roiLevels: ClosedRange<Int>, train: Bool,
                          semantics: ModelSemantics) {
        let mode = train ? "TRAIN" : "TEST"
        let torchvision = semantics == .torchvision
        let plusOne: ArgumentValue = .int(torchvision ? 0 : 1)
        for level in levels {
            let s = "\(level)"
            b.op("GenerateProposals", ["rpn_cls_probs_fpn" + s, "rpn_bbox_pred_fpn" + s, "im_info", DerivedBlobs.anchors(level)],
                 [DerivedBlobs.rpnRois(level), DerivedBlobs.rpnRoiProbs(level)],
                 ["spatial_scale": .float(1.0 / Double(1 << level)), "pre_nms_topN": .int(cfg.int("\(mode).RPN_PRE_NMS_TOP_N")),
                  "post_nms_topN": .int(torchvision ? 0 : cfg.int("\(mode).RPN_POST_NMS_TOP_N")),
                  "nms_thresh": .float(cfg.double("\(mode).RPN_NMS_THRESH")),
                  "min_size": .float(torchvision ? ModelSemantics.torchvisionRPNMinSize : Double(cfg.int("\(mode).RPN_MIN_SIZE"))),
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

    /// Multi-level RoIAlign and the box head; returns the head's output blob.
    static func boxHead(_ b: ModelBuilder, _ cfg: Config, fpn: [Int: String], roiLevels: ClosedRange<Int>) -> String {
        let res = cfg.int("FAST_RCNN.ROI_XFORM_RESOLUTION")
        let dim = cfg.int("FPN.DIM")
        var feats: [String] = []
        for level in roiLevels {
            feats.append(b.op("RoIAlign", [fpn[level]!, DerivedBlobs.rois(level)], ["roi_feat_fpn\(level)"],
                              ["spatial_scale": .float(1.0 / Double(1 << level)), "pooled_h": .int(res), "pooled_w": .int(res),
                               "sampling_ratio": .int(cfg.int("FAST_RCNN.ROI_XFORM_SAMPLING_RATIO"))]))
        }
        b.op("Concat", feats, ["roi_feat_shuffled", "_concat_roi_feat"], ["axis": .int(0)])
        b.op("BatchPermutation", ["roi_feat_shuffled", "rois_idx_restore_int32"], ["roi_feat"])
        let head = cfg.builderName("FAST_RCNN.ROI_BOX_HEAD")
        let hidden = cfg.int("FAST_RCNN.MLP_HEAD_DIM")
        switch head {
        case "fast_rcnn_heads.add_roi_2mlp_head":
            b.fc("roi_feat", "fc6", dimIn: dim * res * res, dimOut: hidden)
            b.relu("fc6")
            b.fc("fc6", "fc7", dimIn: hidden, dimOut: hidden)
            return b.relu("fc7")
        case "fast_rcnn_heads.add_roi_Xconv1fc_gn_head":
            let convDim = cfg.int("FAST_RCNN.CONV_HEAD_DIM")
            var x = "roi_feat", d = dim
            for i in 0..<cfg.int("FAST_RCNN.NUM_STACKED_CONVS") {
                x = b.convGN(x, "head_conv\(i + 1)", dimIn: d, dimOut: convDim, kernel: 3, pad: 1, groups: groupsFor(cfg, convDim),
                             epsilon: cfg.double("GROUP_NORM.EPSILON"), weightFill: ("MSRAFill", [:]))
                b.relu(x)
                d = convDim
            }
            b.fc(x, "fc6", dimIn: convDim * res * res, dimOut: hidden)
            return b.relu("fc6")
        default:
            preconditionFailure("box head \(head) passed checkImplemented but is not built")
        }
    }
}

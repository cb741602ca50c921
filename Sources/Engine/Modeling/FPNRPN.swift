import Operators

/// Detectron's `FPN.add_fpn_rpn_outputs` and `add_fpn_rpn_losses`: one RPN head shared by every
/// level (weights made at the lowest level, reused above), sigmoid objectness.
enum FPNRPN {
    static let head = RPNHead { b, cfg, features, semantics in
        let levels = cfg.int("FPN.RPN_MIN_LEVEL")...cfg.int("FPN.RPN_MAX_LEVEL")
        let anchors = outputs(b, cfg, features, levels: levels, semantics: semantics)
        return RPNOutput(levels: levels, cellAnchors: anchors, losses: b.train ? losses(b, cfg, levels: levels) : [])
    }

    /// The head on every level; returns each level's cell anchors.
    static func outputs(_ b: ModelBuilder, _ cfg: Config, _ features: FeatureMaps, levels: ClosedRange<Int>,
                        semantics: any DetectionSemantics) -> [Int: [Float]] {
        let dim = features.dim
        let ratios = cfg.doubles("FPN.RPN_ASPECT_RATIOS")
        let a = ratios.count
        let k = levels.lowerBound
        var anchors: [Int: [Float]] = [:]
        for level in levels {
            let s = "\(level)", base = "\(k)"
            b.conv(features.blobs[level]!, "conv_rpn_fpn" + s, dimIn: dim, dimOut: dim, kernel: 3, pad: 1, weightFill: ParamInfo.gauss(0.01),
                   weightName: "conv_rpn_fpn" + base + "_w", biasName: "conv_rpn_fpn" + base + "_b")
            b.relu("conv_rpn_fpn" + s)
            b.conv("conv_rpn_fpn" + s, "rpn_cls_logits_fpn" + s, dimIn: dim, dimOut: a, kernel: 1, weightFill: ParamInfo.gauss(0.01),
                   weightName: "rpn_cls_logits_fpn" + base + "_w", biasName: "rpn_cls_logits_fpn" + base + "_b")
            b.conv("conv_rpn_fpn" + s, "rpn_bbox_pred_fpn" + s, dimIn: dim, dimOut: 4 * a, kernel: 1, weightFill: ParamInfo.gauss(0.01),
                   weightName: "rpn_bbox_pred_fpn" + base + "_w", biasName: "rpn_bbox_pred_fpn" + base + "_b")
            b.op("Sigmoid", ["rpn_cls_logits_fpn" + s], ["rpn_cls_probs_fpn" + s])
            let size = Double(cfg.int("FPN.RPN_ANCHOR_START_SIZE")) * Double(1 << (level - k))
            anchors[level] = semantics.cellAnchors(stride: 1 << level, size: size, aspectRatios: ratios)
        }
        return anchors
    }

    /// The losses per level, against the full-size target blobs narrowed to the feature map.
    static func losses(_ b: ModelBuilder, _ cfg: Config, levels: ClosedRange<Int>) -> [String] {
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
}

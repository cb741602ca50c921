import Operators

/// Detectron's FPN bodies (`FPN.add_fpn_ResNet*_conv5_body`): a ResNet (ResNeXt with
/// RESNETS.NUM_GROUPS > 1) and FPN on it, on the levels the heads need (`FPN.get_min_max_levels`:
/// P2–P6 for Faster R-CNN, P3–P7 for RetinaNet). ResNet-18 and -34 are ours (basic blocks, He et al.).
enum ResNetFPN {
    struct Depth {
        var bottleneck: Bool
        var blocks: [Int]
    }

    static let depths: [Int: Depth] = [
        18: Depth(bottleneck: false, blocks: [2, 2, 2, 2]),
        34: Depth(bottleneck: false, blocks: [3, 4, 6, 3]),
        50: Depth(bottleneck: true, blocks: [3, 4, 6, 3]),
        101: Depth(bottleneck: true, blocks: [3, 4, 23, 3]),
        152: Depth(bottleneck: true, blocks: [3, 8, 36, 3]),
    ]

    /// The bodies by Detectron's builder names (`MODEL.CONV_BODY`).
    static var bodies: [String: Body] {
        var table: [String: Body] = [:]
        for (n, depth) in depths {
            table["FPN.add_fpn_ResNet\(n)_conv5_body"] = Body(check: { cfg throws(ConfigError) in try check(cfg, depth) }) { b, cfg in
                fpnLevels(b, cfg, stages: resnet(b, cfg, depth))
            }
        }
        return table
    }

    static func check(_ cfg: Config, _ depth: Depth) throws(ConfigError) {
        try cfg.checkChoice("RESNETS.STEM_FUNC", among: ["basic_bn_stem", "basic_gn_stem"], feature: "The stem")
        try cfg.checkChoice("RESNETS.TRANS_FUNC",
                            among: depth.bottleneck ? ["bottleneck_transformation", "bottleneck_gn_transformation"]
                                                    : ["basic_bn_transformation", "basic_gn_transformation"],
                            feature: "With \(cfg.builderName("MODEL.CONV_BODY")), the block")
        try cfg.checkChoice("RESNETS.SHORTCUT_FUNC", among: ["basic_bn_shortcut", "basic_gn_shortcut"], feature: "The shortcut")
        let (low, high) = fpnLevels(cfg)
        guard low >= 2 && low <= 5 && high >= 5 && high <= 5 + (cfg.bool("FPN.EXTRA_CONV_LEVELS") ? 3 : 1) else {
            throw .unsupported(key: "FPN.RPN_MAX_LEVEL", value: "\(low)…\(high)", feature: "FPN levels P\(low)–P\(high)",
                               hint: "Detectron's FPN builds P2–P5 from the backbone, P6 by subsampling P5, and P6 and above by "
                                   + "convolutions with FPN.EXTRA_CONV_LEVELS True")
        }
        if cfg.bool("FPN.P6_FROM_P5") && !(cfg.bool("FPN.EXTRA_CONV_LEVELS") && high > 5) {
            throw .invalid(key: "FPN.P6_FROM_P5", reason: "is True, but no P6 is made by a convolution (that needs FPN.EXTRA_CONV_LEVELS True "
                           + "and a highest level above 5); set it False")
        }
    }

    /// The ResNet body; returns the output blob and channels of res2…res5.
    static func resnet(_ b: ModelBuilder, _ cfg: Config, _ body: Depth) -> [(blob: String, dim: Int)] {
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
            x = b.convGN("data", "conv1", dimIn: 3, dimOut: stemDim, kernel: 7, stride: 2, pad: 3, groups: cfg.groupNormGroups(stemDim), epsilon: eps, weightFill: fill)
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
        gn ? b.groupNorm(conv, conv + "_gn", dim: dim, groups: cfg.groupNormGroups(dim), epsilon: eps)
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

    /// The FPN levels the heads need (`FPN.get_min_max_levels`): the RPN's, the RoIs' or both.
    static func fpnLevels(_ cfg: Config) -> (low: Int, high: Int) {
        let rpn = cfg.bool("FPN.MULTILEVEL_RPN"), rois = cfg.bool("FPN.MULTILEVEL_ROIS")
        switch (rpn, rois) {
        case (true, false): return (cfg.int("FPN.RPN_MIN_LEVEL"), cfg.int("FPN.RPN_MAX_LEVEL"))
        case (false, true): return (cfg.int("FPN.ROI_MIN_LEVEL"), cfg.int("FPN.ROI_MAX_LEVEL"))
        case (true, true): return (min(cfg.int("FPN.RPN_MIN_LEVEL"), cfg.int("FPN.ROI_MIN_LEVEL")),
                                   max(cfg.int("FPN.RPN_MAX_LEVEL"), cfg.int("FPN.ROI_MAX_LEVEL")))
        case (false, false): return (2, 5)
        }
    }

    /// FPN (`FPN.add_fpn`): laterals on the stages from the lowest level needed up to C5, nearest
    /// ×2 top-down, 3×3 outputs; above P5, P6 by subsampling P5 or — with FPN.EXTRA_CONV_LEVELS —
    /// P6 by a 3×3/2 convolution of C5 (of P5 with FPN.P6_FROM_P5, as torchvision's RetinaNet v1)
    /// and each further level by one of the ReLU of the last.
    static func fpnLevels(_ b: ModelBuilder, _ cfg: Config, stages: [(blob: String, dim: Int)]) -> FeatureMaps {
        let dim = cfg.int("FPN.DIM")
        let gn = cfg.bool("FPN.USE_GN")
        let eps = cfg.double("GROUP_NORM.EPSILON")
        let (low, high) = fpnLevels(cfg)
        let xavier = ("XavierFill", [String: ArgumentValue]())
        func conv(_ input: String, _ output: String, _ dimIn: Int, kernel: Int, pad: Int,
                  fill: (String, [String: ArgumentValue]) = xavier) -> String {
            if gn {
                return b.convGN(input, output, dimIn: dimIn, dimOut: dim, kernel: kernel, pad: pad, groups: cfg.groupNormGroups(dim), epsilon: eps,
                                weightFill: fill)
            }
            return b.conv(input, output, dimIn: dimIn, dimOut: dim, kernel: kernel, pad: pad, weightFill: fill)
        }
        let lateralFill = cfg.bool("FPN.ZERO_INIT_LATERAL") ? ("ConstantFill", ["value": ArgumentValue.float(0)]) : xavier
        let c5 = stages[3]
        var inner = conv(c5.blob, "fpn_inner_" + c5.blob, c5.dim, kernel: 1, pad: 0)
        var inners: [Int: String] = [5: inner]
        let backbone = Array((low...4).reversed())   // the finer levels with laterals, coarsest first
        for level in backbone {
            let stage = stages[level - 2]
            let lateral = conv(stage.blob, "fpn_inner_" + stage.blob + "_lateral", stage.dim, kernel: 1, pad: 0, fill: lateralFill)
            let topdown = b.op("UpsampleNearest", [inner], ["fpn_inner_" + stage.blob + "_topdown"], ["scale": .int(2)])
            inner = b.op("Sum", [lateral, topdown], ["fpn_inner_" + stage.blob])
            inners[level] = inner
        }
        var out: [Int: String] = [:]
        for level in [5] + backbone {
            out[level] = conv(inners[level]!, "fpn_" + stages[level - 2].blob, dim, kernel: 3, pad: 1)
        }
        if !cfg.bool("FPN.EXTRA_CONV_LEVELS") && high == 6 {
            out[6] = b.op("MaxPool", [out[5]!], [out[5]! + "_subsampled_2x"], ["kernel": .int(1), "stride": .int(2), "pad": .int(0)])
        } else if cfg.bool("FPN.EXTRA_CONV_LEVELS") && high > 5 {
            var (x, dimIn) = cfg.bool("FPN.P6_FROM_P5") ? (out[5]!, dim) : (c5.blob, c5.dim)
            for level in 6...high {
                if level > 6 { x = b.op("Relu", [x], [x + "_relu"]) }
                x = b.conv(x, "fpn_\(level)", dimIn: dimIn, dimOut: dim, kernel: 3, stride: 2, pad: 1, weightFill: xavier)
                dimIn = dim
                out[level] = x
            }
        }
        return FeatureMaps(blobs: out, dim: dim)
    }
}

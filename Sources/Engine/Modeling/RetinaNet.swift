import Foundation
import Operators
import Storage

/// Detectron's RetinaNet (`model_builder.build_generic_retinanet_model`, `retinanet_heads`,
/// `test_retinanet.im_detect_bbox`): the body's FPN on P3–P7 (P6 and P7 by convolutions), a
/// classification and a box tower on every level with their weights made at the lowest level and
/// shared by the others, sigmoid focal loss and select smooth L1, and per-level thresholded
/// top-N decoding with class-wise NMS at test.
enum RetinaNet {
    static let modelType = ModelType(check: check, build: build)

    static func check(_ components: ModelComponents, _ cfg: Config) throws(ConfigError) {
        guard cfg.bool("RETINANET.RETINANET_ON") else {
            throw .invalid(key: "RETINANET.RETINANET_ON", reason: "is False, but MODEL.TYPE is retinanet: Detectron's RetinaNet loader and "
                           + "inference follow this switch; set it True")
        }
        for key in ["FPN.FPN_ON", "FPN.MULTILEVEL_RPN"] where !cfg.bool(key) {
            throw .invalid(key: key, reason: "is False; RetinaNet is built on FPN levels (Detectron asserts FPN.FPN_ON and uses FPN.MULTILEVEL_RPN's levels)")
        }
        if cfg.bool("FPN.MULTILEVEL_ROIS") {
            throw .invalid(key: "FPN.MULTILEVEL_ROIS", reason: "is True; RetinaNet has no RoIs and its heads need exactly the levels "
                           + "FPN.RPN_MIN_LEVEL…FPN.RPN_MAX_LEVEL (set it False, as Detectron's RetinaNet configs do)")
        }
        if cfg.bool("RETINANET.SOFTMAX") {
            throw cfg.unsupported("RETINANET.SOFTMAX", "RetinaNet's softmax classifier (softmax focal loss)")
        }
        if cfg.bool("RETINANET.CLASS_SPECIFIC_BBOX") {
            throw cfg.unsupported("RETINANET.CLASS_SPECIFIC_BBOX", "Class-specific RetinaNet box regression",
                                  hint: "Detectron's RetinaNet inference cannot run with it either (its 4·K·A box channels are read as 4·A)")
        }
        try components.named(components.bodies, key: "MODEL.CONV_BODY", feature: "The body", cfg).check(cfg)
        if cfg.string("MODEL.SEMANTICS") != "detectron" {
            throw cfg.unsupported("MODEL.SEMANTICS", "RetinaNet with \(cfg.string("MODEL.SEMANTICS"))'s rules", hint: "use MODEL.SEMANTICS detectron")
        }
        _ = try components.semantics(cfg)
    }

    /// Each level's A cell anchors: octave o (outer) and aspect ratio (inner, in the config's
    /// order), size stride · 2^(o / SCALES_PER_OCTAVE) · ANCHOR_SCALE (`_create_cell_anchors`).
    static func cellAnchors(_ cfg: Config, levels: ClosedRange<Int>, semantics: any DetectionSemantics) -> [Int: [Float]] {
        let octaves = cfg.int("RETINANET.SCALES_PER_OCTAVE"), scale = Double(cfg.int("RETINANET.ANCHOR_SCALE"))
        var out: [Int: [Float]] = [:]
        for level in levels {
            let stride = 1 << level
            var cell: [Float] = []
            for o in 0..<octaves {
                for ratio in cfg.doubles("RETINANET.ASPECT_RATIOS") {
                    cell += semantics.cellAnchors(stride: stride, size: Double(stride) * pow(2, Double(o) / Double(octaves)) * scale,
                                                  aspectRatios: [ratio])
                }
            }
            out[level] = cell
        }
        return out
    }

    static func build(_ components: ModelComponents, _ cfg: Config, train: Bool) throws(ConfigError) -> DetectionModel {
        let b = try ModelBuilder(cfg, train: train)
        let numClasses = cfg.int("MODEL.NUM_CLASSES")
        let semantics = try components.semantics(cfg)
        let features = try components.named(components.bodies, key: "MODEL.CONV_BODY", feature: "The body", cfg).build(b, cfg)
        let levels = cfg.int("FPN.RPN_MIN_LEVEL")...cfg.int("FPN.RPN_MAX_LEVEL")
        let anchors = cellAnchors(cfg, levels: levels, semantics: semantics)
        let A = anchors[levels.lowerBound]!.count / 4, K = numClasses - 1
        heads(b, cfg, features, levels: levels, anchorsPerCell: A, classes: K)
        var losses: [String] = []
        if train { losses = self.losses(b, cfg, levels: levels, classes: K) }
        b.net.executor = cfg.string("MODEL.EXECUTION_TYPE") == "simple" ? .simple : .dag
        if !train && cfg.bool("TEST.FUSE_OPS") { b.net = b.net.fusedForInference() }
        b.net.externalInputs = ["data", "im_info"]
        if train { b.net.externalInputs += [DerivedBlobs.retinaNetForegroundCount] + levels.flatMap(DerivedBlobs.retinaNetTargets) }
        b.net.externalInputs += b.params.map(\.name)
        let inference = Inference(cfg, levels: levels, cellAnchors: anchors)
        return DetectionModel(net: b.net, initNet: b.initNet(), params: b.params, losses: losses,
                              metrics: train ? [DerivedBlobs.retinaNetForegroundCount] : [], rpnLevels: levels, roiLevels: levels,
                              cellAnchors: anchors, numClasses: numClasses, semantics: semantics,
                              trainingTargets: train ? .retinaNet(RetinaNetTargetMaker(cfg: cfg, cellAnchors: anchors, levels: levels)) : nil,
                              readDetections: { ws, input, settings in try inference.detections(ws, input, settings) })
    }

    /// The two towers and predictors per level (`add_fpn_retinanet_outputs`): parameters named at
    /// the lowest level (`retnet_cls_conv_n{i}_fpn3_w` …) and shared by the levels above;
    /// Gaussian 0.01 weights, zero biases, the classifier's bias −log((1 − π)/π).
    static func heads(_ b: ModelBuilder, _ cfg: Config, _ features: FeatureMaps, levels: ClosedRange<Int>, anchorsPerCell A: Int, classes K: Int) {
        let dim = features.dim, low = levels.lowerBound
        let prior = cfg.double("RETINANET.PRIOR_PROB")
        let gauss = ParamInfo.gauss(0.01)
        let share = cfg.bool("RETINANET.SHARE_CLS_BBOX_TOWER")
        func tower(_ kind: String, _ level: Int) -> String {
            var x = features.blobs[level]!
            for i in 0..<cfg.int("RETINANET.NUM_CONVS") {
                let base = "retnet_\(kind)_conv_n\(i)_fpn\(low)"
                x = b.conv(x, "retnet_\(kind)_conv_n\(i)_fpn\(level)", dimIn: dim, dimOut: dim, kernel: 3, pad: 1, weightFill: gauss,
                           weightName: base + "_w", biasName: base + "_b")
                b.relu(x)
            }
            return x
        }
        var boxFeatures: [Int: String] = [:]
        for level in levels {
            let x = tower("cls", level)
            let pred = "retnet_cls_pred_fpn\(level)", base = "retnet_cls_pred_fpn\(low)"
            // The classifier's bias starts at the prior: everything background with probability 1 − π.
            b.conv(x, pred, dimIn: dim, dimOut: K * A, kernel: 3, pad: 1, weightFill: gauss,
                   biasFill: ("ConstantFill", ["value": .float(-log((1 - prior) / prior))]), weightName: base + "_w", biasName: base + "_b")
            if !b.train { b.op("Sigmoid", [pred], [DerivedBlobs.retinaNetOutputs(level).probs]) }
            if share { boxFeatures[level] = x }
        }
        if !share { for level in levels { boxFeatures[level] = tower("bbox", level) } }
        for level in levels {
            let base = "retnet_bbox_pred_fpn\(low)"
            b.conv(boxFeatures[level]!, DerivedBlobs.retinaNetOutputs(level).deltas, dimIn: dim, dimOut: 4 * A, kernel: 3, pad: 1, weightFill: gauss,
                   weightName: base + "_w", biasName: base + "_b")
        }
    }

    /// `add_fpn_retinanet_losses`: per level the box loss, then per level the focal loss, all
    /// normalised by `retnet_fg_num`.
    static func losses(_ b: ModelBuilder, _ cfg: Config, levels: ClosedRange<Int>, classes K: Int) -> [String] {
        let scale = 1.0 / Double(cfg.int("NUM_GPUS"))
        var losses: [String] = []
        for level in levels {
            let t = DerivedBlobs.retinaNetTargets(level)
            losses.append(b.op("SelectSmoothL1Loss", [DerivedBlobs.retinaNetOutputs(level).deltas, t[1], t[2], DerivedBlobs.retinaNetForegroundCount],
                               ["retnet_loss_bbox_fpn\(level)"],
                               ["beta": .float(cfg.double("RETINANET.BBOX_REG_BETA")), "scale": .float(scale * cfg.double("RETINANET.BBOX_REG_WEIGHT"))]))
        }
        for level in levels {
            let t = DerivedBlobs.retinaNetTargets(level)
            losses.append(b.op("SigmoidFocalLoss", ["retnet_cls_pred_fpn\(level)", t[0], DerivedBlobs.retinaNetForegroundCount], ["fl_fpn\(level)"],
                               ["gamma": .float(cfg.double("RETINANET.LOSS_GAMMA")), "alpha": .float(cfg.double("RETINANET.LOSS_ALPHA")),
                                "num_classes": .int(K), "scale": .float(scale)]))
        }
        return losses
    }

    /// `test_retinanet.im_detect_bbox` after the net.
    struct Inference: Sendable {
        let levels: ClosedRange<Int>
        let cellAnchors: [Int: [Float]]
        let threshold: Float
        let preNMSTopN: Int

        init(_ cfg: Config, levels: ClosedRange<Int>, cellAnchors: [Int: [Float]]) {
            self.levels = levels
            self.cellAnchors = cellAnchors
            threshold = Float(cfg.double("RETINANET.INFERENCE_TH"))
            preNMSTopN = cfg.int("RETINANET.PRE_NMS_TOP_N")
        }

        /// Per level: probabilities above the threshold (0 at the coarsest level, so something
        /// always comes out), the best PRE_NMS_TOP_N of them, each decoded from its anchor, scaled
        /// back and clipped; then NMS per class over all levels and the best DETECTIONS_PER_IM.
        func detections(_ ws: Workspace, _ input: PreparedInput, _ settings: TestSettings) throws -> [(classIndex: Int, score: Float, box: [Float])] {
            let K = settings.numClasses - 1
            var perClass = [[(score: Float, box: [Float])]](repeating: [], count: K)
            for level in levels {
                let names = DerivedBlobs.retinaNetOutputs(level)
                let probs = try ws.fetchBlob(names.probs), deltas = try ws.fetchBlob(names.deltas).toArray(as: Float.self)
                let p = try probs.toArray(as: Float.self)
                let (h, w) = (probs.dim(2), probs.dim(3)), plane = h * w
                let A = probs.dim(1) / K
                guard probs.dim(1) == A * K, deltas.count == 4 * A * plane, cellAnchors[level]!.count == 4 * A else {
                    throw EngineError.data("\(names.probs) \(probs.shape) and \(names.deltas) do not hold \(K) classes and 4 box deltas "
                                           + "for each of the level's \(cellAnchors[level]!.count / 4) anchors: MODEL.NUM_CLASSES or the anchors do not match the net")
                }
                let th: Float = level < levels.upperBound ? threshold : 0
                var candidates = p.indices.filter { p[$0] > th }
                if candidates.count > preNMSTopN {
                    // The top N by score (ties: the lower index), as argpartition's selection.
                    candidates.sort { p[$0] > p[$1] || (p[$0] == p[$1] && $0 < $1) }
                    candidates = Array(candidates.prefix(preNMSTopN))
                }
                let stride = Float(1 << level), cell = cellAnchors[level]!
                var refs: [Float] = [], ds: [Float] = []
                refs.reserveCapacity(4 * candidates.count)
                for i in candidates {
                    let (ak, pos) = (i / plane, i % plane)
                    let a = ak / K, y = pos / w, x = pos % w
                    let sx = Float(x) * stride, sy = Float(y) * stride
                    refs += [cell[4 * a] + sx, cell[4 * a + 1] + sy, cell[4 * a + 2] + sx, cell[4 * a + 3] + sy]
                    for c in 0..<4 { ds.append(deltas[(4 * a + c) * plane + pos]) }
                }
                var boxes = settings.bboxReg ? Boxes.decode(refs, deltas: ds, clip: settings.bboxTransformClip) : refs
                for j in boxes.indices { boxes[j] /= input.roiScale }
                Boxes.clip(&boxes, height: input.clipHeight, width: input.clipWidth)
                for (n, i) in candidates.enumerated() {
                    perClass[(i / plane) % K].append((p[i], Array(boxes[4 * n..<4 * n + 4])))
                }
            }
            var found: [(classIndex: Int, score: Float, box: [Float])] = []
            for (k, dets) in perClass.enumerated() where !dets.isEmpty {
                let keep = Boxes.nms(dets.flatMap(\.box), scores: dets.map(\.score), threshold: settings.nmsThreshold)
                found += keep.map { (classIndex: k + 1, score: dets[$0].score, box: dets[$0].box) }
            }
            // By score, highest first (ties in class then NMS order), the best DETECTIONS_PER_IM.
            let order = found.indices.sorted { found[$0].score > found[$1].score || (found[$0].score == found[$1].score && $0 < $1) }
            return order.prefix(settings.detectionsPerImage).map { found[$0] }
        }
    }
}

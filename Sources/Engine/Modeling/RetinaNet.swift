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
        if cfg.bool("MODEL.MASK_ON") {
            throw cfg.unsupported("MODEL.MASK_ON", "A mask branch on RetinaNet", hint: "Detectron's RetinaNet has none (its builder and inference ignore the switch)")
        }
        if cfg.bool("RETINANET.SOFTMAX") && cfg.string("MODEL.SEMANTICS") != "detectron" {
            throw cfg.unsupported("RETINANET.SOFTMAX", "RetinaNet's softmax classifier with \(cfg.string("MODEL.SEMANTICS"))'s rules",
                                  hint: "torchvision's RetinaNet has sigmoid classifiers only")
        }
        if cfg.bool("RETINANET.CLASS_SPECIFIC_BBOX") {
            throw cfg.unsupported("RETINANET.CLASS_SPECIFIC_BBOX", "Class-specific RetinaNet box regression",
                                  hint: "Detectron's RetinaNet inference cannot run with it either (its 4·K·A box channels are read as 4·A)")
        }
        try components.named(components.bodies, key: "MODEL.CONV_BODY", feature: "The body", cfg).check(cfg)
        _ = try components.semantics(cfg)
    }

    /// Each level's A cell anchors, by the semantics' rule (Detectron: octave-major, sizes
    /// stride · 2^(o / SCALES_PER_OCTAVE) · ANCHOR_SCALE).
    static func cellAnchors(_ cfg: Config, levels: ClosedRange<Int>, semantics: any DetectionSemantics) -> [Int: [Float]] {
        var out: [Int: [Float]] = [:]
        for level in levels {
            out[level] = semantics.retinaNetCellAnchors(stride: 1 << level, octaves: cfg.int("RETINANET.SCALES_PER_OCTAVE"),
                                                        anchorScale: cfg.int("RETINANET.ANCHOR_SCALE"),
                                                        aspectRatios: cfg.doubles("RETINANET.ASPECT_RATIOS"))
        }
        return out
    }

    static func build(_ components: ModelComponents, _ cfg: Config, train: Bool) throws(ConfigError) -> DetectionModel {
        let b = try ModelBuilder(cfg, train: train)
        let numClasses = cfg.int("MODEL.NUM_CLASSES")
        let semantics = try components.semantics(cfg)
        if train && !semantics.trains {
            throw .invalid(key: "MODEL.SEMANTICS", reason: "is '\(cfg.string("MODEL.SEMANTICS"))', which is for inference with its weights; "
                           + "train with MODEL.SEMANTICS detectron")
        }
        let features = try components.named(components.bodies, key: "MODEL.CONV_BODY", feature: "The body", cfg).build(b, cfg)
        let levels = cfg.int("FPN.RPN_MIN_LEVEL")...cfg.int("FPN.RPN_MAX_LEVEL")
        let anchors = cellAnchors(cfg, levels: levels, semantics: semantics)
        // Logits per anchor: the semantics' sigmoid classes, or with RETINANET.SOFTMAX every class with the background.
        let softmax = cfg.bool("RETINANET.SOFTMAX")
        let A = anchors[levels.lowerBound]!.count / 4, K = softmax ? numClasses : semantics.retinaNetClasses(numClasses: numClasses).perAnchor
        heads(b, cfg, features, levels: levels, anchorsPerCell: A, classes: K)
        var losses: [String] = []
        if train { losses = self.losses(b, cfg, levels: levels, classes: K) }
        b.net.executor = cfg.string("MODEL.EXECUTION_TYPE") == "simple" ? .simple : .dag
        if !train && cfg.bool("TEST.FUSE_OPS") { b.net = b.net.fusedForInference() }
        b.net.externalInputs = ["data", "im_info"]
        if train { b.net.externalInputs += [DerivedBlobs.retinaNetForegroundCount] + levels.flatMap(DerivedBlobs.retinaNetTargets) }
        b.net.externalInputs += b.params.map(\.name)
        let inference = Inference(levels: levels, cellAnchors: anchors, semantics: semantics, softmax: softmax)
        return DetectionModel(net: b.net, initNet: b.initNet(), params: b.params, losses: losses,
                              metrics: train ? [DerivedBlobs.retinaNetForegroundCount] : [], rpnLevels: levels, roiLevels: levels,
                              cellAnchors: anchors, numClasses: numClasses, semantics: semantics,
                              trainingTargets: train ? .retinaNet(RetinaNetTargetMaker(cfg: cfg, cellAnchors: anchors, levels: levels)) : nil,
                              readDetections: { ws, input, settings in try inference.detections(ws, input, settings) })
    }

    /// The two towers and predictors per level (`add_fpn_retinanet_outputs`): parameters named at
    /// the lowest level (`retnet_cls_conv_n{i}_fpn3_w` …) and shared by the levels above;
    /// Gaussian 0.01 weights, zero biases, the classifier's bias −log((1 − π)/π) — with
    /// RETINANET.SOFTMAX, log((C − 1)(1 − π)/π) on each anchor's background and 0 on its classes
    /// (`get_retinanet_bias_init`), and a per-anchor softmax at test.
    static func heads(_ b: ModelBuilder, _ cfg: Config, _ features: FeatureMaps, levels: ClosedRange<Int>, anchorsPerCell A: Int, classes K: Int) {
        let dim = features.dim, low = levels.lowerBound
        let prior = cfg.double("RETINANET.PRIOR_PROB"), softmax = cfg.bool("RETINANET.SOFTMAX")
        var priorBias: (String, [String: ArgumentValue]) = ("ConstantFill", ["value": .float(-log((1 - prior) / prior))])
        if softmax {
            let anchorBias = [log(Double(K - 1) * (1 - prior) / prior)] + [Double](repeating: 0, count: K - 1)
            priorBias = ("GivenTensorFill", ["values": .floats(Array((0..<A).map { _ in anchorBias }.joined()))])
        }
        let gauss = ParamInfo.gauss(0.01)
        let share = cfg.bool("RETINANET.SHARE_CLS_BBOX_TOWER"), gn = cfg.bool("RETINANET.USE_GN")
        func tower(_ kind: String, _ level: Int) -> String {
            var x = features.blobs[level]!
            for i in 0..<cfg.int("RETINANET.NUM_CONVS") {
                let base = "retnet_\(kind)_conv_n\(i)_fpn\(low)"
                let name = "retnet_\(kind)_conv_n\(i)_fpn\(level)"
                x = b.conv(x, name, dimIn: dim, dimOut: dim, kernel: 3, pad: 1, weightFill: gauss, noBias: gn,
                           weightName: base + "_w", biasName: base + "_b")
                if gn {
                    x = b.groupNorm(x, name + "_gn", dim: dim, groups: cfg.groupNormGroups(dim), epsilon: cfg.double("GROUP_NORM.EPSILON"),
                                    paramPrefix: base + "_gn")
                }
                b.relu(x)
            }
            return x
        }
        var boxFeatures: [Int: String] = [:]
        for level in levels {
            let x = tower("cls", level)
            let pred = "retnet_cls_pred_fpn\(level)", base = "retnet_cls_pred_fpn\(low)"
            // The classifier's bias starts at the prior: everything background with probability 1 − π.
            b.conv(x, pred, dimIn: dim, dimOut: K * A, kernel: 3, pad: 1, weightFill: gauss, biasFill: priorBias, weightName: base + "_w", biasName: base + "_b")
            if !b.train {
                let probs = DerivedBlobs.retinaNetOutputs(level).probs
                if softmax { b.op("GroupSpatialSoftmax", [pred], [probs], ["num_classes": .int(K)]) } else { b.op("Sigmoid", [pred], [probs]) }
            }
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
        let softmax = cfg.bool("RETINANET.SOFTMAX")
        for level in levels {
            let t = DerivedBlobs.retinaNetTargets(level)
            let args: [String: ArgumentValue] = ["gamma": .float(cfg.double("RETINANET.LOSS_GAMMA")), "alpha": .float(cfg.double("RETINANET.LOSS_ALPHA")),
                                                 "num_classes": .int(K), "scale": .float(scale)]
            let inputs = ["retnet_cls_pred_fpn\(level)", t[0], DerivedBlobs.retinaNetForegroundCount]
            losses.append(softmax ? b.op("SoftmaxFocalLoss", inputs, ["fl_fpn\(level)", "retnet_prob_fpn\(level)"], args)
                                  : b.op("SigmoidFocalLoss", inputs, ["fl_fpn\(level)"], args))
        }
        return losses
    }

    /// The net's outputs read per level and handed to the semantics' post-processing.
    struct Inference: Sendable {
        let levels: ClosedRange<Int>
        let cellAnchors: [Int: [Float]]
        let semantics: any DetectionSemantics
        /// RETINANET.SOFTMAX: the net gives each anchor's background too; it is dropped here.
        var softmax = false

        func detections(_ ws: Workspace, _ input: PreparedInput, _ settings: TestSettings) throws -> [(classIndex: Int, score: Float, box: [Float])] {
            let K = semantics.retinaNetClasses(numClasses: settings.numClasses).perAnchor, netK = softmax ? K + 1 : K
            let outputs = try levels.map { level throws -> DenseLevelOutputs in
                let names = DerivedBlobs.retinaNetOutputs(level)
                let probs = try ws.fetchBlob(names.probs), deltas = try ws.fetchBlob(names.deltas)
                let cell = cellAnchors[level]!, A = cell.count / 4
                let (h, w) = (probs.dim(2), probs.dim(3))
                guard probs.dim(1) == A * netK, deltas.shape == [1, 4 * A, h, w] else {
                    throw EngineError.data("\(names.probs) \(probs.shape) and \(names.deltas) \(deltas.shape) do not hold \(netK) classes and 4 box "
                                           + "deltas for each of the level's \(A) anchors: MODEL.NUM_CLASSES or the anchors do not match the net")
                }
                var p = try probs.toArray(as: Float.self)
                if softmax {
                    // Each anchor's channels 1…K (`cls_prob[:, :, 1::]`).
                    let plane = h * w
                    p = (0..<A).flatMap { a in p[(a * netK + 1) * plane..<(a + 1) * netK * plane] }
                }
                return DenseLevelOutputs(level: level, probs: p, deltas: try deltas.toArray(as: Float.self),
                                         height: h, width: w, anchorsPerCell: A, classesPerAnchor: K, cellAnchors: cell,
                                         inputHeight: input.data.dim(2), inputWidth: input.data.dim(3))
            }
            return semantics.retinaNetDetections(outputs, input, settings)
        }
    }
}

/// One FPN level's dense head outputs (RetinaNet's), as the post-processing reads them.
public struct DenseLevelOutputs: Sendable {
    public var level: Int
    /// Class probabilities (A·K, H, W), channel a·K + k.
    public var probs: [Float]
    /// Box deltas (4A, H, W), channel 4a + coordinate.
    public var deltas: [Float]
    public var height: Int
    public var width: Int
    public var anchorsPerCell: Int
    public var classesPerAnchor: Int
    /// The level's A cell anchors (x1, y1, x2, y2 each).
    public var cellAnchors: [Float]
    /// The padded input's size.
    public var inputHeight: Int
    public var inputWidth: Int

    /// Anchor `a` of cell (x, y) shifted by the strides.
    func anchor(_ a: Int, x: Int, y: Int, strideX: Int, strideY: Int) -> [Float] {
        let sx = Float(x * strideX), sy = Float(y * strideY)
        return [cellAnchors[4 * a] + sx, cellAnchors[4 * a + 1] + sy, cellAnchors[4 * a + 2] + sx, cellAnchors[4 * a + 3] + sy]
    }

    /// The 4 deltas of anchor `a` at plane position `pos`.
    func deltas(_ a: Int, at pos: Int) -> [Float] {
        let plane = height * width
        return (0..<4).map { deltas[(4 * a + $0) * plane + pos] }
    }
}

/// Detectron's RetinaNet rules, the default of every semantics (``TorchvisionSemantics`` has its own).
extension DetectionSemantics {
    /// `_create_cell_anchors`: octave o (outer) and aspect ratio (inner, in the config's order).
    public func retinaNetCellAnchors(stride: Int, octaves: Int, anchorScale: Int, aspectRatios: [Double]) -> [Float] {
        var cell: [Float] = []
        for o in 0..<octaves {
            let size = Double(stride) * pow(2, Double(o) / Double(octaves)) * Double(anchorScale)
            for ratio in aspectRatios { cell += Boxes.cellAnchors(stride: stride, sizes: [size], aspectRatios: [ratio]) }
        }
        return cell
    }

    /// K = NUM_CLASSES − 1 logits per anchor, for classes 1…K.
    public func retinaNetClasses(numClasses: Int) -> (perAnchor: Int, firstLabel: Int) { (numClasses - 1, 1) }

    /// `test_retinanet.im_detect_bbox`: per level, the probabilities above RETINANET.INFERENCE_TH
    /// (any at the coarsest level, so something always comes out), the best PRE_NMS_TOP_N of them,
    /// each decoded from its anchor, divided by the image scale and clipped; then NMS per class
    /// over all levels and the best DETECTIONS_PER_IM.
    public func retinaNetDetections(_ levels: [DenseLevelOutputs], _ input: PreparedInput, _ settings: TestSettings)
        -> [(classIndex: Int, score: Float, box: [Float])] {
        guard let K = levels.first?.classesPerAnchor else { return [] }
        var perClass = [[(score: Float, box: [Float])]](repeating: [], count: K)
        let top = levels.map(\.level).max()
        for lv in levels {
            let p = lv.probs, plane = lv.height * lv.width
            let th: Float = lv.level < top! ? settings.retinaNetThreshold : 0
            var candidates = p.indices.filter { p[$0] > th }
            if candidates.count > settings.retinaNetPreNMSTopN {
                // The top N by score (ties: the lower index), as argpartition's selection.
                candidates.sort { p[$0] > p[$1] || (p[$0] == p[$1] && $0 < $1) }
                candidates = Array(candidates.prefix(settings.retinaNetPreNMSTopN))
            }
            var refs: [Float] = [], ds: [Float] = []
            refs.reserveCapacity(4 * candidates.count)
            for i in candidates {
                let (a, pos) = (i / plane / K, i % plane)
                refs += lv.anchor(a, x: pos % lv.width, y: pos / lv.width, strideX: 1 << lv.level, strideY: 1 << lv.level)
                ds += lv.deltas(a, at: pos)
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

extension TorchvisionSemantics {
    /// `AnchorGenerator` as `retinanet_resnet50_fpn` makes it: sizes int(stride · ANCHOR_SCALE ·
    /// 2^(o / SCALES_PER_OCTAVE)) (32, 40, 50 at P3), aspect ratio outer and size inner, rounded.
    public func retinaNetCellAnchors(stride: Int, octaves: Int, anchorScale: Int, aspectRatios: [Double]) -> [Float] {
        let sizes = (0..<octaves).map { Double(Int(Double(stride * anchorScale) * pow(2, Double($0) / Double(octaves)))) }
        return Boxes.torchvisionCellAnchors(sizes: sizes, aspectRatios: aspectRatios)
    }

    /// A logit for every label, the background's (0) included, as torchvision's RetinaNet has.
    public func retinaNetClasses(numClasses: Int) -> (perAnchor: Int, firstLabel: Int) { (numClasses, 0) }

    /// `RetinaNet.postprocess_detections`: per level, the scores above RETINANET.INFERENCE_TH (every
    /// level), the best PRE_NMS_TOP_N in torchvision's flattened order ((y·W + x)·A + a)·K + k,
    /// decoded from anchors on strides of input size ÷ map size, clipped to the resized image; then
    /// `batched_nms` by label over all levels and the best DETECTIONS_PER_IM.
    public func retinaNetDetections(_ levels: [DenseLevelOutputs], _ input: PreparedInput, _ settings: TestSettings)
        -> [(classIndex: Int, score: Float, box: [Float])] {
        var boxes: [Float] = [], scores: [Float] = [], labels: [Int] = []
        for lv in levels {
            let (K, A, plane) = (lv.classesPerAnchor, lv.anchorsPerCell, lv.height * lv.width)
            // (score, torchvision's flat index, our index) of the scores above the threshold.
            var candidates: [(score: Float, flat: Int, index: Int)] = []
            for (i, v) in lv.probs.enumerated() where v > settings.retinaNetThreshold {
                let (ak, pos) = (i / plane, i % plane)
                candidates.append((v, (pos * A + ak / K) * K + ak % K, i))
            }
            candidates.sort { $0.score > $1.score || ($0.score == $1.score && $0.flat < $1.flat) }
            if candidates.count > settings.retinaNetPreNMSTopN { candidates.removeLast(candidates.count - settings.retinaNetPreNMSTopN) }
            let (strideY, strideX) = (lv.inputHeight / lv.height, lv.inputWidth / lv.width)
            var refs: [Float] = [], ds: [Float] = []
            for c in candidates {
                let (a, pos) = (c.index / plane / K, c.index % plane)
                refs += lv.anchor(a, x: pos % lv.width, y: pos / lv.width, strideX: strideX, strideY: strideY)
                ds += lv.deltas(a, at: pos)
            }
            var decoded = Boxes.decode(refs, deltas: ds, clip: settings.bboxTransformClip, convention: .torchvision)
            Boxes.clip(&decoded, height: input.clipHeight, width: input.clipWidth, convention: .torchvision)
            boxes += decoded
            scores += candidates.map(\.score)
            labels += candidates.map { ($0.index / plane) % K }
        }
        var keep = Boxes.batchedNMS(boxes, scores: scores, groups: labels, threshold: settings.nmsThreshold)
        if settings.detectionsPerImage > 0 { keep = Array(keep.prefix(settings.detectionsPerImage)) }
        return keep.map { (classIndex: labels[$0], score: scores[$0], box: Array(boxes[4 * $0..<4 * $0 + 4])) }
    }
}

import Operators

/// The feature maps a body gives the heads: one blob per FPN level (spatial scale 1/2^level),
/// all with `dim` channels.
public struct FeatureMaps: Sendable {
    public var blobs: [Int: String]
    public var dim: Int

    public init(blobs: [Int: String], dim: Int) {
        self.blobs = blobs
        self.dim = dim
    }
}

/// The RoI features a head starts from: `blob` is (R, dim, resolution, resolution).
public struct RoIFeatures: Sendable {
    public var blob: String
    public var dim: Int
    public var resolution: Int
}

/// A head's output blob and its width.
public struct HeadOutput: Sendable {
    public var blob: String
    public var dim: Int

    public init(blob: String, dim: Int) {
        self.blob = blob
        self.dim = dim
    }
}

/// What an RPN head leaves in the net: the levels it runs on, each level's cell anchors (the
/// `anchors_fpnL` inputs), and its loss blobs (training).
public struct RPNOutput: Sendable {
    public var levels: ClosedRange<Int>
    public var cellAnchors: [Int: [Float]]
    public var losses: [String]
}

/// A body (`MODEL.CONV_BODY`): `check` refuses, by key, settings it does not build; `build`
/// appends its ops and parameters.
public struct Body: Sendable {
    public var check: @Sendable (Config) throws(ConfigError) -> Void
    public var build: @Sendable (ModelBuilder, Config) -> FeatureMaps

    public init(check: @escaping @Sendable (Config) throws(ConfigError) -> Void = { _ in },
                build: @escaping @Sendable (ModelBuilder, Config) -> FeatureMaps) {
        self.check = check
        self.build = build
    }
}

/// An RPN head (Detectron's `FPN.add_fpn_rpn_outputs`): its outputs are the per-level
/// `rpn_cls_probs_fpnL` and `rpn_bbox_pred_fpnL` the proposal ops read.
public struct RPNHead: Sendable {
    public var check: @Sendable (Config) throws(ConfigError) -> Void
    public var build: @Sendable (ModelBuilder, Config, FeatureMaps, any DetectionSemantics) -> RPNOutput

    public init(check: @escaping @Sendable (Config) throws(ConfigError) -> Void = { _ in },
                build: @escaping @Sendable (ModelBuilder, Config, FeatureMaps, any DetectionSemantics) -> RPNOutput) {
        self.check = check
        self.build = build
    }
}

/// A RoI head (`FAST_RCNN.ROI_BOX_HEAD`): RoI features in, the blob the box predictors read out.
public struct RoIHead: Sendable {
    public var check: @Sendable (Config) throws(ConfigError) -> Void
    public var build: @Sendable (ModelBuilder, Config, RoIFeatures) -> HeadOutput

    public init(check: @escaping @Sendable (Config) throws(ConfigError) -> Void = { _ in },
                build: @escaping @Sendable (ModelBuilder, Config, RoIFeatures) -> HeadOutput) {
        self.check = check
        self.build = build
    }
}

/// A mask head (`MRCNN.ROI_MASK_HEAD`): pools its own RoI features from the FPN levels on
/// `mask_rois` (Detectron's heads name that blob themselves) and returns the blob the mask
/// predictor reads, (R, dim, M', M').
public struct MaskHead: Sendable {
    public var check: @Sendable (Config) throws(ConfigError) -> Void
    public var build: @Sendable (ModelBuilder, Config, FeatureMaps, _ roiLevels: ClosedRange<Int>) -> HeadOutput

    public init(check: @escaping @Sendable (Config) throws(ConfigError) -> Void = { _ in },
                build: @escaping @Sendable (ModelBuilder, Config, FeatureMaps, _ roiLevels: ClosedRange<Int>) -> HeadOutput) {
        self.check = check
        self.build = build
    }
}

/// A model type (`MODEL.TYPE`): checks the components and settings it uses, and builds the net.
public struct ModelType: Sendable {
    public var check: @Sendable (ModelComponents, Config) throws(ConfigError) -> Void
    public var build: @Sendable (ModelComponents, Config, _ train: Bool) throws(ConfigError) -> DetectionModel

    public init(check: @escaping @Sendable (ModelComponents, Config) throws(ConfigError) -> Void,
                build: @escaping @Sendable (ModelComponents, Config, _ train: Bool) throws(ConfigError) -> DetectionModel) {
        self.check = check
        self.build = build
    }
}

/// The model components, looked up by the names Detectron's configs use (after the renames of
/// Detectron's `name_compat.py`), like ``OperatorRegistry`` for ops: copy ``standard``, register
/// yours, and pass the copy to `Trainer`, `Detector` or `Tester`. The operators the nets run come
/// with it, so a component's new op is registered in the same place.
///
/// ```swift
/// var components = ModelComponents.standard
/// components.roiHeads["my_heads.add_roi_1mlp_head"] = RoIHead { b, cfg, roi in
///     let hidden = cfg.int("FAST_RCNN.MLP_HEAD_DIM")
///     b.fc(roi.blob, "fc6", dimIn: roi.dim * roi.resolution * roi.resolution, dimOut: hidden)
///     return HeadOutput(blob: b.relu("fc6"), dim: hidden)
/// }
/// ```
public struct ModelComponents: Sendable {
    public var modelTypes: [String: ModelType]
    public var bodies: [String: Body]
    public var rpnHeads: [String: RPNHead]
    public var roiHeads: [String: RoIHead]
    public var maskHeads: [String: MaskHead]
    /// `MODEL.SEMANTICS` (ours): whose rules the detector follows.
    public var semantics: [String: any DetectionSemantics]
    public var operators: OperatorRegistry

    public init(modelTypes: [String: ModelType] = [:], bodies: [String: Body] = [:], rpnHeads: [String: RPNHead] = [:],
                roiHeads: [String: RoIHead] = [:], maskHeads: [String: MaskHead] = [:], semantics: [String: any DetectionSemantics] = [:],
                operators: OperatorRegistry = .engine) {
        self.modelTypes = modelTypes
        self.bodies = bodies
        self.rpnHeads = rpnHeads
        self.roiHeads = roiHeads
        self.maskHeads = maskHeads
        self.semantics = semantics
        self.operators = operators
    }

    /// Everything this engine builds.
    public static let standard = ModelComponents(
        modelTypes: ["generalized_rcnn": GeneralizedRCNN.modelType, "retinanet": RetinaNet.modelType],
        bodies: ResNetFPN.bodies,
        rpnHeads: ["FPN.add_fpn_rpn_outputs": FPNRPN.head],
        roiHeads: ["fast_rcnn_heads.add_roi_2mlp_head": BoxHeads.twoMLP, "fast_rcnn_heads.add_roi_Xconv1fc_gn_head": BoxHeads.xconv1fcGN],
        maskHeads: MaskRCNN.heads,
        semantics: ["detectron": DetectronSemantics(), "torchvision": TorchvisionSemantics()])

    /// Checks the config against these components (``Config/checkImplemented(_:)``) and builds
    /// its model.
    public func build(_ cfg: Config, train: Bool) throws(ConfigError) -> DetectionModel {
        _ = try cfg.checkImplemented(self)
        return try modelType(cfg).build(self, cfg, train)
    }

    /// The entry `name` of `table`, or a refusal naming `key` and what is registered.
    static func entry<T>(_ table: [String: T], _ name: String, key: String, value: String, feature: String) throws(ConfigError) -> T {
        guard let entry = table[name] else {
            throw .unsupported(key: key, value: value, feature: "\(feature) '\(name)'", hint: "implemented: \(table.keys.sorted().joined(separator: ", "))")
        }
        return entry
    }

    func modelType(_ cfg: Config) throws(ConfigError) -> ModelType {
        let type = cfg.string("MODEL.TYPE")
        guard let entry = modelTypes[type] else {
            if type.isEmpty { throw .invalid(key: "MODEL.TYPE", reason: "is not set; Detectron's configs say generalized_rcnn") }
            throw .unsupported(key: "MODEL.TYPE", value: "'\(type)'", feature: Config.modelTypeFeatures[type] ?? "The model type '\(type)'",
                               hint: "implemented: \(modelTypes.keys.sorted().joined(separator: ", "))")
        }
        return entry
    }

    /// The component a builder key names (`MODEL.CONV_BODY`, `FAST_RCNN.ROI_BOX_HEAD`, …).
    func named<T>(_ table: [String: T], key: String, feature: String, _ cfg: Config) throws(ConfigError) -> T {
        try Self.entry(table, cfg.builderName(key), key: key, value: "'\(cfg.string(key))'", feature: feature)
    }

    public func semantics(_ cfg: Config) throws(ConfigError) -> any DetectionSemantics {
        let name = cfg.string("MODEL.SEMANTICS")
        guard let s = semantics[name] else {
            throw .invalid(key: "MODEL.SEMANTICS", reason: "is '\(name)'; use \(semantics.keys.sorted().joined(separator: " or "))")
        }
        return s
    }
}

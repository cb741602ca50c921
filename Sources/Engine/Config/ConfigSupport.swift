/// What this engine implements of Detectron's config tree. Every key of the tree is one of:
/// read by the engine (``Config/defaultTree``), inert (it does not change what Detectron computes
/// in the models this engine builds: ``inertKeys``), part of a feature this engine does not
/// implement (``missingFeatures``: refused by name when turned on), or limited to the values this
/// engine implements (``checkImplemented()``). `ConfigSupportTests` checks that every key of the
/// tree has its place.
extension Config {
    /// A Detectron feature this engine does not implement: the key that turns it on, and the
    /// subtrees Detectron reads only when it is on.
    struct MissingFeature: Sendable {
        var name: String
        var switchKey: String
        var subtrees: [String]
    }

    static let missingFeatures: [MissingFeature] = [
        MissingFeature(name: "Keypoint R-CNN", switchKey: "MODEL.KEYPOINTS_ON", subtrees: ["KRCNN.", "TEST.KPS_AUG."]),
        MissingFeature(name: "An RPN-only model (proposals without a detection head)", switchKey: "MODEL.RPN_ONLY", subtrees: []),
        MissingFeature(name: "Test-time augmentation of boxes", switchKey: "TEST.BBOX_AUG.ENABLED", subtrees: ["TEST.BBOX_AUG."]),
        MissingFeature(name: "Soft-NMS", switchKey: "TEST.SOFT_NMS.ENABLED", subtrees: ["TEST.SOFT_NMS."]),
        MissingFeature(name: "Box voting", switchKey: "TEST.BBOX_VOTE.ENABLED", subtrees: ["TEST.BBOX_VOTE."]),
        MissingFeature(name: "Test-time augmentation of masks", switchKey: "TEST.MASK_AUG.ENABLED", subtrees: ["TEST.MASK_AUG."]),
        MissingFeature(name: "Test-time augmentation of keypoints", switchKey: "TEST.KPS_AUG.ENABLED", subtrees: ["TEST.KPS_AUG."]),
    ]

    /// Detectron keys that do not change what Detectron computes for the models this engine
    /// builds (end-to-end Faster R-CNN with FPN on CPU), with the reason.
    static let inertKeys: [String: String] = [
        "TRAIN.GENERATE_PROPOSALS_ON_GPU": "chooses Detectron's CUDA op; the results are the same",
        "TEST.GENERATE_PROPOSALS_ON_GPU": "chooses Detectron's CUDA op; the results are the same",
        "TEST.FORCE_JSON_DATASET_EVAL": "Cityscapes and VOC evaluation; every dataset here is evaluated as COCO JSON",
        "TEST.CLASS_SPECIFIC_AR": "proposal recall of RPN-only models",
        "TEST.COMPETITION_MODE": "only names and cleans up Detectron's results files",
        "TEST.PRECOMPUTED_PROPOSALS": "Detectron sets it False whenever the RPN is on",
        "TEST.PROPOSAL_LIMIT": "precomputed proposals only",
        "TRAIN.CROWD_FILTER_THRESH": "filters precomputed proposals only",
        "DEDUP_BOXES": "applies to Fast R-CNN on precomputed proposals only",
        "RPN.RPN_ON": "Detectron derives it from MODEL.FASTER_RCNN and MODEL.RPN_ONLY",
        "RPN.SIZES": "single-scale RPN only; FPN uses FPN.RPN_ANCHOR_START_SIZE",
        "RPN.STRIDE": "single-scale RPN only",
        "RPN.ASPECT_RATIOS": "single-scale RPN only; FPN uses FPN.RPN_ASPECT_RATIOS",
        "RFCN.PS_GRID_SIZE": "R-FCN only (MODEL.TYPE rfcn)",
        "SOLVER.LOG_LR_CHANGE_THRESHOLD": "only when Detectron logs a learning-rate change",
        "DATA_LOADER.MINIBATCH_QUEUE_SIZE": "a queue size; batches are the same",
        "DATA_LOADER.BLOBS_QUEUE_CAPACITY": "a queue size; batches are the same",
        "USE_NCCL": "how GPUs all-reduce; the sums are the same",
        "MEMONGER": "GPU memory sharing; the results are the same",
        "MEMONGER_SHARE_ACTIVATIONS": "GPU memory sharing; the results are the same",
        "EPS": "not read by Detectron",
        "ROOT_DIR": "Detectron's checkout",
        "MATLAB": "VOC evaluation with MATLAB",
        "DOWNLOAD_CACHE": "this engine does not download weights",
        "VIS_TH": "VIS only",
        "EXPECTED_RESULTS_RTOL": "EXPECTED_RESULTS only",
        "EXPECTED_RESULTS_ATOL": "EXPECTED_RESULTS only",
        "EXPECTED_RESULTS_SIGMA_TOL": "EXPECTED_RESULTS only",
        "EXPECTED_RESULTS_EMAIL": "EXPECTED_RESULTS only",
        "CLUSTER.ON_CLUSTER": "Facebook's cluster",
    ]

    /// Keys whose every value except Detectron's default belongs to a feature this engine does not
    /// implement yet: key → the feature.
    static let defaultOnlyKeys: [String: String] = [
        "TRAIN.PROPOSAL_FILES": "Training on precomputed proposals",
        "TEST.PROPOSAL_FILES": "Testing on precomputed proposals",
        "TRAIN.FREEZE_CONV_BODY": "Freezing the whole conv body",
        "TRAIN.COPY_WEIGHTS": "Copying TRAIN.WEIGHTS into OUTPUT_DIR as a candidate checkpoint",
        "TRAIN.GT_MIN_AREA": "Dropping small ground truth by area",
        "RESNETS.RES5_DILATION": "A dilated res5",
        "VIS": "Drawing detections during `test` (use `detectron infer`)",
        "EXPECTED_RESULTS": "Checking results against EXPECTED_RESULTS",
    ]

    /// What Detectron's other model types are, for the refusal.
    static let modelTypeFeatures = [
        "rfcn": "R-FCN", "mask_rcnn": "Mask R-CNN", "keypoint_rcnn": "Keypoint R-CNN",
        "mask_and_keypoint_rcnn": "Mask and keypoint R-CNN", "rpn": "An RPN-only model", "fpn_rpn": "An RPN-only model",
        "fast_rcnn": "Fast R-CNN on precomputed proposals",
    ]
    /// Detectron's `modeling/name_compat.py`: old builder names → current ones.
    static let renamedBuilders = [
        "head_builder.add_roi_2mlp_head": "fast_rcnn_heads.add_roi_2mlp_head",
        "mask_rcnn_heads.ResNet_mask_rcnn_fcn_head_v1up4convs": "mask_rcnn_heads.mask_rcnn_fcn_head_v1up4convs",
        "mask_rcnn_heads.ResNet_mask_rcnn_fcn_head_v1up": "mask_rcnn_heads.mask_rcnn_fcn_head_v1up",
        "mask_rcnn_heads.ResNet_mask_rcnn_fcn_head_v0upshare": "mask_rcnn_heads.mask_rcnn_fcn_head_v0upshare",
        "mask_rcnn_heads.ResNet_mask_rcnn_fcn_head_v0up": "mask_rcnn_heads.mask_rcnn_fcn_head_v0up",
    ]

    /// The builder function a config names, after Detectron's renames.
    public func builderName(_ key: String) -> String {
        let name = string(key)
        return Self.renamedBuilders[name] ?? name
    }

    /// Refuses, naming the key and its value, any setting this engine does not implement —
    /// model types and switches (Mask R-CNN, RetinaNet, …), test-time options (soft-NMS, box
    /// voting, augmentation), bodies and heads `components` does not have — and returns warnings
    /// for keys of a feature that is off (inert, as in Detectron). Call once the config is
    /// complete (after the file and the overrides).
    public func checkImplemented(_ components: ModelComponents = .standard) throws(ConfigError) -> [String] {
        let modelType = try components.modelType(self)
        let defaults = Config()
        var warnings: [String] = []
        for feature in Self.missingFeatures {
            if value(feature.switchKey) != defaults.value(feature.switchKey) { throw unsupported(feature.switchKey, feature.name) }
            for key in changedKeys(from: defaults) where feature.subtrees.contains(where: key.hasPrefix) {
                warnings.append("config key \(key) is \(value(key)!) but \(feature.switchKey) is \(value(feature.switchKey)!): "
                                + "it has no effect (as in Detectron)")
            }
        }
        // RetinaNet's and Mask R-CNN's keys do nothing unless they are on (as in Detectron).
        for (switchKey, subtree) in [("RETINANET.RETINANET_ON", "RETINANET."), ("MODEL.MASK_ON", "MRCNN.")] where !bool(switchKey) {
            for key in changedKeys(from: defaults) where key.hasPrefix(subtree) {
                warnings.append("config key \(key) is \(value(key)!) but \(switchKey) is False: it has no effect (as in Detectron)")
            }
        }
        try modelType.check(components, self)
        for key in Self.defaultOnlyKeys.keys.sorted() where value(key) != defaults.value(key) {
            throw unsupported(key, Self.defaultOnlyKeys[key]!)
        }
        try checkChoice("SOLVER.LR_POLICY", among: LearningRateSchedule.policies, feature: "The learning-rate policy")
        try checkChoice("SOLVER.WARM_UP_METHOD", among: ["constant", "linear"], feature: "The warm-up method")
        try checkChoice("MODEL.EXECUTION_TYPE", among: ["simple", "dag"], feature: "The execution type")
        if string("SOLVER.LR_POLICY").hasPrefix("steps_") && ints("SOLVER.STEPS").first != 0 {
            throw .invalid(key: "SOLVER.STEPS", reason: "is \(value("SOLVER.STEPS")!); with SOLVER.LR_POLICY \(string("SOLVER.LR_POLICY")) the first step must be 0 (as Detectron asserts)")
        }
        if string("SOLVER.LR_POLICY").hasSuffix("_lrs") && doubles("SOLVER.LRS").count != ints("SOLVER.STEPS").count {
            throw .invalid(key: "SOLVER.LRS", reason: "is \(value("SOLVER.LRS")!); it needs one rate per step of SOLVER.STEPS \(value("SOLVER.STEPS")!)")
        }
        return warnings
    }

    /// The refusal of `key` (at its current value) for `feature`.
    func unsupported(_ key: String, _ feature: String, hint: String = "") -> ConfigError {
        .unsupported(key: key, value: value(key)?.description ?? "None", feature: feature, hint: hint)
    }

    /// Refuses a string key whose value is not among `implemented`.
    public func checkChoice(_ key: String, among implemented: [String], feature: String) throws(ConfigError) {
        let name = string(key)
        guard !implemented.contains(name) else { return }
        throw .unsupported(key: key, value: "'\(name)'", feature: "\(feature) '\(name)'",
                           hint: "implemented: \(implemented.joined(separator: ", "))")
    }

    /// Detectron's GroupNorm group count for `dim` channels: `dim / GROUP_NORM.DIM_PER_GP`, or
    /// GROUP_NORM.NUM_GROUPS when DIM_PER_GP is -1.
    public func groupNormGroups(_ dim: Int) -> Int {
        let perGroup = int("GROUP_NORM.DIM_PER_GP")
        return perGroup > 0 ? max(1, dim / perGroup) : min(int("GROUP_NORM.NUM_GROUPS"), dim)
    }

    /// The leaf keys whose values differ from `defaults`.
    func changedKeys(from defaults: Config) -> [String] {
        var keys: [String] = []
        func walk(_ d: [String: ConfigValue], _ prefix: String) {
            for k in d.keys.sorted() {
                let full = prefix + k
                if case let .node(c) = d[k]! { walk(c, full + ".") } else if defaults.value(full) != d[k] { keys.append(full) }
            }
        }
        walk(root, "")
        return keys
    }
}

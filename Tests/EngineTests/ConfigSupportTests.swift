@testable import Engine
import Foundation
import Testing

/// The shapes tutorial with `overrides`, checked as a command would check it.
private func check(_ overrides: [String]) throws -> Result<[String], ConfigError> {
    var c = Config()
    try c.merge(file: shapesConfig)
    try c.merge(overrides: overrides)
    do { return .success(try c.checkImplemented()) } catch { return .failure(error) }
}

private func refusal(_ overrides: [String]) throws -> String? {
    if case let .failure(e) = try check(overrides) { return e.description }
    return nil
}

@Suite("What the engine implements of Detectron's config")
struct ConfigSupportTests {
    @Test("every key of Detectron's tree that the engine does not read is inert, default-only or part of a named missing feature")
    func everyKeyHasItsPlace() {
        for (key, _) in Config.detectronOnlyKeys {
            let inFeature = Config.missingFeatures.contains { $0.switchKey == key || $0.subtrees.contains(where: key.hasPrefix) }
            #expect(inFeature || Config.inertKeys[key] != nil || Config.defaultOnlyKeys[key] != nil, "\(key) has no place")
        }
        let tree = Config()
        for key in Array(Config.inertKeys.keys) + Array(Config.defaultOnlyKeys.keys) + Config.missingFeatures.map(\.switchKey) {
            #expect(tree.value(key) != nil, "\(key) is not a key of the tree")
        }
    }

    @Test("model switches and model types are refused by name with the missing feature (or the inconsistent setting)", arguments: [
        (["MODEL.MASK_ON", "True"], "config key MRCNN.ROI_MASK_HEAD is '': The mask head '' is not implemented"),
        (["MODEL.KEYPOINTS_ON", "True"], "config key MODEL.KEYPOINTS_ON is True: Keypoint R-CNN is not implemented"),
        (["MODEL.RPN_ONLY", "True"], "config key MODEL.RPN_ONLY is True: An RPN-only model"),
        (["RETINANET.RETINANET_ON", "True"], "config key RETINANET.RETINANET_ON: is True, which Detectron pairs with MODEL.TYPE retinanet"),
        (["MODEL.TYPE", "retinanet"], "config key RETINANET.RETINANET_ON: is False, but MODEL.TYPE is retinanet"),
        (["MODEL.TYPE", "retinanet", "RETINANET.RETINANET_ON", "True", "FPN.MULTILEVEL_ROIS", "False", "RETINANET.CLASS_SPECIFIC_BBOX", "True"],
         "config key RETINANET.CLASS_SPECIFIC_BBOX is True: Class-specific RetinaNet box regression is not implemented"),
        (["MODEL.TYPE", "rfcn"], "config key MODEL.TYPE is 'rfcn': R-FCN is not implemented"),
        (["MODEL.FASTER_RCNN", "False"], "config key MODEL.FASTER_RCNN is False: Fast R-CNN on precomputed proposals is not implemented"),
        (["FPN.FPN_ON", "False"], "config key FPN.FPN_ON is False: A single-scale (C4) model is not implemented"),
        (["MODEL.CONV_BODY", "ResNet.add_ResNet50_conv4_body"], "config key MODEL.CONV_BODY is 'ResNet.add_ResNet50_conv4_body': The body"),
        (["FAST_RCNN.ROI_BOX_HEAD", "ResNet.add_ResNet_roi_conv5_head"], "config key FAST_RCNN.ROI_BOX_HEAD is 'ResNet.add_ResNet_roi_conv5_head'"),
        (["FAST_RCNN.ROI_XFORM_METHOD", "RoIPoolF"], "config key FAST_RCNN.ROI_XFORM_METHOD is 'RoIPoolF'"),
        (["TRAIN.PROPOSAL_FILES", "('p.pkl',)"], "config key TRAIN.PROPOSAL_FILES is ('p.pkl',): Training on precomputed proposals"),
        (["RESNETS.RES5_DILATION", "2"], "config key RESNETS.RES5_DILATION is 2: A dilated res5 is not implemented"),
        (["SOLVER.LR_POLICY", "poly"], "config key SOLVER.LR_POLICY is 'poly': The learning-rate policy 'poly' is not implemented"),
    ])
    func modelSwitches(overrides: [String], message: String) throws {
        let m = try refusal(overrides)
        #expect(m?.hasPrefix(message) == true, "\(m ?? "accepted")")
    }

    @Test("test-time options are refused by name", arguments: [
        ("TEST.SOFT_NMS.ENABLED", "Soft-NMS"), ("TEST.BBOX_VOTE.ENABLED", "Box voting"),
        ("TEST.BBOX_AUG.ENABLED", "Test-time augmentation of boxes"), ("TEST.MASK_AUG.ENABLED", "Test-time augmentation of masks"),
        ("TEST.KPS_AUG.ENABLED", "Test-time augmentation of keypoints"),
    ])
    func testTimeOptions(key: String, feature: String) throws {
        #expect(try refusal([key, "True"]) == "config key \(key) is True: \(feature) is not implemented in this version")
    }

    @Test("keys of a feature that is off are accepted with a warning (inert, as in Detectron); inert keys are accepted")
    func inertKeys() throws {
        let warnings = try check(["MRCNN.RESOLUTION", "28", "TEST.SOFT_NMS.METHOD", "gaussian", "USE_NCCL", "True",
                                  "TEST.COMPETITION_MODE", "False", "RETINANET.NUM_CONVS", "2"]).get()
        #expect(warnings.count == 3, "\(warnings)")
        #expect(warnings.contains { $0.hasPrefix("config key RETINANET.NUM_CONVS is 2 but RETINANET.RETINANET_ON is False: it has no effect") })
        #expect(warnings.contains { $0.hasPrefix("config key MRCNN.RESOLUTION is 28 but MODEL.MASK_ON is False: it has no effect") })
        #expect(warnings.contains { $0.hasPrefix("config key TEST.SOFT_NMS.METHOD is 'gaussian' but TEST.SOFT_NMS.ENABLED is False") })
    }

    @Test("Detectron's old builder names (name_compat) mean the current ones")
    func nameCompat() throws {
        #expect(throws: Never.self) { try check(["FAST_RCNN.ROI_BOX_HEAD", "head_builder.add_roi_2mlp_head"]).get() }
        var c = Config()
        try c.merge(overrides: ["FAST_RCNN.ROI_BOX_HEAD", "head_builder.add_roi_2mlp_head"])
        #expect(c.builderName("FAST_RCNN.ROI_BOX_HEAD") == "fast_rcnn_heads.add_roi_2mlp_head")
    }

    static let cosine: [Double] = [0.0, 0.3, 0.6, 0.9].map { 0.5 * 0.5 * (cos(Double.pi * $0) + 1) }
    static let exponential: [Double] = [0.0, 0.3, 0.6, 0.9].map { 0.5 * exp($0 * log(0.1)) }
    static let policyCases: [(String, [Double])] = [
        ("steps_with_lrs", [0.02, 0.02, 0.004, 0.0008]), ("steps_with_relative_lrs", [0.01, 0.01, 0.002, 0.0004]),
        ("steps_with_decay", [0.5, 0.5, 0.05, 0.005]), ("step", [0.5, 0.05, 0.005, 0.0005]),
        ("cosine_decay", cosine), ("exp_decay", exponential),
    ]

    @Test("Detectron's learning-rate policies", arguments: policyCases)
    func policies(policy: String, expected: [Double]) throws {
        var c = Config()
        try c.merge(overrides: ["MODEL.TYPE", "generalized_rcnn", "SOLVER.LR_POLICY", policy, "SOLVER.BASE_LR", "0.5", "SOLVER.GAMMA", "0.1",
                                "SOLVER.MAX_ITER", "100", "SOLVER.STEP_SIZE", "30", "SOLVER.STEPS", "[0, 50, 80]",
                                "SOLVER.LRS", "[0.02, 0.004, 0.0008]", "SOLVER.WARM_UP_ITERS", "0"])
        let s = LearningRateSchedule(c)
        for (t, want) in zip([0, 30, 60, 90], expected) {
            #expect(abs(Double(s.lr(t)) - want) <= 1e-6 * want, "\(policy) at \(t): \(s.lr(t)) vs \(want)")
        }
    }

    @Test("a steps policy whose first step is not 0, or LRS of another length, is a named error")
    func stepsChecks() throws {
        #expect(try refusal(["SOLVER.STEPS", "[10, 20]"])?.hasPrefix("config key SOLVER.STEPS: is [10, 20]") == true)
        #expect(try refusal(["SOLVER.LR_POLICY", "steps_with_lrs", "SOLVER.LRS", "[0.1]"])?.hasPrefix("config key SOLVER.LRS") == true)
    }
}

import Foundation
import Operators

/// Detectron's mask branch (`mask_rcnn_heads.py`, `MODEL.MASK_ON`): a mask head on RoIAlign
/// features of `mask_rois` (the sampled foreground RoIs in training, the final detections at
/// test), the mask logits (a 1×1 conv, or an FC with MRCNN.USE_FC_OUTPUT, optionally upsampled by
/// a fixed bilinear ConvTranspose), and the sigmoid cross-entropy loss on `masks_int32`. At test
/// the mask ops form their own net, run after the box post-processing (Detectron's cascade).
enum MaskRCNN {
    /// The heads by Detectron's names (`MRCNN.ROI_MASK_HEAD`).
    static let heads: [String: MaskHead] = [
        "mask_rcnn_heads.mask_rcnn_fcn_head_v1up4convs": MaskHead { b, cfg, f, levels in v1up(b, cfg, f, levels, convs: 4, groupNorm: false) },
        "mask_rcnn_heads.mask_rcnn_fcn_head_v1up4convs_gn": MaskHead { b, cfg, f, levels in v1up(b, cfg, f, levels, convs: 4, groupNorm: true) },
        "mask_rcnn_heads.mask_rcnn_fcn_head_v1up": MaskHead { b, cfg, f, levels in v1up(b, cfg, f, levels, convs: 2, groupNorm: false) },
    ]

    /// The blobs the training op makes for the mask branch (`get_fast_rcnn_blob_names` with MASK_ON).
    static func trainingBlobs(roiLevels: ClosedRange<Int>) -> [String] {
        ["mask_rois", "roi_has_mask_int32", "masks_int32"] + roiLevels.map { "mask_rois_fpn\($0)" } + ["mask_rois_idx_restore_int32"]
    }

    /// The mask head's output side M' before MRCNN.UPSAMPLE_RATIO: the v1up heads double the
    /// pooled side (their convs keep it, with the GN head's quirk that its padding follows
    /// MRCNN.DILATION but its convolution does not).
    static func headSide(_ cfg: Config) -> Int {
        let pooled = cfg.int("MRCNN.ROI_XFORM_RESOLUTION")
        let grow = cfg.builderName("MRCNN.ROI_MASK_HEAD").hasSuffix("_gn") ? 2 * (cfg.int("MRCNN.DILATION") - 1) : 0
        let convs = cfg.builderName("MRCNN.ROI_MASK_HEAD").hasSuffix("v1up") ? 2 : 4
        return 2 * (pooled + convs * grow)
    }

    static func check(_ components: ModelComponents, _ cfg: Config) throws(ConfigError) {
        guard cfg.bool("MODEL.MASK_ON") else { return }
        try components.named(components.maskHeads, key: "MRCNN.ROI_MASK_HEAD", feature: "The mask head", cfg).check(cfg)
        try cfg.checkChoice("MRCNN.ROI_XFORM_METHOD", among: ["RoIAlign"], feature: "The mask RoI transform")
        try cfg.checkChoice("MRCNN.CONV_INIT", among: ["GaussianFill", "MSRAFill", "XavierFill"], feature: "The mask head initialiser")
        let up = cfg.int("MRCNN.UPSAMPLE_RATIO")
        guard up >= 1, up == 1 || up % 2 == 0 else {
            throw .invalid(key: "MRCNN.UPSAMPLE_RATIO", reason: "is \(up); it must be 1 or even (Detectron's BilinearInterpolation asserts an even scale)")
        }
        if cfg.bool("MRCNN.USE_FC_OUTPUT") && up > 1 && cfg.int("MRCNN.RESOLUTION") % up != 0 {
            throw .invalid(key: "MRCNN.RESOLUTION", reason: "is \(cfg.int("MRCNN.RESOLUTION")), not a multiple of MRCNN.UPSAMPLE_RATIO \(up)")
        }
        // Detectron never checks this and fails in the loss (sizes differ); say it up front.
        let side = headSide(cfg) * (cfg.bool("MRCNN.USE_FC_OUTPUT") ? 1 : up)
        if !cfg.bool("MRCNN.USE_FC_OUTPUT") && side != cfg.int("MRCNN.RESOLUTION") {
            throw .invalid(key: "MRCNN.RESOLUTION", reason: "is \(cfg.int("MRCNN.RESOLUTION")), but \(cfg.builderName("MRCNN.ROI_MASK_HEAD")) on "
                           + "MRCNN.ROI_XFORM_RESOLUTION \(cfg.int("MRCNN.ROI_XFORM_RESOLUTION")) (× MRCNN.UPSAMPLE_RATIO \(up)) predicts "
                           + "\(side)×\(side) masks; set it to \(side)")
        }
    }

    /// `mask_rcnn_fcn_head_v1upXconvs[_gn]`: `convs` 3×3 convs of MRCNN.DIM_REDUCED (dilation
    /// MRCNN.DILATION; with GroupNorm and no bias in the GN head), ReLU after each, then
    /// `conv5_mask`, a 2×2 stride-2 ConvTranspose, and ReLU.
    static func v1up(_ b: ModelBuilder, _ cfg: Config, _ features: FeatureMaps, _ roiLevels: ClosedRange<Int>, convs: Int, groupNorm: Bool) -> HeadOutput {
        var x = GeneralizedRCNN.roiTransform(b, features, roiLevels: roiLevels, rois: "mask_rois", output: groupNorm ? "_mask_roi_feat" : "_[mask]_roi_feat",
                                             resolution: cfg.int("MRCNN.ROI_XFORM_RESOLUTION"), samplingRatio: cfg.int("MRCNN.ROI_XFORM_SAMPLING_RATIO"))
        let dilation = cfg.int("MRCNN.DILATION"), dim = cfg.int("MRCNN.DIM_REDUCED")
        let fill = (cfg.string("MRCNN.CONV_INIT"), ["std": ArgumentValue.float(0.001)])
        var dimIn = features.dim
        for i in 1...convs {
            if groupNorm {
                x = b.convGN(x, "_mask_fcn\(i)", dimIn: dimIn, dimOut: dim, kernel: 3, pad: dilation, groups: cfg.groupNormGroups(dim),
                             epsilon: cfg.double("GROUP_NORM.EPSILON"), weightFill: fill)
            } else {
                x = b.conv(x, "_[mask]_fcn\(i)", dimIn: dimIn, dimOut: dim, kernel: 3, pad: dilation, dilation: dilation, weightFill: fill)
            }
            b.relu(x)
            dimIn = dim
        }
        b.convTranspose(x, "conv5_mask", dimIn: dim, dimOut: dim, kernel: 2, stride: 2, pad: 0, weightFill: fill)
        return HeadOutput(blob: b.relu("conv5_mask"), dim: dim)
    }

    /// `add_mask_rcnn_outputs` and, in training, `add_mask_rcnn_losses`. Returns the loss blob
    /// (training) or nil.
    @discardableResult
    static func outputs(_ b: ModelBuilder, _ cfg: Config, head: HeadOutput) -> String? {
        let classes = cfg.bool("MRCNN.CLS_SPECIFIC_MASK") ? cfg.int("MODEL.NUM_CLASSES") : 1
        let resolution = cfg.int("MRCNN.RESOLUTION"), up = cfg.int("MRCNN.UPSAMPLE_RATIO")
        var logits: String
        if cfg.bool("MRCNN.USE_FC_OUTPUT") {
            let side = Double(resolution) / Double(up)
            logits = b.fc(head.blob, "mask_fcn_logits", dimIn: Int(Double(head.dim) * side * side), dimOut: classes * resolution * resolution,
                          weightFill: ParamInfo.gauss(0.001))
        } else {
            // Class-agnostic masks get a Gaussian: fan-based fills of one output channel can diverge (Detectron's comment).
            let fill = cfg.bool("MRCNN.CLS_SPECIFIC_MASK") ? cfg.string("MRCNN.CONV_INIT") : "GaussianFill"
            logits = b.conv(head.blob, "mask_fcn_logits", dimIn: head.dim, dimOut: classes, kernel: 1, weightFill: (fill, ["std": .float(0.001)]))
            if up > 1 { logits = bilinearUpsampling(b, logits, "mask_fcn_logits_up", channels: classes, scale: up) }
        }
        if !b.train {
            b.op("Sigmoid", [logits], ["mask_fcn_probs"])
            return nil
        }
        let scale = cfg.double("MRCNN.WEIGHT_LOSS_MASK") / Double(cfg.int("NUM_GPUS"))
        return b.op("SigmoidCrossEntropyLoss", [logits, "masks_int32"], ["loss_mask"], ["scale": .float(scale)])
    }

    /// Detectron's `BilinearInterpolation`: a ConvTranspose of kernel 2s, stride s, pad s/2 whose
    /// weights are the FCN bilinear filter from each channel to itself, frozen.
    static func bilinearUpsampling(_ b: ModelBuilder, _ input: String, _ output: String, channels: Int, scale: Int) -> String {
        let size = 2 * scale, factor = (size + 1) / 2
        let center = size % 2 == 1 ? Double(factor - 1) : Double(factor) - 0.5
        var filter = [Double](repeating: 0, count: size * size)
        for i in 0..<size {
            for j in 0..<size {
                filter[i * size + j] = (1 - abs(Double(i) - center) / Double(factor)) * (1 - abs(Double(j) - center) / Double(factor))
            }
        }
        var values = [Double](repeating: 0, count: channels * channels * size * size)
        for c in 0..<channels { for k in 0..<size * size { values[(c * channels + c) * size * size + k] = filter[k] } }
        return b.convTranspose(input, output, dimIn: channels, dimOut: channels, kernel: size, stride: scale, pad: scale / 2,
                               weightFill: ("GivenTensorFill", ["values": .floats(values)]), trainable: false)
    }
}

import Foundation

/// torchvision's `fasterrcnn_resnet50_fpn`, `maskrcnn_resnet50_fpn` and `retinanet_resnet50_fpn` `state_dict` names mapped to this engine's (Detectron's)
/// blob names, with each `FrozenBatchNorm2d` folded into the `AffineChannel` it is:
/// scale = weight / √(running_var + 1e−5), bias = bias − running_mean · scale (float32, as
/// torchvision computes it in `forward`).
///
/// | torchvision | here |
/// |---|---|
/// | `backbone.body.conv1`, `.bn1` | `conv1`, `res_conv1_bn` |
/// | `backbone.body.layerL.i.conv{1,2,3}`, `.bn{1,2,3}` | `res{L+1}_i_branch2{a,b,c}`, `…_bn` |
/// | `backbone.body.layerL.i.downsample.{0,1}` | `res{L+1}_i_branch1`, `…_bn` |
/// | `backbone.fpn.inner_blocks.{0,1,2}[.0]`, `.3[.0]` | `fpn_inner_res{2,3,4}_N_sum_lateral`, `fpn_inner_res5_N_sum` (RetinaNet: from res3, three blocks) |
/// | `backbone.fpn.layer_blocks.k[.0]` | `fpn_res{k+2}_N_sum` |
/// | `rpn.head.conv[.0.0]`, `.cls_logits`, `.bbox_pred` | `conv_rpn_fpn2`, `rpn_cls_logits_fpn2`, `rpn_bbox_pred_fpn2` |
/// | `roi_heads.box_head.fc6`, `.fc7`; `roi_heads.box_predictor.cls_score`, `.bbox_pred` | `fc6`, `fc7`, `cls_score`, `bbox_pred` |
/// | `roi_heads.mask_head.mask_fcn{1…4}` or `.{0…3}.0`; `roi_heads.mask_predictor.conv5_mask`, `.mask_fcn_logits` | `_[mask]_fcn{1…4}`, `conv5_mask`, `mask_fcn_logits` |
/// | `backbone.fpn.extra_blocks.p6`, `.p7` (RetinaNet) | `fpn_6`, `fpn_7` |
/// | `head.{classification,regression}_head.conv.i[.0]`, `.cls_logits`, `.bbox_reg` | `retnet_{cls,bbox}_conv_n{i}_fpn3`, `retnet_{cls,bbox}_pred_fpn3` |
///
/// `.weight` becomes `_w` and `.bias` `_b`; N is the last block of the stage. Names it does not
/// know (a `module.` prefix is dropped first) are kept as they are, so the loader lists them as
/// unused.
enum TorchvisionWeights {
    /// torchvision's `FrozenBatchNorm2d` epsilon.
    static let batchNormEpsilon: Float = 1e-5

    /// Whether `names` look like a torchvision detection model's state_dict.
    static func recognises(_ names: some Sequence<String>) -> Bool {
        names.contains { strip($0) == "backbone.body.conv1.weight" }
    }

    private static func strip(_ name: String) -> String { name.hasPrefix("module.") ? String(name.dropFirst(7)) : name }

    static func convert(_ tensors: [String: (shape: [Int], values: [Float])], file: String) throws(WeightsError)
        -> [String: (shape: [Int], values: [Float])] {
        var byName: [String: (shape: [Int], values: [Float])] = [:]
        for (name, t) in tensors where !name.hasSuffix("num_batches_tracked") { byName[strip(name)] = t }
        // Blocks per stage, from the names: layerL.i.…; and how many FPN inner blocks there are
        // (4 from C2 for Faster and Mask R-CNN, 3 from C3 for RetinaNet).
        var blocks: [Int: Int] = [:], innerBlocks = 0
        for name in byName.keys {
            let p = name.split(separator: ".")
            if p.count > 3, p[0] == "backbone", p[1] == "body", p[2].hasPrefix("layer"), let l = Int(p[2].dropFirst(5)), let i = Int(p[3]) {
                blocks[l + 1] = max(blocks[l + 1] ?? 0, i + 1)
            }
            if p.count > 3, p[0] == "backbone", p[1] == "fpn", p[2] == "inner_blocks", let k = Int(p[3]) { innerBlocks = max(innerBlocks, k + 1) }
        }
        func stageBlob(_ stage: Int) throws(WeightsError) -> String {
            guard let n = blocks[stage] else { throw .malformed(file: file, reason: "torchvision state_dict without backbone.body.layer\(stage - 1)") }
            return "res\(stage)_\(n - 1)_sum"
        }
        var out: [String: (shape: [Int], values: [Float])] = [:]
        var folded: Set<String> = []
        for name in byName.keys.sorted() {
            let parts = name.split(separator: ".").map(String.init)
            guard let leaf = parts.last, parts.count >= 2 else { out[name] = byName[name]; continue }
            let module = parts.dropLast().joined(separator: ".")
            guard let ours = try blobPrefix(module: Array(parts.dropLast()), firstFPNStage: 6 - innerBlocks, stageBlob: stageBlob) else {
                out[name] = byName[name]
                continue
            }
            if byName[module + ".running_var"] != nil {
                // A FrozenBatchNorm2d: its four buffers become one AffineChannel.
                guard folded.insert(module).inserted else { continue }
                guard let w = byName[module + ".weight"], let b = byName[module + ".bias"], let mean = byName[module + ".running_mean"],
                      let variance = byName[module + ".running_var"],
                      [b.values.count, mean.values.count, variance.values.count].allSatisfy({ $0 == w.values.count }) else {
                    throw .malformed(file: file, reason: "batch norm \(module) lacks weight, bias, running_mean or running_var of one size")
                }
                var scale = [Float](repeating: 0, count: w.values.count), shift = scale
                for c in scale.indices {
                    scale[c] = w.values[c] * (1 / (variance.values[c] + batchNormEpsilon).squareRoot())
                    shift[c] = b.values[c] - mean.values[c] * scale[c]
                }
                out[ours + "_s"] = ([scale.count], scale)
                out[ours + "_b"] = ([shift.count], shift)
            } else if leaf == "weight" || leaf == "bias" {
                out[ours + (leaf == "weight" ? "_w" : "_b")] = byName[name]
            } else {
                out[name] = byName[name]
            }
        }
        return out
    }

    /// Our blob prefix for a torchvision module path, or nil when it is not one of the model's.
    private static func blobPrefix(module p: [String], firstFPNStage: Int, stageBlob: (Int) throws(WeightsError) -> String) throws(WeightsError) -> String? {
        // Newer torchvision wraps FPN and RPN convs in Conv2dNormActivation (`.0` suffixes).
        var p = p
        if p.count == 5 && p[1] == "fpn" && p[4] == "0" { p.removeLast() }
        if p.count == 5 && p[1] == "head" && p[2] == "conv" && p[3] == "0" && p[4] == "0" { p.removeLast(2) }
        if p.first == "head", p.count >= 3 { return retinaNetHead(p) }
        switch (p.first, p.count) {
        case ("backbone", 3) where p[1] == "body":
            return ["conv1": "conv1", "bn1": "res_conv1_bn"][p[2]]
        case ("backbone", 5...6) where p[1] == "body" && p[2].hasPrefix("layer"):
            guard let l = Int(p[2].dropFirst(5)), let i = Int(p[3]) else { return nil }
            let block = "res\(l + 1)_\(i)"
            if p.count == 5, let k = Int(p[4].dropFirst(p[4].hasPrefix("conv") ? 4 : 2)), (1...3).contains(k),
               p[4].hasPrefix("conv") || p[4].hasPrefix("bn") {
                let branch = block + "_branch2" + ["a", "b", "c"][k - 1]
                return p[4].hasPrefix("bn") ? branch + "_bn" : branch
            }
            if p.count == 6, p[4] == "downsample" { return p[5] == "0" ? block + "_branch1" : (p[5] == "1" ? block + "_branch1_bn" : nil) }
            return nil
        case ("backbone", 4) where p[1] == "fpn" && p[2] == "extra_blocks":
            return ["p6": "fpn_6", "p7": "fpn_7"][p[3]]
        case ("backbone", 4) where p[1] == "fpn":
            guard let k = Int(p[3]), (2...5).contains(firstFPNStage + k) else { return nil }
            let stage = try stageBlob(firstFPNStage + k)
            if p[2] == "inner_blocks" { return firstFPNStage + k == 5 ? "fpn_inner_" + stage : "fpn_inner_" + stage + "_lateral" }
            return p[2] == "layer_blocks" ? "fpn_" + stage : nil
        case ("rpn", 3) where p[1] == "head":
            return ["conv": "conv_rpn_fpn2", "cls_logits": "rpn_cls_logits_fpn2", "bbox_pred": "rpn_bbox_pred_fpn2"][p[2]]
        case ("roi_heads", 3) where p[1] == "mask_head" && p[2].hasPrefix("mask_fcn"):
            return Int(p[2].dropFirst(8)).map { "_[mask]_fcn\($0)" }   // maskrcnn v1 checkpoints: mask_fcn1…4
        case ("roi_heads", 4) where p[1] == "mask_head" && p[3] == "0":
            return Int(p[2]).map { "_[mask]_fcn\($0 + 1)" }             // MaskRCNNHeads version 2: i.0
        case ("roi_heads", 3):
            return ["box_head.fc6": "fc6", "box_head.fc7": "fc7", "box_predictor.cls_score": "cls_score",
                    "box_predictor.bbox_pred": "bbox_pred", "mask_predictor.conv5_mask": "conv5_mask",
                    "mask_predictor.mask_fcn_logits": "mask_fcn_logits"][p[1] + "." + p[2]]
        default:
            return nil
        }
    }

    /// `retinanet_resnet50_fpn`'s head (`head.classification_head.…`, `head.regression_head.…`): the
    /// tower convs `conv.i.0` (`conv.2i` in v1 checkpoints) and the predictors, onto Detectron's
    /// RetinaNet parameters, which are named at P3 and shared by the levels above.
    private static func retinaNetHead(_ p: [String]) -> String? {
        guard let kind = ["classification_head": "cls", "regression_head": "bbox"][p[1]] else { return nil }
        switch (p[2], p.count) {
        case ("cls_logits", 3) where kind == "cls", ("bbox_reg", 3) where kind == "bbox":
            return "retnet_\(kind)_pred_fpn3"
        case ("conv", 4):
            guard let j = Int(p[3]), j % 2 == 0 else { return nil }
            return "retnet_\(kind)_conv_n\(j / 2)_fpn3"
        case ("conv", 5) where p[4] == "0":
            return Int(p[3]).map { "retnet_\(kind)_conv_n\($0)_fpn3" }
        default:
            return nil
        }
    }
}

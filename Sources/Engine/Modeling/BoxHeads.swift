import Operators

/// Detectron's box heads (`fast_rcnn_heads.add_roi_*`): RoI features in, the hidden layer the
/// class and box predictors read out.
enum BoxHeads {
    /// `add_roi_2mlp_head`: fc6 and fc7 of FAST_RCNN.MLP_HEAD_DIM, ReLU after each.
    static let twoMLP = RoIHead { b, cfg, roi in
        let hidden = cfg.int("FAST_RCNN.MLP_HEAD_DIM")
        b.fc(roi.blob, "fc6", dimIn: roi.dim * roi.resolution * roi.resolution, dimOut: hidden)
        b.relu("fc6")
        b.fc("fc6", "fc7", dimIn: hidden, dimOut: hidden)
        return HeadOutput(blob: b.relu("fc7"), dim: hidden)
    }

    /// `add_roi_Xconv1fc_gn_head`: FAST_RCNN.NUM_STACKED_CONVS 3×3 convs with GroupNorm and ReLU,
    /// then fc6 with ReLU.
    static let xconv1fcGN = RoIHead { b, cfg, roi in
        let convDim = cfg.int("FAST_RCNN.CONV_HEAD_DIM"), hidden = cfg.int("FAST_RCNN.MLP_HEAD_DIM")
        var x = roi.blob, d = roi.dim
        for i in 0..<cfg.int("FAST_RCNN.NUM_STACKED_CONVS") {
            x = b.convGN(x, "head_conv\(i + 1)", dimIn: d, dimOut: convDim, kernel: 3, pad: 1, groups: cfg.groupNormGroups(convDim),
                         epsilon: cfg.double("GROUP_NORM.EPSILON"), weightFill: ("MSRAFill", [:]))
            b.relu(x)
            d = convDim
        }
        b.fc(x, "fc6", dimIn: convDim * roi.resolution * roi.resolution, dimOut: hidden)
        return HeadOutput(blob: b.relu("fc6"), dim: hidden)
    }
}

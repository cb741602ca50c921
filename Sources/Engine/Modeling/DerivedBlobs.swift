/// The blob names that the model builder and the data path must agree on (Detectron keeps them
/// in `get_rpn_blob_names`, `get_fast_rcnn_blob_names` and friends): one place for both.
enum DerivedBlobs {
    /// A level's cell anchors, fed by the engine (`anchors_fpnL`).
    static func anchors(_ level: Int) -> String { "anchors_fpn\(level)" }

    /// The four RPN training targets of a level, at the padded image's full feature-map size, in
    /// the order the loader makes them and the net's `SpatialNarrowAs` crops them: labels, box
    /// targets, inside and outside weights (the cropped blobs drop `_wide`).
    static let rpnTargetKinds = ["labels_int32", "bbox_targets", "bbox_inside_weights", "bbox_outside_weights"]
    static func rpnTarget(_ kind: String, level: Int, wide: Bool = true) -> String { "rpn_\(kind)\(wide ? "_wide" : "")_fpn\(level)" }
    static func rpnTargets(_ level: Int) -> [String] { rpnTargetKinds.map { rpnTarget($0, level: level) } }

    /// A level's proposals and their scores (GenerateProposals' outputs).
    static func rpnRois(_ level: Int) -> String { "rpn_rois_fpn\(level)" }
    static func rpnRoiProbs(_ level: Int) -> String { "rpn_roi_probs_fpn\(level)" }
    /// The RoIs assigned to a level for RoIAlign.
    static func rois(_ level: Int) -> String { "rois_fpn\(level)" }
}

extension DerivedBlobs {
    /// RetinaNet's training targets of a level (`get_retinanet_blob_names`): labels (N, A, H, W),
    /// foreground box targets (M, 4) and their locations (M, 4).
    static func retinaNetTargets(_ level: Int) -> [String] {
        ["retnet_cls_labels_fpn\(level)", "retnet_roi_bbox_targets_fpn\(level)", "retnet_roi_fg_bbox_locs_fpn\(level)"]
    }
    /// Σ over the batch of (foreground anchors + 1): both losses' normaliser.
    static let retinaNetForegroundCount = "retnet_fg_num"
    /// A level's class probabilities and box deltas at test.
    static func retinaNetOutputs(_ level: Int) -> (probs: String, deltas: String) { ("retnet_cls_prob_fpn\(level)", "retnet_bbox_pred_fpn\(level)") }
}

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

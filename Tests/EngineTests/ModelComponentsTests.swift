@testable import Engine
import Foundation
import Imaging
import Logging
import Operators
import Storage
import Testing

extension Logger {
    /// A logger that drops everything (tests that do not read the log).
    static let silent = Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }
}

/// The README's example: a one-layer box head registered under a new name.
func componentsWithOneMLPHead() -> ModelComponents {
    var components = ModelComponents.standard
    components.roiHeads["my_heads.add_roi_1mlp_head"] = RoIHead { b, cfg, roi in
        let hidden = cfg.int("FAST_RCNN.MLP_HEAD_DIM")
        b.fc(roi.blob, "fc6", dimIn: roi.dim * roi.resolution * roi.resolution, dimOut: hidden)
        return HeadOutput(blob: b.relu("fc6"), dim: hidden)
    }
    return components
}

/// Detectron's rules except that training is refused (a stand-in for inference-only semantics).
struct InferenceOnlyDetectron: DetectionSemantics {
    let base = DetectronSemantics()
    var trains: Bool { false }
    var boxConvention: BoxConvention { base.boxConvention }
    var anchorsFollowInput: Bool { base.anchorsFollowInput }
    func cellAnchors(stride: Int, size: Double, aspectRatios: [Double]) -> [Float] {
        base.cellAnchors(stride: stride, size: size, aspectRatios: aspectRatios)
    }
    func anchorInput(cell: [Float], level: Int, paddedHeight: Int, paddedWidth: Int) -> [Float] {
        base.anchorInput(cell: cell, level: level, paddedHeight: paddedHeight, paddedWidth: paddedWidth)
    }
    func proposalFilter(postNMSTopN: Int, minSize: Int) -> (postNMSTopN: Int, minSize: Double) {
        base.proposalFilter(postNMSTopN: postNMSTopN, minSize: minSize)
    }
    func prepare(_ image: Image, _ settings: TestSettings, context: any Context) throws -> PreparedInput {
        try base.prepare(image, settings, context: context)
    }
    func detections(scores: [Float], boxes: [Float], rows: Int, _ settings: TestSettings) -> [(classIndex: Int, score: Float, box: [Float])] {
        base.detections(scores: scores, boxes: boxes, rows: rows, settings)
    }
}

@Suite("Model components by Detectron's names")
struct ModelComponentsTests {
    @Test("a registered box head builds, trains (its fc6 changes) and detects; the standard components refuse its name")
    func customHead() throws {
        let cfg = try smallConfig(["FAST_RCNN.ROI_BOX_HEAD", "my_heads.add_roi_1mlp_head"])
        let components = componentsWithOneMLPHead()
        let model = try components.build(cfg, train: true)
        let names = Set(model.params.map(\.name))
        #expect(names.contains("fc6_w") && !names.contains("fc7_w"))
        let fc6 = try #require(model.params.first { $0.name == "fc6_w" })
        #expect(fc6.shape == [cfg.int("FAST_RCNN.MLP_HEAD_DIM"), cfg.int("FPN.DIM") * 7 * 7])
        #expect(model.params.first { $0.name == "cls_score_w" }?.shape == [cfg.int("MODEL.NUM_CLASSES"), cfg.int("FAST_RCNN.MLP_HEAD_DIM")])

        // Trained through the Trainer (5 iterations), then detecting through the Detector.
        let (spec, _, dir) = try tinyDataset()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var small = try smallConfig(tinyConfig(dataset: spec, output: dir + "/out", maxIter: 5))
        try small.merge(overrides: ["FAST_RCNN.ROI_BOX_HEAD", "my_heads.add_roi_1mlp_head", "TRAIN.AUTO_RESUME", "False"])
        let final = try Trainer(config: small, components: components, logger: .silent).run()
        let blobs = try Checkpoint.read(final).blobs
        #expect(blobs["fc7_w"] == nil)
        let trained = try #require(blobs["fc6_w"])
        let initial = try ModelSession(small, train: false, components: components).makeWorkspace()
        #expect(try initial.fetchBlob("fc6_w").toArray(as: Float.self) != trained.values, "fc6_w was not trained")
        let detector = try Detector(config: small, weights: final, components: components)
        let found = try detector.detect(try JPEG.decode(contentsOf: dir + "/a.jpg"))
        #expect(found.allSatisfy { $0.score.isFinite && $0.bbox[2] <= 64 && $0.bbox[3] <= 64 })

        #expect {
            try ModelComponents.standard.build(cfg, train: false)
        } throws: { error in
            guard case let ConfigError.unsupported(key, value, feature, hint)? = error as? ConfigError else { return false }
            return key == "FAST_RCNN.ROI_BOX_HEAD" && value == "'my_heads.add_roi_1mlp_head'"
                && feature == "The box head 'my_heads.add_roi_1mlp_head'"
                && hint.contains("fast_rcnn_heads.add_roi_2mlp_head") && hint.contains("fast_rcnn_heads.add_roi_Xconv1fc_gn_head")
        }
    }

    @Test("Detectron's old builder names resolve through name_compat; unknown bodies and model types are refused by name")
    func names() throws {
        let old = try ModelComponents.standard.build(try smallConfig(["FAST_RCNN.ROI_BOX_HEAD", "head_builder.add_roi_2mlp_head"]), train: false)
        let new = try ModelComponents.standard.build(try smallConfig(["FAST_RCNN.ROI_BOX_HEAD", "fast_rcnn_heads.add_roi_2mlp_head"]), train: false)
        #expect(old.net.ops.map(\.type) == new.net.ops.map(\.type) && old.params == new.params)
        #expect(ModelComponents.standard.bodies.keys.sorted() == [18, 34, 50, 101, 152].map { "FPN.add_fpn_ResNet\($0)_conv5_body" }.sorted())
        for (key, value) in [("MODEL.CONV_BODY", "ResNet.add_ResNet50_conv4_body"), ("MODEL.TYPE", "rfcn")] {
            #expect {
                try ModelComponents.standard.build(try smallConfig([key, value]), train: false)
            } throws: { error in
                guard case let ConfigError.unsupported(k, v, _, hint)? = error as? ConfigError else { return false }
                return k == key && v == "'\(value)'" && hint.hasPrefix("implemented: ")
            }
        }
    }

    @Test("semantics are chosen by name from the components: an inference-only one refuses training, an unknown name is refused")
    func semantics() throws {
        var components = ModelComponents.standard
        components.semantics["inference_only"] = InferenceOnlyDetectron()
        let cfg = try smallConfig(["MODEL.SEMANTICS", "inference_only"])
        let test = try components.build(cfg, train: false)
        let reference = try ModelComponents.standard.build(try smallConfig(), train: false)
        #expect(test.net == reference.net && test.cellAnchors == reference.cellAnchors)
        #expect(throws: ConfigError.self) { try components.build(cfg, train: true) }
        #expect(throws: ConfigError.self) { try ModelComponents.standard.build(cfg, train: false) }
        // torchvision's: anchors centred on 0, no +1 in the proposal ops, every NMS survivor per level.
        let tv = try ModelComponents.standard.build(try smallConfig(["MODEL.SEMANTICS", "torchvision"]), train: false)
        let generate = try #require(tv.net.ops.first { $0.type == "GenerateProposals" })
        #expect(generate.arguments["legacy_plus_one"] == .int(0) && generate.arguments["post_nms_topN"] == .int(0))
        #expect(tv.cellAnchors[2] == Boxes.torchvisionCellAnchors(sizes: [Double(cfg.int("FPN.RPN_ANCHOR_START_SIZE"))],
                                                                  aspectRatios: cfg.doubles("FPN.RPN_ASPECT_RATIOS")))
    }
}

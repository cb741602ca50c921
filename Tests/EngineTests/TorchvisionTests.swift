@testable import Engine
import Foundation
import Operators
import Storage
import Testing

/// torchvision's outputs for random inputs (tools/make_torchvision_fixtures.py).
struct TorchvisionBoxesFixture: Decodable {
    var cell_anchors: [[Float]]
    var grid_image: [Int]
    var grid_maps: [[Int]]
    var grid_anchors: [[Float]]
    var reference: [Float], deltas: [Float], decoded_rpn: [Float], decoded_box: [Float]
    var nms_boxes: [Float], nms_scores: [Float], nms_groups: [Int], nms_small_keep: [Int]
    var nms_big_boxes: [Float], nms_big_scores: [Float], nms_big_groups: [Int], nms_big_keep: [Int]
    var level_boxes: [Float], levels: [Int]

    static func load() throws -> TorchvisionBoxesFixture {
        let url = try #require(Bundle.module.url(forResource: "boxes", withExtension: "json", subdirectory: "Fixtures/torchvision"))
        return try JSONDecoder().decode(TorchvisionBoxesFixture.self, from: Data(contentsOf: url))
    }
}

/// retinanet_resnet50_fpn's anchors and `postprocess_detections` on random head outputs (tools/make_torchvision_fixtures.py).
struct TorchvisionRetinaNetFixture: Decodable {
    var cell_anchors: [[Float]]
    var image: [Int], resized: [Int], maps: [[Int]]
    var anchors_per_cell: Int, classes: Int
    var score_thresh: Double, topk: Int, nms: Double, detections: Int
    var grid_anchors: [[Float]]
    var probs: [[Float]], deltas: [[Float]]
    var boxes: [Float], scores: [Float], labels: [Int]
}

@Suite("torchvision semantics")
struct TorchvisionTests {
    static var configPath: String { configPath("fasterrcnn_resnet50_fpn") }

    static func configPath(_ model: String) -> String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../configs/torchvision/\(model).yaml").path
    }

    @Test("cell anchors and the anchor grid (strides from map sizes) equal AnchorGenerator's")
    func anchors() throws {
        let f = try TorchvisionBoxesFixture.load()
        var cells: [Int: [Float]] = [:]
        for (i, size) in [32.0, 64, 128, 256, 512].enumerated() {
            cells[i + 2] = Boxes.torchvisionCellAnchors(sizes: [size], aspectRatios: [0.5, 1, 2])
            #expect(cells[i + 2] == f.cell_anchors[i])
        }
        for level in 2...6 {
            let grid = TorchvisionSemantics().anchorInput(cell: cells[level]!, level: level, paddedHeight: f.grid_image[0], paddedWidth: f.grid_image[1])
            let map = f.grid_maps[level - 2]
            #expect(grid.count == map[0] * map[1] * 3 * 4)
            #expect(grid == f.grid_anchors[level - 2], "level \(level)")
        }
    }

    @Test("RetinaNet: AnchorGenerator's cell anchors (int sizes 32, 40, 50 …, ratio outer) and grid, and postprocess_detections' detections")
    func retinaNet() throws {
        let url = try #require(Bundle.module.url(forResource: "retinanet", withExtension: "json", subdirectory: "Fixtures/torchvision"))
        let f = try JSONDecoder().decode(TorchvisionRetinaNetFixture.self, from: Data(contentsOf: url))
        var cfg = Config()
        try cfg.merge(file: Self.configPath("retinanet_resnet50_fpn"))
        try cfg.merge(overrides: ["MODEL.NUM_CLASSES", "\(f.classes)", "RETINANET.INFERENCE_TH", "\(f.score_thresh)", "RETINANET.PRE_NMS_TOP_N",
                                  "\(f.topk)", "TEST.NMS", "\(f.nms)", "TEST.DETECTIONS_PER_IM", "\(f.detections)"])
        let semantics = TorchvisionSemantics()
        let cells = RetinaNet.cellAnchors(cfg, levels: 3...7, semantics: semantics)
        #expect((3...7).map { cells[$0]! } == f.cell_anchors)
        #expect(semantics.retinaNetClasses(numClasses: f.classes) == (perAnchor: f.classes, firstLabel: 0))
        let (A, K) = (f.anchors_per_cell, f.classes)
        var levels: [DenseLevelOutputs] = []
        for (i, level) in (3...7).enumerated() {
            let (h, w) = (f.maps[i][0], f.maps[i][1]), plane = h * w
            // torchvision's (H·W·A, K) and (H·W·A, 4) rows to our (A·K, H, W) and (4A, H, W) channels.
            var probs = [Float](repeating: 0, count: A * K * plane), deltas = [Float](repeating: 0, count: 4 * A * plane)
            for pos in 0..<plane {
                for a in 0..<A {
                    for k in 0..<K { probs[(a * K + k) * plane + pos] = f.probs[i][(pos * A + a) * K + k] }
                    for c in 0..<4 { deltas[(4 * a + c) * plane + pos] = f.deltas[i][(pos * A + a) * 4 + c] }
                }
            }
            let lv = DenseLevelOutputs(level: level, probs: probs, deltas: deltas, height: h, width: w, anchorsPerCell: A, classesPerAnchor: K,
                                       cellAnchors: cells[level]!, inputHeight: f.image[0], inputWidth: f.image[1])
            let grid = (0..<plane).flatMap { pos in (0..<A).flatMap { a in
                lv.anchor(a, x: pos % w, y: pos / w, strideX: f.image[1] / w, strideY: f.image[0] / h)
            } }
            #expect(grid == f.grid_anchors[i], "level \(level)")
            levels.append(lv)
        }
        let ctx = CPUContext()
        let input = PreparedInput(data: try Tensor(.float32, shape: [1, 3, f.image[0], f.image[1]], context: ctx), imInfo: [],
                                  clipHeight: Float(f.resized[0]), clipWidth: Float(f.resized[1]))
        let found = semantics.retinaNetDetections(levels, input, TestSettings(cfg))
        #expect(found.map(\.classIndex) == f.labels)
        #expect(found.map(\.score) == f.scores)
        let boxes = found.flatMap(\.box)
        #expect(boxes.count == f.boxes.count)
        let worst = zip(boxes, f.boxes).map { abs($0 - $1) / max(1, abs($1)) }.max() ?? 0
        #expect(worst <= 1e-5, "worst relative box difference \(worst)")
    }

    @Test("RetinaNet: the head's names (v1 conv.2i and v2 conv.i.0), the FPN from C3 and its P6/P7 map onto Detectron's RetinaNet blobs")
    func retinaNetStateDict() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("tv-retinanet-\(UUID().uuidString).safetensors").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        var tensors: [(name: String, shape: [Int], values: [Float])] = [("backbone.body.conv1.weight", [1], [0])]
        for l in 1...4 { tensors.append(("backbone.body.layer\(l).\(l == 3 ? 5 : 1).conv1.weight", [1], [0])) }
        for k in 0..<3 {
            tensors += [("backbone.fpn.inner_blocks.\(k).0.weight", [1], [0]), ("backbone.fpn.layer_blocks.\(k).0.bias", [1], [0])]
        }
        tensors += [("backbone.fpn.extra_blocks.p6.weight", [1], [0]), ("backbone.fpn.extra_blocks.p7.bias", [1], [0]),
                    ("head.classification_head.conv.2.weight", [1], [0]), ("head.classification_head.cls_logits.bias", [1], [0]),
                    ("head.regression_head.conv.3.0.weight", [1], [0]), ("head.regression_head.bbox_reg.weight", [1], [0])]
        try Checkpoint.write(tensors, metadata: [:], to: path)
        let names = Set(try Checkpoint.read(path).blobs.keys)
        #expect(names == ["conv1_w", "res2_1_branch2a_w", "res3_1_branch2a_w", "res4_5_branch2a_w", "res5_1_branch2a_w",
                          "fpn_inner_res3_1_sum_lateral_w", "fpn_inner_res4_5_sum_lateral_w", "fpn_inner_res5_1_sum_w",
                          "fpn_res3_1_sum_b", "fpn_res4_5_sum_b", "fpn_res5_1_sum_b", "fpn_6_w", "fpn_7_b",
                          "retnet_cls_conv_n1_fpn3_w", "retnet_cls_pred_fpn3_b", "retnet_bbox_conv_n3_fpn3_w", "retnet_bbox_pred_fpn3_w"])
    }

    @Test("Mask R-CNN: mask_head.mask_fcnN (v1) and mask_head.i.0 (version 2), the predictor's conv5_mask and mask_fcn_logits map onto Detectron's mask blobs")
    func maskRCNNStateDict() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("tv-maskrcnn-\(UUID().uuidString).safetensors").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try Checkpoint.write([("backbone.body.conv1.weight", [1], [0]), ("roi_heads.mask_head.mask_fcn1.weight", [1], [0]),
                              ("roi_heads.mask_head.3.0.bias", [1], [0]), ("roi_heads.mask_predictor.conv5_mask.weight", [1], [0]),
                              ("roi_heads.mask_predictor.mask_fcn_logits.bias", [1], [0])], metadata: [:], to: path)
        #expect(Set(try Checkpoint.read(path).blobs.keys) == ["conv1_w", "_[mask]_fcn1_w", "_[mask]_fcn4_b", "conv5_mask_w", "mask_fcn_logits_b"])
        var cfg = Config()
        try cfg.merge(file: Self.configPath("maskrcnn_resnet50_fpn"))
        let model = try ModelComponents.standard.build(cfg, train: false)
        #expect(model.maskNet != nil && model.params.first { $0.name == "mask_fcn_logits_w" }?.shape == [91, 256, 1, 1])
    }

    @Test("the RetinaNet config builds torchvision's model: P6 from P5, a logit per label and anchor (91 · 9), inference only")
    func retinaNetConfig() throws {
        var cfg = Config()
        try cfg.merge(file: Self.configPath("retinanet_resnet50_fpn"))
        let model = try ModelComponents.standard.build(cfg, train: false)
        #expect(model.net.ops.contains { $0.type == "Conv" && $0.inputs.first == "fpn_res5_2_sum" && $0.outputs == ["fpn_6"] })
        let shapes = Dictionary(uniqueKeysWithValues: model.params.map { ($0.name, $0.shape) })
        #expect(shapes["fpn_6_w"] == [256, 256, 3, 3] && shapes["retnet_cls_pred_fpn3_w"] == [91 * 9, 256, 3, 3])
        #expect(model.cellAnchors[3]?.prefix(12) == [-23, -11, 23, 11, -28, -14, 28, 14, -35, -18, 35, 18])
        #expect(throws: ConfigError.self) { try ModelComponents.standard.build(cfg, train: true) }
        try cfg.merge(overrides: ["FPN.EXTRA_CONV_LEVELS", "False", "FPN.RPN_MAX_LEVEL", "6", "FPN.RPN_MIN_LEVEL", "2"])
        #expect(throws: ConfigError.self) { try ModelComponents.standard.build(cfg, train: false) }
    }

    @Test("BoxCoder.decode without +1, RPN and box-head weights (≤ 1e-4 relative)")
    func decode() throws {
        let f = try TorchvisionBoxesFixture.load()
        for (weights, expected) in [((Float(1), Float(1), Float(1), Float(1)), f.decoded_rpn), ((10, 10, 5, 5), f.decoded_box)] {
            let ours = Boxes.decode(f.reference, deltas: f.deltas, weights: weights, convention: .torchvision)
            let worst = zip(ours, expected).map { abs($0 - $1) / max(1, abs($1)) }.max() ?? 0
            #expect(worst <= 1e-4, "weights \(weights): worst relative difference \(worst)")
        }
    }

    @Test("batched_nms keeps what torchvision keeps, in its order (offset trick and per-group paths)")
    func batchedNMS() throws {
        let f = try TorchvisionBoxesFixture.load()
        #expect(Boxes.batchedNMS(f.nms_boxes, scores: f.nms_scores, groups: f.nms_groups, threshold: 0.5) == f.nms_small_keep)
        #expect(Boxes.batchedNMS(f.nms_big_boxes, scores: f.nms_big_scores, groups: f.nms_big_groups, threshold: 0.6) == f.nms_big_keep)
    }

    @Test("FPN levels follow LevelMapper")
    func levels() throws {
        let f = try TorchvisionBoxesFixture.load()
        #expect(Boxes.fpnLevels(f.level_boxes, convention: .torchvision) == f.levels)
    }

    @Test("a torchvision state_dict maps onto Detectron blob names, batch norms folded as FrozenBatchNorm2d computes them")
    func stateDictMapping() throws {
        let url = try #require(Bundle.module.url(forResource: "state_dict", withExtension: "pth", subdirectory: "Fixtures/torchvision"))
        let expectedURL = try #require(Bundle.module.url(forResource: "state_dict_expected", withExtension: "json", subdirectory: "Fixtures/torchvision"))
        struct Blob: Decodable { var shape: [Int]; var values: [Float] }
        let expected = try JSONDecoder().decode([String: Blob].self, from: Data(contentsOf: expectedURL))
        let contents = try Checkpoint.read(url.path)
        #expect(contents.metadata["format"] == "torchvision-state-dict")
        #expect(Set(contents.blobs.keys) == Set(expected.keys))
        for (name, e) in expected {
            let got = try #require(contents.blobs[name], "\(name) missing")
            #expect(got.shape == e.shape, "\(name)")
            let worst = zip(got.values, e.values).map { abs($0 - $1) / max(1, abs($1)) }.max() ?? 0
            #expect(worst <= 1e-6, "\(name): worst relative difference \(worst)")
        }
    }

    @Test("safetensors files with torchvision's names are mapped the same way")
    func safetensorsMapping() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("tv-\(UUID().uuidString).safetensors").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try Checkpoint.write([(name: "backbone.body.conv1.weight", shape: [1, 3, 1, 1], values: [1, 2, 3]),
                              (name: "backbone.body.bn1.weight", shape: [1], values: [2]), (name: "backbone.body.bn1.bias", shape: [1], values: [1]),
                              (name: "backbone.body.bn1.running_mean", shape: [1], values: [0.5]),
                              (name: "backbone.body.bn1.running_var", shape: [1], values: [4 - 1e-5]),
                              (name: "backbone.body.layer1.0.conv1.weight", shape: [1, 1, 1, 1], values: [7])],
                             metadata: [:], to: path)
        let contents = try Checkpoint.read(path)
        #expect(contents.metadata["format"] == "torchvision-safetensors")
        #expect(Set(contents.blobs.keys) == ["conv1_w", "res_conv1_bn_s", "res_conv1_bn_b", "res2_0_branch2a_w"])
        // scale = 2/√4 = 1, bias = 1 − 0.5·1.
        #expect(contents.blobs["res_conv1_bn_s"]?.values == [1])
        #expect(contents.blobs["res_conv1_bn_b"]?.values == [0.5])
    }

    @Test("a checkpoint whose categories metadata is not a list of {id, name} is an error naming the file")
    func malformedCategories() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("cats-\(UUID().uuidString).safetensors").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try Checkpoint.write([], metadata: ["categories": "[{\"id\": \"one\"}]"], to: path)
        do {
            _ = try Detector(config: try smallConfig(), weights: path)
            Issue.record("a malformed categories entry was accepted")
        } catch let error as WeightsError {
            #expect(error.description.hasPrefix("\(path): not a valid weights file: its metadata 'categories'"), "\(error)")
        }
    }

    @Test("a checkpoint whose header length starts with byte 0x80 (a pickle's first byte) still reads as safetensors")
    func headerLengthLike0x80() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("h80-\(UUID().uuidString).safetensors").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        var found = false
        for padding in 0..<512 {
            try Checkpoint.write([(name: "conv1_w", shape: [2], values: [1, 2])], metadata: ["note": String(repeating: "x", count: padding)], to: path)
            if FileManager.default.contents(atPath: path)?.first == 0x80 {
                found = true
                break
            }
        }
        try #require(found, "no metadata length gave a header length with low byte 0x80")
        #expect(try Checkpoint.read(path).blobs["conv1_w"]?.values == [1, 2])
    }

    @Test("the torchvision config builds its test net with torchvision's ops and refuses training")
    func config() throws {
        var cfg = Config()
        try cfg.merge(file: Self.configPath)
        let model = try ModelComponents.standard.build(cfg, train: false)
        let proposals = model.net.ops.filter { $0.type == "GenerateProposals" }
        #expect(proposals.count == 5)
        #expect(proposals.allSatisfy { $0.arguments["legacy_plus_one"] == .int(0) && $0.arguments["post_nms_topN"] == .int(0) })
        #expect(model.net.ops.first { $0.type == "CollectAndDistributeFpnRpnProposals" }?.arguments["rpn_post_nms_topN"] == .int(1000))
        #expect(model.cellAnchors[2] == [-23, -11, 23, 11, -16, -16, 16, 16, -11, -23, 11, 23])
        // The 3×3 conv carries the stride (v1.5).
        #expect(model.net.ops.first { $0.outputs == ["res3_0_branch2b"] }?.arguments["stride"] == .int(2))
        #expect(throws: ConfigError.self) { try ModelComponents.standard.build(cfg, train: true) }
        try cfg.merge(overrides: ["MODEL.SEMANTICS", "pytorch"])
        do {
            _ = try ModelComponents.standard.build(cfg, train: false)
            Issue.record("accepted MODEL.SEMANTICS pytorch")
        } catch {
            #expect(error.description.contains("MODEL.SEMANTICS") && error.description.contains("torchvision"))
        }
    }
}

import COCO
import DataLoading
@testable import Engine
import Foundation
import Imaging
import Operators
import Portability
import Storage
import Testing

@Suite("RetinaNet")
struct RetinaNetTests {
    func baseline() throws -> Config {
        var c = Config()
        try c.merge(file: repoRoot + "/configs/12_2017_baselines/retinanet_R-50-FPN_1x.yaml")
        return c
    }

    @Test("retinanet_R-50-FPN_1x builds Detectron's model: P3–P7 (P6 from C5, P7 from ReLU(P6)), towers shared from fpn3, the prior bias")
    func model() throws {
        let cfg = try baseline()
        let train = try ModelComponents.standard.build(cfg, train: true)
        let shapes = Dictionary(uniqueKeysWithValues: train.params.map { ($0.name, $0.shape) })
        #expect(shapes["fpn_6_w"] == [256, 2048, 3, 3] && shapes["fpn_7_w"] == [256, 256, 3, 3])
        #expect(shapes["fpn_res3_3_sum_w"] == [256, 256, 3, 3] && shapes["fpn_inner_res2_2_sum_lateral_w"] == nil)
        for i in 0..<4 {
            #expect(shapes["retnet_cls_conv_n\(i)_fpn3_w"] == [256, 256, 3, 3] && shapes["retnet_bbox_conv_n\(i)_fpn3_w"] == [256, 256, 3, 3])
            #expect(shapes["retnet_cls_conv_n\(i)_fpn4_w"] == nil)
        }
        #expect(shapes["retnet_cls_pred_fpn3_w"] == [80 * 9, 256, 3, 3] && shapes["retnet_bbox_pred_fpn3_w"] == [4 * 9, 256, 3, 3])
        let bias = try #require(train.params.first { $0.name == "retnet_cls_pred_fpn3_b" })
        #expect(bias.fill == "ConstantFill" && bias.fillArguments["value"] == .float(-log((1 - 0.01) / 0.01)))
        let relu7 = try #require(train.net.ops.first { $0.outputs == ["fpn_6_relu"] })
        #expect(relu7.type == "Relu" && train.net.ops.contains { $0.type == "Conv" && $0.inputs.first == "fpn_6_relu" && $0.outputs == ["fpn_7"] })
        // The heads read the pre-ReLU P6; every level's losses are normalised by retnet_fg_num.
        #expect(train.net.ops.contains { $0.inputs.first == "fpn_6" && $0.outputs == ["retnet_cls_conv_n0_fpn6"] })
        #expect(train.losses == (3...7).map { "retnet_loss_bbox_fpn\($0)" } + (3...7).map { "fl_fpn\($0)" })
        let focal = try #require(train.net.ops.first { $0.type == "SigmoidFocalLoss" })
        #expect(focal.inputs == ["retnet_cls_pred_fpn3", "retnet_cls_labels_fpn3", "retnet_fg_num"] && focal.arguments["num_classes"] == .int(80))
        #expect(focal.arguments["scale"] == .float(1.0 / 8) && focal.arguments["gamma"] == .float(2) && focal.arguments["alpha"] == .float(0.25))
        let test = try ModelComponents.standard.build(cfg, train: false)
        #expect(test.net.ops.contains { $0.type == "Sigmoid" && $0.outputs == ["retnet_cls_prob_fpn7"] })
        #expect(!test.net.ops.contains { $0.type.hasSuffix("Loss") })
    }

    @Test("RETINANET.SOFTMAX: a logit per class and the background (81 · 9), the background's prior bias, SoftmaxFocalLoss, GroupSpatialSoftmax at test")
    func softmax() throws {
        var cfg = try baseline()
        try cfg.merge(overrides: ["RETINANET.SOFTMAX", "True"])
        let train = try ModelComponents.standard.build(cfg, train: true)
        let pred = try #require(train.params.first { $0.name == "retnet_cls_pred_fpn3_b" })
        #expect(train.params.first { $0.name == "retnet_cls_pred_fpn3_w" }?.shape == [81 * 9, 256, 3, 3] && pred.fill == "GivenTensorFill")
        if case let .floats(v)? = pred.fillArguments["values"] {
            #expect(v.count == 81 * 9 && abs(v[0] - log(80 * 0.99 / 0.01)) < 1e-9 && v[1] == 0 && abs(v[81] - v[0]) < 1e-12)
        }
        let loss = try #require(train.net.ops.first { $0.type == "SoftmaxFocalLoss" })
        #expect(loss.outputs == ["fl_fpn3", "retnet_prob_fpn3"] && loss.arguments["num_classes"] == .int(81))
        let test = try ModelComponents.standard.build(cfg, train: false)
        #expect(test.net.ops.contains { $0.type == "GroupSpatialSoftmax" && $0.outputs == ["retnet_cls_prob_fpn7"] })
        // Inference drops each anchor's background: level 3 with 1 anchor, 2 classes + background on a 1 × 2 map.
        try cfg.merge(overrides: ["MODEL.NUM_CLASSES", "3", "TEST.DETECTIONS_PER_IM", "10"])
        let ctx = CPUContext(), ws = Workspace(context: ctx)
        ws.feedBlob("retnet_cls_prob_fpn3", try Tensor([0.9, 0.2, 0.05, 0.6, 0.05, 0.2] as [Float], shape: [1, 3, 1, 2], context: ctx))
        ws.feedBlob("retnet_bbox_pred_fpn3", try Tensor([Float](repeating: 0, count: 8), shape: [1, 4, 1, 2], context: ctx))
        let inference = RetinaNet.Inference(levels: 3...3, cellAnchors: [3: [0, 0, 7, 7]], semantics: DetectronSemantics(), softmax: true)
        let input = PreparedInput(data: try Tensor(.float32, shape: [1, 3, 8, 16], context: ctx), imInfo: [8, 16, 1], clipHeight: 8, clipWidth: 16)
        let found = try inference.detections(ws, input, TestSettings(cfg))
        #expect(found.map(\.classIndex) == [1, 2, 1, 2] && found.map(\.score) == [0.6, 0.2, 0.05, 0.05])
    }

    @Test("cell anchors: octave-major, the config's aspect order, Detectron's sizes (P3: 32², 24×48, 44×24, …; P7: 512², 364×728, 724×360)")
    func anchors() throws {
        let cells = RetinaNet.cellAnchors(try baseline(), levels: 3...7, semantics: DetectronSemantics())
        func sizes(_ level: Int) -> [(Float, Float)] {
            let c = cells[level]!
            var out: [(Float, Float)] = []
            for i in stride(from: 0, to: c.count, by: 4) {
                let w: Float = c[i + 2] - c[i] + 1, h: Float = c[i + 3] - c[i + 1] + 1
                out.append((w, h))
            }
            return out
        }
        let p3 = sizes(3)
        #expect(p3.count == 9)
        let expected: [(Float, Float)] = [(32, 32), (24, 48), (44, 24), (40.32, 40.32), (30.24, 60.48), (55.44, 30.24), (50.80, 50.80), (38.10, 76.20), (69.85, 38.10)]
        for (got, want) in zip(p3, expected) { #expect(abs(got.0 - want.0) < 0.01 && abs(got.1 - want.1) < 0.01, "\(got) vs \(want)") }
        let p7 = sizes(7)
        #expect(p7[0] == (512, 512) && p7[1] == (364, 728) && p7[2] == (724, 360))
    }

    /// Level 3 only, two cell anchors (8² and 12² at each cell's origin), a 4 × 4 field.
    let maker = RetinaNetTargetMaker(cellAnchors: [3: [0, 0, 7, 7, 0, 0, 11, 11]], levels: 3...3, maxSize: 32, coarsestStride: 32,
                                     positiveOverlap: 0.5, negativeOverlap: 0.4)

    @Test("targets: ≥ 0.5 positive, best matches positive, [0.4, 0.5) ignored, < 0.4 background; num_fg; an image without boxes")
    func targets() throws {
        #expect(maker.field[3] == 4 && maker.anchors.count == 2 * 16 * 4)
        let gtA: [Float] = [8, 8, 19, 19], gtB: [Float] = [0, 0, 8, 8]
        let out = maker.compute(gt: gtA + gtB, classes: [1, 3])
        let labels = out.labels[3]!
        func label(_ a: Int, _ y: Int, _ x: Int) -> Int32 { labels[a * 16 + y * 4 + x] }
        #expect(label(1, 1, 1) == 1)                 // IoU 1 with gtA
        #expect(label(0, 1, 1) == -1)                // IoU 64/144 ≈ 0.44 with gtA, not a best match: ignored
        #expect(label(0, 0, 0) == 3 && label(1, 0, 0) == 3)   // 0.79 and 0.56 with gtB
        #expect(labels.filter { $0 == 0 }.count == 32 - 4)
        #expect(out.foregroundCount == 3)
        let rows = out.foreground[3]!
        #expect(rows.count == 3 * 7)
        #expect(Array(rows[0..<3]) == [0, 0, 0] && Array(rows[7..<10]) == [1, 0, 0] && Array(rows[14..<21]) == [1, 1, 1, 0, 0, 0, 0])
        // A ground-truth box no anchor touches makes every anchor "best" for it (Detectron's quirk):
        // all count in num_fg, the ignored one becomes positive, the rest background.
        let quirk = maker.compute(gt: gtA + gtB + [100, 100, 110, 110], classes: [1, 3, 2])
        #expect(quirk.foregroundCount == 32 && quirk.labels[3]![0 * 16 + 5] == 1)
        let empty = maker.compute(gt: [], classes: [])
        #expect(empty.labels[3]!.allSatisfy { $0 == 0 } && empty.foregroundCount == 0 && empty.foreground[3]!.isEmpty)
    }

    @Test("the batch: labels cropped to the padded input's map, foreground rows inside it located [image, 4a, y, x], fg_num Σ(num_fg + 1)")
    func collate() throws {
        let a = maker.compute(gt: [8, 8, 19, 19, 0, 0, 8, 8], classes: [1, 3]), b = maker.compute(gt: [], classes: [])
        let blobs = Dictionary(uniqueKeysWithValues: try maker.collate([a, b], height: 32, width: 8, context: CPUContext()).map { ($0.0, $0.1) })
        let labels = try #require(blobs["retnet_cls_labels_fpn3"])
        #expect(labels.shape == [2, 2, 4, 1])
        // Width 8 keeps column 0 only: the rows at x = 1 drop out.
        #expect(try blobs["retnet_roi_fg_bbox_locs_fpn3"]!.toArray(as: Float.self) == [0, 0, 0, 0, 0, 4, 0, 0])
        #expect(blobs["retnet_roi_bbox_targets_fpn3"]!.shape == [2, 4])
        #expect(try blobs["retnet_fg_num"]!.toArray(as: Float.self) == [5])
    }

    @Test("inference: per-level threshold (none at the top level), top-N, decoding, scale and clip, class-wise NMS, the limit")
    func inference() throws {
        var cfg = try baseline()
        try cfg.merge(overrides: ["RETINANET.PRE_NMS_TOP_N", "2", "MODEL.NUM_CLASSES", "3", "TEST.NMS", "0.5", "TEST.DETECTIONS_PER_IM", "3"])
        let ctx = CPUContext(), ws = Workspace(context: ctx)
        // Level 3: 1 anchor, 2 classes on a 2 × 2 map; level 4: 1 × 1. Zero deltas.
        ws.feedBlob("retnet_cls_prob_fpn3", try Tensor([0.9, 0.04, 0.3, 0.3, 0.01, 0.02, 0.03, 0.6] as [Float], shape: [1, 2, 2, 2], context: ctx))
        ws.feedBlob("retnet_bbox_pred_fpn3", try Tensor([Float](repeating: 0, count: 16), shape: [1, 4, 2, 2], context: ctx))
        ws.feedBlob("retnet_cls_prob_fpn4", try Tensor([0.01, 0.02] as [Float], shape: [1, 2, 1, 1], context: ctx))
        ws.feedBlob("retnet_bbox_pred_fpn4", try Tensor([Float](repeating: 0, count: 4), shape: [1, 4, 1, 1], context: ctx))
        let inference = RetinaNet.Inference(levels: 3...4, cellAnchors: [3: [0, 0, 7, 7], 4: [0, 0, 15, 15]], semantics: DetectronSemantics())
        let input = PreparedInput(data: try Tensor(.float32, shape: [1, 3, 32, 32], context: ctx), imInfo: [32, 32, 2], clipHeight: 8, clipWidth: 8, roiScale: 2)
        let found = try inference.detections(ws, input, TestSettings(cfg))
        #expect(found.map(\.classIndex) == [1, 2, 2])
        #expect(found.map(\.score) == [0.9, 0.6, 0.02])
        #expect(found.map(\.box) == [[0, 0, 3.5, 3.5], [4, 4, 7, 7], [0, 0, 7, 7]])
    }

    /// The RetinaNet tutorial at the tiny scale of the training tests.
    func tinyRetinaNet(_ spec: String, _ out: String, maxIter: Int) throws -> Config {
        var c = Config()
        try c.merge(file: repoRoot + "/configs/getting_started/tutorial_shapes_retinanet_gn_R-18-FPN.yaml")
        try c.merge(overrides: tinyConfig(dataset: spec, output: out, maxIter: maxIter)
                    + ["TRAIN.AUTO_RESUME", "False", "SOLVER.BASE_LR", "0.005", "RETINANET.NUM_CONVS", "1", "RETINANET.SCALES_PER_OCTAVE", "2"])
        return c
    }

    @Test("overfitting one image: the loss falls below 25 % of its start and the detections recover both boxes (IoU ≥ 0.7)")
    func overfit() throws {
        let (spec, boxes, dir) = try tinyDataset()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let c = try tinyRetinaNet(spec, dir + "/out", maxIter: 150)
        let first = Locked<Float?>(nil), last = Locked<Float?>(nil)
        let final = try Trainer(config: c, logger: .silent).run { e in
            first.withLock { if $0 == nil { $0 = e.total } }
            last.withLock { $0 = e.total }
        }
        let start = try #require(first.current), end = try #require(last.current)
        #expect(end < 0.25 * start, "total loss \(start) → \(end)")
        let dets = try Detector(config: c, weights: final).detect(try JPEG.decode(contentsOf: dir + "/a.jpg"))
        for (k, gt) in boxes.enumerated() {
            let b = try #require(dets.filter { $0.classIndex == k + 1 }.max { $0.score < $1.score }, "no detection of class \(k + 1): \(dets)")
            let iou = Boxes.iou((Float(b.bbox[0]), Float(b.bbox[1]), Float(b.bbox[2]), Float(b.bbox[3])),
                                (Float(gt[0]), Float(gt[1]), Float(gt[2]), Float(gt[3])))
            #expect(iou >= 0.7, "class \(k + 1): IoU \(iou) for \(b.bbox) vs \(gt)")
        }
    }

    @Test("the RetinaNet training dataset survives its description (process workers): same samples, bytes round-trip")
    func transport() throws {
        let (spec, _, dir) = try tinyDataset()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let c = try tinyRetinaNet(spec, dir + "/out", maxIter: 1)
        let model = try ModelComponents.standard.build(c, train: true)
        var roidb: [RoidbEntry] = []
        for d in try loadDatasets(c, key: "TRAIN.DATASETS") { roidb += try d.trainingRoidb(flipped: false).entries }
        let dataset = TrainingDataset(roidb: roidb, scales: c.ints("TRAIN.SCALES"), maxSize: c.int("TRAIN.MAX_SIZE"),
                                      pixelMeans: pixelMeans(c), targets: model.trainingTargets!)
        let rebuilt = try TrainingDataset(description: dataset.describe())
        guard case let .retinaNet(original) = dataset.targets, case let .retinaNet(copy) = rebuilt.targets else {
            Issue.record("the rebuilt dataset has other targets")
            return
        }
        #expect(copy.anchors == original.anchors && copy.field == original.field)
        var a = SampleRNG(seed: 7, epoch: 0, index: 0), b = a
        let sample = try dataset.element(at: 0, rng: &a)
        var w = ByteWriter()
        try rebuilt.element(at: 0, rng: &b).encode(to: &w)
        let decoded = try w.bytes.withUnsafeBytes { raw in var r = ByteReader(raw); return try TrainSample(from: &r) }
        #expect(decoded.targets == sample.targets)
        guard case let .retinaNet(t) = sample.targets else { Issue.record("not RetinaNet targets"); return }
        #expect(t.foregroundCount > 0)
    }
}

@Suite("RetinaNet's training net")
struct RetinaNetGradientTests {
    /// Central differences of the summed losses, in doubles over the float net, against the
    /// gradients the net computes: for the largest-gradient elements of parameters from the body
    /// to the shared towers and predictors, on a two-image batch (an image and its flip).
    @Test("the whole net's gradients agree with central differences of its summed losses (body, FPN, shared towers with GroupNorm, predictors)")
    func wholeNet() throws {
        let (spec, _, dir) = try tinyDataset()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var c = Config()
        try c.merge(file: repoRoot + "/configs/getting_started/tutorial_shapes_retinanet_gn_R-18-FPN.yaml")
        try c.merge(overrides: tinyConfig(dataset: spec, output: dir + "/out", maxIter: 1) + ["RETINANET.NUM_CONVS", "2", "RETINANET.SCALES_PER_OCTAVE", "2"])
        let session = try ModelSession(c, train: true, components: .standard, threads: 1)
        let model = session.model, ws = try session.makeWorkspace()
        let nets = try makeTrainingNet(c, model: model, ws: ws, registry: session.registry)
        let net = try Net(nets.forwardBackward, workspace: ws, registry: session.registry, seed: 1)
        var roidb: [RoidbEntry] = []
        for d in try loadDatasets(c, key: "TRAIN.DATASETS") { roidb += try d.trainingRoidb(flipped: true).entries }
        let dataset = TrainingDataset(roidb: roidb, scales: c.ints("TRAIN.SCALES"), maxSize: c.int("TRAIN.MAX_SIZE"),
                                      pixelMeans: pixelMeans(c), targets: model.trainingTargets!)
        var rng = SampleRNG(seed: 7, epoch: 0, index: 0)
        let samples = try [0, 1].map { try dataset.element(at: $0, rng: &rng) }
        let batch = try MinibatchCollate.collate(samples, targets: model.trainingTargets!, stride: c.int("FPN.COARSEST_STRIDE"), context: session.context)
        for (name, tensor) in batch.blobs { ws.feedBlob(name, tensor) }
        ws.feed("roidb", value: batch.roidb)
        func loss() throws -> Double {
            try net.run()
            return try model.losses.reduce(0) { $0 + Double(try ws.fetchBlob($1).toArray(as: Float.self)[0]) }
        }
        let first = try loss(), again = try loss()
        #expect(first == again, "the forward is not a function of the parameters: \(first), then \(again)")
        // Every gradient at the unperturbed parameters, before any central difference reruns the net.
        let gradient = Dictionary(uniqueKeysWithValues: try zip(nets.trainable, nets.gradients).map { p, g in
            (p.name, try ws.fetchBlob(g).toArray(as: Float.self))
        })
        let checked = ["conv1_w", "conv1_gn_s", "conv1_gn_b", "res2_0_branch2a_gn_s", "res2_0_branch2a_w", "res3_1_branch2b_gn_s",
                       "res4_0_branch1_w", "res5_1_branch2b_w", "fpn_inner_res5_1_sum_w", "fpn_res3_1_sum_gn_s",
                       "retnet_cls_conv_n0_fpn3_w", "retnet_cls_conv_n1_fpn3_w", "retnet_cls_conv_n1_fpn3_gn_s", "retnet_cls_conv_n0_fpn3_gn_b",
                       "retnet_bbox_conv_n1_fpn3_w", "retnet_cls_pred_fpn3_w", "retnet_cls_pred_fpn3_b", "retnet_bbox_pred_fpn3_w",
                       "retnet_bbox_pred_fpn3_b"]
        for name in checked {
            guard let analytic = gradient[name] else {
                Issue.record("no gradient for \(name) among \(gradient.keys.sorted())")
                continue
            }
            let param = try ws.fetchBlob(name).mutableData(as: Float.self)
            // The three largest gradients of this parameter.
            for i in analytic.indices.sorted(by: { abs(analytic[$0]) > abs(analytic[$1]) }).prefix(3) {
                let original = param[i], eps: Float = 5e-4
                param[i] = original + eps
                let up = try loss()
                param[i] = original - eps
                let down = try loss()
                param[i] = original
                let numeric = (up - down) / Double(2 * eps)
                let a = Double(analytic[i])
                #expect(abs(numeric - a) <= 0.05 * max(abs(a), abs(numeric)) + 5e-4, "\(name)[\(i)]: analytic \(a), central difference \(numeric)")
            }
        }
    }
}

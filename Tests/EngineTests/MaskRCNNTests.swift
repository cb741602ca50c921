import COCO
@testable import Engine
import Foundation
import Imaging
import Operators
import Testing

/// Detectron's mask arithmetic on constructed cases (tools/make_mask_rcnn_fixtures.py).
private func fixture<T: Decodable>(_ name: String, as type: T.Type) throws -> T {
    let url = try #require(Bundle.module.url(forResource: name, withExtension: "json", subdirectory: "Fixtures/mask_rcnn"))
    return try JSONDecoder().decode(T.self, from: Data(contentsOf: url))
}

private func bits(_ s: String) -> [UInt8] { s.utf8.map { $0 == UInt8(ascii: "1") ? 1 : 0 } }

@Suite("Mask R-CNN")
struct MaskRCNNTests {
    func baseline(_ overrides: [String] = []) throws -> Config {
        var c = Config()
        try c.merge(file: repoRoot + "/configs/12_2017_baselines/e2e_mask_rcnn_R-50-FPN_1x.yaml")
        try c.merge(overrides: overrides)
        return c
    }

    @Test("e2e_mask_rcnn_R-50-FPN_1x builds Detectron's mask branch: v1up4convs on 14×14 RoIAlign of mask_rois, conv5_mask (256, 256, 2, 2), 81 logits; a mask net at test")
    func model() throws {
        let cfg = try baseline()
        let train = try ModelComponents.standard.build(cfg, train: true)
        let shapes = Dictionary(uniqueKeysWithValues: train.params.map { ($0.name, $0.shape) })
        for i in 1...4 { #expect(shapes["_[mask]_fcn\(i)_w"] == [256, 256, 3, 3] && shapes["_[mask]_fcn\(i)_b"] == [256]) }
        #expect(shapes["conv5_mask_w"] == [256, 256, 2, 2] && shapes["mask_fcn_logits_w"] == [81, 256, 1, 1])
        let fcn1 = try #require(train.params.first { $0.name == "_[mask]_fcn1_w" })
        #expect(fcn1.fill == "MSRAFill")
        let align = train.net.ops.filter { $0.type == "RoIAlign" && $0.outputs[0].hasPrefix("_[mask]_roi_feat_fpn") }
        #expect(align.count == 4 && align.allSatisfy { $0.arguments["pooled_h"] == .int(14) && $0.arguments["sampling_ratio"] == .int(2) })
        #expect(align.map { $0.inputs[1] } == (2...5).map { "mask_rois_fpn\($0)" })
        let loss = try #require(train.net.ops.first { $0.outputs == ["loss_mask"] })
        #expect(loss.inputs == ["mask_fcn_logits", "masks_int32"] && loss.arguments["scale"] == .float(1.0 / 8))
        #expect(train.losses.contains("loss_mask"))
        let sample = try #require(train.net.ops.first { $0.type == "CollectAndSampleFastRcnnRois" })
        #expect(sample.outputs.suffix(8) == ["mask_rois", "roi_has_mask_int32", "masks_int32"] + (2...5).map { "mask_rois_fpn\($0)" } + ["mask_rois_idx_restore_int32"])
        #expect(sample.arguments["mask_resolution"] == .int(28))

        let test = try ModelComponents.standard.build(cfg, train: false)
        let maskNet = try #require(test.maskNet)
        #expect(!test.net.ops.contains { $0.outputs.contains("mask_fcn_probs") || $0.type == "ConvTranspose" })
        #expect(maskNet.ops.last?.type == "Sigmoid" && maskNet.ops.last?.outputs == ["mask_fcn_probs"])
        #expect(maskNet.ops.contains { $0.type == "ConvTranspose" && $0.outputs == ["conv5_mask"] })
        #expect(Set(maskNet.externalInputs).isSuperset(of: (2...5).map { "mask_rois_fpn\($0)" } + ["mask_rois_idx_restore_int32", "fpn_res2_2_sum"]))
    }

    @Test("the GN head (_mask_fcnN with GroupNorm, no bias), class-agnostic masks (Gaussian logits), the FC output, bilinear upsampling (frozen)")
    func variants() throws {
        let gn = try ModelComponents.standard.build(try baseline(["MRCNN.ROI_MASK_HEAD", "mask_rcnn_heads.mask_rcnn_fcn_head_v1up4convs_gn"]), train: true)
        let names = Set(gn.params.map(\.name))
        #expect(names.contains("_mask_fcn1_w") && names.contains("_mask_fcn1_gn_s") && !names.contains("_mask_fcn1_b"))
        #expect(gn.net.ops.contains { $0.type == "RoIAlign" && $0.outputs == ["_mask_roi_feat_fpn2"] })

        let agnostic = try ModelComponents.standard.build(try baseline(["MRCNN.CLS_SPECIFIC_MASK", "False"]), train: true)
        let logits = try #require(agnostic.params.first { $0.name == "mask_fcn_logits_w" })
        #expect(logits.shape == [1, 256, 1, 1] && logits.fill == "GaussianFill")

        let fc = try ModelComponents.standard.build(try baseline(["MRCNN.USE_FC_OUTPUT", "True"]), train: false)
        #expect(fc.params.first { $0.name == "mask_fcn_logits_w" }?.shape == [81 * 28 * 28, 256 * 28 * 28])

        let up = try ModelComponents.standard.build(try baseline(["MRCNN.RESOLUTION", "56", "MRCNN.UPSAMPLE_RATIO", "2"]), train: true)
        let bilinear = try #require(up.params.first { $0.name == "mask_fcn_logits_up_w" })
        #expect(bilinear.shape == [81, 81, 4, 4] && !bilinear.trainable && bilinear.fill == "GivenTensorFill")
        // The FCN filter for scale 2 (kernel 4): (1 − |i − 1.5|/2)(1 − |j − 1.5|/2) on the diagonal, 0 elsewhere.
        if case let .floats(v)? = bilinear.fillArguments["values"] {
            #expect(Array(v[0..<4]) == [0.0625, 0.1875, 0.1875, 0.0625] && v[16] == 0 && Array(v[(82 * 16)..<(82 * 16 + 4)]) == [0.0625, 0.1875, 0.1875, 0.0625])
        } else {
            Issue.record("no values")
        }
        #expect(up.net.ops.contains { $0.type == "SigmoidCrossEntropyLoss" && $0.inputs[0] == "mask_fcn_logits_up" })
    }

    @Test("refusals name the key: a head without a body here (v0upshare), a resolution the head does not predict, an odd upsampling, RetinaNet with masks")
    func refusals() throws {
        for (overrides, key) in [(["MRCNN.ROI_MASK_HEAD", "mask_rcnn_heads.mask_rcnn_fcn_head_v0upshare"], "MRCNN.ROI_MASK_HEAD"),
                                 (["MRCNN.RESOLUTION", "14"], "MRCNN.RESOLUTION"), (["MRCNN.UPSAMPLE_RATIO", "3"], "MRCNN.UPSAMPLE_RATIO")] {
            do {
                _ = try ModelComponents.standard.build(try baseline(overrides), train: false)
                Issue.record("\(overrides) accepted")
            } catch {
                #expect("\(error)".hasPrefix("config key \(key)"), "\(error)")
            }
        }
        var retina = Config()
        try retina.merge(file: repoRoot + "/configs/12_2017_baselines/retinanet_R-50-FPN_1x.yaml")
        try retina.merge(overrides: ["MODEL.MASK_ON", "True"])
        #expect(throws: ConfigError.self) { try ModelComponents.standard.build(retina, train: false) }
    }

    @Test("targets: polygons rasterised in the RoI's frame as polys_to_mask_wrt_box (square, concave, two parts, box larger than the polygon, box cutting it, box under a pixel) and each RoI's ground truth by +1 IoU with the polygon boxes")
    func targets() throws {
        struct Case: Decodable { var name: String; var polygons: [[Double]]; var box: [Float]; var resolution: Int; var mask: String }
        struct File: Decodable {
            var polygons: [[[Double]]]; var boxes: [[Float]]; var cases: [Case]
            var match_rois: [[Float]]; var match_overlaps: [[Float]]; var match: [Int]
        }
        let f = try fixture("targets", as: File.self)
        for c in f.cases {
            let got = try MaskTargets.rasterise(c.polygons, box: c.box, resolution: c.resolution)
            #expect(got == bits(c.mask).map(Int32.init), "\(c.name): \(zip(got, bits(c.mask)).filter { $0 != Int32($1) }.count) pixels differ")
        }
        // The same matching the op does, on the fixture's RoIs and polygon boxes.
        let entry = MinibatchRoidb.Entry(boxes: f.boxes.flatMap { $0 }, classes: f.polygons.map { _ in 1 }, crowd: f.polygons.map { _ in false },
                                         scale: 2, polygons: f.polygons)
        var masks = MaskTargets()
        try masks.add(image: 0, entry: entry, candidates: f.match_rois.flatMap { $0 }, fg: Array(f.match_rois.indices),
                      fgLabels: f.match_rois.map { _ in 1 }, bg: [], resolution: 8, classes: nil)
        for (i, roi) in f.match_rois.enumerated() {
            let overlaps = f.boxes.map { Boxes.iou((roi[0], roi[1], roi[2], roi[3]), ($0[0], $0[1], $0[2], $0[3])) }
            #expect(overlaps == f.match_overlaps[i], "roi \(i)")
            let expected = try MaskTargets.rasterise(f.polygons[f.match[i]], box: roi, resolution: 8)
            #expect(Array(masks.targets[(64 * i)..<(64 * i + 64)]) == expected, "roi \(i) matched another ground truth")
        }
        #expect(masks.rois.count == 5 * f.match_rois.count && masks.rois[1] == 2 * f.match_rois[0][0] && masks.hasMask.allSatisfy { $0 == 1 })
    }

    @Test("targets: class-specific expansion (−1 outside the RoI's class block) and the no-foreground case (the first background RoI, all −1)")
    func targetLayout() throws {
        let square: [[Double]] = [[0, 0, 10, 0, 10, 10, 0, 10]]
        let entry = MinibatchRoidb.Entry(boxes: [0, 0, 10, 10], classes: [2], crowd: [false], scale: 1, polygons: [square])
        var masks = MaskTargets()
        try masks.add(image: 0, entry: entry, candidates: [0, 0, 10, 10, 20, 20, 30, 30], fg: [0], fgLabels: [2], bg: [1], resolution: 2, classes: 3)
        #expect(masks.targets == [-1, -1, -1, -1, -1, -1, -1, -1, 1, 1, 1, 1] && masks.hasMask == [1, 0])
        var none = MaskTargets()
        try none.add(image: 1, entry: entry, candidates: [20, 20, 30, 30, 40, 40, 50, 50], fg: [], fgLabels: [], bg: [1, 0], resolution: 2, classes: 3)
        #expect(none.rois == [1, 40, 40, 50, 50] && none.targets == [Int32](repeating: -1, count: 12) && none.hasMask == [1, 0])
    }

    @Test("overfitting one image with polygon masks: each class's best detection has a mask of IoU ≥ 0.8 with its ground truth", .timeLimit(.minutes(5)))
    func overfit() throws {
        let dir = NSTemporaryDirectory() + "sd-mask-overfit-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // A triangle and an L on a grey 64 × 64 image, painted where pycocotools rasterises their polygons.
        let polygons: [[Double]] = [[6, 40, 30, 40, 18, 8], [36, 30, 58, 30, 58, 38, 44, 38, 44, 58, 36, 58]]
        let masks = try polygons.map { try RLE.frPoly($0, height: 64, width: 64).decode(order: .rowMajor) }
        var img = Image(width: 64, height: 64, channels: 3, order: .rgb, fill: 40)
        for (k, m) in masks.enumerated() {
            for i in m.indices where m[i] != 0 { img.set(x: i % 64, y: i / 64, k == 0 ? Color(230, 40, 40) : Color(40, 60, 230)) }
        }
        try JPEG.write(img, to: dir + "/a.jpg", quality: 95)
        let boxes = try polygons.map { try RLE.frPoly($0, height: 64, width: 64).toBbox() }
        let file = COCOFile(images: [.init(id: 1, fileName: "a.jpg", width: 64, height: 64)],
                            annotations: polygons.indices.map { k in
                                .init(id: k + 1, imageID: 1, categoryID: k + 1, bbox: boxes[k], area: Double(masks[k].filter { $0 != 0 }.count),
                                      segmentation: .polygons([polygons[k]]))
                            },
                            categories: [.init(id: 1, name: "triangle"), .init(id: 2, name: "ell")])
        try file.encoded().write(to: URL(fileURLWithPath: dir + "/ann.json"))
        var c = try smallConfig(tinyConfig(dataset: "\(dir)/ann.json::\(dir)", output: dir + "/out", maxIter: 250))
        try c.merge(overrides: ["TRAIN.AUTO_RESUME", "False", "MODEL.MASK_ON", "True",
                                "MRCNN.ROI_MASK_HEAD", "mask_rcnn_heads.mask_rcnn_fcn_head_v1up4convs_gn", "MRCNN.RESOLUTION", "14",
                                "MRCNN.ROI_XFORM_RESOLUTION", "7", "MRCNN.DIM_REDUCED", "16", "MRCNN.DILATION", "1", "MRCNN.CONV_INIT", "MSRAFill"])
        let final = try Trainer(config: c, logger: .silent).run()
        let dets = try Detector(config: c, weights: final).detect(try JPEG.decode(contentsOf: dir + "/a.jpg"))
        for k in polygons.indices {
            let best = try #require(dets.filter { $0.classIndex == k + 1 }.max { $0.score < $1.score }, "no detection of class \(k + 1)")
            let mine = try #require(best.mask).decode(order: .rowMajor)
            let inter = zip(mine, masks[k]).filter { $0 != 0 && $1 != 0 }.count, union = zip(mine, masks[k]).filter { $0 != 0 || $1 != 0 }.count
            #expect(Double(inter) / Double(max(union, 1)) >= 0.8, "class \(k + 1): mask IoU \(Double(inter) / Double(max(union, 1)))")
        }
    }

    @Test("segm_results: pad, expand by (M + 2)/M, truncate, INTER_LINEAR to the box, > 0.5, paste clipped — equal to Detectron's on constructed masks")
    func segmResults() throws {
        struct Case: Decodable { var resolution: Int; var box: [Float]; var probs: [Double]; var mask: String }
        struct File: Decodable { var height: Int; var width: Int; var threshold: Float; var cases: [Case] }
        let f = try fixture("segm_results", as: File.self)
        for (i, c) in f.cases.enumerated() {
            let rle = try MaskPaste.paste(ArraySlice(c.probs.map { Float($0) }), side: c.resolution, box: c.box, height: f.height, width: f.width,
                                          threshold: f.threshold)
            let got = rle.decode(order: .rowMajor), expected = bits(c.mask)
            let differ = zip(got, expected).filter { $0 != $1 }.count
            #expect(differ == 0 && got.count == expected.count, "case \(i) (box \(c.box)): \(differ) pixels differ")
            // Runs as pycocotools encodes them (no empty run after the first).
            #expect(rle == (try RLE.encode(expected, height: f.height, width: f.width, order: .rowMajor)))
        }
    }
}

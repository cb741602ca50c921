import COCO
import Foundation
import Testing

@Suite("Segmentations in COCO files and results")
struct SegmentationFileTests {
    static let images = #"[{"id": 1, "file_name": "a.jpg", "width": 44, "height": 1}, {"id": 2, "file_name": "b.jpg", "width": 3, "height": 2}]"#
    static let categories = #"[{"id": 1, "name": "x"}]"#

    static func groundTruth(_ annotations: String) -> String {
        #"{"images": \#(images), "categories": \#(categories), "annotations": \#(annotations)}"#
    }

    @Test("polygons, uncompressed and compressed RLE (a backslash escaped in its counts), null: the scanner, JSONDecoder and the writer agree")
    func loadAndRoundTrip() throws {
        // 44 is written "\1": its first 5-bit group, 12 with the continuation bit, is character 92.
        #expect(try RLE(height: 1, width: 44, counts: [44]).compressedCounts == "\\1")
        let segmentations = #"[[[10.5, 2, 20, 2.25, 15, 30]], {"size": [2, 3], "counts": [1, 2, 3]}, {"counts": "\\1", "size": [1, 44]}, null]"#
        let annotations = #"""
        [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "segmentation": [[10.5, 2, 20, 2.25, 15, 30]]},
         {"id": 2, "image_id": 2, "category_id": 1, "bbox": [0, 0, 1, 1], "iscrowd": 1, "segmentation": {"size": [2, 3], "counts": [1, 2, 3]}},
         {"id": 3, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "segmentation": {"counts": "\\1", "size": [1, 44], "extra": [1]}},
         {"id": 4, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "segmentation": null},
         {"id": 5, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}]
        """#
        let file = try COCOFile.parse(Data(Self.groundTruth(annotations).utf8), source: "gt.json")
        let expected: [COCOFile.Segmentation?] = [
            .polygons([[10.5, 2, 20, 2.25, 15, 30]]),
            .uncompressedRLE(try RLE(height: 2, width: 3, counts: [1, 2, 3])),
            .compressedRLE(try RLE(height: 1, width: 44, counts: [44])),
            nil, nil,
        ]
        #expect(file.annotations.map(\.segmentation) == expected)
        #expect(try JSONDecoder().decode([COCOFile.Segmentation?].self, from: Data(segmentations.utf8)) == Array(expected.prefix(4)))
        // (The writer fills in absent areas, as before.)
        #expect(try COCOFile.parse(file.encoded(), source: "again.json").annotations.map(\.segmentation) == expected)
        #expect(String(decoding: file.encoded(), as: UTF8.self).contains(#""segmentation":{"counts":"\\1","size":[1,44]}"#))
    }

    @Test("an RLE that is not a mask, or a segmentation of another shape, names the file and the annotation")
    func badSegmentations() throws {
        func message(_ segmentation: String) -> String {
            let text = Self.groundTruth(#"[{"id": 9, "image_id": 2, "category_id": 1, "bbox": [0, 0, 1, 1], "segmentation": \#(segmentation)}]"#)
            do {
                _ = try COCOFile.parse(Data(text.utf8), source: "gt.json")
                return "no error"
            } catch {
                return error.description
            }
        }
        #expect(message(#"{"size": [2, 3], "counts": [1, 2]}"#) == "gt.json: annotation 9: RLE counts of a 2×3 mask sum to 3, not h·w = 6")
        #expect(message(#"{"size": [2, 3], "counts": "1 2"}"#) == "gt.json: annotation 9: compressed RLE counts \"1 2\": character ' ' at 1 is outside '0' … 'o'")
        #expect(message(#"{"size": [-2, 3], "counts": []}"#).hasPrefix("gt.json: annotation 9: RLE size -2×3 is invalid"))
        #expect(message(#"{"size": [2], "counts": [6]}"#) == "gt.json: annotation 9: segmentation not supported: RLE size [2] must be [height, width]")
        #expect(message(#"[1, 2, 3, 4, 5, 6]"#).hasPrefix("gt.json: not a COCO file: invalid JSON at .annotations[0].segmentation: segmentation must be polygons"))
        #expect(message(#"{"size": [2, 3], "counts": [1, -2]}"#).hasPrefix("gt.json: not a COCO file:"))
    }

    @Test("mask results: written as Detectron writes them (no bbox), read back equal; pycocotools' loadRes rules")
    func maskResults() throws {
        let dir = tempDir("segm-results")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let mask = try RLE.encode([0, 1, 1, 1, 0, 0], height: 2, width: 3, order: .rowMajor)
        let dets = [Detection(imageID: 2, categoryID: 1, segmentation: mask, score: 0.75),
                    Detection(imageID: 2, categoryID: 1, segmentation: RLE.merge([mask, mask], intersect: true), score: 0.5)]
        try Detection.write(dets, to: dir + "/segm.json")
        let text = try String(contentsOfFile: dir + "/segm.json", encoding: .utf8)
        #expect(text.hasPrefix(#"[{"category_id":1,"image_id":2,"score":0.75,"segmentation":{"counts":""#) && !text.contains("bbox"))
        let gt = try COCOFile.parse(Data(Self.groundTruth("[]").utf8), source: "gt.json")
        #expect(try Detection.load(dir + "/segm.json", groundTruth: gt) == dets)

        func message(_ results: String) -> String {
            do {
                _ = try Detection.parse(Data(results.utf8), source: "dt.json")
                return "no error"
            } catch {
                return error.description
            }
        }
        let rle = #"{"size": [2, 3], "counts": "123"}"#
        #expect(message(#"[{"image_id": 2, "category_id": 1, "score": 1, "segmentation": \#(rle)}]"#) == "no error")
        #expect(message(#"[{"image_id": 2, "category_id": 1, "score": 1, "segmentation": [[0, 0, 1, 0, 1, 1]]}]"#)
            == "dt.json: detection #0: a result's segmentation must be an RLE with compressed counts {\"size\": [h, w], \"counts\": \"…\"}, the only form pycocotools' loadRes reads")
        #expect(message(#"[{"image_id": 2, "category_id": 1, "score": 1, "segmentation": {"size": [2, 3], "counts": "12"}}]"#)
            == "dt.json: detection #0: compressed RLE counts \"12\": its runs sum to 3, not 2·3 = 6")
        #expect(message(#"[{"image_id": 2, "category_id": 1, "score": 1, "bbox": [0, 0, 1, 1]}, {"image_id": 2, "category_id": 1, "score": 1, "segmentation": \#(rle)}]"#)
            == "dt.json: detection #1: it has no bbox while the first result has one (pycocotools' loadRes reads box results from the first result)")
        #expect(message(#"[{"image_id": 2, "category_id": 1, "score": 1, "segmentation": \#(rle)}, {"image_id": 2, "category_id": 1, "score": 1, "bbox": [0, 0, 1, 1]}]"#)
            == "dt.json: detection #1: it has no segmentation while the first result, without a bbox, makes these mask results (pycocotools' loadRes)")
        #expect(message(#"[{"image_id": 2, "category_id": 1, "score": 1}]"#) == "dt.json: detection #0: it has neither a bbox nor a segmentation")
        // An empty bbox is none (loadRes' `anns[0]['bbox'] == []`).
        #expect(message(#"[{"image_id": 2, "category_id": 1, "score": 1, "bbox": [], "segmentation": \#(rle)}]"#) == "no error")
    }

    @Test("mask results evaluated as boxes: the masks' boxes and, as loadRes, the masks' pixel counts as areas")
    func maskResultsAsBoxes() throws {
        let gt = COCOFile(images: [.init(id: 1, fileName: "a.jpg", width: 200, height: 200)],
                          annotations: [.init(id: 1, imageID: 1, categoryID: 1, bbox: [90, 90, 100, 100], area: 10_000,
                                              segmentation: .polygons([[90, 90, 190, 90, 190, 190, 90, 190]]))],
                          categories: [.init(id: 1, name: "x")])
        let square = try RLE.frBbox([90, 90, 100, 100], height: 200, width: 200)
        // A false positive, scored higher: an L of 4-pixel bars whose box is large (100×100) but whose mask is small (784 pixels).
        let thin = RLE.merge([try RLE.frBbox([0, 0, 100, 4], height: 200, width: 200), try RLE.frBbox([0, 0, 4, 100], height: 200, width: 200)])
        #expect(thin.toBbox() == [0, 0, 100, 100] && thin.area == 784)
        let masks = [Detection(imageID: 1, categoryID: 1, segmentation: square, score: 0.5),
                     Detection(imageID: 1, categoryID: 1, segmentation: thin, score: 0.9)]
        // Mask results: the L's area is 784, outside "large", so the unmatched L is ignored there.
        let r = try COCOEvaluator(groundTruth: gt, detections: masks, iouType: .bbox).evaluate()
        #expect(abs(r.stats[0] - 0.5) < 1e-9 && abs(r.stats[5] - 1) < 1e-9, "\(r.stats)")
        // Box results: its area is w·h = 10,000, and it counts against APl.
        let boxes = masks.map { Detection(imageID: $0.imageID, categoryID: $0.categoryID, bbox: $0.segmentation!.toBbox(), score: $0.score) }
        #expect(abs(COCOEvaluator(groundTruth: gt, detections: boxes).evaluate().stats[5] - 0.5) < 1e-9)
    }
}

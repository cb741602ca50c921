import COCO
import Foundation
import Testing

func fixtureURL(_ name: String, in directory: String = "cocoeval") throws -> URL {
    try #require(Bundle.module.url(forResource: name, withExtension: "json", subdirectory: "Fixtures/" + directory), "missing fixture \(name)")
}

struct Expected: Decodable {
    var stats: [Double]
    var per_category: [String: Double]
}

let evalCases = ["basic", "crowds", "empty_images", "images_without_detections", "tied_scores", "tiny_and_huge",
                 "many_categories", "over_100_detections", "category_without_gt", "ignore_flags_and_segment_areas",
                 "perfect", "large_random"]

let segmCases = ["basic", "holes_and_parts", "rle_crowds", "compressed_crowds", "empty_images", "tied_scores", "tiny_and_image_sized",
                 "over_100_detections", "category_without_gt", "results_with_bbox", "box_results", "many_categories"]

/// Evaluates fixture `name` of `directory` and compares with pycocotools' stats.
func expectPycocotoolsStats(_ name: String, in directory: String, iouType: COCOEvaluator.IoUType) throws {
    let gt = try COCOFile.load(try fixtureURL(name + "_gt", in: directory).path)
    let dets = try Detection.load(try fixtureURL(name + "_dt", in: directory).path, groundTruth: gt)
    let expected = try JSONDecoder().decode(Expected.self, from: Data(contentsOf: try fixtureURL(name + "_expected", in: directory)))
    let result = try COCOEvaluator(groundTruth: gt, detections: dets, iouType: iouType).evaluate()
    for (i, (got, want)) in zip(result.stats, expected.stats).enumerated() {
        #expect(abs(got - want) <= 1e-4, "\(name): \(COCOEvaluator.Result.statNames[i]) = \(got), pycocotools \(want)")
    }
    #expect(result.perCategory.count == expected.per_category.count)
    for (cat, want) in expected.per_category {
        let got = try #require(result.perCategory[Int(cat)!])
        #expect(abs(got - want) <= 1e-4, "\(name): category \(cat) AP = \(got), pycocotools \(want)")
    }
}

@Suite("COCO box AP equals pycocotools")
struct EvaluatorTests {
    @Test("all 12 stats and per-category AP within 1e-4 of pycocotools", arguments: evalCases)
    func equality(_ name: String) throws {
        try expectPycocotoolsStats(name, in: "cocoeval", iouType: .bbox)
    }

    @Test("segm: all 12 stats and per-category AP within 1e-4 of pycocotools' COCOeval(gt, dt, 'segm')", arguments: segmCases)
    func segmEquality(_ name: String) throws {
        try expectPycocotoolsStats(name, in: "cocoeval_segm", iouType: .segm)
    }

    @Test("segm: an annotation without a usable segmentation is an error that names it")
    func segmErrors() throws {
        let image = COCOFile.Image(id: 1, fileName: "a.jpg", width: 8, height: 8)
        let category = COCOFile.Category(id: 1, name: "x")
        let dets = [Detection(imageID: 1, categoryID: 1, bbox: [0, 0, 2, 2], score: 0.5)]
        for (segmentation, reason) in [(nil, "it has no segmentation"), (COCOFile.Segmentation.polygons([[1, 1, 3, 3]]), "the first polygon has 4 numbers")] {
            let gt = COCOFile(images: [image], annotations: [.init(id: 4, imageID: 1, categoryID: 1, bbox: [0, 0, 2, 2], segmentation: segmentation)],
                              categories: [category])
            do {
                _ = try COCOEvaluator(groundTruth: gt, detections: dets, iouType: .segm)
                Issue.record("no error for \(String(describing: segmentation))")
            } catch {
                #expect(error.description.hasPrefix("annotation 4") && error.description.contains(reason), "\(error)")
            }
            // Box AP does not need the masks.
            let stats = try COCOEvaluator(groundTruth: gt, detections: dets, iouType: .bbox).evaluate().stats
            #expect(abs(stats[0] - 1) < 1e-9, "\(stats)")
        }
    }

    @Test("the summary table has pycocotools' layout")
    func summary() throws {
        let gt = try COCOFile.load(try fixtureURL("perfect_gt").path)
        let dets = try Detection.load(try fixtureURL("perfect_dt").path)
        let lines = COCOEvaluator(groundTruth: gt, detections: dets).evaluate().summary.split(separator: "\n")
        #expect(lines.count == 12)
        #expect(lines[0] == " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 1.000")
        #expect(lines[1] == " Average Precision  (AP) @[ IoU=0.50      | area=   all | maxDets=100 ] = 1.000")
        #expect(lines[6] == " Average Recall     (AR) @[ IoU=0.50:0.95 | area=   all | maxDets=  1 ] = " + lines[6].suffix(5))
    }
}

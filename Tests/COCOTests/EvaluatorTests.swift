import COCO
import Foundation
import Testing

func fixtureURL(_ name: String) throws -> URL {
    try #require(Bundle.module.url(forResource: name, withExtension: "json", subdirectory: "Fixtures/cocoeval"), "missing fixture \(name)")
}

struct Expected: Decodable {
    var stats: [Double]
    var per_category: [String: Double]
}

let evalCases = ["basic", "crowds", "empty_images", "images_without_detections", "tied_scores", "tiny_and_huge",
                 "many_categories", "over_100_detections", "category_without_gt", "ignore_flags_and_segment_areas",
                 "perfect", "large_random"]

@Suite("COCO box AP equals pycocotools")
struct EvaluatorTests {
    @Test("all 12 stats and per-category AP within 1e-4 of pycocotools", arguments: evalCases)
    func equality(_ name: String) throws {
        let gt = try COCOFile.load(try fixtureURL(name + "_gt").path)
        let dets = try Detection.load(try fixtureURL(name + "_dt").path, groundTruth: gt)
        let expected = try JSONDecoder().decode(Expected.self, from: Data(contentsOf: try fixtureURL(name + "_expected")))
        let result = COCOEvaluator(groundTruth: gt, detections: dets).evaluate()
        for (i, (got, want)) in zip(result.stats, expected.stats).enumerated() {
            #expect(abs(got - want) <= 1e-4, "\(name): \(COCOEvaluator.Result.statNames[i]) = \(got), pycocotools \(want)")
        }
        for (cat, want) in expected.per_category {
            let got = try #require(result.perCategory[Int(cat)!])
            #expect(abs(got - want) <= 1e-4, "\(name): category \(cat) AP = \(got), pycocotools \(want)")
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

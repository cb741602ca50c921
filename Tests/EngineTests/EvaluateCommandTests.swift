import Foundation
import Portability
import Testing

@Suite("detectron evaluate")
struct EvaluateCommandTests {
    @Test("--iou-type segm compares masks (box AP by default); a segmentation it cannot rasterise is an error naming the annotation")
    func iouType() throws {
        let dir = NSTemporaryDirectory() + "sd-evaluate-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // A 10×10 square; the result has its box but a mask of only its left half: box AP 1, mask IoU 0.5.
        func groundTruth(_ segmentation: String) -> String {
            #"{"images": [{"id": 1, "file_name": "a.jpg", "width": 20, "height": 20}], "categories": [{"id": 1, "name": "x"}], "annotations": [{"id": 7, "image_id": 1, "category_id": 1, "bbox": [5, 5, 10, 10], "area": 100, "segmentation": \#(segmentation)}]}"#
        }
        try groundTruth("[[5, 5, 15, 5, 15, 15, 5, 15]]").write(toFile: dir + "/gt.json", atomically: true, encoding: .utf8)
        try groundTruth("[[5, 5, 15, 5]]").write(toFile: dir + "/bad.json", atomically: true, encoding: .utf8)
        // The left half of the square (pycocotools' mask.encode), with the square's box.
        let result = #"[{"image_id": 1, "category_id": 1, "bbox": [5, 5, 10, 10], "score": 0.9, "segmentation": {"size": [20, 20], "counts": "Y3::0000000S6"}}]"#
        try result.write(toFile: dir + "/dt.json", atomically: true, encoding: .utf8)
        func evaluate(_ gt: String, _ extra: [String]) throws -> (status: TerminationStatus, output: String, error: String) {
            try Processes.run(ProcessConfiguration(executable: detectronExecutable,
                                                   arguments: ["evaluate", "--gt", dir + "/" + gt, "--results", dir + "/dt.json", "--json"] + extra), timeout: 60)
        }
        func ap(_ r: (status: TerminationStatus, output: String, error: String)) throws -> Double {
            let object = try JSONSerialization.jsonObject(with: Data(r.output.utf8)) as? [String: Any]
            return try #require(object?["AP"] as? Double, "\(r.output) \(r.error)")
        }
        #expect(abs(try ap(try evaluate("gt.json", [])) - 1) < 1e-9)
        #expect(abs(try ap(try evaluate("gt.json", ["--iou-type", "bbox"])) - 1) < 1e-9)
        // IoU 0.5 matches at the first of the ten thresholds only.
        #expect(abs(try ap(try evaluate("gt.json", ["--iou-type", "segm"])) - 0.1) < 1e-9)
        let bad = try evaluate("bad.json", ["--iou-type", "segm"])
        #expect(!bad.status.isSuccess && bad.error.contains("annotation 7 (image 1): segmentation not supported: the first polygon has 4 numbers"), "\(bad.error)")
    }
}

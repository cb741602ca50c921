@testable import COCO
import Foundation
import Testing

@Suite("Masks of the shapes dataset")
struct ShapesMaskTests {
    /// Each annotation's mask (rasterised as pycocotools does) against the visible pixels it
    /// describes: (IoU, polygon count) of the objects; crowd regions must be exact.
    static func maskIoUs(split: String, images: Range<Int>) throws -> [(iou: Double, parts: Int)] {
        var out: [(Double, Int)] = []
        for index in images {
            let (sample, visible) = ShapesDataset(seed: 1).render(split: split, index: index)
            let (h, w) = (sample.image.height, sample.image.width)
            for (a, pixels) in zip(sample.annotations, visible) {
                let truth = try RLE.encode(pixels.map { $0 ? 1 : 0 }, height: h, width: w, order: .rowMajor)
                #expect(Double(truth.area) == a.area)
                let mask = try a.segmentation.rle(imageHeight: h, imageWidth: w)
                switch a.segmentation {
                case .compressedRLE:
                    #expect(a.crowd && mask == truth)
                case let .polygons(polygons):
                    #expect(!a.crowd)
                    // Detectron drops polygons of fewer than 6 numbers; every vertex is a pixel corner or on the outline.
                    #expect(polygons.allSatisfy { $0.count >= 6 && $0.count % 2 == 0 })
                    out.append((RLE.iou([mask], [truth], isCrowd: [false])[0], polygons.count))
                case .uncompressedRLE:
                    Issue.record("unexpected uncompressed RLE")
                }
            }
        }
        return out
    }

    @Test("objects: polygons whose raster matches the visible pixels (IoU ≥ 0.9 for 95 %); crowds: the exact pixels")
    func masksMatchVisiblePixels() throws {
        let ious = try Self.maskIoUs(split: "val", images: 0..<40)
        #expect(ious.count > 100)
        let good = ious.filter { $0.iou >= 0.9 }.count
        #expect(Double(good) >= 0.95 * Double(ious.count), "\(good) of \(ious.count) at IoU ≥ 0.9")
        // Occlusion splits some objects into several parts.
        #expect(ious.contains { $0.parts > 1 })
    }

    @Test("make-shapes writes the masks, and the file reads back with them")
    func written() throws {
        let dir = tempDir("shapes-masks")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let file = try ShapesDataset(seed: 1).write(split: "val", count: 6, to: dir)
        let loaded = try COCOFile.load(dir + "/annotations/instances_val.json")
        #expect(loaded.annotations.map(\.segmentation) == file.annotations.map(\.segmentation))
        #expect(loaded.annotations.allSatisfy { $0.segmentation != nil })
    }
}

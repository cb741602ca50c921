import Foundation
import Portability

/// One detection in COCO's results format.
public struct Detection: Sendable, Equatable, Codable {
    public var imageID: Int
    public var categoryID: Int
    /// [x, y, width, height]; Detectron writes width = x2 − x1 + 1.
    public var bbox: [Double]
    public var score: Double

    public init(imageID: Int, categoryID: Int, bbox: [Double], score: Double) {
        self.imageID = imageID
        self.categoryID = categoryID
        self.bbox = bbox
        self.score = score
    }

    /// From Detectron's corner box (x1, y1, x2, y2): width x2 − x1 + 1 (`xyxy_to_xywh`).
    public init(imageID: Int, categoryID: Int, x1: Double, y1: Double, x2: Double, y2: Double, score: Double) {
        self.init(imageID: imageID, categoryID: categoryID, bbox: [x1, y1, x2 - x1 + 1, y2 - y1 + 1], score: score)
    }

    enum CodingKeys: String, CodingKey {
        case bbox, score
        case imageID = "image_id"
        case categoryID = "category_id"
    }

    /// Reads a results file (a JSON array), checking every entry; errors name the file and entry.
    public static func load(_ path: String, groundTruth: COCOFile? = nil) throws(COCOError) -> [Detection] {
        try parse(try COCOFile.readFile(path), source: path, groundTruth: groundTruth)
    }

    public static func parse(_ data: Data, source: String, groundTruth: COCOFile? = nil) throws(COCOError) -> [Detection] {
        let list: [Detection]
        if let fast = scan(data) {
            list = fast
        } else {
            // Malformed somewhere: JSONDecoder finds and names the place.
            do {
                list = try JSONDecoder().decode([Detection].self, from: data)
            } catch let error as DecodingError {
                throw .malformed(file: source, reason: COCOFile.describe(error))
            } catch {
                throw .malformed(file: source, reason: "\(error)")
            }
        }
        let images = groundTruth.map { Set($0.images.map(\.id)) }
        for (i, d) in list.enumerated() {
            guard d.bbox.count == 4 else { throw .badDetection(file: source, index: i, reason: "bbox must be [x, y, width, height], has \(d.bbox.count) values") }
            guard d.bbox.allSatisfy(\.isFinite), d.score.isFinite else { throw .badDetection(file: source, index: i, reason: "bbox or score is not finite") }
            if let images, !images.contains(d.imageID) {
                throw .unknownImage(file: source, entry: "detection #\(i)", imageID: d.imageID)
            }
        }
        return list
    }

    /// Writes detections as a results file, atomically.
    public static func write(_ detections: [Detection], to path: String) throws(COCOError) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let data: Data
        do { data = try encoder.encode(detections) } catch { throw .unwritable(file: path, reason: "\(error)") }
        do throws(FileAccessError) {
            try Files.writeAtomically([UInt8](data), to: path)
        } catch {
            throw .unwritable(file: path, reason: error.description)
        }
    }
}

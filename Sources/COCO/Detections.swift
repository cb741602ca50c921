import Foundation
import Portability

/// One detection in COCO's results format: a box, a mask, or both.
///
/// Detectron writes box results (`bbox_<dataset>_results.json`: image_id, category_id, bbox,
/// score) and mask results (`segmentations_<dataset>_results.json`: image_id, category_id,
/// segmentation as a compressed RLE, score — no bbox) as separate files.
public struct Detection: Sendable, Equatable, Codable {
    public var imageID: Int
    public var categoryID: Int
    /// [x, y, width, height]; Detectron writes width = x2 − x1 + 1. nil in mask results.
    public var bbox: [Double]?
    /// The mask at the image's size; written as `{"size": [h, w], "counts": "<compressed>"}`.
    public var segmentation: RLE?
    public var score: Double

    public init(imageID: Int, categoryID: Int, bbox: [Double]? = nil, segmentation: RLE? = nil, score: Double) {
        self.imageID = imageID
        self.categoryID = categoryID
        self.bbox = bbox
        self.segmentation = segmentation
        self.score = score
    }

    /// From Detectron's corner box (x1, y1, x2, y2): width x2 − x1 + 1 (`xyxy_to_xywh`).
    public init(imageID: Int, categoryID: Int, x1: Double, y1: Double, x2: Double, y2: Double, score: Double) {
        self.init(imageID: imageID, categoryID: categoryID, bbox: [x1, y1, x2 - x1 + 1, y2 - y1 + 1], score: score)
    }

    enum CodingKeys: String, CodingKey {
        case bbox, score, segmentation
        case imageID = "image_id"
        case categoryID = "category_id"
    }

    static let compressedOnly = "a result's segmentation must be an RLE with compressed counts {\"size\": [h, w], \"counts\": \"…\"}, the only form pycocotools' loadRes reads"

    /// The mask of a result's segmentation: compressed RLE only, as pycocotools' `loadRes`.
    static func resultMask(_ segmentation: COCOFile.Segmentation) -> RLE? {
        if case let .compressedRLE(rle) = segmentation { return rle }
        return nil
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        imageID = try c.decode(Int.self, forKey: .imageID)
        categoryID = try c.decode(Int.self, forKey: .categoryID)
        bbox = try c.decodeIfPresent([Double].self, forKey: .bbox).flatMap { $0.isEmpty ? nil : $0 }
        score = try c.decode(Double.self, forKey: .score)
        if let segm = try c.decodeIfPresent(COCOFile.Segmentation.self, forKey: .segmentation) {
            guard let rle = Self.resultMask(segm) else {
                throw DecodingError.dataCorruptedError(forKey: .segmentation, in: c, debugDescription: Self.compressedOnly)
            }
            segmentation = rle
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(imageID, forKey: .imageID)
        try c.encode(categoryID, forKey: .categoryID)
        try c.encodeIfPresent(bbox, forKey: .bbox)
        try c.encodeIfPresent(segmentation.map { COCOFile.Segmentation.compressedRLE($0) }, forKey: .segmentation)
        try c.encode(score, forKey: .score)
    }

    /// Reads a results file (a JSON array), checking every entry; errors name the file and entry.
    public static func load(_ path: String, groundTruth: COCOFile? = nil) throws(COCOError) -> [Detection] {
        try parse(try COCOFile.readFile(path), source: path, groundTruth: groundTruth)
    }

    /// Parses a results file. As pycocotools' `loadRes`, the first result decides what the file
    /// is: with a (nonempty) bbox it is box results and every result needs a bbox; without, mask
    /// results, and every result needs a segmentation.
    public static func parse(_ data: Data, source: String, groundTruth: COCOFile? = nil) throws(COCOError) -> [Detection] {
        let list: [Detection]
        switch scan(data, source: source) {
        case let .success(fast)?:
            list = fast
        case let .failure(error)?:
            throw error
        case nil:
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
        let boxResults = list.first?.bbox != nil
        for (i, d) in list.enumerated() {
            if let bbox = d.bbox {
                guard bbox.count == 4 else { throw .badDetection(file: source, index: i, reason: "bbox must be [x, y, width, height], has \(bbox.count) values") }
                guard bbox.allSatisfy(\.isFinite) else { throw .badDetection(file: source, index: i, reason: "bbox \(bbox) is not finite") }
            } else if boxResults {
                throw .badDetection(file: source, index: i, reason: "it has no bbox while the first result has one (pycocotools' loadRes reads box results from the first result)")
            }
            if !boxResults && d.segmentation == nil {
                throw .badDetection(file: source, index: i, reason: i == 0 ? "it has neither a bbox nor a segmentation"
                    : "it has no segmentation while the first result, without a bbox, makes these mask results (pycocotools' loadRes)")
            }
            guard d.score.isFinite else { throw .badDetection(file: source, index: i, reason: "score \(d.score) is not finite") }
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

import Foundation

/// The parts of a COCO instances file that detection and segmentation use.
public struct COCOFile: Sendable, Equatable {
    public struct Image: Sendable, Equatable, Codable {
        public var id: Int
        public var fileName: String
        public var width: Int
        public var height: Int

        public init(id: Int, fileName: String, width: Int, height: Int) {
            self.id = id
            self.fileName = fileName
            self.width = width
            self.height = height
        }

        enum CodingKeys: String, CodingKey {
            case id, width, height
            case fileName = "file_name"
        }
    }

    public struct Category: Sendable, Equatable, Codable {
        public var id: Int
        public var name: String
        public var supercategory: String?

        public init(id: Int, name: String, supercategory: String? = nil) {
            self.id = id
            self.name = name
            self.supercategory = supercategory
        }
    }

    public struct Annotation: Sendable, Equatable, Codable {
        public var id: Int
        public var imageID: Int
        public var categoryID: Int
        /// [x, y, width, height].
        public var bbox: [Double]
        /// The segment's area (what COCOeval's area ranges use); the box area when absent.
        public var area: Double?
        public var isCrowd: Bool
        /// Detectron skips annotations with `ignore: 1` when it builds the roidb.
        public var ignore: Bool
        /// Polygons, or an RLE (crowd regions); nil when the file has none.
        public var segmentation: Segmentation?

        public init(id: Int, imageID: Int, categoryID: Int, bbox: [Double], area: Double? = nil, isCrowd: Bool = false, ignore: Bool = false,
                    segmentation: Segmentation? = nil) {
            self.id = id
            self.imageID = imageID
            self.categoryID = categoryID
            self.bbox = bbox
            self.area = area
            self.isCrowd = isCrowd
            self.ignore = ignore
            self.segmentation = segmentation
        }

        enum CodingKeys: String, CodingKey {
            case id, bbox, area, iscrowd, ignore, segmentation
            case imageID = "image_id"
            case categoryID = "category_id"
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            id = try c.decode(Int.self, forKey: .id)
            imageID = try c.decode(Int.self, forKey: .imageID)
            categoryID = try c.decode(Int.self, forKey: .categoryID)
            bbox = try c.decode([Double].self, forKey: .bbox)
            area = try c.decodeIfPresent(Double.self, forKey: .area)
            isCrowd = (try c.decodeIfPresent(Int.self, forKey: .iscrowd) ?? 0) != 0
            ignore = (try c.decodeIfPresent(Int.self, forKey: .ignore) ?? 0) != 0
            segmentation = try c.decodeIfPresent(Segmentation.self, forKey: .segmentation)
        }

        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(id, forKey: .id)
            try c.encode(imageID, forKey: .imageID)
            try c.encode(categoryID, forKey: .categoryID)
            try c.encode(bbox, forKey: .bbox)
            try c.encode(area ?? bbox[2] * bbox[3], forKey: .area)
            try c.encode(isCrowd ? 1 : 0, forKey: .iscrowd)
            if ignore { try c.encode(1, forKey: .ignore) }
            try c.encodeIfPresent(segmentation, forKey: .segmentation)
        }

        /// The area COCOeval uses.
        public var evaluationArea: Double { area ?? bbox[2] * bbox[3] }
    }

    public var images: [Image]
    public var annotations: [Annotation]
    public var categories: [Category]
    /// Whether the file has an `annotations` list (possibly empty): a labelled split that can be
    /// evaluated. COCO's test splits (`image_info_test*.json`) have none.
    public var hasAnnotations: Bool

    public init(images: [Image], annotations: [Annotation], categories: [Category], hasAnnotations: Bool = true) {
        self.images = images
        self.annotations = annotations
        self.categories = categories
        self.hasAnnotations = hasAnnotations
    }

    private struct Wire: Codable {
        var images: [Image]
        var annotations: [Annotation]?
        var categories: [Category]
    }

    /// Parses and checks COCO JSON; `source` names the file in errors.
    public static func parse(_ data: Data, source: String) throws(COCOError) -> COCOFile {
        switch scan(data, source: source) {
        case let .success(fast)?:
            try fast.validate(source: source)
            return fast
        case let .failure(error)?:
            throw error
        case nil:
            break
        }
        // Malformed somewhere: JSONDecoder finds and names the place.
        let wire: Wire
        do {
            wire = try JSONDecoder().decode(Wire.self, from: data)
        } catch let error as DecodingError {
            throw .malformed(file: source, reason: describe(error))
        } catch {
            throw .malformed(file: source, reason: "\(error)")
        }
        let file = COCOFile(images: wire.images, annotations: wire.annotations ?? [], categories: wire.categories,
                            hasAnnotations: wire.annotations != nil)
        try file.validate(source: source)
        return file
    }

    /// Reads and parses a COCO file.
    public static func load(_ path: String) throws(COCOError) -> COCOFile {
        try parse(try readFile(path), source: path)
    }

    /// The bytes of `path`; a missing or unreadable file is an error that says which.
    static func readFile(_ path: String) throws(COCOError) -> Data {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw .unreadable(file: path, reason: "no such file (check the path, or DETECTRON_DATA for named datasets)")
        }
        guard !isDirectory.boolValue else { throw .unreadable(file: path, reason: "it is a directory, not a JSON file") }
        do {
            return try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw .unreadable(file: path, reason: "permission denied or I/O error (\((error as NSError).code))")
        }
    }

    /// The JSON text (images, annotations, categories).
    public func encoded() -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return (try? encoder.encode(Wire(images: images, annotations: hasAnnotations ? annotations : nil, categories: categories))) ?? Data()
    }

    func validate(source: String) throws(COCOError) {
        var imageIDs = Set<Int>()
        for img in images {
            guard imageIDs.insert(img.id).inserted else { throw .malformed(file: source, reason: "image id \(img.id) appears twice") }
            guard img.width > 0 && img.height > 0 else { throw .malformed(file: source, reason: "image \(img.id) has size \(img.width)×\(img.height)") }
        }
        let categoryIDs = Set(categories.map(\.id))
        guard categoryIDs.count == categories.count else { throw .malformed(file: source, reason: "a category id appears twice") }
        var annotationIDs = Set<Int>()
        for a in annotations {
            guard annotationIDs.insert(a.id).inserted else { throw .badAnnotation(file: source, annotationID: a.id, reason: "the id appears twice") }
            guard a.bbox.count == 4 else { throw .badAnnotation(file: source, annotationID: a.id, reason: "bbox must be [x, y, width, height], has \(a.bbox.count) values") }
            guard a.bbox.allSatisfy(\.isFinite) else { throw .badAnnotation(file: source, annotationID: a.id, reason: "bbox \(a.bbox) is not finite") }
            guard a.bbox[2] >= 0 && a.bbox[3] >= 0 else { throw .badAnnotation(file: source, annotationID: a.id, reason: "bbox \(a.bbox) has a negative width or height") }
            guard categoryIDs.contains(a.categoryID) else { throw .unknownCategory(file: source, annotationID: a.id, categoryID: a.categoryID) }
            guard imageIDs.contains(a.imageID) else { throw .unknownImage(file: source, entry: "annotation \(a.id)", imageID: a.imageID) }
        }
    }

    static func describe(_ error: DecodingError) -> String {
        func path(_ ctx: DecodingError.Context) -> String {
            ctx.codingPath.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
        }
        switch error {
        case let .keyNotFound(key, ctx): return "missing key '\(key.stringValue)' at \(path(ctx).isEmpty ? "the top level" : path(ctx))"
        case let .typeMismatch(type, ctx): return "\(path(ctx)) should be \(type): \(ctx.debugDescription)"
        case let .valueNotFound(type, ctx): return "\(path(ctx)) is null, expected \(type)"
        case let .dataCorrupted(ctx): return "invalid JSON\(path(ctx).isEmpty ? "" : " at \(path(ctx))"): \(ctx.underlyingError.map { "\($0)" } ?? ctx.debugDescription)"
        @unknown default: return "\(error)"
        }
    }
}

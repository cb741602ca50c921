import Foundation

/// One image of a training or test set, as Detectron's roidb holds it.
public struct RoidbEntry: Sendable, Equatable {
    public var imageID: Int
    /// The image file.
    public var image: String
    public var width: Int
    public var height: Int
    public var flipped: Bool
    /// Ground-truth boxes (x1, y1, x2, y2), the +1 convention, flat.
    public var boxes: [Float]
    /// Contiguous class ids 1…K.
    public var gtClasses: [Int32]
    public var isCrowd: [Bool]
    public var segAreas: [Float]
    /// Each box's segmentation as the file gives it (nil when it has none; polygons of fewer than
    /// 6 numbers dropped, as Detectron's roidb drops them), in this entry's frame (flipped too).
    public var segms: [COCOFile.Segmentation?]

    public init(imageID: Int, image: String, width: Int, height: Int, flipped: Bool, boxes: [Float], gtClasses: [Int32],
                isCrowd: [Bool], segAreas: [Float], segms: [COCOFile.Segmentation?]? = nil) {
        self.imageID = imageID
        self.image = image
        self.width = width
        self.height = height
        self.flipped = flipped
        self.boxes = boxes
        self.gtClasses = gtClasses
        self.isCrowd = isCrowd
        self.segAreas = segAreas
        self.segms = segms ?? gtClasses.map { _ in nil }
    }

    public var boxCount: Int { gtClasses.count }

    /// Max overlap of each gt with its own class: 1 for a regular box, −1 for a crowd region.
    public var maxOverlaps: [Float] { isCrowd.map { $0 ? -1 : 1 } }

    /// The horizontally flipped copy: x1' = W − x2 − 1, x2' = W − x1 − 1; polygon x' = W − x − 1
    /// and RLE masks mirrored (Detectron's `segms.flip_segms`).
    public func flippedCopy() -> RoidbEntry {
        var e = self
        e.flipped.toggle()
        for i in 0..<boxCount {
            let x1 = boxes[4 * i], x2 = boxes[4 * i + 2]
            e.boxes[4 * i] = Float(width) - x2 - 1
            e.boxes[4 * i + 2] = Float(width) - x1 - 1
        }
        e.segms = segms.map { $0.map { $0.flipped(imageWidth: width) } }
        return e
    }
}

/// What building a roidb tolerated, as Detectron does, counted so nothing goes unnoticed.
public struct RoidbStats: Sendable, Equatable {
    /// Annotations with `ignore: 1`.
    public var ignored = 0
    /// Annotations below the minimum area.
    public var belowMinArea = 0
    /// Boxes that reached outside the image and were clipped to it.
    public var clipped = 0
    /// Boxes dropped as degenerate (no area, or not more than 1×1 after clipping).
    public var degenerate = 0
    /// Images dropped by the training filter (no usable box).
    public var filteredImages = 0

    public var warnings: [String] {
        var out: [String] = []
        if clipped > 0 { out.append("\(clipped) boxes reached outside their image and were clipped") }
        if degenerate > 0 { out.append("\(degenerate) degenerate boxes were dropped") }
        if filteredImages > 0 { out.append("\(filteredImages) images without usable boxes were left out of training") }
        return out
    }
}

/// A COCO-format dataset the way Detectron's `JsonDataset` reads it.
public struct JSONDataset: Sendable {
    public let name: String
    public let annotationFile: String
    public let imageDirectory: String
    public let coco: COCOFile
    /// `__background__` then the category names in the file's category order.
    public let classes: [String]
    /// JSON category id → contiguous id 1…K (file order).
    public let contiguousID: [Int: Int32]
    /// Contiguous id → JSON category id.
    public let jsonID: [Int32: Int]

    public init(name: String, annotationFile: String, imageDirectory: String) throws(COCOError) {
        let coco = try COCOFile.load(annotationFile)
        self.init(name: name, annotationFile: annotationFile, imageDirectory: imageDirectory, coco: coco)
    }

    public init(name: String, annotationFile: String, imageDirectory: String, coco: COCOFile) {
        self.name = name
        self.annotationFile = annotationFile
        self.imageDirectory = imageDirectory
        self.coco = coco
        classes = ["__background__"] + coco.categories.map(\.name)
        var forward: [Int: Int32] = [:], back: [Int32: Int] = [:]
        for (i, c) in coco.categories.enumerated() {
            forward[c.id] = Int32(i + 1)
            back[Int32(i + 1)] = c.id
        }
        contiguousID = forward
        jsonID = back
    }

    /// The ground-truth roidb: images sorted by id, each annotation converted as Detectron does
    /// (skip `ignore` and areas below `minArea`; x2 = x1 + max(0, w − 1); clip to the image; keep
    /// only boxes with positive area larger than 1×1). With `checkImages`, a missing image file
    /// is an error naming it.
    public func roidb(minArea: Double = -1, checkImages: Bool = true) throws(COCOError) -> (entries: [RoidbEntry], stats: RoidbStats) {
        var stats = RoidbStats()
        var byImage: [Int: [COCOFile.Annotation]] = [:]
        for a in coco.annotations { byImage[a.imageID, default: []].append(a) }
        var entries: [RoidbEntry] = []
        for img in coco.images.sorted(by: { $0.id < $1.id }) {
            let path = imageDirectory.isEmpty ? img.fileName : (imageDirectory as NSString).appendingPathComponent(img.fileName)
            if checkImages && !FileManager.default.fileExists(atPath: path) {
                throw .missingImage(file: annotationFile, imageID: img.id, path: path)
            }
            var e = RoidbEntry(imageID: img.id, image: path, width: img.width, height: img.height, flipped: false,
                               boxes: [], gtClasses: [], isCrowd: [], segAreas: [])
            for a in byImage[img.id] ?? [] {
                let area = a.evaluationArea
                if area < minArea { stats.belowMinArea += 1; continue }
                if a.ignore { stats.ignored += 1; continue }
                let (x, y, w, h) = (a.bbox[0], a.bbox[1], a.bbox[2], a.bbox[3])
                var x1 = x, y1 = y, x2 = x + max(0, w - 1), y2 = y + max(0, h - 1)
                let W = Double(img.width - 1), H = Double(img.height - 1)
                let (cx1, cy1, cx2, cy2) = (min(max(x1, 0), W), min(max(y1, 0), H), min(max(x2, 0), W), min(max(y2, 0), H))
                if (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2) { stats.clipped += 1 }
                (x1, y1, x2, y2) = (cx1, cy1, cx2, cy2)
                guard area > 0 && x2 > x1 && y2 > y1 else { stats.degenerate += 1; continue }
                e.boxes += [Float(x1), Float(y1), Float(x2), Float(y2)]
                e.gtClasses.append(contiguousID[a.categoryID]!)
                e.isCrowd.append(a.isCrowd)
                e.segAreas.append(Float(area))
                if case let .polygons(parts)? = a.segmentation {
                    e.segms.append(.polygons(parts.filter { $0.count >= 6 }))
                } else {
                    e.segms.append(a.segmentation)
                }
            }
            entries.append(e)
        }
        return (entries, stats)
    }

    /// Detectron's training roidb: the gt roidb, flipped copies appended when `flipped`, and
    /// images without a usable (non-crowd) box left out.
    public func trainingRoidb(flipped: Bool = true, checkImages: Bool = true) throws(COCOError) -> (entries: [RoidbEntry], stats: RoidbStats) {
        var (entries, stats) = try roidb(checkImages: checkImages)
        if flipped { entries += entries.map { $0.flippedCopy() } }
        let kept = entries.filter { e in e.maxOverlaps.contains { $0 >= 0.5 } || e.maxOverlaps.contains { $0 >= 0 && $0 < 0.5 } }
        stats.filteredImages = entries.count - kept.count
        return (kept, stats)
    }
}

/// Named datasets, resolved under a data root (config, or `DETECTRON_DATA`, else `data`).
public struct DatasetCatalog: Sendable {
    public struct Entry: Sendable, Equatable {
        public var imageDirectory: String
        public var annotationFile: String

        public init(imageDirectory: String, annotationFile: String) {
            self.imageDirectory = imageDirectory
            self.annotationFile = annotationFile
        }
    }

    public static let environmentKey = "DETECTRON_DATA"

    /// Paths relative to the data root, as Detectron's `dataset_catalog.py` lays them out.
    public static let entries: [String: Entry] = [
        "coco_2014_train": Entry(imageDirectory: "coco/coco_train2014", annotationFile: "coco/annotations/instances_train2014.json"),
        "coco_2014_val": Entry(imageDirectory: "coco/coco_val2014", annotationFile: "coco/annotations/instances_val2014.json"),
        "coco_2014_minival": Entry(imageDirectory: "coco/coco_val2014", annotationFile: "coco/annotations/instances_minival2014.json"),
        "coco_2014_valminusminival": Entry(imageDirectory: "coco/coco_val2014", annotationFile: "coco/annotations/instances_valminusminival2014.json"),
        "coco_2017_train": Entry(imageDirectory: "coco/coco_train2017", annotationFile: "coco/annotations/instances_train2017.json"),
        "coco_2017_val": Entry(imageDirectory: "coco/coco_val2017", annotationFile: "coco/annotations/instances_val2017.json"),
        "shapes_train": Entry(imageDirectory: "shapes/train", annotationFile: "shapes/annotations/instances_train.json"),
        "shapes_val": Entry(imageDirectory: "shapes/val", annotationFile: "shapes/annotations/instances_val.json"),
    ]

    public let root: String

    public init(root: String? = nil, environment: [String: String] = ProcessInfo.processInfo.environment) {
        self.root = root ?? environment[Self.environmentKey] ?? "data"
    }

    /// The files of a named dataset.
    public func resolve(_ name: String) throws(COCOError) -> Entry {
        guard let e = Self.entries[name] else { throw .unknownDataset(name: name, known: Self.entries.keys.sorted()) }
        return Entry(imageDirectory: (root as NSString).appendingPathComponent(e.imageDirectory),
                     annotationFile: (root as NSString).appendingPathComponent(e.annotationFile))
    }

    /// Loads a named dataset.
    public func load(_ name: String) throws(COCOError) -> JSONDataset {
        let e = try resolve(name)
        return try JSONDataset(name: name, annotationFile: e.annotationFile, imageDirectory: e.imageDirectory)
    }
}

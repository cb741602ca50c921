/// Errors of the COCO layer; each names the file and the offending entry, and says what to do.
public enum COCOError: Error, Equatable, Sendable, CustomStringConvertible {
    case unreadable(file: String, reason: String)
    case malformed(file: String, reason: String)
    case badAnnotation(file: String, annotationID: Int, reason: String)
    case badDetection(file: String, index: Int, reason: String)
    case unknownCategory(file: String, annotationID: Int, categoryID: Int)
    case unknownImage(file: String, entry: String, imageID: Int)
    case missingImage(file: String, imageID: Int, path: String)
    case unknownDataset(name: String, known: [String])
    case unwritable(file: String, reason: String)
    /// An annotation or detection whose mask cannot be made for segm evaluation.
    case badSegmentation(entry: String, reason: String)

    public var description: String {
        switch self {
        case let .unreadable(file, reason): return "\(file): cannot read: \(reason)"
        case let .malformed(file, reason): return "\(file): not a COCO file: \(reason)"
        case let .badAnnotation(file, id, reason): return "\(file): annotation \(id): \(reason)"
        case let .badDetection(file, index, reason): return "\(file): detection #\(index): \(reason)"
        case let .unknownCategory(file, id, cat): return "\(file): annotation \(id) has category_id \(cat), which is not among the file's categories"
        case let .unknownImage(file, entry, img): return "\(file): \(entry) refers to image_id \(img), which the ground truth does not have (results must match the annotation file)"
        case let .missingImage(file, img, path): return "\(file): image \(img) is missing: \(path) does not exist (check the image directory or DETECTRON_DATA)"
        case let .unknownDataset(name, known): return "unknown dataset '\(name)' (known: \(known.joined(separator: ", ")); or pass an annotation file and an image directory)"
        case let .unwritable(file, reason): return "\(file): cannot write: \(reason)"
        case let .badSegmentation(entry, reason): return "\(entry): \(reason)"
        }
    }
}

import COCO
import Foundation

/// Loads the named datasets of a config (`TRAIN.DATASETS` / `TEST.DATASETS`) from the catalog.
func loadDatasets(_ cfg: Config, key: String) throws(EngineError) -> [JSONDataset] {
    let names = cfg.strings(key)
    guard !names.isEmpty else { throw .config(.invalid(key: key, reason: "is empty: name at least one dataset, e.g. ('shapes_train',)")) }
    let root = cfg.string("DATA_ROOT")
    let catalog = DatasetCatalog(root: root.isEmpty ? nil : root)
    var out: [JSONDataset] = []
    for name in names {
        do throws(COCOError) {
            // A dataset can also be given directly, as "ANNOTATIONS.json::IMAGE_DIR".
            if let sep = name.range(of: "::") {
                let json = String(name[..<sep.lowerBound]), dir = String(name[sep.upperBound...])
                out.append(try JSONDataset(name: ((json as NSString).lastPathComponent as NSString).deletingPathExtension, annotationFile: json, imageDirectory: dir))
                continue
            }
            out.append(try catalog.load(name))
        } catch {
            throw .data("dataset \(name) (\(key)): \(error)")
        }
    }
    for d in out.dropFirst() where d.classes != out[0].classes {
        throw .data("datasets \(out[0].name) and \(d.name) have different categories; they cannot train one model")
    }
    let k = cfg.int("MODEL.NUM_CLASSES")
    if out[0].classes.count != k {
        throw .config(.invalid(key: "MODEL.NUM_CLASSES", reason: "is \(k) but \(out[0].name) has \(out[0].classes.count - 1) categories plus background: set MODEL.NUM_CLASSES \(out[0].classes.count)"))
    }
    return out
}

import ArgumentParser
import Engine
import Foundation

/// `detectron check-configs`: which config files this engine runs, and why the others are refused.
struct CheckConfigs: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-configs",
        abstract: "Check config files (or every .yaml under directories): runs, or the unimplemented key that refuses it.")
    @Argument(help: "Config files or directories (default: configs).") var paths: [String] = []
    @Flag(help: "A Markdown table: model family, configs that run, configs refused.") var markdown = false

    func run() throws {
        var rows: [(file: String, family: String, verdict: String)] = []
        for file in try files() {
            var c = Config()
            let verdict: String
            do {
                try c.merge(file: file)
                _ = try c.checkImplemented()
                verdict = "runs"
            } catch {
                verdict = "\(error)"
            }
            rows.append((file, Self.family(file), verdict))
        }
        if markdown {
            print("| model family | configs | run | refused (first key) |\n|---|---:|---:|---|")
            for family in Set(rows.map(\.family)).sorted() {
                let r = rows.filter { $0.family == family }
                let refused = r.filter { $0.verdict != "runs" }
                let keys = Dictionary(grouping: refused) { $0.verdict.split(separator: " ").dropFirst(2).first.map(String.init) ?? "?" }
                let reasons = keys.keys.sorted().map { "\($0) (\(keys[$0]!.count))" }.joined(separator: ", ")
                print("| \(family) | \(r.count) | \(r.count - refused.count) | \(reasons) |")
            }
        } else {
            for r in rows { print("\(r.file): \(r.verdict)") }
        }
        let n = rows.filter { $0.verdict == "runs" }.count
        FileHandle.standardError.write(Data("\(n) of \(rows.count) configs run\n".utf8))
    }

    private func files() throws -> [String] {
        var out: [String] = []
        for path in paths.isEmpty ? ["configs"] : paths {
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
                throw ValidationError("\(path): no such file or directory")
            }
            if isDir.boolValue {
                let found = FileManager.default.enumerator(atPath: path)?.compactMap { $0 as? String } ?? []
                out += found.filter { $0.hasSuffix(".yaml") }.sorted().map { (path as NSString).appendingPathComponent($0) }
            } else {
                out.append(path)
            }
        }
        return out
    }

    /// The model family a Detectron config file's name says.
    static func family(_ file: String) -> String {
        let name = (file as NSString).lastPathComponent
        if file.contains("test_time_aug") { return "test-time augmentation" }
        if name.contains("tutorial") {
            return name.contains("retinanet") ? "tutorials (RetinaNet)" : (name.contains("mask") ? "tutorials (Mask R-CNN)" : "tutorials (Faster R-CNN)")
        }
        if file.hasPrefix("torchvision/") || file.contains("/torchvision/") {
            for (prefix, model) in [("fasterrcnn_", "Faster R-CNN"), ("maskrcnn_", "Mask R-CNN"), ("retinanet_", "RetinaNet")] where name.hasPrefix(prefix) {
                return "torchvision " + model
            }
        }
        for (prefix, family) in [("retinanet", "RetinaNet"), ("e2e_keypoint_rcnn", "Keypoint R-CNN (end to end)"),
                                 ("keypoint_rcnn", "Keypoint R-CNN (stagewise)"), ("e2e_mask_rcnn", "Mask R-CNN (end to end)"),
                                 ("scratch_e2e_mask_rcnn", "Mask R-CNN (end to end)"), ("mask_rcnn", "Mask R-CNN (stagewise)"),
                                 ("e2e_faster_rcnn", "Faster R-CNN (end to end)"), ("fast_rcnn", "Fast R-CNN (stagewise)"),
                                 ("rpn", "RPN only")] where name.hasPrefix(prefix) {
            return family
        }
        return "other"
    }
}

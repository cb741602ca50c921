import ArgumentParser
import Foundation
import Pickle

struct InspectWeights: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect-weights",
        abstract: "List the arrays in a Detectron pickle or a PyTorch archive (name, dtype, shape) and the time to read it.",
        discussion: "Nothing in the file is executed: globals other than numpy's and PyTorch's array formats are refused by name."
    )
    @Argument(help: "A .pkl or a torch.save archive (.pth/.pt).") var file: String
    @Option(help: "List at most this many arrays (0: none, only the summary).") var limit = 20

    func run() throws {
        let start = Date()
        let value = TorchArchive.isArchive(file) ? try TorchArchive.load(file) : try PickleReader.load(file)
        let seconds = Date().timeIntervalSince(start)
        var arrays: [(String, NDArray)] = []
        func walk(_ v: PickleValue, _ path: String) {
            switch v {
            case let .array(a): arrays.append((path, a))
            case let .dict(entries):
                for e in entries { walk(e.value, path.isEmpty ? (e.key.text ?? "?") : path + "." + (e.key.text ?? "?")) }
            case let .list(items), let .tuple(items):
                for (i, item) in items.enumerated() { walk(item, path + "[\(i)]") }
            default: break
            }
        }
        walk(value, "")
        for (name, a) in arrays.prefix(limit) { print("\(name)  \(a.dtype.rawValue)  \(a.shape)") }
        if arrays.count > limit { print("… \(arrays.count - limit) more") }
        let bytes = arrays.reduce(0) { $0 + $1.1.data.count }
        print(String(format: "%d arrays, %.1f MB of data, read in %.3f s", arrays.count, Double(bytes) / 1e6, seconds))
    }
}

import Foundation
import Logging
import Pickle
import Portability
import Storage

/// Errors about weight files; messages name the file and the blob.
public enum WeightsError: Error, Sendable, CustomStringConvertible {
    case unreadable(file: String, reason: String)
    case malformed(file: String, reason: String)
    case shapeMismatch(file: String, blob: String, file_: [Int], model: [Int])
    case unwritable(file: String, reason: String)

    public var description: String {
        switch self {
        case let .unreadable(f, r): return "\(f): cannot read weights: \(r)"
        case let .malformed(f, r): return "\(f): not a valid weights file: \(r)"
        case let .shapeMismatch(f, b, s, m): return "\(f): blob \(b) has shape \(s) in the file but \(m) in the model"
        case let .unwritable(f, r): return "\(f): cannot write weights: \(r)"
        }
    }
}

/// Checkpoints in the safetensors format: a little-endian u64 header length, a JSON header
/// (`{"name": {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, "__metadata__": {...}}`)
/// and the raw tensor bytes. Blobs keep their Detectron names; momentum buffers are
/// `<param>_momentum`; the metadata holds the config and the iteration.
public enum Checkpoint {
    public struct Contents: Sendable {
        public var blobs: [String: (shape: [Int], values: [Float])]
        public var metadata: [String: String]
    }

    /// Writes blobs atomically (temporary file, fsync, rename): a crash never leaves a partial file.
    public static func write(_ blobs: [(name: String, shape: [Int], values: [Float])], metadata: [String: String], to path: String) throws(WeightsError) {
        var header: [String: Any] = ["__metadata__": metadata]
        var offset = 0
        for b in blobs {
            let n = b.values.count * 4
            header[b.name] = ["dtype": "F32", "shape": b.shape, "data_offsets": [offset, offset + n]]
            offset += n
        }
        guard var json = try? JSONSerialization.data(withJSONObject: header, options: [.sortedKeys]) else {
            throw .unwritable(file: path, reason: "the header could not be encoded")
        }
        while json.count % 8 != 0 { json.append(0x20) }
        var bytes = [UInt8]()
        bytes.reserveCapacity(8 + json.count + offset)
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { bytes += $0 }
        bytes += json
        for b in blobs { b.values.withUnsafeBytes { bytes += $0 } }
        do throws(FileAccessError) {
            try Files.writeAtomically(bytes, to: path)
        } catch {
            throw .unwritable(file: path, reason: error.description)
        }
    }

    /// Reads weights: our safetensors checkpoints, or Detectron's pickles — model-zoo files
    /// (`{'blobs': {name: ndarray}, 'cfg': yaml}`) and ImageNet-pretrained bodies (a flat dict) —
    /// by content, whatever the file is called.
    public static func read(_ path: String) throws(WeightsError) -> Contents {
        // (Checked first: Foundation's reader leaks its buffer on files that report size 0.)
        var st = stat()
        if stat(path, &st) == 0 && st.st_size == 0 { throw .malformed(file: path, reason: "the file is empty") }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw .unreadable(file: path, reason: FileManager.default.fileExists(atPath: path) ? "permission denied" : "no such file")
        }
        // Safetensors first: its first byte is the low byte of the header length, which may be
        // 0x80 like a pickle's PROTO opcode; its ninth byte opens the JSON header.
        let safetensors = data.count > 8 && data[data.startIndex + 8] == UInt8(ascii: "{")
        let pickle = data.count > 1 && data.first == 0x80 && (2...5).contains(data[data.startIndex + 1])
        if !safetensors && (pickle || path.hasSuffix(".pkl")) { return try readDetectronPickle(path, data) }
        if data.starts(with: [0x50, 0x4B, 0x03, 0x04]) { return try readTorchStateDict(path, data) }
        var contents = try readSafetensors(path, data)
        if TorchvisionWeights.recognises(contents.blobs.keys) {
            contents.blobs = try TorchvisionWeights.convert(contents.blobs, file: path)
            contents.metadata["format"] = "torchvision-safetensors"
        }
        return contents
    }

    /// Safetensors (F32 tensors) by their names in the file.
    static func readSafetensors(_ path: String, _ data: Data) throws(WeightsError) -> Contents {
        guard data.count >= 8 else { throw .malformed(file: path, reason: "shorter than the 8-byte header length") }
        let n = data.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        guard n < UInt64(data.count - 8) || n == UInt64(data.count - 8) else { throw .malformed(file: path, reason: "header length \(n) runs past the end") }
        let headerEnd = 8 + Int(n)
        guard let header = try? JSONSerialization.jsonObject(with: data.subdata(in: 8..<headerEnd)) as? [String: Any] else {
            throw .malformed(file: path, reason: "the header is not a JSON object")
        }
        var out = Contents(blobs: [:], metadata: (header["__metadata__"] as? [String: String]) ?? [:])
        for (name, v) in header where name != "__metadata__" {
            guard let d = v as? [String: Any], let dtype = d["dtype"] as? String, let shape = d["shape"] as? [Int],
                  let offsets = d["data_offsets"] as? [Int], offsets.count == 2 else {
                throw .malformed(file: path, reason: "entry \(name) lacks dtype, shape or data_offsets")
            }
            guard dtype == "F32" else { throw .malformed(file: path, reason: "blob \(name) is \(dtype); only F32 is read here") }
            let begin = headerEnd + offsets[0], end = headerEnd + offsets[1]
            guard offsets[0] >= 0, begin <= end, end <= data.count, (end - begin) == shape.reduce(1, *) * 4 else {
                throw .malformed(file: path, reason: "blob \(name)'s data_offsets \(offsets) do not fit shape \(shape) and the file")
            }
            let values = data.subdata(in: begin..<end).withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
            out.blobs[name] = (shape, values)
        }
        return out
    }

    /// A `torch.save` archive of torchvision's `fasterrcnn_resnet50_fpn` `state_dict` (or of a
    /// dict holding it under `model`, as torchvision's reference training scripts save it),
    /// mapped by ``TorchvisionWeights``.
    static func readTorchStateDict(_ path: String, _ data: Data) throws(WeightsError) -> Contents {
        let root: PickleValue
        do {
            root = try TorchArchive.load(data: data, file: path)
        } catch {
            throw .unreadable(file: path, reason: error.description)
        }
        guard case let .dict(entries) = root["model"] ?? root else { throw .malformed(file: path, reason: "a PyTorch checkpoint that is not a state_dict") }
        var tensors: [String: (shape: [Int], values: [Float])] = [:]
        for entry in entries {
            guard let name = entry.key.text, case let .array(a) = entry.value else { continue }
            tensors[name] = (a.shape, a.floats())
        }
        guard TorchvisionWeights.recognises(tensors.keys) else {
            throw .malformed(file: path, reason: "a PyTorch state_dict without backbone.body.conv1.weight: only torchvision's "
                             + "fasterrcnn_resnet50_fpn names are mapped (first names: \(tensors.keys.sorted().prefix(3).joined(separator: ", ")))")
        }
        return Contents(blobs: try TorchvisionWeights.convert(tensors, file: path), metadata: ["format": "torchvision-state-dict"])
    }

    /// Detectron's pickled weights: the `blobs` dict (or the whole dict, for ImageNet bodies),
    /// every numpy array as float32 by its unscoped name; other entries are skipped.
    static func readDetectronPickle(_ path: String, _ data: Data) throws(WeightsError) -> Contents {
        let root: PickleValue
        do {
            root = try PickleReader(bytes: [UInt8](data), file: path).read()
        } catch {
            throw .unreadable(file: path, reason: error.description)
        }
        let blobs = root["blobs"] ?? root
        guard case let .dict(entries) = blobs else { throw .malformed(file: path, reason: "a Detectron pickle must hold a dict of arrays") }
        var out = Contents(blobs: [:], metadata: ["format": "detectron-pkl"])
        if let cfg = root["cfg"]?.text { out.metadata["detectron_cfg"] = cfg }
        for entry in entries {
            guard let name = entry.key.text, case let .array(a) = entry.value else { continue }
            let unscoped = name.split(separator: "/").last.map(String.init) ?? name   // gpu_0/conv1_w → conv1_w
            out.blobs[unscoped] = (a.shape, a.floats())
        }
        guard !out.blobs.isEmpty else { throw .malformed(file: path, reason: "the pickle holds no arrays") }
        return out
    }
}

/// Feeds a checkpoint's blobs into a workspace by name, checking shapes; reports what the model
/// has that the file lacks, and what the file has that the model does not use. Returns the
/// checkpoint's metadata.
@discardableResult
func loadCheckpoint(_ path: String, into ws: Workspace, model: DetectionModel, momentum: Bool,
                    logger: Logger? = nil) throws -> [String: String] {
    let contents = try Checkpoint.read(path)
    var missing: [String] = []
    for p in model.params {
        guard let b = contents.blobs[p.name] else { missing.append(p.name); continue }
        guard b.shape == p.shape else { throw WeightsError.shapeMismatch(file: path, blob: p.name, file_: b.shape, model: p.shape) }
        ws.feedBlob(p.name, try Tensor(b.values, shape: b.shape, context: ws.context))
        if momentum, let m = contents.blobs[p.name + "_momentum"], m.shape == p.shape {
            ws.feedBlob(p.name + "_momentum", try Tensor(m.values, shape: m.shape, context: ws.context))
        }
    }
    let known = Set(model.params.map(\.name)).union(model.params.map { $0.name + "_momentum" })
    let unused = contents.blobs.keys.filter { !known.contains($0) }.sorted()
    if !missing.isEmpty {
        logger?.info("\(path): \(missing.count) model blobs not in the file keep their initial values: \(missing.prefix(8).joined(separator: ", "))\(missing.count > 8 ? ", …" : "")")
    }
    if !unused.isEmpty { logger?.info("\(path): \(unused.count) blobs in the file are not used by the model: \(unused.prefix(8).joined(separator: ", "))") }
    return contents.metadata
}

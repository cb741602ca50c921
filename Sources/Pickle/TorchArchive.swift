import Foundation

/// PyTorch's checkpoint format since 1.6 (`torch.save`): a zip archive (entries stored, not
/// compressed) holding `<name>/data.pkl` — a pickle whose tensors are persistent ids
/// `('storage', torch.FloatStorage, key, location, numel)` — and each storage's little-endian bytes
/// in `<name>/data/<key>`. Tensors sharing a storage read the same bytes.
public enum TorchArchive {
    /// Reads a `.pth`/`.pt` archive into plain values (tensors become ``NDArray``s).
    public static func load(_ path: String) throws(PickleError) -> PickleValue {
        // An empty file is not an archive; checked first because Foundation's reader leaks its
        // 4 KiB buffer on files that report size 0 (LeakSanitizer shows it).
        var st = stat()
        if stat(path, &st) == 0 && st.st_size == 0 { throw .unsupported(file: path, reason: "the file is empty") }
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped)
        } catch {
            throw .unsupported(file: path, reason: FileManager.default.fileExists(atPath: path) ? "cannot read the file" : "no such file")
        }
        return try load(data: data, file: path)
    }

    /// Reads an archive already in memory; `file` names it in errors.
    public static func load(data: Data, file path: String) throws(PickleError) -> PickleValue {
        let zip = try ZipDirectory(data: data, file: path)
        guard let pickleName = zip.entries.keys.filter({ $0 == "data.pkl" || $0.hasSuffix("/data.pkl") }).min() else {
            throw .unsupported(file: path, reason: "a zip archive without data.pkl: not a PyTorch checkpoint")
        }
        let prefix = String(pickleName.dropLast("data.pkl".count))
        let reader = PickleReader(
            bytes: try zip.contents(pickleName), file: path,
            persistentLoad: { (pid: PickleValue) throws(PickleError) -> PickleValue in
                guard case let .tuple(t) = pid, t.count >= 5, t[0].text == "storage", case let .global(type) = t[1],
                      let key = t[2].text, case let .int(count) = t[4], count >= 0 else {
                    throw .malformed(file: path, offset: 0, reason: "a persistent id that is not a PyTorch storage")
                }
                guard let dtype = storageTypes[type] else { throw .refusedGlobal(file: path, global: type) }
                return .internal(.storage(dtype, key: prefix + "data/" + key, count: count))
            },
            storageBytes: { (key: String) throws(PickleError) -> [UInt8] in try zip.contents(key) })
        return try reader.read()
    }

    static let storageTypes: [String: NDArray.DType] = [
        "torch.FloatStorage": .float32, "torch.DoubleStorage": .float64, "torch.HalfStorage": .float16,
        "torch.BFloat16Storage": .bfloat16, "torch.LongStorage": .int64, "torch.IntStorage": .int32,
        "torch.ShortStorage": .int16, "torch.CharStorage": .int8, "torch.ByteStorage": .uint8, "torch.BoolStorage": .bool,
    ]

    /// Whether the file starts like a zip archive (else it may be a plain pickle).
    public static func isArchive(_ path: String) -> Bool {
        guard let h = FileHandle(forReadingAtPath: path) else { return false }
        defer { try? h.close() }
        return (try? h.read(upToCount: 4)).map { [UInt8]($0) == [0x50, 0x4B, 0x03, 0x04] } ?? false
    }
}

/// The central directory of a zip archive: stored entries only (PyTorch never compresses), ZIP64 aware.
struct ZipDirectory {
    struct Entry {
        var offset: Int
        var size: Int
        var method: Int
    }

    let data: Data
    let file: String
    var entries: [String: Entry] = [:]

    init(data: Data, file: String) throws(PickleError) {
        self.data = data
        self.file = file
        let n = data.count
        func u(_ at: Int, _ width: Int) throws(PickleError) -> Int {
            guard at >= 0, at + width <= n else { throw .truncated(file: file, offset: n) }
            var v = 0
            for i in 0..<width { v |= Int(data[data.startIndex + at + i]) << (8 * i) }
            return v
        }
        // End of central directory: the last signature within the final 64 KiB + 22 bytes.
        var eocd = -1
        var at = n - 22
        while at >= max(0, n - 22 - 65_535) {
            if try u(at, 4) == 0x0605_4B50 { eocd = at; break }
            at -= 1
        }
        guard eocd >= 0 else { throw .unsupported(file: file, reason: "not a zip archive, or truncated (no end-of-directory record)") }
        var count = try u(eocd + 10, 2), directory = try u(eocd + 16, 4)
        if directory == 0xFFFF_FFFF || count == 0xFFFF {
            // ZIP64: the locator sits just before the end record.
            guard try u(eocd - 20, 4) == 0x0706_4B50 else { throw .malformed(file: file, offset: eocd, reason: "ZIP64 locator missing") }
            let record = try u(eocd - 12, 8)
            guard try u(record, 4) == 0x0606_4B50 else { throw .malformed(file: file, offset: record, reason: "ZIP64 end record missing") }
            count = try u(record + 32, 8)
            directory = try u(record + 48, 8)
        }
        var p = directory
        for _ in 0..<count {
            guard try u(p, 4) == 0x0201_4B50 else { throw .malformed(file: file, offset: p, reason: "bad central directory entry") }
            let method = try u(p + 10, 2)
            var size = try u(p + 20, 4)
            let nameLength = try u(p + 28, 2), extraLength = try u(p + 30, 2), commentLength = try u(p + 32, 2)
            var local = try u(p + 42, 4)
            guard p + 46 + nameLength <= n else { throw .truncated(file: file, offset: n) }
            let name = String(decoding: data[(data.startIndex + p + 46)..<(data.startIndex + p + 46 + nameLength)], as: UTF8.self)
            // ZIP64 extra field: 64-bit sizes and offset replace the 0xFFFFFFFF ones, in order.
            var e = p + 46 + nameLength
            let extraEnd = e + extraLength
            while e + 4 <= extraEnd {
                let id = try u(e, 2), len = try u(e + 2, 2)
                if id == 1 {
                    var f = e + 4
                    if try u(p + 24, 4) == 0xFFFF_FFFF { f += 8 }   // uncompressed size first
                    if size == 0xFFFF_FFFF { size = try u(f, 8); f += 8 }
                    if local == 0xFFFF_FFFF { local = try u(f, 8) }
                }
                e += 4 + len
            }
            guard try u(local, 4) == 0x0403_4B50 else { throw .malformed(file: file, offset: local, reason: "bad local header for \(name)") }
            let start = local + 30 + (try u(local + 26, 2)) + (try u(local + 28, 2))
            guard start + size <= n else { throw .truncated(file: file, offset: n) }
            entries[name] = Entry(offset: start, size: size, method: method)
            p += 46 + nameLength + extraLength + commentLength
        }
    }

    func contents(_ name: String) throws(PickleError) -> [UInt8] {
        guard let e = entries[name] else { throw .malformed(file: file, offset: 0, reason: "the archive has no entry \(name)") }
        guard e.method == 0 else { throw .unsupported(file: file, reason: "entry \(name) is compressed (method \(e.method)); PyTorch writes stored entries — re-save with torch.save") }
        return [UInt8](data[(data.startIndex + e.offset)..<(data.startIndex + e.offset + e.size)])
    }
}

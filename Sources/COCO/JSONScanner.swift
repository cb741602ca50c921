import Foundation

/// A small pull parser over UTF-8 JSON bytes, for the large, regular files of COCO (hundreds of
/// thousands of detections): it reads only the keys asked for and skips the rest (segmentations)
/// without building a tree. It reports only *that* the input is malformed; the callers then
/// rerun `JSONDecoder`, whose error says where and why.
struct JSONScanner {
    struct Malformed: Error {}

    let bytes: UnsafeBufferPointer<UInt8>
    var i = 0

    init(_ bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

    mutating func skipSpace() {
        while i < bytes.count, bytes[i] == 0x20 || bytes[i] == 0x0A || bytes[i] == 0x0D || bytes[i] == 0x09 { i += 1 }
    }

    mutating func expect(_ c: UInt8) throws(Malformed) {
        skipSpace()
        guard i < bytes.count, bytes[i] == c else { throw Malformed() }
        i += 1
    }

    mutating func peek() -> UInt8? {
        skipSpace()
        return i < bytes.count ? bytes[i] : nil
    }

    /// Calls `body` for each element of an array.
    mutating func array(_ body: (inout JSONScanner) throws(Malformed) -> Void) throws(Malformed) {
        try expect(UInt8(ascii: "["))
        if peek() == UInt8(ascii: "]") { i += 1; return }
        while true {
            try body(&self)
            skipSpace()
            guard i < bytes.count else { throw Malformed() }
            if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
            if bytes[i] == UInt8(ascii: "]") { i += 1; return }
            throw Malformed()
        }
    }

    /// Calls `body` with each key of an object, positioned at its value; `body` must consume the
    /// value (or call `skip`).
    mutating func object(_ body: (inout JSONScanner, String) throws(Malformed) -> Void) throws(Malformed) {
        try expect(UInt8(ascii: "{"))
        if peek() == UInt8(ascii: "}") { i += 1; return }
        while true {
            let key = try string()
            try expect(UInt8(ascii: ":"))
            try body(&self, key)
            skipSpace()
            guard i < bytes.count else { throw Malformed() }
            if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
            if bytes[i] == UInt8(ascii: "}") { i += 1; return }
            throw Malformed()
        }
    }

    mutating func string() throws(Malformed) -> String {
        try expect(UInt8(ascii: "\""))
        let start = i
        var escaped = false
        while i < bytes.count && bytes[i] != UInt8(ascii: "\"") {
            if bytes[i] == UInt8(ascii: "\\") { escaped = true; i += 1 }
            i += 1
        }
        guard i < bytes.count else { throw Malformed() }
        let raw = UnsafeBufferPointer(rebasing: bytes[start..<i])
        i += 1
        if !escaped { return String(decoding: raw, as: UTF8.self) }
        // Rare: let Foundation undo the escapes.
        var quoted = [UInt8(ascii: "\"")]
        quoted += raw
        quoted.append(UInt8(ascii: "\""))
        guard let s = try? JSONDecoder().decode(String.self, from: Data(quoted)) else { throw Malformed() }
        return s
    }

    mutating func number() throws(Malformed) -> Double {
        skipSpace()
        let start = i
        while i < bytes.count {
            let c = bytes[i]
            if (c >= 0x30 && c <= 0x39) || c == UInt8(ascii: "-") || c == UInt8(ascii: "+") || c == UInt8(ascii: ".") || c == UInt8(ascii: "e") || c == UInt8(ascii: "E") {
                i += 1
            } else {
                break
            }
        }
        guard i > start, i - start < 64 else { throw Malformed() }
        var buf = (UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        let value: Double? = withUnsafeMutableBytes(of: &buf) { raw in
            for k in start..<i { raw[k - start] = bytes[k] }
            raw[i - start] = 0
            var end: UnsafeMutablePointer<CChar>?
            let base = raw.baseAddress!.assumingMemoryBound(to: CChar.self)
            let v = strtod(base, &end)
            return end == base + (i - start) ? v : nil
        }
        guard let value else { throw Malformed() }
        return value
    }

    mutating func int() throws(Malformed) -> Int {
        let v = try number()
        guard v == v.rounded(), abs(v) < 9.0e15 else { throw Malformed() }
        return Int(v)
    }

    mutating func numbers() throws(Malformed) -> [Double] {
        var out: [Double] = []
        try array { (s: inout JSONScanner) throws(Malformed) in out.append(try s.number()) }
        return out
    }

    /// `null` → nil, else a number.
    mutating func optionalNumber() throws(Malformed) -> Double? {
        if peek() == UInt8(ascii: "n") { try literal("null"); return nil }
        return try number()
    }

    mutating func literal(_ word: String) throws(Malformed) {
        skipSpace()
        for b in word.utf8 {
            guard i < bytes.count, bytes[i] == b else { throw Malformed() }
            i += 1
        }
    }

    /// Skips any value.
    mutating func skip() throws(Malformed) {
        switch peek() {
        case UInt8(ascii: "{")?: try object { (s: inout JSONScanner, _: String) throws(Malformed) in try s.skip() }
        case UInt8(ascii: "[")?: try array { (s: inout JSONScanner) throws(Malformed) in try s.skip() }
        case UInt8(ascii: "\"")?: _ = try string()
        case UInt8(ascii: "t")?: try literal("true")
        case UInt8(ascii: "f")?: try literal("false")
        case UInt8(ascii: "n")?: try literal("null")
        case .some: _ = try number()
        case nil: throw Malformed()
        }
    }

    mutating func end() throws(Malformed) {
        skipSpace()
        guard i == bytes.count else { throw Malformed() }
    }
}

extension COCOFile {
    /// The fast path of ``parse(_:source:)``; nil when the input needs the careful parser.
    static func scan(_ data: Data) -> COCOFile? {
        data.withUnsafeBytes { raw -> COCOFile? in
            var s = JSONScanner(raw.bindMemory(to: UInt8.self))
            var images: [Image]?, annotations: [Annotation] = [], categories: [Category]?, labelled = false
            do throws(JSONScanner.Malformed) {
                try s.object { (s: inout JSONScanner, key: String) throws(JSONScanner.Malformed) in
                    switch key {
                    case "images":
                        var list: [Image] = []
                        try s.array { (s: inout JSONScanner) throws(JSONScanner.Malformed) in
                            var id: Int?, name: String?, w: Int?, h: Int?
                            try s.object { (s: inout JSONScanner, k: String) throws(JSONScanner.Malformed) in
                                switch k {
                                case "id": id = try s.int()
                                case "file_name": name = try s.string()
                                case "width": w = try s.int()
                                case "height": h = try s.int()
                                default: try s.skip()
                                }
                            }
                            guard let id, let name, let w, let h else { throw JSONScanner.Malformed() }
                            list.append(Image(id: id, fileName: name, width: w, height: h))
                        }
                        images = list
                    case "annotations":
                        labelled = true
                        try s.array { (s: inout JSONScanner) throws(JSONScanner.Malformed) in
                            var id: Int?, img: Int?, cat: Int?, bbox: [Double]?, area: Double?, crowd = 0, ignore = 0
                            try s.object { (s: inout JSONScanner, k: String) throws(JSONScanner.Malformed) in
                                switch k {
                                case "id": id = try s.int()
                                case "image_id": img = try s.int()
                                case "category_id": cat = try s.int()
                                case "bbox": bbox = try s.numbers()
                                case "area": area = try s.optionalNumber()
                                case "iscrowd": crowd = try s.int()
                                case "ignore": ignore = try s.int()
                                default: try s.skip()
                                }
                            }
                            guard let id, let img, let cat, let bbox else { throw JSONScanner.Malformed() }
                            annotations.append(Annotation(id: id, imageID: img, categoryID: cat, bbox: bbox, area: area,
                                                          isCrowd: crowd != 0, ignore: ignore != 0))
                        }
                    case "categories":
                        var list: [Category] = []
                        try s.array { (s: inout JSONScanner) throws(JSONScanner.Malformed) in
                            var id: Int?, name: String?, sup: String?
                            try s.object { (s: inout JSONScanner, k: String) throws(JSONScanner.Malformed) in
                                switch k {
                                case "id": id = try s.int()
                                case "name": name = try s.string()
                                case "supercategory": sup = s.peek() == UInt8(ascii: "\"") ? try s.string() : { try? s.skip(); return nil }()
                                default: try s.skip()
                                }
                            }
                            guard let id, let name else { throw JSONScanner.Malformed() }
                            list.append(Category(id: id, name: name, supercategory: sup))
                        }
                        categories = list
                    default:
                        try s.skip()
                    }
                }
                try s.end()
            } catch {
                return nil
            }
            guard let images, let categories else { return nil }
            return COCOFile(images: images, annotations: annotations, categories: categories, hasAnnotations: labelled)
        }
    }
}

extension Detection {
    /// The fast path of ``parse(_:source:groundTruth:)``; nil when the input needs the careful parser.
    static func scan(_ data: Data) -> [Detection]? {
        data.withUnsafeBytes { raw -> [Detection]? in
            var s = JSONScanner(raw.bindMemory(to: UInt8.self))
            var out: [Detection] = []
            do throws(JSONScanner.Malformed) {
                try s.array { (s: inout JSONScanner) throws(JSONScanner.Malformed) in
                    var img: Int?, cat: Int?, bbox: [Double]?, score: Double?
                    try s.object { (s: inout JSONScanner, k: String) throws(JSONScanner.Malformed) in
                        switch k {
                        case "image_id": img = try s.int()
                        case "category_id": cat = try s.int()
                        case "bbox": bbox = try s.numbers()
                        case "score": score = try s.number()
                        default: try s.skip()
                        }
                    }
                    guard let img, let cat, let bbox, let score else { throw JSONScanner.Malformed() }
                    out.append(Detection(imageID: img, categoryID: cat, bbox: bbox, score: score))
                }
                try s.end()
            } catch {
                return nil
            }
            return out
        }
    }
}

import Foundation

/// A small pull parser over UTF-8 JSON bytes, for the large, regular files of COCO (hundreds of
/// thousands of detections and masks): it reads only the keys asked for and skips the rest
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

    /// The bytes between a string's quotes, escapes not undone, and whether it has any.
    mutating func rawString() throws(Malformed) -> (UnsafeBufferPointer<UInt8>, escaped: Bool) {
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
        return (raw, escaped)
    }

    mutating func string() throws(Malformed) -> String {
        let (raw, escaped) = try rawString()
        if !escaped { return String(decoding: raw, as: UTF8.self) }
        // Rare: let Foundation undo the escapes.
        var quoted = [UInt8(ascii: "\"")]
        quoted += raw
        quoted.append(UInt8(ascii: "\""))
        guard let s = try? JSONDecoder().decode(String.self, from: Data(quoted)) else { throw Malformed() }
        return s
    }

    /// A string of ASCII, its escapes undone: an RLE's compressed counts, whose characters
    /// '0' … 'o' include the backslash, which JSON writes as `\\`. Escapes of non-ASCII text go
    /// to the careful parser.
    static func unescapeASCII(_ raw: UnsafeBufferPointer<UInt8>) throws(Malformed) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(raw.count)
        var k = 0
        while k < raw.count {
            guard raw[k] == UInt8(ascii: "\\") else { out.append(raw[k]); k += 1; continue }
            guard k + 1 < raw.count else { throw Malformed() }
            switch raw[k + 1] {
            case UInt8(ascii: "\\"), UInt8(ascii: "\""), UInt8(ascii: "/"): out.append(raw[k + 1]); k += 2
            case UInt8(ascii: "u"):
                guard k + 6 <= raw.count, let code = UInt8(String(decoding: UnsafeBufferPointer(rebasing: raw[k + 2..<k + 6]), as: UTF8.self), radix: 16),
                      code < 0x80 else { throw Malformed() }
                out.append(code)
                k += 6
            default: throw Malformed()
            }
        }
        return out
    }

    /// Powers of ten that are exact doubles.
    private static let exactPowersOfTen: [Double] = (0...22).map { pow(10, Double($0)) }

    mutating func number() throws(Malformed) -> Double {
        skipSpace()
        if let v = shortDecimal() { return v }
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

    /// The common case of COCO's numbers — `-?digits(.digits)?` with at most 15 digits — without
    /// strtod: the digits as an integer below 2⁵³ divided by an exact power of ten is one correctly
    /// rounded operation, hence strtod's value (Clinger's fast path). nil, consuming nothing,
    /// for anything else.
    private mutating func shortDecimal() -> Double? {
        var j = i
        let negative = j < bytes.count && bytes[j] == UInt8(ascii: "-")
        if negative { j += 1 }
        var mantissa: UInt64 = 0, digits = 0, fraction = 0, dot = false
        while j < bytes.count {
            let c = bytes[j]
            if c >= 0x30 && c <= 0x39 {
                mantissa = mantissa &* 10 &+ UInt64(c - 0x30)
                digits += 1
                if dot { fraction += 1 }
            } else if c == UInt8(ascii: "."), !dot {
                dot = true
            } else {
                break
            }
            j += 1
        }
        guard digits > 0, digits <= 15 else { return nil }
        if j < bytes.count {
            let c = bytes[j]
            if c == UInt8(ascii: "e") || c == UInt8(ascii: "E") || c == UInt8(ascii: "+") || c == UInt8(ascii: "-") || c == UInt8(ascii: ".") { return nil }
        }
        i = j
        let v = Double(mantissa) / Self.exactPowersOfTen[fraction]
        return negative ? -v : v
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

extension JSONScanner {
    /// A COCO `segmentation` (nil for `null`): polygons, or an RLE — whose counts, once read, may
    /// still not describe its size (the failure).
    mutating func segmentation() throws(Malformed) -> Result<COCOFile.Segmentation, MaskError>? {
        switch peek() {
        case UInt8(ascii: "n")?:
            try literal("null")
            return nil
        case UInt8(ascii: "[")?:
            var polygons: [[Double]] = []
            try array { (s: inout JSONScanner) throws(Malformed) in
                guard s.peek() == UInt8(ascii: "[") else { throw Malformed() }
                polygons.append(try s.numbers())
            }
            return .success(.polygons(polygons))
        case UInt8(ascii: "{")?:
            // The counts string stays in the input unless it has escapes.
            var size: [Double]?, string: UnsafeBufferPointer<UInt8>?, unescaped: [UInt8]?, list: [UInt32]?
            try object { (s: inout JSONScanner, key: String) throws(Malformed) in
                switch key {
                case "size": size = try s.numbers()
                case "counts" where s.peek() == UInt8(ascii: "\""):
                    let (raw, escaped) = try s.rawString()
                    if escaped { unescaped = try Self.unescapeASCII(raw) } else { string = raw }
                case "counts":
                    var counts: [UInt32] = []
                    try s.array { (s: inout JSONScanner) throws(Malformed) in
                        let c = try s.int()
                        guard c >= 0 && c <= Int(UInt32.max) else { throw Malformed() }
                        counts.append(UInt32(c))
                    }
                    list = counts
                default: try s.skip()
                }
            }
            guard let size, size.allSatisfy({ $0 == $0.rounded() && abs($0) < 9.0e15 }), string != nil || unescaped != nil || list != nil else {
                throw Malformed()
            }
            do throws(MaskError) {
                let (h, w) = try COCOFile.Segmentation.rleSize(size.map { Int($0) })
                if let string { return .success(.compressedRLE(try RLE(height: h, width: w, compressedUTF8: string))) }
                if let unescaped {
                    return .success(.compressedRLE(try unescaped.withUnsafeBufferPointer { (b) throws(MaskError) in
                        try RLE(height: h, width: w, compressedUTF8: b)
                    }))
                }
                return .success(.uncompressedRLE(try RLE(height: h, width: w, counts: list ?? [])))
            } catch {
                return .failure(error)
            }
        default:
            throw Malformed()
        }
    }
}

extension COCOFile {
    /// The fast path of ``parse(_:source:)``: nil when the input needs the careful parser, or the
    /// first annotation whose RLE is not a mask.
    static func scan(_ data: Data, source: String) -> Result<COCOFile, COCOError>? {
        data.withUnsafeBytes { raw -> Result<COCOFile, COCOError>? in
            var s = JSONScanner(raw.bindMemory(to: UInt8.self))
            var images: [Image]?, annotations: [Annotation] = [], categories: [Category]?, labelled = false
            var bad: COCOError?
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
                            var segmentation: Result<Segmentation, MaskError>?
                            try s.object { (s: inout JSONScanner, k: String) throws(JSONScanner.Malformed) in
                                switch k {
                                case "id": id = try s.int()
                                case "image_id": img = try s.int()
                                case "category_id": cat = try s.int()
                                case "bbox": bbox = try s.numbers()
                                case "area": area = try s.optionalNumber()
                                case "iscrowd": crowd = try s.int()
                                case "ignore": ignore = try s.int()
                                case "segmentation": segmentation = try s.segmentation()
                                default: try s.skip()
                                }
                            }
                            guard let id, let img, let cat, let bbox else { throw JSONScanner.Malformed() }
                            var segm: Segmentation?
                            switch segmentation {
                            case nil: break
                            case let .success(value)?: segm = value
                            case let .failure(error)?:
                                bad = .badAnnotation(file: source, annotationID: id, reason: error.description)
                                throw JSONScanner.Malformed()
                            }
                            annotations.append(Annotation(id: id, imageID: img, categoryID: cat, bbox: bbox, area: area,
                                                          isCrowd: crowd != 0, ignore: ignore != 0, segmentation: segm))
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
                return bad.map { .failure($0) }
            }
            guard let images, let categories else { return nil }
            return .success(COCOFile(images: images, annotations: annotations, categories: categories, hasAnnotations: labelled))
        }
    }
}

extension Detection {
    /// The fast path of ``parse(_:source:groundTruth:)``: nil when the input needs the careful
    /// parser, or the first result whose segmentation is not a compressed RLE of a mask.
    static func scan(_ data: Data, source: String) -> Result<[Detection], COCOError>? {
        data.withUnsafeBytes { raw -> Result<[Detection], COCOError>? in
            var s = JSONScanner(raw.bindMemory(to: UInt8.self))
            var out: [Detection] = []
            var bad: COCOError?
            do throws(JSONScanner.Malformed) {
                try s.array { (s: inout JSONScanner) throws(JSONScanner.Malformed) in
                    var img: Int?, cat: Int?, bbox: [Double]?, score: Double?
                    var segmentation: Result<COCOFile.Segmentation, MaskError>?
                    try s.object { (s: inout JSONScanner, k: String) throws(JSONScanner.Malformed) in
                        switch k {
                        case "image_id": img = try s.int()
                        case "category_id": cat = try s.int()
                        case "bbox": bbox = try s.numbers()
                        case "score": score = try s.number()
                        case "segmentation": segmentation = try s.segmentation()
                        default: try s.skip()
                        }
                    }
                    guard let img, let cat, let score else { throw JSONScanner.Malformed() }
                    var mask: RLE?
                    switch segmentation {
                    case nil: break
                    case let .success(segm)?:
                        guard let rle = Detection.resultMask(segm) else {
                            bad = .badDetection(file: source, index: out.count, reason: Detection.compressedOnly)
                            throw JSONScanner.Malformed()
                        }
                        mask = rle
                    case let .failure(error)?:
                        bad = .badDetection(file: source, index: out.count, reason: error.description)
                        throw JSONScanner.Malformed()
                    }
                    out.append(Detection(imageID: img, categoryID: cat, bbox: bbox.flatMap { $0.isEmpty ? nil : $0 }, segmentation: mask, score: score))
                }
                try s.end()
            } catch {
                return bad.map { .failure($0) }
            }
            return .success(out)
        }
    }
}

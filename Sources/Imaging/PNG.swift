import CPNGShim
import Foundation

/// Why a PNG could not be decoded or encoded.
public enum PNGError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The bytes are not a PNG at all.
    case notPNG(source: String, detail: String)
    /// The data ends before the image does.
    case truncated(source: String, detail: String)
    /// libpng refused the data (a bad chunk, a CRC or zlib check, an invalid header).
    case corrupt(source: String, detail: String)
    /// The arguments were invalid (channels, size).
    case invalidArgument(source: String, detail: String)
    case outOfMemory(source: String)
    /// The header declares more pixels than the decoder is allowed to allocate.
    case tooLarge(source: String, width: Int, height: Int, limit: Int)

    public var description: String {
        switch self {
        case let .notPNG(s, d): return "\(s) is not a PNG: \(d)"
        case let .truncated(s, d): return "\(s) is truncated (\(d)); re-download or re-encode the file"
        case let .corrupt(s, d): return "\(s) is a corrupt PNG: \(d)"
        case let .invalidArgument(s, d): return "cannot process \(s): \(d)"
        case let .outOfMemory(s): return "out of memory while processing \(s)"
        case let .tooLarge(s, w, h, limit):
            return "\(s) declares \(w)×\(h) pixels, more than the decoder's limit of \(limit) (a decompression bomb or a "
                + "corrupt header); if the image is real, pass a larger maxPixels to PNG.decode"
        }
    }
}

/// PNG decoding and encoding with libpng.
///
/// Decoding reads any PNG — grey, grey + alpha, RGB, RGBA, palette (with or without tRNS), 1 to
/// 16 bits, Adam7 — as OpenCV's `imread(IMREAD_COLOR)` does, which is how Detectron reads its
/// images: 3-channel 8-bit pixels, 16-bit samples cut to their high byte, alpha dropped (not
/// composited), grey repeated in the three channels. Corrupt and truncated input throws
/// ``PNGError``; libpng never prints, exits or crashes the process.
public enum PNG {
    /// The PNG file signature.
    public static let signature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]

    /// A PNG's header.
    public struct Info: Sendable, Equatable {
        public var width: Int
        public var height: Int
        /// 1, 2, 4, 8 or 16.
        public var bitDepth: Int
        /// PNG's colour type: 0 grey, 2 RGB, 3 palette, 4 grey + alpha, 6 RGB + alpha.
        public var colorType: Int
        public var interlaced: Bool

        public init(width: Int, height: Int, bitDepth: Int, colorType: Int, interlaced: Bool) {
            self.width = width
            self.height = height
            self.bitDepth = bitDepth
            self.colorType = colorType
            self.interlaced = interlaced
        }
    }

    /// The version of libpng in use.
    public static var libraryVersion: String { String(cString: sd_png_version()) }

    /// Reads the header of `data`. `source` names the input in errors (a path, say).
    public static func info(_ data: [UInt8], source: String = "PNG data") throws(PNGError) -> Info {
        let r = data.withUnsafeBufferPointer { sd_png_probe($0.baseAddress, $0.count) }
        try check(r, source: source)
        return Info(width: Int(r.width), height: Int(r.height), bitDepth: Int(r.bit_depth), colorType: Int(r.color_type), interlaced: r.interlaced != 0)
    }

    /// Decodes `data` to 3-channel 8-bit pixels in `order`. A header that declares more than
    /// `maxPixels` pixels is refused before anything is allocated.
    public static func decode(_ data: [UInt8], order: ChannelOrder = .rgb, source: String = "PNG data",
                              maxPixels: Int = JPEG.defaultMaxPixels) throws(PNGError) -> Image {
        let header = try info(data, source: source)
        let w = header.width, h = header.height
        guard w * h <= maxPixels else { throw .tooLarge(source: source, width: w, height: h, limit: maxPixels) }
        var r = sd_png_result()
        // Every byte is written by the decoder (or the array is dropped with the error).
        let pixels = [UInt8](unsafeUninitializedCapacity: w * h * 3) { dst, count in
            r = data.withUnsafeBufferPointer { src in
                sd_png_decode(src.baseAddress, src.count, order == .bgr ? 1 : 0, dst.baseAddress, dst.count)
            }
            count = dst.count
        }
        try check(r, source: source)
        return Image(width: w, height: h, channels: 3, order: order, pixels: pixels)
    }

    /// The PNG file bytes of `image` (1-channel grey or 3 channels; zlib-compressed).
    public static func encode(_ image: Image) throws(PNGError) -> [UInt8] {
        var out: UnsafeMutablePointer<UInt8>?
        var size = 0
        let r = image.pixels.withUnsafeBufferPointer { px in
            sd_png_encode(px.baseAddress, Int32(image.width), Int32(image.height), Int32(image.channels),
                          image.channels == 3 && image.order == .bgr ? 1 : 0, &out, &size)
        }
        defer { sd_png_free(out) }
        try check(r, source: "\(image.width)×\(image.height) image")
        guard let out else { throw .outOfMemory(source: "PNG encoder") }
        return Array(UnsafeBufferPointer(start: out, count: size))
    }

    private static func check(_ r: sd_png_result, source: String) throws(PNGError) {
        let message = withUnsafeBytes(of: r.message) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
        switch Int(r.status) {
        case Int(SD_PNG_OK.rawValue): return
        case Int(SD_PNG_NOT_PNG.rawValue): throw .notPNG(source: source, detail: message)
        case Int(SD_PNG_TRUNCATED.rawValue): throw .truncated(source: source, detail: message)
        case Int(SD_PNG_BAD_ARGUMENT.rawValue): throw .invalidArgument(source: source, detail: message)
        case Int(SD_PNG_NO_MEMORY.rawValue): throw .outOfMemory(source: source)
        default: throw .corrupt(source: source, detail: message)
        }
    }
}

/// Why an image file could not be read: its format's own error, or a format this engine does
/// not read.
public enum ImageFileError: Error, Equatable, Sendable, CustomStringConvertible {
    case jpeg(JPEGError)
    case png(PNGError)
    /// Neither a JPEG nor a PNG by its first bytes.
    case unknownFormat(source: String, detail: String)
    /// The file could not be read.
    case io(path: String, detail: String)

    public var description: String {
        switch self {
        case let .jpeg(e): return e.description
        case let .png(e): return e.description
        case let .unknownFormat(s, d): return "\(s) is neither a JPEG nor a PNG (\(d)); convert it to one of them"
        case let .io(p, d): return "\(p): \(d)"
        }
    }
}

/// Image files of any format this engine reads (JPEG, PNG), chosen by their content, never by
/// their name's extension: a PNG called `photo.jpg` decodes as the PNG it is.
public enum ImageFile {
    public enum Format: String, Sendable {
        case jpeg, png
    }

    /// The format of `bytes` by their signature, or nil.
    public static func format(of bytes: [UInt8]) -> Format? {
        if bytes.count >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF { return .jpeg }
        if bytes.starts(with: PNG.signature) { return .png }
        return nil
    }

    /// Decodes `bytes` (JPEG or PNG) to 3-channel 8-bit pixels in `order`.
    public static func decode(_ bytes: [UInt8], order: ChannelOrder = .rgb, source: String = "image data") throws(ImageFileError) -> Image {
        switch format(of: bytes) {
        case .jpeg?:
            do throws(JPEGError) { return try JPEG.decode(bytes, order: order, source: source) } catch { throw .jpeg(error) }
        case .png?:
            do throws(PNGError) { return try PNG.decode(bytes, order: order, source: source) } catch { throw .png(error) }
        case nil:
            let head = bytes.prefix(8).map { String(format: "%02x", $0) }.joined(separator: " ")
            throw .unknownFormat(source: source, detail: bytes.isEmpty ? "the file is empty" : "it starts with \(head)")
        }
    }

    /// Reads and decodes the file at `path`; errors name the path.
    public static func decode(contentsOf path: String, order: ChannelOrder = .rgb) throws(ImageFileError) -> Image {
        let bytes: [UInt8]
        do throws(JPEGError) {
            bytes = try JPEG.readFile(path)
        } catch {
            guard case let .io(_, detail) = error else { throw .jpeg(error) }
            throw .io(path: path, detail: detail)
        }
        return try decode(bytes, order: order, source: path)
    }
}

extension ImageFile {
    /// The names' extensions of the image formats people keep (a file with one of them is an image
    /// to report when it cannot be read; other files count only if their content is an image).
    public static let imageExtensions: Set<String> = ["jpg", "jpeg", "jpe", "png", "bmp", "tif", "tiff", "webp", "gif", "ppm", "pgm"]

    /// The images of `directory`, sorted by name: regular files that are JPEG or PNG by their
    /// first bytes, or that have an image's extension (a corrupt `photo.jpg` is listed, so that
    /// whoever reads it reports it). Errors name the directory.
    public static func list(directory: String) throws(ImageFileError) -> [String] {
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: directory)
        } catch {
            throw .io(path: directory, detail: "cannot list the directory: \(error.localizedDescription)")
        }
        return names.sorted().map { (directory as NSString).appendingPathComponent($0) }.filter { path in
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir), !isDir.boolValue else { return false }
            if imageExtensions.contains((path as NSString).pathExtension.lowercased()) { return true }
            guard let h = FileHandle(forReadingAtPath: path) else { return false }
            defer { try? h.close() }
            return format(of: [UInt8]((try? h.read(upToCount: 8)) ?? Data())) != nil
        }
    }
}

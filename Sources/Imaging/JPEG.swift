import CJPEGShim
import Foundation
import Portability

/// Why a JPEG could not be decoded or encoded.
public enum JPEGError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The bytes are not a JPEG at all.
    case notJPEG(source: String, detail: String)
    /// The data ends before the image does.
    case truncated(source: String, detail: String)
    /// libjpeg refused the data.
    case corrupt(source: String, detail: String)
    /// The arguments were invalid (scale, channels, quality, colour space).
    case invalidArgument(source: String, detail: String)
    case outOfMemory(source: String)
    /// The header declares more pixels than the decoder is allowed to allocate.
    case tooLarge(source: String, width: Int, height: Int, limit: Int)
    /// The file could not be read or written.
    case io(path: String, detail: String)

    public var description: String {
        switch self {
        case let .notJPEG(s, d): return "\(s) is not a JPEG: \(d)"
        case let .truncated(s, d): return "\(s) is truncated (\(d)); re-download or re-encode the file"
        case let .corrupt(s, d): return "\(s) is a corrupt JPEG: \(d)"
        case let .invalidArgument(s, d): return "cannot process \(s): \(d)"
        case let .outOfMemory(s): return "out of memory while processing \(s)"
        case let .tooLarge(s, w, h, limit):
            return "\(s) declares \(w)×\(h) pixels, more than the decoder's limit of \(limit) (a decompression bomb or a "
                + "corrupt header); if the image is real, pass a larger maxPixels to JPEG.decode"
        case let .io(p, d): return "\(p): \(d)"
        }
    }
}

/// Decoding and encoding with libjpeg-turbo.
///
/// Decoding gives 3-channel 8-bit HWC pixels in RGB or BGR order (grey files are expanded),
/// optionally downscaled by 1/2, 1/4 or 1/8 in the DCT domain — far cheaper than decoding at
/// full size and resizing. Corrupt, truncated and non-JPEG input throws ``JPEGError``; the C
/// library never prints, exits or crashes the process.
public enum JPEG {
    /// The DCT-domain downscale factors libjpeg can apply while decoding.
    public enum Scale: Int, Sendable, CaseIterable {
        case full = 1, half = 2, quarter = 4, eighth = 8

        /// The largest downscale that keeps both sides at least `minWidth`×`minHeight`,
        /// given the full size.
        public static func largest(keeping minWidth: Int, _ minHeight: Int, ofWidth width: Int, height: Int) -> Scale {
            for s in [Scale.eighth, .quarter, .half] {
                let w = (width + s.rawValue - 1) / s.rawValue
                let h = (height + s.rawValue - 1) / s.rawValue
                if w >= minWidth && h >= minHeight { return s }
            }
            return .full
        }
    }

    /// A JPEG's dimensions without decoding its pixels.
    public struct Info: Sendable, Equatable {
        public var width: Int
        public var height: Int
        public var components: Int
        /// Whether ``decodeYCbCr420(_:source:maxPixels:)`` can decode it: YCbCr with 2×2-subsampled
        /// chroma, more than 4 pixels wide.
        public var isYCbCr420: Bool

        public init(width: Int, height: Int, components: Int, isYCbCr420: Bool = false) {
            self.width = width
            self.height = height
            self.components = components
            self.isYCbCr420 = isYCbCr420
        }
    }

    /// The library version string.
    public static var libraryVersion: String { String(cString: sd_jpeg_version()) }

    /// Reads the header of `data`. `source` names the input in errors (a path, say).
    public static func info(_ data: [UInt8], source: String = "JPEG data") throws(JPEGError) -> Info {
        let r = data.withUnsafeBufferPointer { sd_jpeg_probe($0.baseAddress, $0.count, 1) }
        try check(r, source: source)
        return Info(width: Int(r.source_width), height: Int(r.source_height), components: Int(r.components), isYCbCr420: r.ycc420 != 0)
    }

    /// The most pixels a decode may produce unless the caller allows more: Pillow's
    /// decompression-bomb error threshold (2 × `Image.MAX_IMAGE_PIXELS`), 537 MB of RGB.
    public static let defaultMaxPixels = 178_956_970

    /// Decodes `data` to 3-channel pixels in `order`, downscaled by `scale`. A header that declares
    /// more than `maxPixels` output pixels is refused before anything is allocated.
    public static func decode(_ data: [UInt8], order: ChannelOrder = .rgb, scale: Scale = .full,
                              source: String = "JPEG data", maxPixels: Int = defaultMaxPixels) throws(JPEGError) -> Image {
        let probe = data.withUnsafeBufferPointer { sd_jpeg_probe($0.baseAddress, $0.count, Int32(scale.rawValue)) }
        try check(probe, source: source)
        let w = Int(probe.width), h = Int(probe.height)
        guard w * h <= maxPixels else { throw .tooLarge(source: source, width: w, height: h, limit: maxPixels) }
        var r = sd_jpeg_result()
        // Every byte is written by the decoder (or the array is dropped with the error).
        let pixels = [UInt8](unsafeUninitializedCapacity: w * h * 3) { dst, count in
            r = data.withUnsafeBufferPointer { src in
                sd_jpeg_decode(src.baseAddress, src.count, Int32(scale.rawValue), order == .bgr ? 1 : 0, dst.baseAddress, dst.count)
            }
            count = dst.count
        }
        try check(r, source: source)
        return Image(width: w, height: h, channels: 3, order: order, pixels: pixels)
    }

    /// Decodes a YCbCr 4:2:0 file to its Y, Cb and Cr planes, before libjpeg's chroma upsampling
    /// and colour conversion (nil for any other file: see ``Info/isYCbCr420``). Preparing a blob
    /// from the planes gives exactly the blob of the decoded BGR image, and the decode is about
    /// 10 % cheaper (the resize does the conversion as it reads each row).
    public static func decodeYCbCr420(_ data: [UInt8], source: String = "JPEG data",
                                      maxPixels: Int = defaultMaxPixels) throws(JPEGError) -> YCbCr420Planes? {
        let probe = data.withUnsafeBufferPointer { sd_jpeg_probe($0.baseAddress, $0.count, 1) }
        try check(probe, source: source)
        guard probe.ycc420 != 0 else { return nil }
        let w = Int(probe.width), h = Int(probe.height)
        guard w * h <= maxPixels else { throw .tooLarge(source: source, width: w, height: h, limit: maxPixels) }
        // libjpeg's raw-data mode writes whole 16-row groups.
        let yStride = (w + 15) / 16 * 16, cStride = ((w + 1) / 2 + 15) / 16 * 16, rows = (h + 15) / 16 * 16
        var r = sd_jpeg_result()
        // The decoder writes every byte, margins included (or the arrays go with the error).
        func uninitialised(_ n: Int) -> [UInt8] { [UInt8](unsafeUninitializedCapacity: n) { $1 = n } }
        var y = uninitialised(yStride * rows), cb = uninitialised(cStride * rows / 2), cr = uninitialised(cStride * rows / 2)
        y.withUnsafeMutableBufferPointer { yp in
            cb.withUnsafeMutableBufferPointer { bp in
                cr.withUnsafeMutableBufferPointer { rp in
                    r = data.withUnsafeBufferPointer { src in
                        sd_jpeg_decode_ycc420(src.baseAddress, src.count, yp.baseAddress, yStride, bp.baseAddress, rp.baseAddress, cStride)
                    }
                }
            }
        }
        try check(r, source: source)
        return YCbCr420Planes(width: w, height: h, yStride: yStride, cStride: cStride, y: y, cb: cb, cr: cr)
    }

    /// Reads and decodes the file at `path`; errors name the path.
    public static func decode(contentsOf path: String, order: ChannelOrder = .rgb, scale: Scale = .full) throws(JPEGError) -> Image {
        try decode(try readFile(path), order: order, scale: scale, source: path)
    }

    /// Encodes `image` at `quality` (1–100).
    public static func encode(_ image: Image, quality: Int = 90) throws(JPEGError) -> [UInt8] {
        var out: UnsafeMutablePointer<UInt8>?
        var size: UInt = 0
        let r = image.pixels.withUnsafeBufferPointer { px in
            sd_jpeg_encode(px.baseAddress, Int32(image.width), Int32(image.height), Int32(image.channels),
                           image.order == .bgr ? 1 : 0, Int32(quality), &out, &size)
        }
        defer { sd_jpeg_free(out) }
        try check(r, source: "\(image.width)×\(image.height) image")
        guard let out else { throw .outOfMemory(source: "JPEG encoder") }
        return Array(UnsafeBufferPointer(start: out, count: Int(size)))
    }

    /// Encodes `image` and writes it to `path` atomically (a temporary file renamed into place).
    public static func write(_ image: Image, to path: String, quality: Int = 90) throws(JPEGError) {
        let bytes = try encode(image, quality: quality)
        do throws(FileAccessError) {
            try Files.writeAtomically(bytes, to: path)
        } catch {
            throw .io(path: path, detail: error.description)
        }
    }

    /// The bytes of a file; the error names the path.
    public static func readFile(_ path: String) throws(JPEGError) -> [UInt8] {
        // Straight into the array (the data loader reads every image this way; going through
        // Foundation's Data costs a second copy).
        func failure(_ call: String, _ code: Int32) -> JPEGError {
            .io(path: path, detail: "cannot read: \(call): \(String(cString: strerror(code)))")
        }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw failure("open", errno) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw failure("fstat", errno) }
        let size = Int(st.st_size)
        var readError: Int32 = 0
        // A file that shrinks meanwhile gives fewer bytes (the decoder then reports it truncated);
        // a directory fails in read (EISDIR).
        let bytes = [UInt8](unsafeUninitializedCapacity: size) { buffer, count in
            count = 0
            while count < size {
                let n = read(fd, buffer.baseAddress! + count, size - count)
                if n > 0 {
                    count += n
                } else if n == 0 {
                    break
                } else if errno != EINTR {
                    readError = errno
                    break
                }
            }
        }
        guard readError == 0 else { throw failure("read", readError) }
        return bytes
    }

    private static func check(_ r: sd_jpeg_result, source: String) throws(JPEGError) {
        let message = withUnsafeBytes(of: r.message) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
        switch Int(r.status) {
        case Int(SD_JPEG_OK.rawValue): return
        case Int(SD_JPEG_NOT_JPEG.rawValue): throw .notJPEG(source: source, detail: message)
        case Int(SD_JPEG_TRUNCATED.rawValue): throw .truncated(source: source, detail: message)
        case Int(SD_JPEG_BAD_ARGUMENT.rawValue): throw .invalidArgument(source: source, detail: message)
        case Int(SD_JPEG_NO_MEMORY.rawValue): throw .outOfMemory(source: source)
        default: throw .corrupt(source: source, detail: message)
        }
    }
}

import Foundation
import Imaging
import Storage

/// One image prepared the Detectron way: BGR, PIXEL_MEANS subtracted, scaled (HWC float).
public struct PreparedImage: Sendable, ByteCodable, Equatable {
    public var image: FloatImage
    /// The scale applied to the original image.
    public var scale: Double
    /// The file it came from.
    public var source: String

    public init(image: FloatImage, scale: Double, source: String) {
        self.image = image
        self.scale = scale
        self.source = source
    }

    public func encode(to w: inout ByteWriter) {
        w.write(Int32(image.width)); w.write(Int32(image.height)); w.write(Int32(image.channels))
        w.write(scale); w.write(source)
        w.write(array: image.pixels)
    }

    public init(from r: inout ByteReader) throws(ByteReader.Truncated) {
        let w = Int(try r.read(Int32.self)), h = Int(try r.read(Int32.self)), c = Int(try r.read(Int32.self))
        scale = try r.read(Double.self)
        source = try r.read(String.self)
        let px = try r.readArray(of: Float.self)
        guard px.count == w * h * c else { throw ByteReader.Truncated() }
        image = FloatImage(width: w, height: h, channels: c, pixels: px)
    }
}

/// JPEG files run through Detectron's input pipeline: decode (BGR), optional random horizontal
/// flip, mean subtraction, resize so the shorter side is `scale` and the longer at most
/// `maxSize`. With `dctDownscale`, libjpeg-turbo decodes at 1/2, 1/4 or 1/8 when the target is
/// that much smaller — much faster, but the pixels then differ slightly from Detectron's (which
/// decodes at full size), so it is off by default. A corrupt file is an error naming it.
public struct ImageFolderDataset: TransportableDataset {
    public static let kind = "image-folder"
    public var files: [String]
    public var scale: Int
    public var maxSize: Int
    public var flipProbability: Double
    public var dctDownscale: Bool

    public init(files: [String], scale: Int = 500, maxSize: Int = 833, flipProbability: Double = 0, dctDownscale: Bool = false) {
        self.files = files
        self.scale = scale
        self.maxSize = maxSize
        self.flipProbability = flipProbability
        self.dctDownscale = dctDownscale
    }

    /// Every `.jpg`/`.jpeg` file of `directory`, sorted by name.
    public init(directory: String, scale: Int = 500, maxSize: Int = 833, flipProbability: Double = 0, dctDownscale: Bool = false) throws {
        let names = try FileManager.default.contentsOfDirectory(atPath: directory)
            .filter { $0.lowercased().hasSuffix(".jpg") || $0.lowercased().hasSuffix(".jpeg") }.sorted()
        self.init(files: names.map { (directory as NSString).appendingPathComponent($0) }, scale: scale, maxSize: maxSize,
                  flipProbability: flipProbability, dctDownscale: dctDownscale)
    }

    public var count: Int { files.count }

    public func element(at index: Int, rng: inout SampleRNG) throws -> PreparedImage {
        let path = files[index]
        let bytes = try JPEG.readFile(path)
        let info = try JPEG.info(bytes, source: path)
        let s = InputBlob.scale(width: info.width, height: info.height, target: scale, maxSize: maxSize)
        var dct = JPEG.Scale.full
        if dctDownscale {
            dct = JPEG.Scale.largest(keeping: Int((Double(info.width) * s).rounded(.up)), Int((Double(info.height) * s).rounded(.up)),
                                     ofWidth: info.width, height: info.height)
        }
        var image = try JPEG.decode(bytes, order: .bgr, scale: dct, source: path)
        if flipProbability > 0 && rng.unit() < flipProbability { image = image.flippedHorizontally() }
        // The scale is relative to the original size, as Detectron's im_scale is.
        let prepared = InputBlob.prepare(image, scale: s * Double(info.width) / Double(image.width))
        return PreparedImage(image: prepared, scale: s, source: path)
    }

    public func describe() -> [UInt8] {
        var w = ByteWriter()
        w.write(Int32(scale)); w.write(Int32(maxSize)); w.write(flipProbability); w.write(UInt8(dctDownscale ? 1 : 0))
        w.write(UInt32(files.count))
        for f in files { w.write(f) }
        return w.bytes
    }

    public init(description: [UInt8]) throws {
        var out: ImageFolderDataset?
        try description.withUnsafeBytes { raw throws in
            var r = ByteReader(raw)
            let scale = Int(try r.read(Int32.self)), maxSize = Int(try r.read(Int32.self)), flip = try r.read(Double.self)
            let dct = try r.read(UInt8.self) != 0
            let n = Int(try r.read(UInt32.self))
            var files: [String] = []
            for _ in 0..<n { files.append(try r.read(String.self)) }
            out = ImageFolderDataset(files: files, scale: scale, maxSize: maxSize, flipProbability: flip, dctDownscale: dct)
        }
        self = out!
    }
}

/// Collation helpers.
public enum Collate {
    /// Stacks prepared images into a zero-padded (N, 3, Hp, Wp) float tensor, sides rounded up to a
    /// multiple of `multiple` (Detectron's `im_list_to_blob`), with the scales.
    public static func images(_ items: [PreparedImage], multiple: Int = 32, context: any Context) throws -> (Tensor, [Double]) {
        (try InputBlob.batch(items.map(\.image), stride: multiple, context: context), items.map(\.scale))
    }
}

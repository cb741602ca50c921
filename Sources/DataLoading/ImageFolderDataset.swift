import Foundation
import Imaging
import Storage

/// One image as the loader's workers leave it: decoded — to the planes of a 4:2:0 JPEG when it is
/// one, is not flipped and the CPU converts planes fast, else to BGR and flipped if drawn — with
/// the Detectron scale.
/// ``Collate/images(_:multiple:pixelMeans:context:)`` converts, resizes, subtracts the means and
/// pads it in one pass, straight into the batch blob: no float copy of the image is ever made, and
/// process workers send back 8-bit pixels.
public struct LoadedImage: Sendable, ByteCodable, Equatable {
    public var pixels: DecodedPixels
    /// Detectron's `im_scale`: the resize relative to the file's own size.
    public var scale: Double
    /// The resize still to apply to `pixels` (`scale`, unless they were decoded downscaled).
    public var resizeScale: Double
    /// The file it came from.
    public var source: String

    public init(pixels: DecodedPixels, scale: Double, resizeScale: Double, source: String) {
        self.pixels = pixels
        self.scale = scale
        self.resizeScale = resizeScale
        self.source = source
    }

    public func encode(to w: inout ByteWriter) {
        w.write(scale); w.write(resizeScale); w.write(source)
        switch pixels {
        case let .image(image):
            w.write(UInt8(0))
            w.write(Int32(image.width)); w.write(Int32(image.height)); w.write(Int32(image.channels)); w.write(UInt8(image.order == .bgr ? 1 : 0))
            w.write(array: image.pixels)
        case let .ycbcr420(p):
            w.write(UInt8(1))
            w.write(Int32(p.width)); w.write(Int32(p.height)); w.write(Int32(p.yStride)); w.write(Int32(p.cStride))
            w.write(array: p.y); w.write(array: p.cb); w.write(array: p.cr)
        }
    }

    public init(from r: inout ByteReader) throws(ByteReader.Truncated) {
        scale = try r.read(Double.self)
        resizeScale = try r.read(Double.self)
        source = try r.read(String.self)
        let kind = try r.read(UInt8.self)
        let w = Int(try r.read(Int32.self)), h = Int(try r.read(Int32.self))
        if kind == 0 {
            let c = Int(try r.read(Int32.self))
            let order: ChannelOrder = try r.read(UInt8.self) == 1 ? .bgr : .rgb
            let px = try r.readArray(of: UInt8.self)
            guard px.count == w * h * c else { throw ByteReader.Truncated() }
            pixels = .image(Image(width: w, height: h, channels: c, order: order, pixels: px))
        } else {
            let ys = Int(try r.read(Int32.self)), cs = Int(try r.read(Int32.self))
            let y = try r.readArray(of: UInt8.self), cb = try r.readArray(of: UInt8.self), cr = try r.readArray(of: UInt8.self)
            guard YCbCr420Planes.fits(width: w, height: h, yStride: ys, cStride: cs, yCount: y.count, cbCount: cb.count, crCount: cr.count)
            else { throw ByteReader.Truncated() }
            pixels = .ycbcr420(YCbCr420Planes(width: w, height: h, yStride: ys, cStride: cs, y: y, cb: cb, cr: cr))
        }
    }
}

/// JPEG and PNG files run through Detectron's input pipeline: decode (BGR; 4:2:0 JPEGs to their planes
/// where `InputBlob.prefersPlanes`, which the collate converts exactly as libjpeg-turbo would,
/// skipping its upsampling and colour passes), optional random horizontal flip, mean subtraction, resize so the shorter side is
/// `scale` and the longer at most `maxSize`. With `dctDownscale`, libjpeg-turbo decodes at 1/2,
/// 1/4 or 1/8 when the target is that much smaller — much faster, but the pixels then differ
/// slightly from Detectron's (which decodes at full size), so it is off by default. A corrupt
/// file is an error naming it.
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

    /// Every image of `directory` (`ImageFile.list(directory:)`: JPEG and PNG by content), sorted by name.
    public init(directory: String, scale: Int = 500, maxSize: Int = 833, flipProbability: Double = 0, dctDownscale: Bool = false) throws {
        self.init(files: try ImageFile.list(directory: directory), scale: scale, maxSize: maxSize,
                  flipProbability: flipProbability, dctDownscale: dctDownscale)
    }

    public var count: Int { files.count }

    public func element(at index: Int, rng: inout SampleRNG) throws -> LoadedImage {
        let path = files[index]
        let bytes = try JPEG.readFile(path)
        // PNGs (and anything not a JPEG, which then fails naming the file) decode whole.
        guard ImageFile.format(of: bytes) == .jpeg else {
            var image = try ImageFile.decode(bytes, order: .bgr, source: path)
            if flipProbability > 0 && rng.unit() < flipProbability { image = image.flippedHorizontally() }
            let s = InputBlob.scale(width: image.width, height: image.height, target: scale, maxSize: maxSize)
            return LoadedImage(pixels: .image(image), scale: s, resizeScale: s, source: path)
        }
        let info = try JPEG.info(bytes, source: path)
        let s = InputBlob.scale(width: info.width, height: info.height, target: scale, maxSize: maxSize)
        var dct = JPEG.Scale.full
        if dctDownscale {
            dct = JPEG.Scale.largest(keeping: Int((Double(info.width) * s).rounded(.up)), Int((Double(info.height) * s).rounded(.up)),
                                     ofWidth: info.width, height: info.height)
        }
        let flip = flipProbability > 0 && rng.unit() < flipProbability
        if dct == .full && !flip && InputBlob.prefersPlanes, let planes = try JPEG.decodeYCbCr420(bytes, source: path) {
            return LoadedImage(pixels: .ycbcr420(planes), scale: s, resizeScale: s, source: path)
        }
        var image = try JPEG.decode(bytes, order: .bgr, scale: dct, source: path)
        if flip { image = image.flippedHorizontally() }
        // The scale is relative to the original size, as Detectron's im_scale is.
        return LoadedImage(pixels: .image(image), scale: s, resizeScale: s * Double(info.width) / Double(image.width), source: path)
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
    /// Detectron's blob of loaded images: each resized by its scale with `pixelMeans` subtracted
    /// (`prep_im_for_blob`), zero-padded to a (N, 3, Hp, Wp) float tensor with sides rounded up
    /// to a multiple of `multiple` (`im_list_to_blob`); and the scales.
    public static func images(_ items: [LoadedImage], multiple: Int = 32, pixelMeans: [Float] = InputBlob.detectronPixelMeans,
                              context: any Context) throws -> (Tensor, [Double]) {
        (try InputBlob.blob(items.map { ($0.pixels, $0.resizeScale) }, pixelMeans: pixelMeans, stride: multiple, context: context), items.map(\.scale))
    }
}

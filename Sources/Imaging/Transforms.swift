import Foundation
import Storage

/// A float image, height × width × channels (HWC), row-major — what Detectron's blob
/// preparation works on (BGR, mean-subtracted).
public struct FloatImage: Sendable, Equatable {
    public var width: Int
    public var height: Int
    public var channels: Int
    public var pixels: [Float]

    public init(width: Int, height: Int, channels: Int, pixels: [Float]) {
        precondition(pixels.count == width * height * channels, "pixel count does not match \(height)×\(width)×\(channels)")
        self.width = width
        self.height = height
        self.channels = channels
        self.pixels = pixels
    }
}

/// Resizing with OpenCV's `INTER_LINEAR` semantics, so inputs match Detectron's.
///
/// `cv2.resize(im, None, fx=s, fy=s)`: the output is `round(W·s) × round(H·s)` (round half to
/// even); output pixel x samples source coordinate `(x + 0.5)/s − 0.5`, bilinear, with
/// coordinates before the first pixel clamped to it and those past the last pixel taking the last
/// pixel. Float images are interpolated in float; 8-bit images are rounded to the nearest value
/// (OpenCV's fixed-point arithmetic differs by at most one grey level).
public enum Resize {
    /// The output size of `cv2.resize` with scale factors.
    public static func outputSize(width: Int, height: Int, fx: Double, fy: Double) -> (Int, Int) {
        (Int((Double(width) * fx).rounded(.toNearestOrEven)), Int((Double(height) * fy).rounded(.toNearestOrEven)))
    }

    /// Source index and weight pairs for one axis: (i0, i1, w0, w1) per output coordinate.
    static func taps(source: Int, destination: Int, inverseScale: Double) -> [(Int, Int, Float, Float)] {
        let scale = 1 / inverseScale
        return (0..<destination).map { d in
            var f = Float((Double(d) + 0.5) * scale - 0.5)
            var s = Int(f.rounded(.down))
            f -= Float(s)
            if s < 0 {
                s = 0
                f = 0
            }
            if s >= source - 1 {
                s = source - 1
                f = 0
            }
            return (s, min(s + 1, source - 1), 1 - f, f)
        }
    }

    /// Bilinear resize of HWC float pixels by (fx, fy).
    public static func linear(_ src: [Float], width: Int, height: Int, channels: Int, fx: Double, fy: Double) -> (pixels: [Float], width: Int, height: Int) {
        let (ow, oh) = outputSize(width: width, height: height, fx: fx, fy: fy)
        let xt = taps(source: width, destination: ow, inverseScale: fx)
        let yt = taps(source: height, destination: oh, inverseScale: fy)
        var out = [Float](repeating: 0, count: ow * oh * channels)
        // Horizontal pass per needed source row, then vertical, as OpenCV does.
        var rowCache: [Int: [Float]] = [:]
        func hrow(_ y: Int) -> [Float] {
            if let r = rowCache[y] { return r }
            var r = [Float](repeating: 0, count: ow * channels)
            let base = y * width * channels
            for (x, (i0, i1, w0, w1)) in xt.enumerated() {
                for c in 0..<channels {
                    r[x * channels + c] = src[base + i0 * channels + c] * w0 + src[base + i1 * channels + c] * w1
                }
            }
            if rowCache.count > 4 { rowCache.removeAll(keepingCapacity: true) }
            rowCache[y] = r
            return r
        }
        for (y, (j0, j1, v0, v1)) in yt.enumerated() {
            let r0 = hrow(j0), r1 = hrow(j1)
            let base = y * ow * channels
            for i in 0..<(ow * channels) { out[base + i] = r0[i] * v0 + r1[i] * v1 }
        }
        return (out, ow, oh)
    }

    /// Bilinear resize of an 8-bit image by (fx, fy).
    public static func linear(_ image: Image, fx: Double, fy: Double) -> Image {
        let (px, w, h) = linear(image.pixels.map(Float.init), width: image.width, height: image.height, channels: image.channels, fx: fx, fy: fy)
        return Image(width: w, height: h, channels: image.channels, order: image.order,
                     pixels: px.map { UInt8(max(0, min(255, $0.rounded(.toNearestOrEven)))) })
    }
}

/// Detectron's input blob preparation (`utils/blob.py`).
public enum InputBlob {
    /// Detectron's PIXEL_MEANS, BGR.
    public static let detectronPixelMeans: [Float] = [102.9801, 115.9465, 122.7717]

    /// The scale for an image: shorter side to `target`, unless the longer side would then exceed
    /// `maxSize` (numpy round half to even), in which case longer side to `maxSize`.
    public static func scale(width: Int, height: Int, target: Int, maxSize: Int) -> Double {
        let short = Double(min(width, height)), long = Double(max(width, height))
        var s = Double(target) / short
        if (s * long).rounded(.toNearestOrEven) > Double(maxSize) { s = Double(maxSize) / long }
        return s
    }

    /// `prep_im_for_blob`: BGR float, means subtracted *before* resizing, resized by the
    /// Detectron scale. Returns the image and its scale.
    public static func prepare(_ image: Image, pixelMeans: [Float] = detectronPixelMeans, target: Int, maxSize: Int) -> (FloatImage, Double) {
        let s = scale(width: image.width, height: image.height, target: target, maxSize: maxSize)
        return (prepare(image, pixelMeans: pixelMeans, scale: s), s)
    }

    /// BGR float, means subtracted, resized by `scale` (cv2.resize with fx = fy = scale).
    public static func prepare(_ image: Image, pixelMeans: [Float] = detectronPixelMeans, scale s: Double) -> FloatImage {
        let bgr = image.converted(to: .bgr)
        precondition(bgr.channels == 3, "Detectron's blobs are 3-channel")
        var f = [Float](repeating: 0, count: bgr.pixels.count)
        for i in 0..<(bgr.width * bgr.height) {
            for c in 0..<3 { f[3 * i + c] = Float(bgr.pixels[3 * i + c]) - pixelMeans[c] }
        }
        let (px, w, h) = Resize.linear(f, width: image.width, height: image.height, channels: 3, fx: s, fy: s)
        return FloatImage(width: w, height: h, channels: 3, pixels: px)
    }

    /// `im_list_to_blob`: images top-left in a zero (N, 3, Hp, Wp) tensor, Hp and Wp the largest
    /// sides rounded up to a multiple of `stride` (32 with FPN; 1 for none).
    public static func batch(_ images: [FloatImage], stride: Int = 32, context: any Context) throws(StorageError) -> Tensor {
        let maxH = images.map(\.height).max() ?? 0, maxW = images.map(\.width).max() ?? 0
        let hp = (maxH + stride - 1) / stride * stride, wp = (maxW + stride - 1) / stride * stride
        let t = try Tensor(.float32, shape: [images.count, 3, hp, wp], context: context)
        let out = try t.mutableData(as: Float.self)
        out.update(repeating: 0)
        for (n, im) in images.enumerated() {
            for y in 0..<im.height {
                for x in 0..<im.width {
                    for c in 0..<3 { out[((n * 3 + c) * hp + y) * wp + x] = im.pixels[(y * im.width + x) * 3 + c] }
                }
            }
        }
        return t
    }
}

extension Image {
    /// The image mirrored left to right.
    public func flippedHorizontally() -> Image {
        var out = self
        for y in 0..<height {
            for x in 0..<width {
                let src = (y * width + (width - 1 - x)) * channels, dst = (y * width + x) * channels
                for c in 0..<channels { out.pixels[dst + c] = pixels[src + c] }
            }
        }
        return out
    }
}

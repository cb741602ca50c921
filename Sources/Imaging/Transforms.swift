import CKernels
import Foundation
import Storage

/// A float image as channel planes (CHW): channel c, row y, column x at
/// `pixels[(c·height + y)·width + x]` — the layout of a blob, so batching copies whole rows.
/// Detectron's blob preparation makes them (BGR, mean-subtracted).
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
        return src.withUnsafeBufferPointer { s in
            resample(width: width, height: height, channels: channels, outWidth: ow, outHeight: oh, fx: fx, fy: fy,
                     offsets: [Float](repeating: 0, count: channels)) { y, x in s[y * width * channels + x] }
        }
    }

    /// Bilinear resize of HWC float pixels to `toWidth` × `toHeight` (`cv2.resize(src, (w, h))`:
    /// the scale factors are the size ratios).
    public static func linear(_ src: [Float], width: Int, height: Int, channels: Int, toWidth: Int, toHeight: Int) -> [Float] {
        src.withUnsafeBufferPointer { s in
            resample(width: width, height: height, channels: channels, outWidth: toWidth, outHeight: toHeight,
                     fx: Double(toWidth) / Double(width), fy: Double(toHeight) / Double(height),
                     offsets: [Float](repeating: 0, count: channels)) { y, x in s[y * width * channels + x] }.pixels
        }
    }

    /// The two-pass bilinear kernel: each needed source row is interpolated horizontally once
    /// (rows are visited in increasing order, so two row buffers suffice), then pairs of rows
    /// vertically. `sample(y, i)` reads element i of source row y; `offsets[c]` is subtracted
    /// from channel c of the result (a mean: bilinear weights sum to 1, so subtracting before or
    /// after resizing is the same).
    @inline(__always)
    static func resample(width: Int, height: Int, channels: Int, outWidth ow: Int, outHeight oh: Int, fx: Double, fy: Double, offsets: [Float],
                         sample: (Int, Int) -> Float) -> (pixels: [Float], width: Int, height: Int) {
        let xt = taps(source: width, destination: ow, inverseScale: fx)
        let yt = taps(source: height, destination: oh, inverseScale: fy)
        let rowLength = ow * channels
        var out = [Float](repeating: 0, count: oh * rowLength)
        var rows = [[Float]](repeating: [Float](repeating: 0, count: rowLength), count: 2)
        var rowOf = [-1, -1]
        func horizontal(_ y: Int, into slot: Int) {
            rows[slot].withUnsafeMutableBufferPointer { r in
                for (x, (i0, i1, w0, w1)) in xt.enumerated() {
                    let a = i0 * channels, b = i1 * channels, o = x * channels
                    for c in 0..<channels { r[o + c] = sample(y, a + c) * w0 + sample(y, b + c) * w1 }
                }
            }
            rowOf[slot] = y
        }
        out.withUnsafeMutableBufferPointer { o in
            for (y, (j0, j1, v0, v1)) in yt.enumerated() {
                // Reuse the buffers that already hold rows j0 / j1.
                var s0 = rowOf[0] == j0 ? 0 : (rowOf[1] == j0 ? 1 : -1)
                if s0 < 0 { s0 = rowOf[0] == j1 ? 1 : 0; horizontal(j0, into: s0) }
                var s1 = rowOf[0] == j1 ? 0 : (rowOf[1] == j1 ? 1 : -1)
                if s1 < 0 { s1 = 1 - s0; horizontal(j1, into: s1) }
                rows[s0].withUnsafeBufferPointer { r0 in
                    rows[s1].withUnsafeBufferPointer { r1 in
                        let base = y * rowLength
                        var i = 0
                        while i < rowLength {
                            for c in 0..<channels { o[base + i + c] = r0[i + c] * v0 + r1[i + c] * v1 - offsets[c] }
                            i += channels
                        }
                    }
                }
            }
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

    /// BGR float, means subtracted, resized by `scale` (cv2.resize with fx = fy = scale). The
    /// subtraction is folded into the resize (the same values up to float rounding: bilinear
    /// weights sum to 1).
    public static func prepare(_ image: Image, pixelMeans: [Float] = detectronPixelMeans, scale s: Double) -> FloatImage {
        let kernel = ResizeKernel(.image(image), pixelMeans: pixelMeans, scale: s)
        let pixels = [Float](unsafeUninitializedCapacity: 3 * kernel.height * kernel.width) { buf, count in
            kernel.run(into: buf.baseAddress!, planeStride: kernel.height * kernel.width, rowStride: kernel.width)
            count = buf.count
        }
        return FloatImage(width: kernel.width, height: kernel.height, channels: 3, pixels: pixels)
    }

    /// `im_list_to_blob`: images top-left in a zero (N, 3, Hp, Wp) tensor, Hp and Wp the largest
    /// sides rounded up to a multiple of `stride` (32 with FPN; 1 for none).
    public static func batch(_ images: [FloatImage], stride: Int = 32, context: any Context) throws(StorageError) -> Tensor {
        let (t, hp, wp) = try paddedBlob(sizes: images.map { ($0.width, $0.height) }, stride: stride, context: context)
        let out = try t.mutableData(as: Float.self).baseAddress!
        for (n, im) in images.enumerated() {
            precondition(im.channels == 3, "Detectron's blobs are 3-channel")
            im.pixels.withUnsafeBufferPointer { px in
                for c in 0..<3 {
                    for y in 0..<im.height {
                        (out + ((n * 3 + c) * hp + y) * wp).update(from: px.baseAddress! + (c * im.height + y) * im.width, count: im.width)
                    }
                }
            }
            zeroPadding(out + n * 3 * hp * wp, width: im.width, height: im.height, paddedWidth: wp, paddedHeight: hp)
        }
        return t
    }

    /// Prepares `images` (each by its scale, as ``prepare(_:pixelMeans:scale:)``) straight into
    /// one padded (N, 3, Hp, Wp) blob: the same blob as `batch(images.map { prepare(…) })` without
    /// the intermediate images.
    public static func blob(_ images: [(image: Image, scale: Double)], pixelMeans: [Float] = detectronPixelMeans, stride: Int = 32,
                            context: any Context) throws(StorageError) -> Tensor {
        try blob(images.map { (DecodedPixels.image($0.image), $0.scale) }, pixelMeans: pixelMeans, stride: stride, context: context)
    }

    /// Whether preparing a blob from a 4:2:0 JPEG's planes is cheaper than from its decoded image:
    /// true where the kernel converts planes with AVX-512BW. Elsewhere its baseline conversion
    /// costs more than libjpeg's own SIMD one saves (resizing from planes 1.66 ms an image against
    /// 0.87 ms from BGR, `tools/bench_decode.c … generic`).
    public static let prefersPlanes = sd_resize_planar_converts_fast() == 1

    /// The same from decoded pixels of either kind (the planes of a 4:2:0 JPEG give exactly the
    /// blob of its decoded image).
    public static func blob(_ items: [(pixels: DecodedPixels, scale: Double)], pixelMeans: [Float] = detectronPixelMeans, stride: Int = 32,
                            context: any Context) throws(StorageError) -> Tensor {
        let kernels = items.map { ResizeKernel($0.pixels, pixelMeans: pixelMeans, scale: $0.scale) }
        let (t, hp, wp) = try paddedBlob(sizes: kernels.map { ($0.width, $0.height) }, stride: stride, context: context)
        let out = try t.mutableData(as: Float.self).baseAddress!
        for (n, k) in kernels.enumerated() {
            let base = out + n * 3 * hp * wp
            k.run(into: base, planeStride: hp * wp, rowStride: wp, paddedWidth: wp, paddedHeight: hp)
        }
        return t
    }

    /// An uninitialised (N, 3, Hp, Wp) blob for images of these sizes, and (Hp, Wp).
    static func paddedBlob(sizes: [(width: Int, height: Int)], stride: Int, context: any Context) throws(StorageError) -> (Tensor, Int, Int) {
        let maxH = sizes.map(\.height).max() ?? 0, maxW = sizes.map(\.width).max() ?? 0
        let hp = (maxH + stride - 1) / stride * stride, wp = (maxW + stride - 1) / stride * stride
        return (try Tensor(.float32, shape: [sizes.count, 3, hp, wp], context: context), hp, wp)
    }

    /// Zeroes what lies right of and below a width × height image in its three padded planes.
    static func zeroPadding(_ base: UnsafeMutablePointer<Float>, width: Int, height: Int, paddedWidth wp: Int, paddedHeight hp: Int) {
        for c in 0..<3 {
            let plane = base + c * hp * wp
            if width < wp { for y in 0..<height { (plane + y * wp + width).update(repeating: 0, count: wp - width) } }
            (plane + height * wp).update(repeating: 0, count: (hp - height) * wp)
        }
    }
}

/// One image's resize for ``InputBlob``: the taps and means, run by the C kernel
/// (`sd_resize_planar`, AVX-512 where the CPU has it).
struct ResizeKernel {
    let source: DecodedPixels
    let width: Int, height: Int
    let xi0: [Int32], xi1: [Int32], xw0: [Float], xw1: [Float]
    let yi0: [Int32], yi1: [Int32], yw0: [Float], yw1: [Float]
    let means: [Float]

    init(_ pixels: DecodedPixels, pixelMeans: [Float], scale s: Double) {
        if case let .image(image) = pixels {
            precondition(image.channels == 3, "Detectron's blobs are 3-channel")
            source = .image(image.converted(to: .bgr))
        } else {
            source = pixels
        }
        precondition(pixelMeans.count == 3, "Detectron's blobs are 3-channel")
        (width, height) = Resize.outputSize(width: pixels.width, height: pixels.height, fx: s, fy: s)
        let xt = Resize.taps(source: pixels.width, destination: width, inverseScale: s)
        let yt = Resize.taps(source: pixels.height, destination: height, inverseScale: s)
        (xi0, xi1, xw0, xw1) = (xt.map { Int32($0.0) }, xt.map { Int32($0.1) }, xt.map(\.2), xt.map(\.3))
        (yi0, yi1, yw0, yw1) = (yt.map { Int32($0.0) }, yt.map { Int32($0.1) }, yt.map(\.2), yt.map(\.3))
        means = pixelMeans
    }

    /// Writes channel c, row y, column x at `dst[c·planeStride + y·rowStride + x]`, and zeros
    /// over the rest of a `paddedWidth` × `paddedHeight` region (a padded blob's image).
    func run(into dst: UnsafeMutablePointer<Float>, planeStride: Int, rowStride: Int, paddedWidth: Int? = nil, paddedHeight: Int? = nil,
             generic: Bool = false) {
        let kernel = generic ? sd_resize_planar_generic : sd_resize_planar
        let (pw, ph) = (paddedWidth ?? width, paddedHeight ?? height)
        precondition(pw >= width && ph >= height && pw <= rowStride, "padding smaller than the image or wider than a row")
        func call(_ pixels: sd_pixels) -> Int32 {
            withUnsafePointer(to: pixels) { p in
                kernel(p, xi0, xi1, xw0, xw1, width, yi0, yi1, yw0, yw1, height, pw, ph, means, dst, planeStride, rowStride)
            }
        }
        let status: Int32
        switch source {
        case let .image(image):
            status = image.pixels.withUnsafeBufferPointer { bgr in
                call(sd_pixels(ycc: 0, width: image.width, height: image.height, bgr: bgr.baseAddress, y: nil, cb: nil, cr: nil,
                               y_stride: 0, c_stride: 0))
            }
        case let .ycbcr420(p):
            status = p.y.withUnsafeBufferPointer { y in
                p.cb.withUnsafeBufferPointer { cb in
                    p.cr.withUnsafeBufferPointer { cr in
                        call(sd_pixels(ycc: 1, width: p.width, height: p.height, bgr: nil, y: y.baseAddress, cb: cb.baseAddress,
                                       cr: cr.baseAddress, y_stride: p.yStride, c_stride: p.cStride))
                    }
                }
            }
        }
        // The kernel's only failure is its scratch allocation (a few rows of floats).
        precondition(status == 0, "out of memory for a \(source.width)-pixel row buffer")
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

/// torchvision's `GeneralizedRCNNTransform` for one image (inference): RGB scaled to [0, 1],
/// normalised by `(x − mean)/std`, then resized with `F.interpolate(mode="bilinear",
/// align_corners=False, recompute_scale_factor=True)` — pixels in float32, as torch computes them.
public enum TorchvisionTransform {
    /// The resize factor (`min(minSize/short, maxSize/long)`, in double as eager PyTorch computes
    /// it) and the output size, `floor(side × factor)` per side (480 × 800/480 is 800.0000000000001:
    /// 800 rows).
    public static func resizedSize(width: Int, height: Int, minSize: Int, maxSize: Int) -> (width: Int, height: Int, scale: Double) {
        let short = Double(min(width, height)), long = Double(max(width, height))
        let scale = min(Double(minSize) / short, Double(maxSize) / long)
        return (Int((Double(width) * scale).rounded(.down)), Int((Double(height) * scale).rounded(.down)), scale)
    }

    /// ATen's bilinear taps for one axis (`compute_indices_weights_linear`): the source coordinate
    /// `(in/out)·(d + 0.5) − 0.5` in float32, clamped at 0; (i0, i1, w0, w1) per output coordinate.
    static func taps(source: Int, destination: Int) -> [(Int, Int, Float, Float)] {
        let scale = Float(source) / Float(destination)
        return (0..<destination).map { d in
            let real = max(scale * (Float(d) + 0.5) - 0.5, 0)
            let i0 = min(Int(real.rounded(.down)), source - 1)
            let lambda = min(max(real - Float(i0), 0), 1)
            return (i0, i0 + (i0 < source - 1 ? 1 : 0), 1 - lambda, lambda)
        }
    }

    /// The normalised, resized image (channel planes, RGB) and the resize factor.
    public static func prepare(_ image: Image, mean: [Float], std: [Float], minSize: Int, maxSize: Int) -> (FloatImage, Double) {
        let rgb = image.converted(to: .rgb)
        precondition(rgb.channels == 3 && mean.count == 3 && std.count == 3, "torchvision's detectors take 3-channel images")
        let (width, height) = (rgb.width, rgb.height)
        let (ow, oh, scale) = resizedSize(width: width, height: height, minSize: minSize, maxSize: maxSize)
        var normalised = [Float](repeating: 0, count: rgb.pixels.count)
        for i in 0..<rgb.pixels.count {
            let c = i % 3
            normalised[i] = (Float(rgb.pixels[i]) / 255 - mean[c]) / std[c]
        }
        let xt = taps(source: width, destination: ow), yt = taps(source: height, destination: oh)
        var out = [Float](repeating: 0, count: oh * ow * 3)
        for (y, (j0, j1, v0, v1)) in yt.enumerated() {
            for (x, (i0, i1, u0, u1)) in xt.enumerated() {
                for c in 0..<3 {
                    let top = normalised[(j0 * width + i0) * 3 + c] * u0 + normalised[(j0 * width + i1) * 3 + c] * u1
                    let bottom = normalised[(j1 * width + i0) * 3 + c] * u0 + normalised[(j1 * width + i1) * 3 + c] * u1
                    out[(c * oh + y) * ow + x] = top * v0 + bottom * v1
                }
            }
        }
        return (FloatImage(width: ow, height: oh, channels: 3, pixels: out), scale)
    }
}

import Foundation
@testable import Imaging
import Portability
import Storage
import Testing

struct ResizeCase: Decodable {
    var width: Int, height: Int, channels: Int
    var fx: Double, fy: Double
    var dtype: String
    var input: [Float], output: [Float]
    var out_width: Int, out_height: Int
}

/// Where two float arrays first differ bit for bit, and in how many places — a line instead of
/// two million-element arrays in a failure message; nil when they are identical.
func bitwiseDifference(_ a: [Float], _ b: [Float]) -> String? {
    guard a.count == b.count else { return "\(a.count) values against \(b.count)" }
    let differing = a.indices.filter { a[$0].bitPattern != b[$0].bitPattern }
    guard let first = differing.first else { return nil }
    return "\(differing.count) of \(a.count) values differ, the first at \(first): \(a[first]) against \(b[first])"
}

let resizeCases = (0..<6).flatMap { i in ["uint8", "float32"].map { "case\(i)_\($0)" } }

@Suite("Image transforms")
struct TransformTests {
    @Test("resize matches OpenCV INTER_LINEAR (≤ 1 grey level on 8-bit, ≤ 1e-3 on float)", arguments: resizeCases)
    func resizeMatchesOpenCV(_ name: String) throws {
        let url = try #require(Bundle.module.url(forResource: name, withExtension: "json", subdirectory: "Fixtures/resize"))
        let c = try JSONDecoder().decode(ResizeCase.self, from: Data(contentsOf: url))
        if c.dtype == "uint8" {
            let img = Image(width: c.width, height: c.height, channels: 3, pixels: c.input.map { UInt8($0) })
            let out = Resize.linear(img, fx: c.fx, fy: c.fy)
            #expect(out.width == c.out_width && out.height == c.out_height)
            let worst = zip(out.pixels, c.output).map { abs(Float($0) - $1) }.max() ?? 0
            #expect(worst <= 1, "max difference \(worst) grey levels")
        } else {
            let (px, w, h) = Resize.linear(c.input, width: c.width, height: c.height, channels: 3, fx: c.fx, fy: c.fy)
            #expect(w == c.out_width && h == c.out_height)
            let worst = zip(px, c.output).map { abs($0 - $1) }.max() ?? 0
            #expect(worst <= 1e-3, "max difference \(worst)")
        }
    }

    @Test("the Detectron scale rule: shorter side to SCALE unless the longer would pass MAX_SIZE")
    func scaleRule() {
        #expect(InputBlob.scale(width: 640, height: 480, target: 500, maxSize: 833) == 500.0 / 480)
        // 1000×400: 500/400 · 1000 = 1250 > 833, so the longer side goes to 833.
        #expect(InputBlob.scale(width: 1000, height: 400, target: 500, maxSize: 833) == 833.0 / 1000)
        // Exactly at the limit after rounding stays on the shorter side.
        #expect(InputBlob.scale(width: 833, height: 500, target: 500, maxSize: 833) == 1)
    }

    @Test("prepare subtracts BGR means before resizing; batching pads to a multiple of 32 at the top left")
    func blob() throws {
        var img = Image(width: 4, height: 2, channels: 3, order: .rgb, fill: 0)
        for i in 0..<8 { img.pixels[3 * i] = 200 }  // red in RGB
        let (f, s) = InputBlob.prepare(img, target: 2, maxSize: 1000)
        #expect(s == 1)
        #expect(f.pixels[0] == 0 - InputBlob.detectronPixelMeans[0])     // B
        #expect(f.pixels[2 * f.height * f.width] == 200 - InputBlob.detectronPixelMeans[2])   // R: plane 2
        let other = FloatImage(width: 3, height: 5, channels: 3, pixels: [Float](repeating: 1, count: 45))
        let t = try InputBlob.batch([f, other], context: CPUContext())
        #expect(t.shape == [2, 3, 32, 32])
        let d = try t.data(as: Float.self)
        #expect(d[0] == f.pixels[0])
        #expect(d[4] == 0)                        // padding to the right of image 0
        #expect(d[3 * 32 * 32 + 4 * 32 + 2] == 1) // image 1, channel 0, row 4, col 2
    }

    @Test("prepare's fused mean subtraction equals subtracting first, then resizing (the OpenCV-checked path)")
    func fusedPrepare() {
        var img = Image(width: 37, height: 23, channels: 3, order: .bgr, fill: 0)
        for i in 0..<img.pixels.count { img.pixels[i] = UInt8((i * 37) % 251) }
        for s in [0.5, 1.0417, 1.7] {
            let fused = InputBlob.prepare(img, scale: s)
            var f = [Float](repeating: 0, count: img.pixels.count)
            for i in 0..<(37 * 23) { for c in 0..<3 { f[3 * i + c] = Float(img.pixels[3 * i + c]) - InputBlob.detectronPixelMeans[c] } }
            let (px, w, h) = Resize.linear(f, width: 37, height: 23, channels: 3, fx: s, fy: s)
            #expect(fused.width == w && fused.height == h)
            // px is HWC; fused holds channel planes.
            var worst: Float = 0
            for c in 0..<3 { for i in 0..<(w * h) { worst = max(worst, abs(fused.pixels[c * w * h + i] - px[3 * i + c])) } }
            #expect(worst < 1e-3)
        }
    }

    /// The resize kernel's arithmetic written out in scalar Swift: horizontal taps on each
    /// source row, then rows blended and the mean subtracted, one rounding per operation.
    static func referencePrepare(_ img: Image, scale s: Double) -> [Float] {
        let (w, h) = Resize.outputSize(width: img.width, height: img.height, fx: s, fy: s)
        let xt = Resize.taps(source: img.width, destination: w, inverseScale: s)
        let yt = Resize.taps(source: img.height, destination: h, inverseScale: s)
        func horizontal(_ row: Int, _ c: Int, _ x: Int) -> Float {
            let p = img.pixels, base = row * img.width * 3 + c
            let a = Float(p[base + 3 * xt[x].0]) * xt[x].2
            let b = Float(p[base + 3 * xt[x].1]) * xt[x].3
            return a + b
        }
        var out = [Float](repeating: 0, count: 3 * w * h)
        for c in 0..<3 {
            for y in 0..<h {
                for x in 0..<w {
                    let top = horizontal(yt[y].0, c, x) * yt[y].2, bottom = horizontal(yt[y].1, c, x) * yt[y].3
                    out[(c * h + y) * w + x] = (top + bottom) - InputBlob.detectronPixelMeans[c]
                }
            }
        }
        return out
    }

    @Test("the resize kernel (AVX-512 and baseline builds) is bitwise the scalar reference: up, down past the permute window, tails",
          arguments: [(37, 23, 0.5), (37, 23, 1.0417), (37, 23, 1.7), (640, 480, 500.0 / 480), (101, 7, 0.3), (9, 5, 3.0), (70, 40, 0.55)])
    func kernelBitwise(_ width: Int, _ height: Int, _ s: Double) {
        var img = Image(width: width, height: height, channels: 3, order: .bgr, fill: 0)
        for i in 0..<img.pixels.count { img.pixels[i] = UInt8((i * 37 + i / 7) % 251) }
        let expected = Self.referencePrepare(img, scale: s)
        #expect(bitwiseDifference(InputBlob.prepare(img, scale: s).pixels, expected) == nil)
        let k = ResizeKernel(.image(img), pixelMeans: InputBlob.detectronPixelMeans, scale: s)
        var generic = [Float](repeating: .nan, count: expected.count)
        generic.withUnsafeMutableBufferPointer { k.run(into: $0.baseAddress!, planeStride: k.width * k.height, rowStride: k.width, generic: true) }
        #expect(bitwiseDifference(generic, expected) == nil)
    }

    @Test("a 4:2:0 JPEG's planes make exactly the blob of its decoded BGR image (AVX-512 and baseline; odd sizes, edges)",
          arguments: [(5, 5), (6, 3), (7, 2), (37, 23), (64, 48), (161, 121), (640, 480)])
    func planesBlobEqualsImageBlob(_ width: Int, _ height: Int) throws {
        var rng = SplitMix64(seed: UInt64(width * 1000 + height))
        var img = Image(width: width, height: height, channels: 3, order: .rgb, fill: 0)
        // Smooth colour with noise, so the chroma varies from sample to sample.
        for y in 0..<height {
            for x in 0..<width {
                for c in 0..<3 { img.pixels[(y * width + x) * 3 + c] = UInt8(truncatingIfNeeded: (x * (c + 3) + y * (5 - c)) % 200 + Int(rng.next() % 56)) }
            }
        }
        let bytes = try JPEG.encode(img, quality: 90)
        #expect(try JPEG.info(bytes).isYCbCr420)
        let planes = try #require(try JPEG.decodeYCbCr420(bytes))
        let bgr = try JPEG.decode(bytes, order: .bgr)
        for s in [500.0 / Double(min(width, height)), 0.37, 1.0] {
            let ctx = CPUContext()
            let fromPlanes = try InputBlob.blob([(DecodedPixels.ycbcr420(planes), s)], context: ctx)
            let fromImage = try InputBlob.blob([(bgr, s)], context: ctx)
            #expect(bitwiseDifference(Array(try fromPlanes.data(as: Float.self)), Array(try fromImage.data(as: Float.self))) == nil, "scale \(s)")
            let k = ResizeKernel(.ycbcr420(planes), pixelMeans: InputBlob.detectronPixelMeans, scale: s)
            var generic = [Float](repeating: .nan, count: 3 * k.width * k.height)
            generic.withUnsafeMutableBufferPointer { k.run(into: $0.baseAddress!, planeStride: k.width * k.height, rowStride: k.width, generic: true) }
            #expect(bitwiseDifference(generic, InputBlob.prepare(bgr, scale: s).pixels) == nil, "baseline build, scale \(s)")
        }
    }

    @Test("a 4:2:0 decode leaves zeros right of and below the image, where libjpeg writes block padding or nothing")
    func planeMarginsZero() throws {
        var img = Image(width: 37, height: 23, channels: 3, order: .rgb, fill: 0)
        for i in 0..<img.pixels.count { img.pixels[i] = UInt8(40 + i % 200) }
        let p = try #require(try JPEG.decodeYCbCr420(try JPEG.encode(img, quality: 90)))
        func margin(_ plane: [UInt8], _ stride: Int, _ w: Int, _ h: Int) -> [UInt8] {
            (0..<(plane.count / stride)).flatMap { y in (0..<stride).filter { y >= h || $0 >= w }.map { plane[y * stride + $0] } }
        }
        let (cw, ch) = ((p.width + 1) / 2, (p.height + 1) / 2)
        #expect(p.y.count == p.yStride * 32 && margin(p.y, p.yStride, p.width, p.height).allSatisfy { $0 == 0 })
        #expect(margin(p.cb, p.cStride, cw, ch).allSatisfy { $0 == 0 } && margin(p.cr, p.cStride, cw, ch).allSatisfy { $0 == 0 })
        #expect(p.y[0] != 0)
    }

    @Test("planes of random bytes (odd size, every kind of neighbourhood): the AVX-512 conversion is bitwise the baseline one")
    func planesRandomBytes() {
        var rng = SplitMix64(seed: 42)
        let (w, h) = (515, 517)
        let ys = (w + 15) / 16 * 16, cs = ((w + 1) / 2 + 15) / 16 * 16, rows = (h + 15) / 16 * 16
        func bytes(_ n: Int) -> [UInt8] { (0..<n).map { _ in UInt8(truncatingIfNeeded: rng.next()) } }
        let planes = YCbCr420Planes(width: w, height: h, yStride: ys, cStride: cs, y: bytes(ys * rows), cb: bytes(cs * rows / 2), cr: bytes(cs * rows / 2))
        for s in [1.0, 0.6] {
            let k = ResizeKernel(.ycbcr420(planes), pixelMeans: InputBlob.detectronPixelMeans, scale: s)
            var fast = [Float](repeating: .nan, count: 3 * k.width * k.height), generic = fast
            fast.withUnsafeMutableBufferPointer { k.run(into: $0.baseAddress!, planeStride: k.width * k.height, rowStride: k.width) }
            generic.withUnsafeMutableBufferPointer { k.run(into: $0.baseAddress!, planeStride: k.width * k.height, rowStride: k.width, generic: true) }
            #expect(bitwiseDifference(fast, generic) == nil, "scale \(s)")
        }
    }

    @Test("every (Cb, Cr) pair through the AVX-512BW conversion gives the baseline's integers (its 16-bit formulas are exact)")
    func everyChromaPair() {
        // Chroma constant over 3 × 3 blocks, one block per (Cb, Cr) pair: a block's centre sample
        // upsamples to exactly its pair, so both builds convert all 65,536 pairs; Y is random.
        var rng = SplitMix64(seed: 7)
        let cw = 3 * 256, ch = 3 * 256, (w, h) = (2 * cw, 2 * ch)
        let ys = w, cs = cw  // both multiples of 16
        var cb = [UInt8](repeating: 0, count: cs * ch), cr = cb
        for row in 0..<ch {
            for col in 0..<cw {
                cb[row * cs + col] = UInt8(row / 3)
                cr[row * cs + col] = UInt8(col / 3)
            }
        }
        let y = (0..<(ys * h)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        let planes = YCbCr420Planes(width: w, height: h, yStride: ys, cStride: cs, y: y, cb: cb, cr: cr)
        let k = ResizeKernel(.ycbcr420(planes), pixelMeans: [0, 0, 0], scale: 1)
        var fast = [Float](repeating: .nan, count: 3 * w * h), generic = fast
        fast.withUnsafeMutableBufferPointer { k.run(into: $0.baseAddress!, planeStride: w * h, rowStride: w) }
        generic.withUnsafeMutableBufferPointer { k.run(into: $0.baseAddress!, planeStride: w * h, rowStride: w, generic: true) }
        #expect(bitwiseDifference(fast, generic) == nil)
    }

    @Test("files the planar path does not handle say so: 4 pixels wide or less (libjpeg replicates their chroma), grey")
    func planesRefused() throws {
        let narrow = try JPEG.encode(Image(width: 4, height: 9, channels: 3, order: .rgb, fill: 90), quality: 90)
        #expect(try JPEG.info(narrow).isYCbCr420 == false)
        #expect(try JPEG.decodeYCbCr420(narrow) == nil)
        let grey = try JPEG.encode(Image(width: 32, height: 16, channels: 1, fill: 90), quality: 90)
        #expect(try JPEG.decodeYCbCr420(grey) == nil)
    }

    @Test("blob() prepares straight into the padded blob: the same tensor as prepare + batch")
    func blobEqualsBatch() throws {
        var a = Image(width: 37, height: 23, channels: 3, order: .bgr, fill: 0), b = Image(width: 20, height: 31, channels: 3, order: .rgb, fill: 0)
        for i in 0..<a.pixels.count { a.pixels[i] = UInt8(i % 253) }
        for i in 0..<b.pixels.count { b.pixels[i] = UInt8((i * 7) % 251) }
        let ctx = CPUContext()
        let direct = try InputBlob.blob([(a, 1.3), (b, 0.9)], context: ctx)
        let twoStep = try InputBlob.batch([InputBlob.prepare(a, scale: 1.3), InputBlob.prepare(b, scale: 0.9)], context: ctx)
        #expect(direct.shape == twoStep.shape && direct.shape == [2, 3, 32, 64])
        #expect(bitwiseDifference(Array(try direct.data(as: Float.self)), Array(try twoStep.data(as: Float.self))) == nil)
    }

    @Test("the kernel writes the padding as zeros over whatever memory held (streamed and plain stores, both builds)")
    func paddingOverReusedMemory() throws {
        var a = Image(width: 301, height: 207, channels: 3, order: .bgr, fill: 0), b = Image(width: 150, height: 260, channels: 3, order: .bgr, fill: 0)
        for i in 0..<a.pixels.count { a.pixels[i] = UInt8(i % 253) }
        for i in 0..<b.pixels.count { b.pixels[i] = UInt8((i * 7) % 251) }
        let expected = try InputBlob.batch([InputBlob.prepare(a, scale: 1.7), InputBlob.prepare(b, scale: 1.1)], context: CPUContext())
        // A block of the blob's size full of NaN goes back to the cache, and the blob is made in it.
        let ctx = CPUContext(cacheBytes: 64 << 20)
        var stale: UnsafeRawPointer?
        do {
            let t = try Tensor(.float32, shape: expected.shape, context: ctx)
            try t.mutableData(as: Float.self).update(repeating: .nan)
            stale = try t.rawData()
        }
        let direct = try InputBlob.blob([(a, 1.7), (b, 1.1)], context: ctx)
        #expect(try direct.rawData() == stale)
        #expect(bitwiseDifference(Array(try direct.data(as: Float.self)), Array(try expected.data(as: Float.self))) == nil)
        // Rows wider than the padded region, not vector-aligned: plain stores; what lies past the
        // region stays untouched.
        let k = ResizeKernel(.image(a), pixelMeans: InputBlob.detectronPixelMeans, scale: 0.5)
        let image = InputBlob.prepare(a, scale: 0.5).pixels
        let (pw, ph, rs) = (k.width + 5, k.height + 3, k.width + 9)
        for generic in [false, true] {
            var out = [Float](repeating: .nan, count: 3 * ph * rs)
            out.withUnsafeMutableBufferPointer {
                k.run(into: $0.baseAddress!, planeStride: ph * rs, rowStride: rs, paddedWidth: pw, paddedHeight: ph, generic: generic)
            }
            var want = [Float](repeating: .nan, count: out.count)
            for c in 0..<3 {
                for y in 0..<ph {
                    for x in 0..<pw {
                        want[(c * ph + y) * rs + x] = y < k.height && x < k.width ? image[(c * k.height + y) * k.width + x] : 0
                    }
                }
            }
            #expect(bitwiseDifference(out, want) == nil, generic ? "baseline build" : "dispatched build")
        }
    }

    @Test("flipping twice is the identity")
    func flip() {
        var img = Image(width: 5, height: 3, channels: 3, fill: 0)
        for i in 0..<img.pixels.count { img.pixels[i] = UInt8(i % 251) }
        let once = img.flippedHorizontally()
        #expect(once != img)
        #expect(once.pixels[0..<3] == img.pixels[12..<15])
        #expect(once.flippedHorizontally() == img)
    }
}

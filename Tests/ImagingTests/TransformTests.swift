import Foundation
import Imaging
import Storage
import Testing

struct ResizeCase: Decodable {
    var width: Int, height: Int, channels: Int
    var fx: Double, fy: Double
    var dtype: String
    var input: [Float], output: [Float]
    var out_width: Int, out_height: Int
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
        #expect(f.pixels[2] == 200 - InputBlob.detectronPixelMeans[2])   // R
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
            #expect(zip(fused.pixels, px).map { abs($0 - $1) }.max()! < 1e-3)
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

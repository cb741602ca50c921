import Foundation
import Imaging
import Storage
import Testing

/// A smooth colour test pattern (JPEG-friendly, so round trips are close).
func pattern(width: Int, height: Int) -> Image {
    var px = [UInt8](repeating: 0, count: width * height * 3)
    for y in 0..<height {
        for x in 0..<width {
            let i = (y * width + x) * 3
            px[i] = UInt8(255 * x / max(1, width - 1))
            px[i + 1] = UInt8(255 * y / max(1, height - 1))
            px[i + 2] = 128
        }
    }
    return Image(width: width, height: height, pixels: px)
}

func fixture(_ name: String) throws -> [UInt8] {
    let url = try #require(Bundle.module.url(forResource: name, withExtension: nil, subdirectory: "Fixtures"))
    return [UInt8](try Data(contentsOf: url))
}

@Suite("JPEG")
struct JPEGTests {
    @Test("encode → decode round trip stays within JPEG error")
    func roundTrip() throws {
        let img = pattern(width: 64, height: 48)
        let bytes = try JPEG.encode(img, quality: 95)
        #expect(bytes.starts(with: [0xFF, 0xD8]))
        let back = try JPEG.decode(bytes)
        #expect(back.width == 64 && back.height == 48 && back.channels == 3)
        let meanError = zip(back.pixels, img.pixels).map { abs(Int($0) - Int($1)) }.reduce(0, +) / img.pixels.count
        #expect(meanError <= 2)
        #expect(try JPEG.info(bytes) == JPEG.Info(width: 64, height: 48, components: 3, isYCbCr420: true))
    }

    @Test("BGR decoding swaps the channels of RGB decoding")
    func bgr() throws {
        let bytes = try JPEG.encode(pattern(width: 32, height: 16))
        let rgb = try JPEG.decode(bytes, order: .rgb)
        let bgr = try JPEG.decode(bytes, order: .bgr)
        #expect(bgr.order == .bgr)
        #expect(rgb.converted(to: .bgr).pixels == bgr.pixels)
    }

    @Test("DCT-domain downscaling gives the scaled sizes", arguments: JPEG.Scale.allCases)
    func scaled(_ scale: JPEG.Scale) throws {
        let bytes = try JPEG.encode(pattern(width: 640, height: 480))
        let img = try JPEG.decode(bytes, scale: scale)
        #expect(img.width == 640 / scale.rawValue && img.height == 480 / scale.rawValue)
        #expect(JPEG.Scale.largest(keeping: 300, 200, ofWidth: 640, height: 480) == .half)
    }

    @Test("a committed Pillow-encoded fixture decodes to the expected pixels")
    func pillowFixture() throws {
        // tools/make_jpeg_fixtures.py: 16×8, left half red, right half blue, quality 95, 4:4:4.
        let img = try JPEG.decode(try fixture("red_blue_16x8.jpg"))
        #expect(img.width == 16 && img.height == 8)
        let left = Array(img.pixels[(3 * 16 + 2) * 3..<(3 * 16 + 2) * 3 + 3])
        let right = Array(img.pixels[(3 * 16 + 13) * 3..<(3 * 16 + 13) * 3 + 3])
        #expect(abs(Int(left[0]) - 255) < 8 && left[1] < 8 && left[2] < 8, "\(left)")
        #expect(right[0] < 8 && right[1] < 8 && abs(Int(right[2]) - 255) < 8, "\(right)")
    }

    @Test("grey and progressive JPEGs decode to three channels")
    func greyAndProgressive() throws {
        let grey = try JPEG.decode(try fixture("grey_8x8.jpg"))
        #expect(grey.channels == 3 && grey.width == 8)
        #expect(grey.pixels[0] == grey.pixels[1] && grey.pixels[1] == grey.pixels[2])
        let prog = try JPEG.decode(try fixture("progressive_32x24.jpg"))
        #expect(prog.width == 32 && prog.height == 24)
    }

    @Test("non-JPEG input is a typed error")
    func notJPEG() throws {
        #expect(throws: JPEGError.self) { try JPEG.decode(Array("PNG not a jpeg".utf8), source: "x.png") }
        do {
            _ = try JPEG.decode([], source: "empty.jpg")
            Issue.record("empty input decoded")
        } catch {
            guard case let .notJPEG(source, _) = error else { Issue.record("wrong error \(error)"); return }
            #expect(source == "empty.jpg")
            #expect(error.description.hasPrefix("empty.jpg is not a JPEG"))
        }
    }

    @Test("truncated input is a typed error at every cut, never a crash or grey fill")
    func truncated() throws {
        let bytes = try JPEG.encode(pattern(width: 64, height: 64))
        for cut in stride(from: 2, to: bytes.count - 2, by: max(1, bytes.count / 40)) {
            do {
                _ = try JPEG.decode(Array(bytes[..<cut]), source: "cut\(cut).jpg")
                Issue.record("truncated at \(cut) of \(bytes.count) decoded without error")
            } catch {
                switch error {
                case .truncated, .corrupt: #expect(error.description.contains("cut\(cut).jpg"))
                default: Issue.record("cut \(cut): unexpected \(error)")
                }
            }
        }
    }

    @Test("corrupted bytes give a typed error or a decoded image of a sane size, never a crash")
    func corrupted() throws {
        let bytes = try JPEG.encode(pattern(width: 64, height: 64))
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<200 {
            var bad = bytes
            for _ in 0..<8 { bad[Int.random(in: 2..<bad.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng) }
            // Damage in the entropy-coded data may legitimately decode (libjpeg warns); damage
            // that reaches the headers must be an error. Either way the process survives.
            if let img = try? JPEG.decode(bad, source: "bad.jpg") {
                #expect(img.pixels.count == img.width * img.height * 3)
            }
        }
        // A frame header that declares a zero-height image is refused.
        var header = bytes
        let sof = try #require((2..<header.count - 1).first { header[$0] == 0xFF && header[$0 + 1] == 0xC0 })
        header[sof + 5] = 0  // height, high byte
        header[sof + 6] = 0  // height, low byte
        do {
            _ = try JPEG.decode(header, source: "header.jpg")
            Issue.record("a zero-height frame decoded")
        } catch {
            guard case .corrupt = error else { Issue.record("unexpected \(error)"); return }
            #expect(error.description.hasPrefix("header.jpg is a corrupt JPEG: "))
        }
    }

    @Test("a header declaring a huge image is refused before allocating (a gap found while writing the JPEG fuzz target)")
    func decompressionBomb() throws {
        var bytes = try JPEG.encode(pattern(width: 16, height: 16))
        let sof = try #require((2..<bytes.count - 1).first { bytes[$0] == 0xFF && bytes[$0 + 1] == 0xC0 })
        for (offset, value) in [(5, 0xEA), (6, 0x60), (7, 0xEA), (8, 0x60)] { bytes[sof + offset] = UInt8(value) }  // 60000×60000
        #expect(throws: JPEGError.tooLarge(source: "bomb.jpg", width: 60000, height: 60000, limit: JPEG.defaultMaxPixels)) {
            _ = try JPEG.decode(bytes, source: "bomb.jpg")
        }
        // The limit applies to the output: 16×16 is over a 100-pixel limit, its 1/2 decode (8×8) is not.
        let small = try JPEG.encode(pattern(width: 16, height: 16))
        #expect(throws: JPEGError.tooLarge(source: "b", width: 16, height: 16, limit: 100)) {
            _ = try JPEG.decode(small, source: "b", maxPixels: 100)
        }
        #expect(try JPEG.decode(small, scale: .half, maxPixels: 100).width == 8)
    }

    @Test("a missing file names the path")
    func missingFile() {
        #expect(throws: JPEGError.self) { try JPEG.decode(contentsOf: "/nonexistent/photo.jpg") }
        do {
            _ = try JPEG.decode(contentsOf: "/nonexistent/photo.jpg")
        } catch {
            #expect(error.description.hasPrefix("/nonexistent/photo.jpg: cannot read"))
        }
    }

    @Test("encoding refuses bad arguments; the image converts to a uint8 HWC tensor")
    func encodeArgumentsAndTensor() throws {
        let img = Image(width: 4, height: 2, channels: 3, fill: 7)
        #expect(throws: JPEGError.self) { try JPEG.encode(img, quality: 0) }
        let ctx = CPUContext()
        let t = try img.tensor(context: ctx)
        #expect(t.shape == [2, 4, 3] && t.dtype == .uint8)
        #expect(try t.toArray(as: UInt8.self) == img.pixels)
        let path = NSTemporaryDirectory() + "/sd-jpeg-\(UInt32.random(in: 0...UInt32.max)).jpg"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try JPEG.write(pattern(width: 8, height: 8), to: path)
        #expect(try JPEG.decode(contentsOf: path).width == 8)
    }
}

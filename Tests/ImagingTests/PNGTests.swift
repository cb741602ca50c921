import Foundation
import Imaging
import Testing

/// The fixtures of tools/make_png_fixtures.py: each kind of PNG and, beside it, the pixels
/// OpenCV's `cv2.imread(IMREAD_COLOR)` gives for it (`NAME.bgr`).
struct PNGFixture: Sendable, CustomStringConvertible {
    let name: String
    let width: Int, height: Int, bitDepth: Int, colorType: Int, interlaced: Bool
    var description: String { name }

    static let all: [PNGFixture] = {
        guard let url = Bundle.module.url(forResource: "expected", withExtension: "json", subdirectory: "Fixtures/png"),
              let data = try? Data(contentsOf: url),
              let root = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let files = root["files"] as? [String: [String: Any]] else { return [] }
        return files.keys.sorted().compactMap { name in
            let f = files[name]!
            guard let w = f["width"] as? Int, let h = f["height"] as? Int, let d = f["bit_depth"] as? Int,
                  let c = f["color_type"] as? Int, let i = f["interlace"] as? Int else { return nil }
            return PNGFixture(name: name, width: w, height: h, bitDepth: d, colorType: c, interlaced: i == 1)
        }
    }()

    var expectedBGR: String { (name as NSString).deletingPathExtension + ".bgr" }
}

@Suite("PNG")
struct PNGTests {
    @Test("the fixtures are there (12 kinds)")
    func fixturesPresent() {
        #expect(PNGFixture.all.count == 12, "\(PNGFixture.all)")
    }

    @Test("every kind decodes to OpenCV's IMREAD_COLOR pixels, bitwise; RGB order is BGR reversed", arguments: PNGFixture.all)
    func decodesLikeOpenCV(_ f: PNGFixture) throws {
        let bytes = try fixture("png/" + f.name)
        let expected = try fixture("png/" + f.expectedBGR)
        let image = try ImageFile.decode(bytes, order: .bgr, source: f.name)
        #expect(image.width == f.width && image.height == f.height && image.channels == 3)
        #expect(image.pixels == expected, "\(f.name): first difference at byte \(zip(image.pixels, expected).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? -1)")
        let rgb = try ImageFile.decode(bytes, order: .rgb, source: f.name)
        #expect(rgb.converted(to: .bgr).pixels == expected)
        if ImageFile.format(of: bytes) == .png {
            let info = try PNG.info(bytes, source: f.name)
            #expect(info == PNG.Info(width: f.width, height: f.height, bitDepth: f.bitDepth, colorType: f.colorType, interlaced: f.interlaced))
        }
    }

    @Test("truncated, corrupt and non-PNG files fail with typed errors that name the file")
    func brokenFiles() throws {
        /// The error's case, e.g. "png.truncated" ("none" when the file decodes).
        func failure(_ name: String) throws -> String {
            let bytes = try fixture("png/" + name)
            do throws(ImageFileError) {
                _ = try ImageFile.decode(bytes, source: name)
                return "none"
            } catch {
                #expect(error.description.contains(name), "\(error)")
                switch error {
                case .png(.truncated): return "png.truncated"
                case .png(.corrupt): return "png.corrupt"
                case .unknownFormat: return "unknownFormat"
                default: return "\(error)"
                }
            }
        }
        #expect(try failure("truncated.png") == "png.truncated")
        #expect(try failure("corrupt_crc.png") == "png.corrupt")
        #expect(try failure("bad_header.png") == "png.corrupt")
        #expect(try failure("not_png.png") == "unknownFormat")
        #expect(throws: PNGError.notPNG(source: "x", detail: "no PNG signature at the start")) { try PNG.decode(Array("hello, world".utf8), source: "x") }
        #expect(throws: PNGError.self) { try PNG.decode(Array(PNG.signature.prefix(5)), source: "x") }
    }

    @Test("a header declaring more pixels than allowed is refused before decoding")
    func decompressionBomb() throws {
        let bytes = try fixture("png/rgb8.png")
        #expect(throws: PNGError.tooLarge(source: "rgb8.png", width: 9, height: 6, limit: 10)) { try PNG.decode(bytes, source: "rgb8.png", maxPixels: 10) }
    }

    @Test("files are read by content: a PNG named .jpg, a JPEG named .png")
    func byContent() throws {
        let dir = NSTemporaryDirectory() + "sd-png-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let jpeg = try JPEG.encode(pattern(width: 16, height: 8), quality: 90)
        _ = FileManager.default.createFile(atPath: dir + "/really_a_jpeg.png", contents: Data(jpeg))
        #expect(try ImageFile.decode(contentsOf: dir + "/really_a_jpeg.png").pixels == JPEG.decode(jpeg).pixels)
        #expect(ImageFile.format(of: try fixture("png/rgb8_named.jpg")) == .png)
        #expect(throws: ImageFileError.self) { try ImageFile.decode(contentsOf: dir + "/missing.png") }
    }
}

import Foundation
import Imaging
import Testing

@Suite("Drawing and PNG")
struct DrawingTests {
    @Test("PNG output decodes to the same pixels (RGB and grey, either channel order) and is compressed")
    func png() throws {
        var img = Image(width: 300, height: 250, channels: 3, order: .bgr, fill: 10)
        img.set(x: 299, y: 249, Color(1, 2, 3))
        let bytes = try PNG.encode(img)
        #expect(bytes.starts(with: PNG.signature))
        #expect(bytes.count < 300 * 250 * 3 / 10, "\(bytes.count) bytes: not compressed")
        let back = try PNG.decode(bytes, order: .bgr)
        #expect(back.width == 300 && back.height == 250 && back.pixels == img.pixels)
        let grey = Image(width: 5, height: 3, channels: 1, order: .rgb, pixels: Array(0..<15).map { UInt8($0 * 17) })
        let g = try PNG.decode(PNG.encode(grey))
        #expect(g.pixels == grey.pixels.flatMap { [$0, $0, $0] })
    }

    @Test("boxes and labels are drawn where asked, in the image's channel order")
    func boxesAndText() throws {
        var img = Image(width: 120, height: 80, channels: 3, order: .bgr, fill: 0)
        img.drawDetection(x1: 20, y1: 30, x2: 90, y2: 70, label: "star 0.97", color: Color(255, 0, 0))
        // Box edge in BGR order: red → (0, 0, 255).
        let i = (50 * 120 + 20) * 3
        #expect(Array(img.pixels[i..<i + 3]) == [0, 0, 255])
        // The label sits above the box, white text on the box colour.
        let above = (22 * 120 + 21) * 3
        #expect(img.pixels[above + 2] == 255)
        let white = (0..<(120 * 30)).contains { p in img.pixels[3 * p] == 255 && img.pixels[3 * p + 1] == 255 && img.pixels[3 * p + 2] == 255 }
        #expect(white)
        // Nothing drawn inside the box away from its edges.
        let inside = (55 * 120 + 55) * 3
        #expect(Array(img.pixels[inside..<inside + 3]) == [0, 0, 0])
        let path = NSTemporaryDirectory() + "sd-draw-\(UInt32.random(in: 0...UInt32.max)).png"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try img.write(to: path)
        #expect(FileManager.default.fileExists(atPath: path))
        #expect(throws: JPEGError.self) { try img.write(to: path + ".gif") }
    }
}

import Foundation
import Imaging
import Testing

/// Undoes our PNG: checks the signature and every chunk's CRC, inflates the stored blocks.
func decodeStoredPNG(_ bytes: [UInt8]) throws -> (width: Int, height: Int, channels: Int, rows: [UInt8]) {
    func be32(_ i: Int) -> Int { Int(bytes[i]) << 24 | Int(bytes[i + 1]) << 16 | Int(bytes[i + 2]) << 8 | Int(bytes[i + 3]) }
    try #require(Array(bytes[0..<8]) == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
    var i = 8, width = 0, height = 0, channels = 0
    var z: [UInt8] = []
    while i < bytes.count {
        let n = be32(i)
        let type = String(decoding: bytes[(i + 4)..<(i + 8)], as: UTF8.self)
        let body = Array(bytes[(i + 8)..<(i + 8 + n)])
        var c: UInt32 = 0xFFFF_FFFF
        for b in Array(bytes[(i + 4)..<(i + 8)]) + body {
            c ^= UInt32(b)
            for _ in 0..<8 { c = (c & 1) != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        }
        #expect(c ^ 0xFFFF_FFFF == UInt32(be32(i + 8 + n)), "bad CRC in \(type)")
        if type == "IHDR" {
            width = Int(body[0]) << 24 | Int(body[1]) << 16 | Int(body[2]) << 8 | Int(body[3])
            height = Int(body[4]) << 24 | Int(body[5]) << 16 | Int(body[6]) << 8 | Int(body[7])
            channels = body[9] == 2 ? 3 : 1
        }
        if type == "IDAT" { z += body }
        i += 12 + n
    }
    var rows: [UInt8] = []
    var p = 2
    while p < z.count - 4 {
        let final = z[p] & 1
        let len = Int(z[p + 1]) | Int(z[p + 2]) << 8
        rows += z[(p + 5)..<(p + 5 + len)]
        p += 5 + len
        if final == 1 { break }
    }
    return (width, height, channels, rows)
}

@Suite("Drawing and PNG")
struct DrawingTests {
    @Test("PNG output is valid (signature, CRCs, stored deflate) and holds the pixels row by row")
    func png() throws {
        var img = Image(width: 300, height: 250, channels: 3, fill: 10)
        img.set(x: 299, y: 249, Color(1, 2, 3))
        let (w, h, c, rows) = try decodeStoredPNG(PNG.encode(img))
        #expect(w == 300 && h == 250 && c == 3)
        #expect(rows.count == (300 * 3 + 1) * 250)  // spans more than one 64 KiB stored block
        #expect(Array(rows.suffix(3)) == [1, 2, 3])
        #expect(rows[0] == 0)
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
        try img.write(to: path)
        #expect(FileManager.default.fileExists(atPath: path))
        #expect(throws: JPEGError.self) { try img.write(to: path + ".gif") }
    }
}

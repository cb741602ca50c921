import Portability

/// An RGB colour.
public struct Color: Sendable, Equatable {
    public var r: UInt8, g: UInt8, b: UInt8
    public init(_ r: UInt8, _ g: UInt8, _ b: UInt8) {
        self.r = r
        self.g = g
        self.b = b
    }

    public static let green = Color(24, 200, 64)
    public static let white = Color(255, 255, 255)
    public static let black = Color(0, 0, 0)

    /// A distinct colour for class `i` (a fixed palette, cycling).
    public static func forClass(_ i: Int) -> Color {
        let palette: [Color] = [Color(230, 25, 75), Color(60, 180, 75), Color(255, 225, 25), Color(0, 130, 200), Color(245, 130, 48),
                                Color(145, 30, 180), Color(70, 240, 240), Color(240, 50, 230), Color(210, 245, 60), Color(250, 190, 212),
                                Color(0, 128, 128), Color(220, 190, 255), Color(170, 110, 40), Color(128, 0, 0), Color(170, 255, 195),
                                Color(128, 128, 0), Color(0, 0, 128), Color(128, 128, 128)]
        return palette[((i % palette.count) + palette.count) % palette.count]
    }
}

extension Image {
    /// Sets one pixel (ignored outside the image), in the image's channel order.
    public mutating func set(x: Int, y: Int, _ color: Color) {
        guard x >= 0, y >= 0, x < width, y < height else { return }
        let i = (y * width + x) * channels
        if channels == 1 {
            let r = Int(color.r) * 299, g = Int(color.g) * 587, b = Int(color.b) * 114
            pixels[i] = UInt8((r + g + b) / 1000)
        } else if order == .rgb {
            (pixels[i], pixels[i + 1], pixels[i + 2]) = (color.r, color.g, color.b)
        } else {
            (pixels[i], pixels[i + 1], pixels[i + 2]) = (color.b, color.g, color.r)
        }
    }

    /// Fills the rectangle [x1, x2] × [y1, y2] (clipped to the image).
    public mutating func fill(x1: Int, y1: Int, x2: Int, y2: Int, _ color: Color) {
        let (l, t, r, b) = (max(0, x1), max(0, y1), min(width - 1, x2), min(height - 1, y2))
        guard l <= r, t <= b else { return }
        for y in t...b { for x in l...r { set(x: x, y: y, color) } }
    }

    /// Outlines a box (x1, y1, x2, y2) with lines `thickness` pixels wide, drawn inwards.
    public mutating func drawBox(x1: Double, y1: Double, x2: Double, y2: Double, _ color: Color, thickness: Int = 2) {
        let (l, t, r, b) = (Int(x1.rounded()), Int(y1.rounded()), Int(x2.rounded()), Int(y2.rounded()))
        guard r >= l, b >= t else { return }
        let k = max(1, thickness) - 1
        fill(x1: l, y1: t, x2: r, y2: min(b, t + k), color)
        fill(x1: l, y1: max(t, b - k), x2: r, y2: b, color)
        fill(x1: l, y1: t, x2: min(r, l + k), y2: b, color)
        fill(x1: max(l, r - k), y1: t, x2: r, y2: b, color)
    }

    /// The size of `text` in pixels at `scale`.
    public static func textSize(_ text: String, scale: Int = 1) -> (width: Int, height: Int) {
        (text.unicodeScalars.count * BitmapFont.width * scale, BitmapFont.height * scale)
    }

    /// Draws `text` (ASCII; other characters show as '?') with its top-left corner at (x, y).
    public mutating func drawText(_ text: String, x: Int, y: Int, _ color: Color, scale: Int = 1) {
        var cx = x
        for scalar in text.unicodeScalars {
            let code = Int(scalar.value)
            let glyph = BitmapFont.glyphs[(32...126).contains(code) ? code - 32 : Int(("?" as Unicode.Scalar).value) - 32]
            for (row, mask) in glyph.enumerated() where mask != 0 {
                for col in 0..<BitmapFont.width where mask & (1 << col) != 0 {
                    for dy in 0..<scale { for dx in 0..<scale { set(x: cx + col * scale + dx, y: y + row * scale + dy, color) } }
                }
            }
            cx += BitmapFont.width * scale
        }
    }

    /// Detectron's `vis.py` look: the box outlined, and "class score" in white on the box colour
    /// just above its top-left corner (inside the box when there is no room above).
    public mutating func drawDetection(x1: Double, y1: Double, x2: Double, y2: Double, label: String, color: Color = .green) {
        let thickness = max(1, min(width, height) / 300 + 1)
        drawBox(x1: x1, y1: y1, x2: x2, y2: y2, color, thickness: thickness)
        let scale = max(1, min(width, height) / 400 + 1)
        let (tw, th) = Image.textSize(label, scale: scale)
        let left = max(0, min(Int(x1.rounded()), width - tw - 2))
        var top = Int(y1.rounded()) - th - 2
        if top < 0 { top = Int(y1.rounded()) + thickness }
        fill(x1: left, y1: top, x2: left + tw + 1, y2: top + th + 1, color)
        drawText(label, x: left + 1, y: top + 1, .white, scale: scale)
    }
}

/// PNG encoding without a compression library: 8-bit RGB or grey, stored (uncompressed) deflate
/// blocks, CRC-32 and Adler-32 checksums.
public enum PNG {
    static let crcTable: [UInt32] = (0..<256).map { n -> UInt32 in
        var c = UInt32(n)
        for _ in 0..<8 { c = (c & 1) != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    static func crc32<S: Sequence>(_ bytes: S) -> UInt32 where S.Element == UInt8 {
        var c: UInt32 = 0xFFFF_FFFF
        for b in bytes { c = crcTable[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
        return c ^ 0xFFFF_FFFF
    }

    static func bigEndian(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8((v >> 16) & 0xFF), UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)] }

    /// The PNG file bytes of `image` (RGB order is used whatever the image's order).
    public static func encode(_ image: Image) -> [UInt8] {
        let img = image.channels == 3 ? image.converted(to: .rgb) : image
        var raw: [UInt8] = []
        raw.reserveCapacity((img.width * img.channels + 1) * img.height)
        for y in 0..<img.height {
            raw.append(0)  // filter: none
            raw += img.pixels[(y * img.width * img.channels)..<((y + 1) * img.width * img.channels)]
        }
        var z: [UInt8] = [0x78, 0x01]
        var offset = 0
        repeat {
            let n = min(65535, raw.count - offset)
            z.append(offset + n == raw.count ? 1 : 0)
            z += [UInt8(n & 0xFF), UInt8(n >> 8), UInt8(~n & 0xFF), UInt8((~n >> 8) & 0xFF)]
            z += raw[offset..<(offset + n)]
            offset += n
        } while offset < raw.count
        var a: UInt32 = 1, b: UInt32 = 0
        for byte in raw {
            a = (a + UInt32(byte)) % 65521
            b = (b + a) % 65521
        }
        z += bigEndian((b << 16) | a)
        func chunk(_ type: String, _ data: [UInt8]) -> [UInt8] {
            let t = Array(type.utf8)
            return bigEndian(UInt32(data.count)) + t + data + bigEndian(crc32(t + data))
        }
        let header = bigEndian(UInt32(img.width)) + bigEndian(UInt32(img.height)) + [8, img.channels == 3 ? 2 : 0, 0, 0, 0]
        return [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] + chunk("IHDR", header) + chunk("IDAT", z) + chunk("IEND", [])
    }
}

extension Image {
    /// Writes the image atomically as PNG or JPEG, by the path's extension.
    public func write(to path: String, quality: Int = 90) throws(JPEGError) {
        let lower = path.lowercased()
        if lower.hasSuffix(".png") {
            do throws(FileAccessError) {
                try Files.writeAtomically(PNG.encode(self), to: path)
            } catch {
                throw .io(path: path, detail: error.description)
            }
        } else if lower.hasSuffix(".jpg") || lower.hasSuffix(".jpeg") {
            try JPEG.write(self, to: path, quality: quality)
        } else {
            throw .invalidArgument(source: path, detail: "unknown image extension (use .png, .jpg or .jpeg)")
        }
    }
}

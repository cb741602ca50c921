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

extension Image {
    /// Writes the image atomically as PNG or JPEG, by the path's extension.
    public func write(to path: String, quality: Int = 90) throws(JPEGError) {
        let lower = path.lowercased()
        if lower.hasSuffix(".png") {
            let bytes: [UInt8]
            do throws(PNGError) {
                bytes = try PNG.encode(self)
            } catch {
                throw .invalidArgument(source: path, detail: error.description)
            }
            do throws(FileAccessError) {
                try Files.writeAtomically(bytes, to: path)
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

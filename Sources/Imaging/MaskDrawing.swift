import Foundation

extension Image {
    /// Detectron's `utils/colormap.colormap()`: 79 RGB colours on [0, 1], scaled by 255 (float32,
    /// as there).
    public static let detectronColormap: [(r: Float, g: Float, b: Float)] = {
        let rgb: [Float] = [
            0.0, 0.447, 0.741, 0.85, 0.325, 0.098, 0.929, 0.694, 0.125, 0.494, 0.184, 0.556, 0.466, 0.674, 0.188, 0.301, 0.745,
            0.933, 0.635, 0.078, 0.184, 0.3, 0.3, 0.3, 0.6, 0.6, 0.6, 1.0, 0.0, 0.0, 1.0, 0.5, 0.0, 0.749, 0.749, 0.0, 0.0, 1.0,
            0.0, 0.0, 0.0, 1.0, 0.667, 0.0, 1.0, 0.333, 0.333, 0.0, 0.333, 0.667, 0.0, 0.333, 1.0, 0.0, 0.667, 0.333, 0.0, 0.667,
            0.667, 0.0, 0.667, 1.0, 0.0, 1.0, 0.333, 0.0, 1.0, 0.667, 0.0, 1.0, 1.0, 0.0, 0.0, 0.333, 0.5, 0.0, 0.667, 0.5, 0.0,
            1.0, 0.5, 0.333, 0.0, 0.5, 0.333, 0.333, 0.5, 0.333, 0.667, 0.5, 0.333, 1.0, 0.5, 0.667, 0.0, 0.5, 0.667, 0.333, 0.5,
            0.667, 0.667, 0.5, 0.667, 1.0, 0.5, 1.0, 0.0, 0.5, 1.0, 0.333, 0.5, 1.0, 0.667, 0.5, 1.0, 1.0, 0.5, 0.0, 0.333, 1.0,
            0.0, 0.667, 1.0, 0.0, 1.0, 1.0, 0.333, 0.0, 1.0, 0.333, 0.333, 1.0, 0.333, 0.667, 1.0, 0.333, 1.0, 1.0, 0.667, 0.0,
            1.0, 0.667, 0.333, 1.0, 0.667, 0.667, 1.0, 0.667, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.333, 1.0, 1.0, 0.667, 1.0, 0.167,
            0.0, 0.0, 0.333, 0.0, 0.0, 0.5, 0.0, 0.0, 0.667, 0.0, 0.0, 0.833, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.167, 0.0, 0.0, 0.333,
            0.0, 0.0, 0.5, 0.0, 0.0, 0.667, 0.0, 0.0, 0.833, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.167, 0.0, 0.0, 0.333, 0.0, 0.0, 0.5,
            0.0, 0.0, 0.667, 0.0, 0.0, 0.833, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.143, 0.143, 0.143, 0.286, 0.286, 0.286, 0.429, 0.429,
            0.429, 0.571, 0.571, 0.571, 0.714, 0.714, 0.714, 0.857, 0.857, 0.857, 1.0, 1.0, 1.0
        ]
        var colors: [(r: Float, g: Float, b: Float)] = []
        for i in stride(from: 0, to: rgb.count, by: 3) {
            let r: Float = rgb[i] * 255, g: Float = rgb[i + 1] * 255, b: Float = rgb[i + 2] * 255
            colors.append((r: r, g: g, b: b))
        }
        return colors
    }()

    /// Detectron's `vis.vis_mask`: on the mask's pixels the image becomes 0.6·image + 0.4·colour in
    /// float32, truncated back to 8 bits; then the mask's border — its pixels with a 4-neighbour
    /// outside it — in white (Detectron traces it with `cv2.findContours` and draws an antialiased
    /// 1-pixel line, which this does not copy). `mask` is row-major, nonzero inside.
    public mutating func drawMask(_ mask: [UInt8], color: (r: Float, g: Float, b: Float), alpha: Float = 0.4) {
        precondition(mask.count == width * height && channels == 3, "a \(width)×\(height) mask on a 3-channel image")
        let (c0, c1, c2) = order == .rgb ? (color.r, color.g, color.b) : (color.b, color.g, color.r)
        for i in mask.indices where mask[i] != 0 {
            let p = 3 * i
            pixels[p] = UInt8(Float(pixels[p]) * (1 - alpha) + alpha * c0)
            pixels[p + 1] = UInt8(Float(pixels[p + 1]) * (1 - alpha) + alpha * c1)
            pixels[p + 2] = UInt8(Float(pixels[p + 2]) * (1 - alpha) + alpha * c2)
        }
        for y in 0..<height {
            for x in 0..<width where mask[y * width + x] != 0 {
                let border = x == 0 || y == 0 || x == width - 1 || y == height - 1 || mask[y * width + x - 1] == 0
                    || mask[y * width + x + 1] == 0 || mask[(y - 1) * width + x] == 0 || mask[(y + 1) * width + x] == 0
                if border { set(x: x, y: y, .white) }
            }
        }
    }
}

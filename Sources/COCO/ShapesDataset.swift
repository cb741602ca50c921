import Foundation
import Imaging
import Portability

/// The synthetic "shapes" dataset: the embedded default that lets the tutorial run anywhere
/// with no download.
///
/// Circles, squares, triangles and stars in varied colours on textured, noisy backgrounds;
/// small, medium and large objects (COCO's area ranges), partial overlaps — each box, area and
/// mask is that of the *visible* part — some crowd regions of tiny shapes, image sizes of both
/// orientations. Deterministic for a seed. Easy enough to learn in minutes on a CPU, hard enough
/// that AP is not trivially 1.
///
/// Masks: an object's segmentation is polygons, the outline of each 4-connected visible part
/// (``MaskOutline``); a crowd region's is a compressed RLE of its shapes' visible pixels. Both are
/// made from the id mask after the drawing — an object's at the moment its box and area are,
/// before any crowd is drawn — so the random stream, and the images, boxes and areas, are those
/// of the dataset without masks.
public struct ShapesDataset: Sendable {
    public static let categories = ["circle", "square", "triangle", "star"]

    public var seed: UInt64
    public init(seed: UInt64) { self.seed = seed }

    /// One object to draw: class, centre, radius, rotation, colour.
    struct Shape {
        var category: Int  // 1-based
        var cx: Double, cy: Double, r: Double, angle: Double
        var color: Color

        /// Whether pixel centre (x, y) is inside the shape.
        func contains(_ x: Double, _ y: Double) -> Bool {
            let dx = x - cx, dy = y - cy
            // Rotate into the shape's frame.
            let c = cos(-angle), s = sin(-angle)
            let u = dx * c - dy * s, v = dx * s + dy * c
            switch category {
            case 1: return dx * dx + dy * dy <= r * r
            case 2: return abs(u) <= r * 0.85 && abs(v) <= r * 0.85
            case 3:
                // Equilateral triangle with circumradius r, pointing up in its frame.
                let p = [(0.0, -r), (r * 0.866, r * 0.5), (-r * 0.866, r * 0.5)]
                return Self.inPolygon(u, v, p)
            default:
                let p = (0..<10).map { k -> (Double, Double) in
                    let rad = k % 2 == 0 ? r : r * 0.45
                    let a = Double(k) * Double.pi / 5 - Double.pi / 2
                    return (rad * cos(a), rad * sin(a))
                }
                return Self.inPolygon(u, v, p)
            }
        }

        static func inPolygon(_ x: Double, _ y: Double, _ p: [(Double, Double)]) -> Bool {
            var inside = false
            var j = p.count - 1
            for i in 0..<p.count {
                if (p[i].1 > y) != (p[j].1 > y) && x < (p[j].0 - p[i].0) * (y - p[i].1) / (p[j].1 - p[i].1) + p[i].0 { inside.toggle() }
                j = i
            }
            return inside
        }
    }

    /// One generated image and its annotations (box xywh, area and mask of the visible part).
    public struct Sample: Sendable {
        public var image: Image
        public var annotations: [(category: Int, bbox: [Double], area: Double, crowd: Bool, segmentation: COCOFile.Segmentation)]
    }

    /// Image `index` of the split named `split` ("train" or "val" give different streams).
    public func sample(split: String, index: Int) -> Sample { render(split: split, index: index).sample }

    /// The sample, and for each annotation the visible pixels its mask describes (row-major).
    func render(split: String, index: Int) -> (sample: Sample, visible: [[Bool]]) {
        var rng = SplitMix64(seed: seed &* 0x9E37_79B9 &+ UInt64(index) &* 0x85EB_CA6B &+ (split == "train" ? 1 : 0x1234_5678))
        let landscape = rng.unit() < 0.6
        let long = rng.int(320, 448), short = rng.int(224, 320)
        let (w, h) = landscape ? (long, short) : (short, long)
        var img = background(width: w, height: h, rng: &rng)
        var shapes: [Shape] = []
        let count = rng.int(1, 5)
        for _ in 0..<count {
            // Radii over COCO's area ranges: small (< 32²), medium, large (> 96²).
            let bucket = rng.unit()
            let r = bucket < 0.25 ? rng.uniform(7, 14) : (bucket < 0.75 ? rng.uniform(18, 45) : rng.uniform(58, Double(min(w, h)) * 0.42))
            let cx = rng.uniform(r * 0.6, Double(w) - r * 0.6), cy = rng.uniform(r * 0.6, Double(h) - r * 0.6)
            shapes.append(Shape(category: rng.int(1, 4), cx: cx, cy: cy, r: r, angle: rng.uniform(0, 2 * Double.pi),
                                color: brightColor(&rng)))
        }
        // Paint in order (later shapes occlude earlier ones), keeping an id mask of what is visible.
        var mask = [Int16](repeating: -1, count: w * h)
        for (k, s) in shapes.enumerated() {
            paint(s, into: &img, mask: &mask, id: Int16(k), rng: &rng)
        }
        var annotations: [(Int, [Double], Double, Bool, COCOFile.Segmentation)] = []
        var visible: [[Bool]] = []
        for (k, s) in shapes.enumerated() {
            guard let (box, area) = visibleBox(mask: mask, width: w, height: h, id: Int16(k)) else { continue }
            let full = Double.pi * s.r * s.r * 0.6
            // Shapes hidden for the most part are left out, as annotators would.
            if area < 20 || area < 0.25 * full { continue }
            let pixels = mask.map { $0 == Int16(k) }
            annotations.append((s.category, box, area, false, .polygons(Self.outline(pixels, width: w, height: h, box: box))))
            visible.append(pixels)
        }
        // Sometimes a crowd: a cluster of tiny shapes of one class, annotated as one region.
        if rng.unit() < 0.12 {
            let category = rng.int(1, 4)
            let gx = rng.uniform(20, Double(w) - 60), gy = rng.uniform(20, Double(h) - 50)
            let color = brightColor(&rng)
            let first = shapes.count
            for _ in 0..<rng.int(6, 10) {
                let s = Shape(category: category, cx: gx + rng.uniform(0, 40), cy: gy + rng.uniform(0, 30), r: rng.uniform(3, 5),
                              angle: rng.uniform(0, 6.3), color: color)
                shapes.append(s)
                paint(s, into: &img, mask: &mask, id: Int16(shapes.count - 1), rng: &rng)
            }
            var x1 = Double.infinity, y1 = Double.infinity, x2 = -Double.infinity, y2 = -Double.infinity, area = 0.0
            for k in first..<shapes.count {
                if let (b, a) = visibleBox(mask: mask, width: w, height: h, id: Int16(k)) {
                    x1 = min(x1, b[0]); y1 = min(y1, b[1]); x2 = max(x2, b[0] + b[2]); y2 = max(y2, b[1] + b[3])
                    area += a
                }
            }
            if area > 0 {
                let pixels = mask.map { $0 >= Int16(first) }
                // A 0/1 mask of the image's size: encode cannot fail.
                let rle = try! RLE.encode(pixels.map { $0 ? 1 : 0 }, height: h, width: w, order: .rowMajor)
                annotations.append((category, [x1, y1, x2 - x1, y2 - y1], area, true, .compressedRLE(rle)))
                visible.append(pixels)
            }
        }
        let sample = Sample(image: img, annotations: annotations.map { (category: $0.0, bbox: $0.1, area: $0.2, crowd: $0.3, segmentation: $0.4) })
        return (sample, visible)
    }

    /// The polygons of the visible pixels inside `box` (xywh), traced in the box grown by 3
    /// pixels — more than the outline's simplification moves a vertex — and moved back.
    static func outline(_ pixels: [Bool], width w: Int, height h: Int, box: [Double]) -> [[Double]] {
        let x0 = max(0, Int(box[0]) - 3), y0 = max(0, Int(box[1]) - 3)
        let x1 = min(w, Int(box[0] + box[2]) + 3), y1 = min(h, Int(box[1] + box[3]) + 3)
        var crop = [Bool](repeating: false, count: (x1 - x0) * (y1 - y0))
        for y in y0..<y1 { for x in x0..<x1 { crop[(y - y0) * (x1 - x0) + x - x0] = pixels[y * w + x] } }
        return MaskOutline(width: x1 - x0, height: y1 - y0, mask: crop).polygons().map { polygon in
            polygon.enumerated().map { $0.offset % 2 == 0 ? $0.element + Double(x0) : $0.element + Double(y0) }
        }
    }

    func brightColor(_ rng: inout SplitMix64) -> Color {
        // Saturated colours: one channel high, one low, one anywhere.
        var c = [UInt8(rng.int(170, 255)), UInt8(rng.int(0, 80)), UInt8(rng.int(0, 255))]
        for i in stride(from: 2, to: 0, by: -1) { c.swapAt(i, rng.int(0, i)) }
        return Color(c[0], c[1], c[2])
    }

    func background(width w: Int, height h: Int, rng: inout SplitMix64) -> Image {
        var img = Image(width: w, height: h, channels: 3, order: .rgb, fill: 0)
        let base = (rng.uniform(40, 200), rng.uniform(40, 200), rng.uniform(40, 200))
        let grad = (rng.uniform(-0.25, 0.25), rng.uniform(-0.25, 0.25))
        let freq = rng.uniform(0.02, 0.12), phase = rng.uniform(0, 6.3), stripes = rng.uniform(0, 30)
        for y in 0..<h {
            for x in 0..<w {
                let t = grad.0 * Double(x) + grad.1 * Double(y) + stripes * sin(freq * Double(x + y) + phase)
                let n = rng.uniform(-22, 22)
                let i = (y * w + x) * 3
                img.pixels[i] = UInt8(max(0, min(255, base.0 + t + n)))
                img.pixels[i + 1] = UInt8(max(0, min(255, base.1 + t + n)))
                img.pixels[i + 2] = UInt8(max(0, min(255, base.2 + t + n)))
            }
        }
        // A few distractor lines.
        for _ in 0..<rng.int(0, 4) {
            let (x0, y0, x1, y1) = (rng.uniform(0, Double(w)), rng.uniform(0, Double(h)), rng.uniform(0, Double(w)), rng.uniform(0, Double(h)))
            let c = Color(UInt8(rng.int(0, 255)), UInt8(rng.int(0, 255)), UInt8(rng.int(0, 255)))
            let steps = Int(max(abs(x1 - x0), abs(y1 - y0))) + 1
            for k in 0...steps {
                let f = Double(k) / Double(steps)
                img.set(x: Int(x0 + f * (x1 - x0)), y: Int(y0 + f * (y1 - y0)), c)
            }
        }
        return img
    }

    func paint(_ s: Shape, into img: inout Image, mask: inout [Int16], id: Int16, rng: inout SplitMix64) {
        let x0 = max(0, Int(s.cx - s.r) - 1), x1 = min(img.width - 1, Int(s.cx + s.r) + 1)
        let y0 = max(0, Int(s.cy - s.r) - 1), y1 = min(img.height - 1, Int(s.cy + s.r) + 1)
        guard x0 <= x1, y0 <= y1 else { return }
        for y in y0...y1 {
            for x in x0...x1 where s.contains(Double(x) + 0.5, Double(y) + 0.5) {
                let n = rng.int(-18, 18)
                img.set(x: x, y: y, Color(UInt8(max(0, min(255, Int(s.color.r) + n))), UInt8(max(0, min(255, Int(s.color.g) + n))),
                                          UInt8(max(0, min(255, Int(s.color.b) + n)))))
                mask[y * img.width + x] = id
            }
        }
    }

    /// The visible part's box (xywh, pixel edges) and pixel count.
    func visibleBox(mask: [Int16], width w: Int, height h: Int, id: Int16) -> ([Double], Double)? {
        var x1 = w, y1 = h, x2 = -1, y2 = -1, n = 0
        for y in 0..<h {
            for x in 0..<w where mask[y * w + x] == id {
                x1 = min(x1, x); y1 = min(y1, y); x2 = max(x2, x); y2 = max(y2, y)
                n += 1
            }
        }
        guard n > 0 else { return nil }
        return ([Double(x1), Double(y1), Double(x2 - x1 + 1), Double(y2 - y1 + 1)], Double(n))
    }

    /// Writes `count` images of `split` as JPEGs under `directory/split/` and their COCO JSON at
    /// `directory/annotations/instances_<split>.json`; returns the COCO file.
    @discardableResult
    public func write(split: String, count: Int, to directory: String) throws(COCOError) -> COCOFile {
        let imageDir = (directory as NSString).appendingPathComponent(split)
        let annotationDir = (directory as NSString).appendingPathComponent("annotations")
        do throws(FileAccessError) {
            try Files.makeDirectory(imageDir)
            try Files.makeDirectory(annotationDir)
        } catch {
            throw .unwritable(file: directory, reason: error.description)
        }
        var images: [COCOFile.Image] = [], annotations: [COCOFile.Annotation] = []
        for i in 0..<count {
            let s = sample(split: split, index: i)
            let name = String(format: "%@_%06d.jpg", split, i + 1)
            do throws(JPEGError) {
                try JPEG.write(s.image, to: (imageDir as NSString).appendingPathComponent(name), quality: 92)
            } catch {
                throw .unwritable(file: name, reason: error.description)
            }
            images.append(COCOFile.Image(id: i + 1, fileName: name, width: s.image.width, height: s.image.height))
            for a in s.annotations {
                annotations.append(COCOFile.Annotation(id: annotations.count + 1, imageID: i + 1, categoryID: a.category,
                                                       bbox: a.bbox, area: a.area, isCrowd: a.crowd, segmentation: a.segmentation))
            }
        }
        let file = COCOFile(images: images, annotations: annotations,
                            categories: Self.categories.enumerated().map { COCOFile.Category(id: $0.offset + 1, name: $0.element, supercategory: "shape") })
        let path = (annotationDir as NSString).appendingPathComponent("instances_\(split).json")
        do throws(FileAccessError) {
            try Files.writeAtomically([UInt8](file.encoded()), to: path)
        } catch {
            throw .unwritable(file: path, reason: error.description)
        }
        return file
    }
}

extension SplitMix64 {
    mutating func uniform(_ lo: Double, _ hi: Double) -> Double { lo + (hi - lo) * unit() }
    mutating func int(_ lo: Int, _ hi: Int) -> Int { lo + Int(next() % UInt64(hi - lo + 1)) }
}

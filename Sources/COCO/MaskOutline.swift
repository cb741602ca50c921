/// Polygons of a binary mask, as annotation tools write them: the outer boundary of each
/// 4-connected part, simplified (Douglas–Peucker) while `frPoly` of the result stays close to the
/// exact outline.
///
/// The exact outline follows pixel edges, so its vertices are pixel corners, and `frPoly`
/// (pixel centres inside) gives back exactly the part's pixels, holes filled: COCO polygons have
/// no holes. The simplification drops staircase corners: the first tolerance whose polygon keeps
/// IoU ≥ `minIoU` with the exact outline's raster is used (2, 1, 0.5 pixels), else the exact outline.
struct MaskOutline {
    let width: Int, height: Int
    /// Row-major; true for the mask's pixels.
    let mask: [Bool]

    static let tolerances: [Double] = [2, 1, 0.5]
    static let minIoU = 0.95

    /// The polygons [x0, y0, x1, y1, …] of the parts, largest first; empty for an empty mask.
    func polygons() -> [[Double]] {
        let parts = components().sorted { $0.count > $1.count }
        return parts.map { part in
            let ring = trace(part)
            let exact = ring.flatMap { [Double($0.0), Double($0.1)] }
            guard let exactRaster = try? RLE.frPoly(exact, height: height, width: width) else { return exact }
            for tolerance in Self.tolerances {
                let simple = Self.simplify(ring, tolerance: tolerance).flatMap { [$0.0, $0.1] }
                guard simple.count >= 6, let r = try? RLE.frPoly(simple, height: height, width: width) else { continue }
                if RLE.iou([r], [exactRaster], isCrowd: [false])[0] >= Self.minIoU { return simple }
            }
            return exact
        }
    }

    /// The 4-connected parts, each as its pixels in raster order (the first is the top-left one).
    func components() -> [[Int]] {
        var label = [Int32](repeating: -1, count: mask.count)
        var parts: [[Int]] = []
        for start in mask.indices where mask[start] && label[start] < 0 {
            let id = Int32(parts.count)
            var part = [start], queue = [start]
            label[start] = id
            while let p = queue.popLast() {
                let x = p % width, y = p / width
                for (nx, ny) in [(x - 1, y), (x + 1, y), (x, y - 1), (x, y + 1)] where nx >= 0 && nx < width && ny >= 0 && ny < height {
                    let q = ny * width + nx
                    if mask[q] && label[q] < 0 {
                        label[q] = id
                        part.append(q)
                        queue.append(q)
                    }
                }
            }
            parts.append(part.sorted())
        }
        return parts
    }

    /// The outer boundary of a 4-connected part along pixel edges, clockwise (y down), as its
    /// corners. It starts at the top-left corner of the part's first pixel heading right, the
    /// part on the right-hand side; at each corner the two pixels ahead decide: the right one
    /// outside → turn right; both inside → turn left; else straight on. Diagonal neighbours are
    /// not joined (4-connectivity), and pixels of other parts are never inside.
    func trace(_ part: [Int]) -> [(Int, Int)] {
        let members = Set(part)
        func inside(_ x: Int, _ y: Int) -> Bool { x >= 0 && x < width && y >= 0 && y < height && members.contains(y * width + x) }
        // Directions clockwise: right, down, left, up; and the pixels ahead-left / ahead-right of
        // corner (X, Y) in each.
        let step = [(1, 0), (0, 1), (-1, 0), (0, -1)]
        let aheadLeft = [(0, -1), (0, 0), (-1, 0), (-1, -1)]
        let aheadRight = [(0, 0), (-1, 0), (-1, -1), (0, -1)]
        let start = (part[0] % width, part[0] / width)
        var corner = start, direction = 0
        var ring: [(Int, Int)] = [start]
        repeat {
            corner = (corner.0 + step[direction].0, corner.1 + step[direction].1)
            let right = inside(corner.0 + aheadRight[direction].0, corner.1 + aheadRight[direction].1)
            let left = inside(corner.0 + aheadLeft[direction].0, corner.1 + aheadLeft[direction].1)
            let turn = !right ? 1 : (left ? 3 : 0)
            if turn != 0 {
                direction = (direction + turn) % 4
                if corner != start { ring.append(corner) }
            }
        } while corner != start || direction != 0
        return ring
    }

    /// Douglas–Peucker on a closed ring: split at the vertex farthest from the first, then keep
    /// each chain's farthest vertex while it is more than `tolerance` from the chord.
    static func simplify(_ ring: [(Int, Int)], tolerance: Double) -> [(Double, Double)] {
        let p = ring.map { (Double($0.0), Double($0.1)) }
        guard p.count > 3 else { return p }
        func distance(_ q: (Double, Double), _ a: (Double, Double), _ b: (Double, Double)) -> Double {
            let (dx, dy) = (b.0 - a.0, b.1 - a.1)
            let len2 = dx * dx + dy * dy
            let t = len2 == 0 ? 0 : max(0, min(1, ((q.0 - a.0) * dx + (q.1 - a.1) * dy) / len2))
            let (ex, ey) = (a.0 + t * dx - q.0, a.1 + t * dy - q.1)
            return (ex * ex + ey * ey).squareRoot()
        }
        let far = p.indices.max { distance(p[$0], p[0], p[0]) < distance(p[$1], p[0], p[0]) }!
        var keep = [Bool](repeating: false, count: p.count)
        keep[0] = true
        keep[far] = true
        // Chains as index ranges on the ring; the second wraps to vertex 0 (index p.count).
        var chains = [(0, far), (far, p.count)]
        while let (a, b) = chains.popLast() {
            guard b - a > 1 else { continue }
            var best = -1.0, index = a
            for i in a + 1..<b {
                let d = distance(p[i], p[a], p[b % p.count])
                if d > best { best = d; index = i }
            }
            if best > tolerance {
                keep[index] = true
                chains += [(a, index), (index, b)]
            }
        }
        return p.indices.filter { keep[$0] }.map { p[$0] }
    }
}

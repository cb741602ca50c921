import Foundation

/// pycocotools' polygon rasteriser (`rleFrPoly`), run for run.
///
/// NOTE: what `rleFrPoly` computes. The vertices are scaled by 5 and rounded with C's
/// `(int)(5x + .5)` (truncation: negative values round toward 0). Each edge is walked one lattice
/// step at a time along its major axis, the other coordinate `(int)(start + slope·t + .5)` taken
/// from the endpoint with the smaller major coordinate, so an edge rounds the same in both
/// directions. Wherever two consecutive lattice points differ in x, the step counts if it crosses
/// the line between lattice columns 5c + 2 and 5c + 3 — the centre line of pixel column c, for c
/// in [0, w − 1] — and toggles column c from row ceil((min(y) + .5) / 5 − .5), clamped to [0, h],
/// down. The toggles, sorted by column-major index and paired up, are the runs: an even-odd fill
/// of the pixels whose centres are inside, on a 1/5-pixel lattice.
///
/// The C stores every lattice point; this visits only the crossings. On an x-major edge every
/// step moves x by one, so the crossings are the steps from 5c + 2 to 5c + 3. On a y-major edge x
/// is monotone in the step, so each column's crossing is the first step past its centre line,
/// found from the line's equation and checked against the rounded x. The step from one
/// edge to the next never counts: both points are the shared vertex, or, for a vertex left of
/// x = 0 (whose rounding truncates), both are left of column 0. The result is the C's, in time
/// proportional to the columns an edge crosses rather than to its length; the tests compare it
/// with a step-by-step walk on random polygons and with pycocotools' own output.
extension RLE {
    /// `frPoly`: the mask of polygon `xy` = [x0, y0, x1, y1, …] in an h×w image, where pixel
    /// (x, y) covers [x, x + 1) × [y, y + 1). A trailing odd coordinate is ignored, as
    /// pycocotools' `frPoly` does. The polygon is closed; parts outside the image are clipped;
    /// self-overlapping parts cancel (even-odd).
    ///
    /// Throws for a non-finite coordinate or one beyond ±2·10⁸, where the C's int arithmetic
    /// overflows.
    public static func frPoly(_ xy: [Double], height: Int, width: Int) throws(MaskError) -> RLE {
        try checkSize(height: height, width: width)
        let k = xy.count / 2
        var lattice = [Int](repeating: 0, count: 2 * k)
        for j in 0..<2 * k {
            let scaled = 5 * xy[j] + 0.5
            guard scaled.isFinite, abs(scaled) < Double(1 << 30) else {
                throw .badPolygon(MaskError.shortened(xy), reason: "coordinate #\(j) = \(xy[j]) is not finite or beyond ±2·10⁸ (pycocotools' int arithmetic overflows there)")
            }
            lattice[j] = Int(scaled)
        }
        var toggles: [UInt32] = []
        let edges = PolygonEdges(height: height, width: width)
        for j in 0..<k {
            let next = (j + 1) % k
            edges.addToggles(lattice[2 * j], lattice[2 * j + 1], lattice[2 * next], lattice[2 * next + 1], to: &toggles)
        }
        return RLE(unchecked: height, width, runs(toggles: toggles, total: UInt32(height * width)))
    }

    /// `frBbox`: the mask of box [x, y, w, h], rasterised as the polygon (x, y), (x, y + h),
    /// (x + w, y + h), (x + w, y) — so [0, 0, 1, 1] is the first pixel.
    public static func frBbox(_ box: [Double], height: Int, width: Int) throws(MaskError) -> RLE {
        guard box.count == 4, box.allSatisfy(\.isFinite) else { throw .badBox(box) }
        let (xs, ys, xe, ye) = (box[0], box[1], box[0] + box[2], box[1] + box[3])
        return try frPoly([xs, ys, xs, ye, xe, ye, xe, ys], height: height, width: width)
    }

    /// Run lengths from toggle positions (column-major indices), as the end of `rleFrPoly`:
    /// sorted, differenced, with h·w appended; a zero difference (two toggles at one pixel)
    /// cancels, the run after it joining the one before.
    static func runs(toggles: [UInt32], total: UInt32) -> [UInt32] {
        var a = toggles
        a.append(total)
        a.sort()
        var previous: UInt32 = 0
        for j in a.indices {
            let t = a[j]
            a[j] = t &- previous
            previous = t
        }
        var b: [UInt32] = [a[0]]
        b.reserveCapacity(a.count)
        var j = 1
        while j < a.count {
            if a[j] > 0 {
                b.append(a[j])
                j += 1
            } else {
                j += 1
                if j < a.count {
                    b[b.count - 1] &+= a[j]
                    j += 1
                }
            }
        }
        return b
    }
}

/// The crossings of polygon edges with the pixel columns' centre lines, on the ×5 lattice.
struct PolygonEdges {
    let height: Int, width: Int

    /// The toggle position of a step from lattice column `u` to `u + 1` (either way) whose lower
    /// lattice y is `vMin`; nil unless the step crosses a pixel column's centre line in the image.
    func toggle(u: Int, vMin: Int) -> UInt32? {
        let xd = (Double(u) + 0.5) / 5 - 0.5
        guard floor(xd) == xd, xd >= 0, xd <= Double(width - 1) else { return nil }
        var yd = (Double(vMin) + 0.5) / 5 - 0.5
        if yd < 0 { yd = 0 } else if yd > Double(height) { yd = Double(height) }
        return UInt32(truncatingIfNeeded: Int(xd) * height + Int(ceil(yd)))
    }

    /// Appends the toggles of the edge from lattice point (x0, y0) to (x1, y1).
    func addToggles(_ x0: Int, _ y0: Int, _ x1: Int, _ y1: Int, to toggles: inout [UInt32]) {
        let dx = abs(x1 - x0), dy = abs(y1 - y0)
        guard width > 0, dx > 0 else { return }  // no column, or an edge that never changes column
        // The C's swap: walk from the end with the smaller major coordinate.
        let swap = dx >= dy ? x0 > x1 : y0 > y1
        let (xs, ys, xe, ye) = swap ? (x1, y1, x0, y0) : (x0, y0, x1, y1)
        // The columns c with 5c + 2 in [lo, hi), lo and hi the edge's lattice x range.
        let lo = min(xs, xe), hi = max(xs, xe)
        let first = max(0, Self.ceilDiv(lo - 2, 5)), last = min(width - 1, Self.floorDiv(hi - 3, 5))
        guard first <= last else { return }
        if dx >= dy {
            let s = Double(ye - ys) / Double(dx)
            func v(_ t: Int) -> Int { Int(Double(ys) + s * Double(t) + 0.5) }
            for c in first...last {
                let t = 5 * c + 2 - xs
                if let a = toggle(u: 5 * c + 2, vMin: min(v(t), v(t + 1))) { toggles.append(a) }
            }
        } else {
            let s = Double(xe - xs) / Double(dy)
            func u(_ t: Int) -> Int { Int(Double(xs) + s * Double(t) + 0.5) }
            for c in first...last {
                // The first step t on the far side of column c's centre line: estimated from the
                // line, then moved to where the rounded x says (x is monotone in t).
                func beyond(_ t: Int) -> Bool { s > 0 ? u(t) >= 5 * c + 3 : u(t) <= 5 * c + 2 }
                let e = (Double(5 * c) + 2.5 - Double(xs)) / s
                var lower = Int(min(Double(dy + 1), max(0, s > 0 ? e.rounded(.up) : e.rounded(.down) + 1)))
                while lower > 0 && beyond(lower - 1) { lower -= 1 }
                while lower <= dy && !beyond(lower) { lower += 1 }
                guard lower >= 1, lower <= dy else { continue }
                // The C's column is min(x) of the pair when x decreases along its walk and the
                // later x − 1 when it increases: 5c + 2 either way for a step of one column,
                // which every step is short of edges millions of lattice points long.
                let later = u(swap ? lower - 1 : lower)
                guard later == 5 * c + 2 || later == 5 * c + 3 else { continue }
                if let a = toggle(u: 5 * c + 2, vMin: ys + lower - 1) { toggles.append(a) }
            }
        }
    }

    static func floorDiv(_ a: Int, _ b: Int) -> Int { a >= 0 ? a / b : -((-a + b - 1) / b) }
    static func ceilDiv(_ a: Int, _ b: Int) -> Int { -floorDiv(-a, b) }
}

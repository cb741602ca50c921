/// A binary mask in COCO's run-length encoding, with pycocotools' mask API (`maskApi.c`,
/// `_mask.pyx`): `encode`, `decode`, `area`, `toBbox`, `merge`, `iou`, the compressed string
/// (`rleToString` / `rleFrString`) and, in PolygonRaster.swift, `frPoly` / `frBbox`. The results
/// equal pycocotools' run for run (the tests compare them with fixtures pycocotools wrote).
///
/// The mask is flattened column-major (index x·h + y) and `counts` alternate runs of 0s and 1s,
/// starting with a run of 0s that may be empty: the column-major mask `0 0 1 1 1 0 1` is
/// [2, 3, 1, 1], `1 1 1 1 1 1 0` is [0, 6, 1]. The counts of a valid RLE add up to h·w; every
/// initialiser checks this, so no operation meets pycocotools' undefined cases (uninitialised
/// pixels, overruns).
///
/// ```swift
/// let rle = try RLE.encode([0, 1, 1, 0], height: 2, width: 2, order: .rowMajor)
/// rle.counts            // [1, 2, 1]: column-major 0 1 1 0
/// rle.compressedCounts  // "121", what a results file stores
/// ```
public struct RLE: Sendable, Hashable {
    public let height: Int
    public let width: Int
    /// Run lengths, alternately of 0s and 1s, the first of 0s.
    public let counts: [UInt32]

    /// Checks that `counts` describe an h×w mask (they add up to h·w).
    public init(height: Int, width: Int, counts: [UInt32]) throws(MaskError) {
        try Self.checkSize(height: height, width: width)
        var sum = 0
        for c in counts { sum += Int(c) }
        guard sum == height * width else { throw .countsSum(height: height, width: width, sum: sum) }
        self.init(unchecked: height, width, counts)
    }

    init(unchecked height: Int, _ width: Int, _ counts: [UInt32]) {
        self.height = height
        self.width = width
        self.counts = counts
    }

    /// pycocotools keeps h, w and h·w in 32-bit run lengths.
    static func checkSize(height: Int, width: Int) throws(MaskError) {
        guard height >= 0, width >= 0, height <= Int(UInt32.max), width <= Int(UInt32.max),
              height * width <= Int(UInt32.max) else { throw .badSize(height: height, width: width) }
    }

    /// The memory layout of a mask buffer.
    public enum Order: Sendable {
        /// Index x·h + y: pycocotools' (Fortran-ordered numpy) layout.
        case columnMajor
        /// Index y·w + x: an image's layout.
        case rowMajor
    }

    /// `encode`: the runs of `mask` (h·w bytes in `order`; nonzero is foreground). pycocotools
    /// needs 0/1 bytes — another value there starts a run of its own — and Detectron gives it
    /// `mask > 0.5` as uint8, so 0/1 masks give the same counts.
    public static func encode(_ mask: [UInt8], height: Int, width: Int, order: Order = .columnMajor) throws(MaskError) -> RLE {
        try checkSize(height: height, width: width)
        guard mask.count == height * width else { throw .maskLength(height: height, width: width, count: mask.count) }
        var counts: [UInt32] = []
        var previous = false
        var run: UInt32 = 0
        mask.withUnsafeBufferPointer { m in
            let stride = order == .columnMajor ? 1 : width
            for x in 0..<width {
                var i = order == .columnMajor ? x * height : x
                for _ in 0..<height {
                    let on = m[i] != 0
                    if on != previous {
                        counts.append(run)
                        run = 0
                        previous = on
                    }
                    run += 1
                    i += stride
                }
            }
        }
        counts.append(run)
        return RLE(unchecked: height, width, counts)
    }

    /// `decode`: the mask as h·w bytes of 0 and 1 in `order`.
    public func decode(order: Order = .columnMajor) -> [UInt8] {
        var mask = [UInt8](repeating: 0, count: height * width)
        forEachForegroundRun { start, end in
            switch order {
            case .columnMajor:
                for i in start..<end { mask[i] = 1 }
            case .rowMajor:
                for i in start..<end { mask[(i % height) * width + i / height] = 1 }
            }
        }
        return mask
    }

    /// Calls `body` with each run of 1s as a column-major index range.
    func forEachForegroundRun(_ body: (Int, Int) -> Void) {
        var i = 0
        for (j, c) in counts.enumerated() {
            if j % 2 == 1 && c > 0 { body(i, i + Int(c)) }
            i += Int(c)
        }
    }

    /// `area`: the number of foreground pixels (the sum of the odd-indexed counts).
    public var area: Int {
        var a = 0
        for j in stride(from: 1, to: counts.count, by: 2) { a += Int(counts[j]) }
        return a
    }

    /// `toBbox`: [x, y, width, height] of the foreground, pixel-inclusive (one pixel at (3, 5) is
    /// [3, 5, 1, 1]); [0, 0, 0, 0] when empty. As `rleToBbox`: a trailing run of 0s is dropped,
    /// and a run of 1s that continues into the next column makes the box full height.
    public func toBbox() -> [Double] {
        let m = counts.count / 2 * 2
        // pycocotools would divide by zero for h = 0 with a nonempty counts list.
        guard m > 0, height > 0 else { return [0, 0, 0, 0] }
        // The C's unsigned 32-bit arithmetic, wrap-around included.
        let h = UInt32(height)
        var xs = UInt32(width), ys = h, xe: UInt32 = 0, ye: UInt32 = 0, cc: UInt32 = 0, xp: UInt32 = 0
        // The column of the last position, to divide only when a run leaves it.
        var column: UInt32 = 0, columnStart: UInt32 = 0
        for j in 0..<m {
            cc &+= counts[j]
            // The first pixel of a run of 1s (j even) or its last (j odd).
            let t = cc &- UInt32(j % 2)
            if t < columnStart || t - columnStart >= h {
                if t >= columnStart && t - columnStart - h < h {
                    column += 1
                    columnStart += h
                } else {
                    column = t / h
                    columnStart = column * h
                }
            }
            let y = t - columnStart, x = column
            if j % 2 == 0 {
                xp = x
            } else if xp < x {
                ys = 0
                ye = h - 1
            }
            xs = min(xs, x)
            xe = max(xe, x)
            ys = min(ys, y)
            ye = max(ye, y)
        }
        return [Double(xs), Double(ys), Double(xe &- xs &+ 1), Double(ye &- ys &+ 1)]
    }
}

// MARK: - The compressed string

extension RLE {
    /// `rleToString`: the counts as COCO's compressed string (what results files and
    /// `mask.encode` carry). From the fourth count on, each count is stored as its difference
    /// from the count two before (the previous run of the same value); each number is written in
    /// 5-bit groups, low first, 0x20 marking that another group follows and bit 0x10 of the last
    /// group its sign, plus 48: characters '0' … 'o'.
    public var compressedCounts: String {
        var out: [UInt8] = []
        out.reserveCapacity(counts.count * 2)
        for i in counts.indices {
            var x = Int64(counts[i])
            if i > 2 { x -= Int64(counts[i - 2]) }
            var more = true
            while more {
                var c = UInt8(truncatingIfNeeded: x & 0x1F)
                x >>= 5
                more = c & 0x10 != 0 ? x != -1 : x != 0
                if more { c |= 0x20 }
                out.append(c + 48)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// `rleFrString`: an RLE from its compressed string (``compressedCounts``) and size.
    ///
    /// Throws for what pycocotools reads as garbage: a character outside '0' … 'o', a string that
    /// ends inside a number, a number wider than 35 bits, a negative run, or runs that do not add
    /// up to h·w.
    public init(height: Int, width: Int, compressedCounts: String) throws(MaskError) {
        self = try Array(compressedCounts.utf8).withUnsafeBufferPointer { (bytes) throws(MaskError) -> RLE in
            try RLE(height: height, width: width, compressedUTF8: bytes)
        }
    }

    init(height: Int, width: Int, compressedUTF8 s: UnsafeBufferPointer<UInt8>) throws(MaskError) {
        func fail(_ reason: String) -> MaskError {
            .badCompressedCounts(MaskError.shortened(String(decoding: s, as: UTF8.self)), reason: reason)
        }
        try Self.checkSize(height: height, width: width)
        // One count per character without the continuation bit.
        var n = 0
        for c in s where (c &- 48) & 0x20 == 0 { n += 1 }
        var counts: [UInt32] = []
        counts.reserveCapacity(n)
        var p = 0, sum = 0
        while p < s.count {
            var x: Int64 = 0, k = 0, more = true
            while more {
                guard p < s.count else { throw fail("it ends inside a number (its last character has the continuation bit 0x20)") }
                let ch = s[p]
                guard ch >= 48 && ch <= 111 else {
                    throw fail("character \(ch >= 32 && ch < 127 ? "'\(Character(Unicode.Scalar(ch)))'" : "byte \(ch)") at \(p) is outside '0' … 'o'")
                }
                guard k < 7 else { throw fail("number #\(counts.count) has more than 7 groups of 5 bits") }
                let c = Int64(ch - 48)
                x |= (c & 0x1F) << (5 * k)
                more = c & 0x20 != 0
                p += 1
                k += 1
                if !more && c & 0x10 != 0 { x |= -1 << (5 * k) }
            }
            if counts.count > 2 { x += Int64(counts[counts.count - 2]) }
            guard x >= 0 && x <= Int64(UInt32.max) else { throw fail("run #\(counts.count) decodes to \(x)") }
            counts.append(UInt32(x))
            sum += Int(x)
        }
        guard sum == height * width else { throw fail("its runs sum to \(sum), not \(height)·\(width) = \(height * width)") }
        self.init(unchecked: height, width, counts)
    }
}

// MARK: - merge and iou

extension RLE {
    /// `rleMerge`: the union (or, with `intersect`, the intersection) of masks. No masks give an
    /// empty 0×0 RLE and one mask itself; masks of different sizes give the empty 0×0 RLE, as in
    /// pycocotools.
    public static func merge(_ rles: [RLE], intersect: Bool = false) -> RLE {
        guard let first = rles.first else { return RLE(unchecked: 0, 0, []) }
        var merged = first.counts
        for b in rles.dropFirst() {
            guard b.height == first.height && b.width == first.width else { return RLE(unchecked: 0, 0, []) }
            var out: [UInt32] = []
            out.reserveCapacity(merged.count + b.counts.count)
            var walk = RunPair(merged, b.counts)
            var v = false, cc: UInt32 = 0
            // One output run per change of the combined value; the C's uint arithmetic.
            while true {
                let (c, va, vb, remaining) = walk.step()
                cc &+= c
                let vp = v
                v = intersect ? va && vb : va || vb
                if v != vp || remaining == 0 {
                    out.append(cc)
                    cc = 0
                }
                if remaining == 0 { break }
            }
            merged = out
        }
        return RLE(unchecked: first.height, first.width, merged)
    }

    /// Walks two run lists in step, as `rleMerge` and `rleIou` do: each step consumes the
    /// shorter current run.
    struct RunPair {
        let a: [UInt32], b: [UInt32]
        var ia = 1, ib = 1, ca: UInt32, cb: UInt32, va = false, vb = false

        init(_ a: [UInt32], _ b: [UInt32]) {
            self.a = a
            self.b = b
            ca = a.first ?? 0
            cb = b.first ?? 0
        }

        /// The length consumed and the values after it, with what both lists have left (the C's
        /// `ct`, in 32 bits); the values are those of the runs that follow the consumed length.
        mutating func step() -> (UInt32, Bool, Bool, UInt32) {
            let c = min(ca, cb)
            ca -= c
            if ca == 0 && ia < a.count { ca = a[ia]; ia += 1; va.toggle() }
            cb -= c
            if cb == 0 && ib < b.count { cb = b[ib]; ib += 1; vb.toggle() }
            return (c, va, vb, ca &+ cb)
        }
    }

    /// `bbIou` for one pair of [x, y, w, h] boxes: intersection over union, or over the
    /// detection's area when the ground truth is a crowd region; 0 without overlap. No +1.
    public static func iou(box d: [Double], _ g: [Double], crowd: Bool) -> Double {
        let w = min(d[2] + d[0], g[2] + g[0]) - max(d[0], g[0])
        guard w > 0 else { return 0 }
        let h = min(d[3] + d[1], g[3] + g[1]) - max(d[1], g[1])
        guard h > 0 else { return 0 }
        let inter = w * h
        let da = d[2] * d[3]
        return inter / (crowd ? da : da + g[2] * g[3] - inter)
    }

    /// `iou` of boxes: o[d · gt.count + g] for each detection box d and ground-truth box g
    /// ([x, y, w, h]); `isCrowd[g]` (false past its end) switches to the crowd rule.
    public static func iou(boxes dt: [[Double]], _ gt: [[Double]], isCrowd: [Bool]) -> [Double] {
        var o = [Double](repeating: 0, count: dt.count * gt.count)
        for (di, d) in dt.enumerated() {
            for (gi, g) in gt.enumerated() {
                o[di * gt.count + gi] = iou(box: d, g, crowd: gi < isCrowd.count && isCrowd[gi])
            }
        }
        return o
    }

    /// `rleIou`: o[d · gt.count + g], the masks' intersection over union, or |dt ∩ gt| / |dt|
    /// when `isCrowd[g]` (false past its end). As pycocotools: pairs whose boxes (``toBbox()``)
    /// do not overlap are 0 without a look at the runs, and the remaining pairs of different sizes
    /// are −1.
    public static func iou(_ dt: [RLE], _ gt: [RLE], isCrowd: [Bool]) -> [Double] {
        iou(dt, gt, dtBoxes: dt.map { $0.toBbox() }, gtBoxes: gt.map { $0.toBbox() }, isCrowd: isCrowd)
    }

    /// ``iou(_:_:isCrowd:)`` with the masks' ``toBbox()`` already at hand.
    static func iou(_ dt: [RLE], _ gt: [RLE], dtBoxes: [[Double]], gtBoxes: [[Double]], isCrowd: [Bool]) -> [Double] {
        var o = [Double](repeating: 0, count: dt.count * gt.count)
        for (di, d) in dt.enumerated() {
            for (gi, g) in gt.enumerated() {
                let crowd = gi < isCrowd.count && isCrowd[gi]
                guard iou(box: dtBoxes[di], gtBoxes[gi], crowd: crowd) > 0 else { continue }
                o[di * gt.count + gi] = maskIoU(d, g, crowd: crowd)
            }
        }
        return o
    }

    /// The exact IoU of two masks (the second half of `rleIou`).
    static func maskIoU(_ d: RLE, _ g: RLE, crowd: Bool) -> Double {
        guard d.height == g.height && d.width == g.width else { return -1 }
        var walk = RunPair(d.counts, g.counts)
        var inside = (false, false)
        var i: UInt32 = 0, u: UInt32 = 0
        while true {
            let (c, va, vb, remaining) = walk.step()
            if inside.0 || inside.1 {
                u &+= c
                if inside.0 && inside.1 { i &+= c }
            }
            inside = (va, vb)
            if remaining == 0 { break }
        }
        if i == 0 { u = 1 } else if crowd { u = UInt32(d.area) }
        return Double(i) / Double(u)
    }
}

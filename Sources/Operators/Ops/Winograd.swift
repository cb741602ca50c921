import BLAS
import Storage

/// 3×3 stride-1 convolution by Winograd's minimal filtering F(m×m, 3×3) (Lavin & Gray, 2016):
/// each m×m output tile is Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A from its (m+2)×(m+2) input tile d, so the
/// channel sums become (m+2)² GEMMs of (K × C)·(C × tiles) instead of im2col's (K × 9C)·(9C ×
/// pixels). Tiles are processed a band of tile rows at a time in the net's scratch memory. Results
/// equal the direct convolution up to float rounding (the transforms add and scale a few terms).
protocol WinogradAlgorithm {
    /// The output tile's side m.
    static var tile: Int { get }
    /// (m + 2)²: transformed values per tile, and GEMMs per band.
    static var points: Int { get }
    /// U = G g Gᵀ for filters `range` of the K·C ones (9 floats each at w); position ξ of filter i at u[ξ·kc + i].
    static func filters(_ w: UnsafePointer<Float>, kc: Int, range: Range<Int>, into u: UnsafeMutablePointer<Float>)
    /// Bᵀ d B for the tiles (tile rows `rows`, `tw` per row) of one channel plane; element ξ of tile i at v[ξ·stride + i].
    static func inputTransform(_ plane: UnsafePointer<Float>, h: Int, w: Int, rows: Range<Int>, tw: Int, padT: Int, padL: Int,
                               v: UnsafeMutablePointer<Float>, stride: Int)
    /// Aᵀ m A for the tiles of one output channel (element ξ of tile i at m[ξ·stride + i]), written into its plane.
    static func outputTransform(_ m: UnsafePointer<Float>, stride: Int, rows: Range<Int>, tw: Int, y: UnsafeMutablePointer<Float>,
                                ho: Int, wo: Int)
}

extension WinogradAlgorithm {
    /// Floats of transformed input and output per band.
    static var bandFloats: Int { 1 << 22 }

    /// U (points × K × C): the transformed filters, position-major; the filters split across the pool.
    static func filters(_ ctx: ExecutionContext, _ w: UnsafePointer<Float>, k: Int, c: Int, into u: UnsafeMutablePointer<Float>) {
        let kc = k * c
        let parts = min(k, (ctx.pool?.liveThreadCount ?? 0) + 1)
        ctx.parallelFor(parts) { p in
            filters(w, kc: kc, range: (kc * p / parts)..<(kc * (p + 1) / parts), into: u)
        }
    }

    /// Y (K × ho × wo) = conv(X (C × h × w), W) for one image, then the epilogue (bias, fused ops).
    static func run(_ ctx: ExecutionContext, scratch: ScratchBuffers, x: UnsafePointer<Float>, c: Int, h: Int, w: Int,
                    u: UnsafePointer<Float>, k: Int, y: UnsafeMutablePointer<Float>, ho: Int, wo: Int, padT: Int, padL: Int,
                    epilogue: ConvEpilogue = ConvEpilogue()) throws {
        let th = (ho + tile - 1) / tile, tw = (wo + tile - 1) / tile
        let bandTileRows = max(1, min(th, bandFloats / (points * (c + k) * tw)))
        let threads = (ctx.pool?.liveThreadCount ?? 0) + 1
        try scratch.withBuffer(count: points * (c + k) * bandTileRows * tw) { buffer in
            for ty0 in stride(from: 0, to: th, by: bandTileRows) {
                let rows = ty0..<min(th, ty0 + bandTileRows), t = rows.count * tw
                let v = buffer, m = buffer + points * c * t
                // V (points × C × T) = Bᵀ d B for every channel and tile.
                let cParts = min(c, threads)
                ctx.parallelFor(cParts) { p in
                    for ch in (c * p / cParts)..<(c * (p + 1) / cParts) {
                        inputTransform(x + ch * h * w, h: h, w: w, rows: rows, tw: tw, padT: padT, padL: padL, v: v + ch * t, stride: c * t)
                    }
                }
                // M_ξ (K × T) = U_ξ (K × C) · V_ξ (C × T) for every position ξ.
                ctx.parallelFor(points) { xi in
                    BLAS.sgemm(.none, .none, m: k, n: t, k: c, alpha: 1, a: u + xi * k * c, lda: c, b: v + xi * c * t, ldb: t,
                               beta: 0, c: m + xi * k * t, ldc: t)
                }
                // Y tiles = Aᵀ M A, then the epilogue on the band's output rows.
                let kParts = min(k, threads)
                let oy0 = tile * rows.lowerBound, oy1 = min(ho, tile * rows.upperBound)
                ctx.parallelFor(kParts) { p in
                    let o0 = k * p / kParts, o1 = k * (p + 1) / kParts
                    for o in o0..<o1 {
                        outputTransform(m + o * t, stride: k * t, rows: rows, tw: tw, y: y + o * ho * wo, ho: ho, wo: wo)
                    }
                    epilogue.offset(by: o0).apply(y + o0 * ho * wo + oy0 * wo, rows: o1 - o0, stride: ho * wo, count: (oy1 - oy0) * wo)
                }
            }
        }
    }
}

/// F(2×2, 3×3): 16 positions, 2.25× fewer multiplications than im2col.
struct WinogradF2x3: WinogradAlgorithm {
    static let tile = 2
    static let points = 16

    static func filters(_ w: UnsafePointer<Float>, kc: Int, range: Range<Int>, into u: UnsafeMutablePointer<Float>) {
        for i in range {
            let g = w + 9 * i
            // t = G g (4 × 3): rows g0, (g0 + g1 + g2)/2, (g0 − g1 + g2)/2, g2; then U = t Gᵀ.
            func row(_ a: Float, _ b: Float, _ d: Float, _ r: Int) {
                u[(4 * r) * kc + i] = a
                u[(4 * r + 1) * kc + i] = (a + b + d) * 0.5
                u[(4 * r + 2) * kc + i] = (a - b + d) * 0.5
                u[(4 * r + 3) * kc + i] = d
            }
            row(g[0], g[1], g[2], 0)
            row((g[0] + g[3] + g[6]) * 0.5, (g[1] + g[4] + g[7]) * 0.5, (g[2] + g[5] + g[8]) * 0.5, 1)
            row((g[0] - g[3] + g[6]) * 0.5, (g[1] - g[4] + g[7]) * 0.5, (g[2] - g[5] + g[8]) * 0.5, 2)
            row(g[6], g[7], g[8], 3)
        }
    }

    static func inputTransform(_ plane: UnsafePointer<Float>, h: Int, w: Int, rows: Range<Int>, tw: Int, padT: Int, padL: Int,
                               v: UnsafeMutablePointer<Float>, stride: Int) {
        var i = 0
        for ty in rows {
            let y0 = 2 * ty - padT
            let rowsInside = y0 >= 0 && y0 + 3 < h
            // One tile, any position: its 16 inputs, zero outside the plane.
            func scalarTile(_ x0: Int) {
                var d = SIMD16<Float>()
                if rowsInside && x0 >= 0 && x0 + 3 < w {
                    let p = plane + y0 * w + x0
                    d = SIMD16(p[0], p[1], p[2], p[3], p[w], p[w + 1], p[w + 2], p[w + 3],
                               p[2 * w], p[2 * w + 1], p[2 * w + 2], p[2 * w + 3], p[3 * w], p[3 * w + 1], p[3 * w + 2], p[3 * w + 3])
                } else {
                    @inline(__always) func at(_ r: Int, _ q: Int) -> Float {
                        let iy = y0 + r, ix = x0 + q
                        return iy >= 0 && iy < h && ix >= 0 && ix < w ? plane[iy * w + ix] : 0
                    }
                    d = SIMD16(at(0, 0), at(0, 1), at(0, 2), at(0, 3), at(1, 0), at(1, 1), at(1, 2), at(1, 3),
                               at(2, 0), at(2, 1), at(2, 2), at(2, 3), at(3, 0), at(3, 1), at(3, 2), at(3, 3))
                }
                // Bᵀ d: rows (d0 − d2, d1 + d2, d2 − d1, d1 − d3); then the same across each row.
                let r0 = d.lowHalf.lowHalf, r1 = d.lowHalf.highHalf, r2 = d.highHalf.lowHalf, r3 = d.highHalf.highHalf
                let t0 = r0 - r2, t1 = r1 + r2, t2 = r2 - r1, t3 = r1 - r3
                @inline(__always) func store(_ t: SIMD4<Float>, _ r: Int) {
                    let o = v + 4 * r * stride + i
                    o[0] = t[0] - t[2]
                    o[stride] = t[1] + t[2]
                    o[2 * stride] = t[2] - t[1]
                    o[3 * stride] = t[1] - t[3]
                }
                store(t0, 0)
                store(t1, 1)
                store(t2, 2)
                store(t3, 3)
                i += 1
            }
            var tx = 0
            // Four neighbouring tiles at once where their 4 × 10 inputs lie inside the plane: rows
            // as vectors, the results stored four tiles wide.
            while tx < tw {
                let x0 = 2 * tx - padL
                guard rowsInside && tx + 4 <= tw && x0 >= 0 && x0 + 10 <= w else {
                    scalarTile(x0)
                    tx += 1
                    continue
                }
                let p = UnsafeRawPointer(plane + y0 * w + x0)
                @inline(__always) func row(_ r: Int) -> (SIMD8<Float>, SIMD2<Float>) {
                    (p.loadUnaligned(fromByteOffset: 4 * r * w, as: SIMD8<Float>.self),
                     p.loadUnaligned(fromByteOffset: 4 * (r * w + 8), as: SIMD2<Float>.self))
                }
                let (a0, b0) = row(0), (a1, b1) = row(1), (a2, b2) = row(2), (a3, b3) = row(3)
                @inline(__always) func store(_ a: SIMD8<Float>, _ b: SIMD2<Float>, _ r: Int) {
                    // Columns 2j, 2j+1, 2j+2, 2j+3 of the four tiles j.
                    let c0 = a.evenHalf, c1 = a.oddHalf
                    let c2 = SIMD4(a[2], a[4], a[6], b[0]), c3 = SIMD4(a[3], a[5], a[7], b[1])
                    let o = UnsafeMutableRawPointer(v + 4 * r * stride + i)
                    o.storeBytes(of: c0 - c2, as: SIMD4<Float>.self)
                    o.storeBytes(of: c1 + c2, toByteOffset: 4 * stride, as: SIMD4<Float>.self)
                    o.storeBytes(of: c2 - c1, toByteOffset: 8 * stride, as: SIMD4<Float>.self)
                    o.storeBytes(of: c1 - c3, toByteOffset: 12 * stride, as: SIMD4<Float>.self)
                }
                store(a0 - a2, b0 - b2, 0)
                store(a1 + a2, b1 + b2, 1)
                store(a2 - a1, b2 - b1, 2)
                store(a1 - a3, b1 - b3, 3)
                i += 4
                tx += 4
            }
        }
    }

    static func outputTransform(_ m: UnsafePointer<Float>, stride: Int, rows: Range<Int>, tw: Int, y: UnsafeMutablePointer<Float>,
                                ho: Int, wo: Int) {
        var i = 0
        for ty in rows {
            for tx in 0..<tw {
                let p = m + i
                // Aᵀ m: rows m0 + m1 + m2 and m1 − m2 − m3; then the same across each row.
                let m0 = SIMD4(p[0], p[stride], p[2 * stride], p[3 * stride])
                let m1 = SIMD4(p[4 * stride], p[5 * stride], p[6 * stride], p[7 * stride])
                let m2 = SIMD4(p[8 * stride], p[9 * stride], p[10 * stride], p[11 * stride])
                let m3 = SIMD4(p[12 * stride], p[13 * stride], p[14 * stride], p[15 * stride])
                let s0 = m0 + m1 + m2, s1 = m1 - m2 - m3
                let oy = 2 * ty, ox = 2 * tx
                let row0 = y + oy * wo + ox
                row0[0] = s0[0] + s0[1] + s0[2]
                if ox + 1 < wo { row0[1] = s0[1] - s0[2] - s0[3] }
                if oy + 1 < ho {
                    let row1 = row0 + wo
                    row1[0] = s1[0] + s1[1] + s1[2]
                    if ox + 1 < wo { row1[1] = s1[1] - s1[2] - s1[3] }
                }
                i += 1
            }
        }
    }
}

/// F(4×4, 3×3) with the interpolation points 0, ±1, ±2 and ∞: 36 positions, 4× fewer
/// multiplications than im2col. Both transforms run 16 tiles at a time in SIMD lanes: the input
/// rows of a tile row are first split by column phase (x mod 4), so each of a tile's 6 columns is
/// a contiguous vector across tiles.
struct WinogradF4x3: WinogradAlgorithm {
    static let tile = 4
    static let points = 36
    typealias V = SIMD16<Float>

    static func filters(_ w: UnsafePointer<Float>, kc: Int, range: Range<Int>, into u: UnsafeMutablePointer<Float>) {
        // G (6 × 3) applied to a column (a, b, d), 16 filters at a time.
        @inline(__always) func g6(_ a: V, _ b: V, _ d: V) -> (V, V, V, V, V, V) {
            let a24 = a * (1 / 24), b12 = b * (1 / 12), d6 = d * (1 / 6)
            return (a * 0.25, (a + b + d) * (-1 / 6), (a - b + d) * (-1 / 6), a24 + b12 + d6, a24 - b12 + d6, d)
        }
        var i0 = range.lowerBound
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 9 * 16) { gathered in
            let gs = gathered.baseAddress!
            while i0 < range.upperBound {
                let count = min(16, range.upperBound - i0)
                // gs[e·16 + l] = element e of filter i0 + l.
                for l in 0..<16 {
                    for e in 0..<9 { gs[e * 16 + l] = l < count ? w[9 * (i0 + l) + e] : 0 }
                }
                @inline(__always) func g(_ e: Int) -> V { UnsafeRawPointer(gs + e * 16).loadUnaligned(as: V.self) }
                // t = G g: column j of t is G applied to column j of g; row r of U is G applied to row r of t.
                let c0 = g6(g(0), g(3), g(6)), c1 = g6(g(1), g(4), g(7)), c2 = g6(g(2), g(5), g(8))
                @inline(__always) func row(_ r: Int, _ a: V, _ b: V, _ d: V) { store(g6(a, b, d), u + 6 * r * kc + i0, step: kc, count: count) }
                row(0, c0.0, c1.0, c2.0)
                row(1, c0.1, c1.1, c2.1)
                row(2, c0.2, c1.2, c2.2)
                row(3, c0.3, c1.3, c2.3)
                row(4, c0.4, c1.4, c2.4)
                row(5, c0.5, c1.5, c2.5)
                i0 += count
            }
        }
    }

    /// Stores six vectors at p, p + step, …, p + 5·step: all 16 lanes, or the first `count`.
    @inline(__always)
    static func store(_ x: (V, V, V, V, V, V), _ p: UnsafeMutablePointer<Float>, step: Int, count: Int = 16) {
        @inline(__always) func one(_ i: Int, _ value: V) {
            let o = p + i * step
            if count == 16 {
                UnsafeMutableRawPointer(o).storeBytes(of: value, as: V.self)
            } else {
                for lane in 0..<count { o[lane] = value[lane] }
            }
        }
        one(0, x.0)
        one(1, x.1)
        one(2, x.2)
        one(3, x.3)
        one(4, x.4)
        one(5, x.5)
    }

    /// Stores four vectors (all lanes) at p, p + step, p + 2·step, p + 3·step.
    @inline(__always)
    static func store(_ x: (V, V, V, V), _ p: UnsafeMutablePointer<Float>, step: Int) {
        let raw = UnsafeMutableRawPointer(p), bytes = 4 * step
        raw.storeBytes(of: x.0, as: V.self)
        raw.storeBytes(of: x.1, toByteOffset: bytes, as: V.self)
        raw.storeBytes(of: x.2, toByteOffset: 2 * bytes, as: V.self)
        raw.storeBytes(of: x.3, toByteOffset: 3 * bytes, as: V.self)
    }

    /// Bᵀ applied to six values (rows or columns of a tile).
    @inline(__always)
    static func bt(_ d0: V, _ d1: V, _ d2: V, _ d3: V, _ d4: V, _ d5: V) -> (V, V, V, V, V, V) {
        let four: V = V(repeating: 4), two = V(repeating: 2), five = V(repeating: 5)
        return (four * d0 - five * d2 + d4,
                (d3 + d4) - four * (d1 + d2),
                (d4 - d3) + four * (d1 - d2),
                (d4 - d2) + two * (d3 - d1),
                (d4 - d2) - two * (d3 - d1),
                four * d1 - five * d3 + d5)
    }

    static func inputTransform(_ plane: UnsafePointer<Float>, h: Int, w: Int, rows: Range<Int>, tw: Int, padT: Int, padL: Int,
                               v: UnsafeMutablePointer<Float>, stride: Int) {
        let groups = (tw + 15) / 16, phaseLength = 16 * groups + 1
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 24 * phaseLength + 36 * 16) { buffer in
            // phases[(r·4 + p)·phaseLength + j] = input (y0 + r, 4j + p − padL), zero outside the plane.
            let phases = buffer.baseAddress!, t = phases + 24 * phaseLength
            for ty in rows {
                let y0 = 4 * ty - padT, base = (ty - rows.lowerBound) * tw
                for r in 0..<6 {
                    let iy = y0 + r
                    for p in 0..<4 {
                        let dst = phases + (r * 4 + p) * phaseLength
                        dst.update(repeating: 0, count: phaseLength)
                        guard iy >= 0 && iy < h else { continue }
                        // Columns 4j + p − padL inside 0..<w.
                        let last = w - 1 + padL - p
                        let first = (padL - p + 3) / 4, end = last < 0 ? 0 : min(phaseLength, last / 4 + 1)
                        guard end > first else { continue }
                        let row = plane + iy * w + p - padL
                        for j in first..<end { dst[j] = row[4 * j] }
                    }
                }
                for group in 0..<groups {
                    let j = 16 * group
                    @inline(__always) func load(_ r: Int, _ q: Int) -> V {
                        UnsafeRawPointer(phases + (r * 4 + (q & 3)) * phaseLength + j + (q >> 2)).loadUnaligned(as: V.self)
                    }
                    // Bᵀ d column by column into t (row r', column q at t[(6r' + q)·16]).
                    for q in 0..<6 {
                        store(bt(load(0, q), load(1, q), load(2, q), load(3, q), load(4, q), load(5, q)), t + q * 16, step: 6 * 16)
                    }
                    // (Bᵀ d) B row by row, stored 16 tiles wide.
                    let count = min(16, tw - j)
                    for r in 0..<6 {
                        @inline(__always) func tq(_ q: Int) -> V { UnsafeRawPointer(t + (6 * r + q) * 16).loadUnaligned(as: V.self) }
                        store(bt(tq(0), tq(1), tq(2), tq(3), tq(4), tq(5)), v + 6 * r * stride + base + j, step: stride, count: count)
                    }
                }
            }
        }
    }

    static func outputTransform(_ m: UnsafePointer<Float>, stride: Int, rows: Range<Int>, tw: Int, y: UnsafeMutablePointer<Float>,
                                ho: Int, wo: Int) {
        let groups = (tw + 15) / 16
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 36 * 16 + 16 * 16) { buffer in
            let s = buffer.baseAddress!, out = s + 36 * 16
            for ty in rows {
                let base = (ty - rows.lowerBound) * tw
                for group in 0..<groups {
                    let j = 16 * group, count = min(16, tw - j)
                    @inline(__always) func load(_ xi: Int) -> V {
                        let p = m + xi * stride + base + j
                        if count == 16 { return UnsafeRawPointer(p).loadUnaligned(as: V.self) }
                        var x = V()
                        for lane in 0..<count { x[lane] = p[lane] }
                        return x
                    }
                    // Aᵀ on the rows of m, column by column: s[(4r + q)·16].
                    for q in 0..<6 {
                        let m0 = load(q), m1 = load(6 + q), m2 = load(12 + q), m3 = load(18 + q), m4 = load(24 + q), m5 = load(30 + q)
                        store(at(m0, m1, m2, m3, m4, m5), s + q * 16, step: 6 * 16)
                    }
                    // Then on the columns: out[(4r + c)·16 + lane].
                    for r in 0..<4 {
                        @inline(__always) func sq(_ q: Int) -> V { UnsafeRawPointer(s + (6 * r + q) * 16).loadUnaligned(as: V.self) }
                        store(at(sq(0), sq(1), sq(2), sq(3), sq(4), sq(5)), out + 4 * r * 16, step: 16)
                    }
                    for r in 0..<4 {
                        let oy = 4 * ty + r
                        guard oy < ho else { break }
                        let row = y + oy * wo
                        for lane in 0..<count {
                            let ox = 4 * (j + lane)
                            for col in 0..<min(4, wo - ox) { row[ox + col] = out[(4 * r + col) * 16 + lane] }
                        }
                    }
                }
            }
        }
    }

    /// Aᵀ applied to six values.
    @inline(__always)
    static func at(_ m0: V, _ m1: V, _ m2: V, _ m3: V, _ m4: V, _ m5: V) -> (V, V, V, V) {
        let p12 = m1 + m2, d12 = m1 - m2, p34 = m3 + m4, d34 = m3 - m4
        return (m0 + p12 + p34, d12 + V(repeating: 2) * d34, p12 + V(repeating: 4) * p34, d12 + V(repeating: 8) * d34 + m5)
    }
}

import BLAS
import CKernels
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

    /// Y (n × K × ho × wo) = conv(X (n × C × h × w), W), then the epilogue (bias, fused ops). A
    /// band is a run of tile rows of one image, or, where an image has few tiles (RoI features in
    /// the mask and keypoint heads: 16 tiles of F(4×4) on 14 × 14), several whole images side by
    /// side, so that each position's GEMM has hundreds of columns. Each tile's result is the same
    /// sum whatever the band: a GEMM column depends on its own tile only.
    static func run(_ ctx: ExecutionContext, scratch: ScratchBuffers, x: UnsafePointer<Float>, n: Int, c: Int, h: Int, w: Int,
                    u: UnsafePointer<Float>, k: Int, y: UnsafeMutablePointer<Float>, ho: Int, wo: Int, padT: Int, padL: Int,
                    epilogue: ConvEpilogue = ConvEpilogue()) throws {
        let th = (ho + tile - 1) / tile, tw = (wo + tile - 1) / tile
        let perTileRow = points * (c + k) * tw
        let bandTileRows = max(1, min(th, bandFloats / perTileRow))
        let imagesPerBand = bandTileRows == th ? max(1, min(n, bandFloats / (perTileRow * th))) : 1
        try scratch.withBuffer(count: perTileRow * bandTileRows * imagesPerBand) { buffer in
            for first in stride(from: 0, to: n, by: imagesPerBand) {
                let images = first..<min(n, first + imagesPerBand)
                for ty0 in stride(from: 0, to: th, by: bandTileRows) {
                    band(ctx, x: x, images: images, rows: ty0..<min(th, ty0 + bandTileRows), c: c, h: h, w: w, u: u, k: k, y: y,
                         ho: ho, wo: wo, tw: tw, padT: padT, padL: padL, epilogue: epilogue, buffer: buffer)
                }
            }
        }
    }

    /// One band: tile rows `rows` of each of `images`, their tiles consecutive (image by image) in
    /// the band's T columns.
    private static func band(_ ctx: ExecutionContext, x: UnsafePointer<Float>, images: Range<Int>, rows: Range<Int>, c: Int, h: Int, w: Int,
                             u: UnsafePointer<Float>, k: Int, y: UnsafeMutablePointer<Float>, ho: Int, wo: Int, tw: Int, padT: Int, padL: Int,
                             epilogue: ConvEpilogue, buffer: UnsafeMutablePointer<Float>) {
        let perImage = rows.count * tw, t = images.count * perImage
        let threads = (ctx.pool?.liveThreadCount ?? 0) + 1
        let v = buffer, m = buffer + points * c * t
        // V (points × C × T) = Bᵀ d B for every channel and tile.
        let cParts = min(c, threads)
        ctx.parallelFor(cParts) { p in
            for ch in (c * p / cParts)..<(c * (p + 1) / cParts) {
                for (i, img) in images.enumerated() {
                    inputTransform(x + (img * c + ch) * h * w, h: h, w: w, rows: rows, tw: tw, padT: padT, padL: padL,
                                   v: v + ch * t + i * perImage, stride: c * t)
                }
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
            for (i, img) in images.enumerated() {
                let yi = y + img * k * ho * wo
                for o in o0..<o1 {
                    outputTransform(m + o * t + i * perImage, stride: k * t, rows: rows, tw: tw, y: yi + o * ho * wo, ho: ho, wo: wo)
                }
                epilogue.offset(by: o0).apply(yi + o0 * ho * wo + oy0 * wo, rows: o1 - o0, stride: ho * wo, count: (oy1 - oy0) * wo)
            }
        }
    }
}

/// F(2×2, 3×3): 16 positions, 2.25× fewer multiplications than im2col.
struct WinogradF2x3: WinogradAlgorithm {
    static let tile = 2
    static let points = 16

    static func filters(_ w: UnsafePointer<Float>, kc: Int, range: Range<Int>, into u: UnsafeMutablePointer<Float>) {
        // Blocks of 64 filters transformed into a local 16 × 64 buffer, then each position's 64
        // values copied out together: written one filter at a time, the 16 positions' streams
        // (kc floats apart, often a power of two) would evict each other from the cache.
        let block = 64
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 16 * block) { local in
            let t = local.baseAddress!
            for i0 in stride(from: range.lowerBound, to: range.upperBound, by: block) {
                let count = min(block, range.upperBound - i0)
                for l in 0..<count {
                    let g = w + 9 * (i0 + l)
                    // t = G g (4 × 3): rows g0, (g0 + g1 + g2)/2, (g0 − g1 + g2)/2, g2; then U = t Gᵀ.
                    func row(_ a: Float, _ b: Float, _ d: Float, _ r: Int) {
                        t[(4 * r) * block + l] = a
                        t[(4 * r + 1) * block + l] = (a + b + d) * 0.5
                        t[(4 * r + 2) * block + l] = (a - b + d) * 0.5
                        t[(4 * r + 3) * block + l] = d
                    }
                    row(g[0], g[1], g[2], 0)
                    row((g[0] + g[3] + g[6]) * 0.5, (g[1] + g[4] + g[7]) * 0.5, (g[2] + g[5] + g[8]) * 0.5, 1)
                    row((g[0] - g[3] + g[6]) * 0.5, (g[1] - g[4] + g[7]) * 0.5, (g[2] - g[5] + g[8]) * 0.5, 2)
                    row(g[6], g[7], g[8], 3)
                }
                for position in 0..<16 { (u + position * kc + i0).update(from: t + position * block, count: count) }
            }
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
/// multiplications than im2col. The transforms are C kernels (Sources/CKernels/sd_winograd_impl.h)
/// that run 16 tiles (or filters) per vector, in AVX-512 where the CPU has it: the input rows of a
/// tile row are first split by column phase (x mod 4), so each of a tile's 6 columns is a
/// contiguous vector across tiles.
struct WinogradF4x3: WinogradAlgorithm {
    static let tile = 4
    static let points = 36

    static func filters(_ w: UnsafePointer<Float>, kc: Int, range: Range<Int>, into u: UnsafeMutablePointer<Float>) {
        sd_winograd_f4_filters(w, kc, range.lowerBound, range.upperBound, u)
    }

    static func inputTransform(_ plane: UnsafePointer<Float>, h: Int, w: Int, rows: Range<Int>, tw: Int, padT: Int, padL: Int,
                               v: UnsafeMutablePointer<Float>, stride: Int) {
        sd_winograd_f4_input(plane, h, w, rows.lowerBound, rows.count, tw, padT, padL, v, stride)
    }

    static func outputTransform(_ m: UnsafePointer<Float>, stride: Int, rows: Range<Int>, tw: Int, y: UnsafeMutablePointer<Float>,
                                ho: Int, wo: Int) {
        sd_winograd_f4_output(m, stride, rows.lowerBound, rows.count, tw, y, ho, wo)
    }
}

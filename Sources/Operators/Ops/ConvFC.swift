import BLAS
import CKernels
import Storage

extension ExecutionContext {
    /// `C = alpha·op(A)·op(B) + beta·C` (row-major) split across the pool: the output's columns
    /// (or, when they are few, its rows) go to separate tasks, each one single-threaded sgemm.
    /// OpenBLAS itself runs with one thread, so pool threads and BLAS threads never compete.
    /// `epilogue` (row r of C is its output channel r) is applied in the GEMM's last pass.
    func gemm(_ ta: Transpose, _ tb: Transpose, m: Int, n: Int, k: Int, alpha: Float = 1,
              a: UnsafePointer<Float>, lda: Int? = nil, b: UnsafePointer<Float>, ldb: Int? = nil,
              beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int? = nil, epilogue: ConvEpilogue = ConvEpilogue()) {
        let lda = lda ?? (ta == .none ? k : m), ldb = ldb ?? (tb == .none ? n : k), ldc = ldc ?? n
        func one(m: Int, n: Int, a: UnsafePointer<Float>, b: UnsafePointer<Float>, c: UnsafeMutablePointer<Float>, _ epilogue: ConvEpilogue) {
            epilogue.fused(c, rows: m, stride: ldc, count: n) { e in
                BLAS.sgemm(ta, tb, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc, epilogue: e)
            }
        }
        let threads = (pool?.liveThreadCount ?? 0) + 1
        let work = m * n * k
        guard threads > 1, work >= 1 << 18 else {
            one(m: m, n: n, a: a, b: b, c: c, epilogue)
            return
        }
        if n >= 64 * threads {
            // Column blocks of B and C.
            let parts = threads
            parallelFor(parts) { p in
                let j0 = n * p / parts, j1 = n * (p + 1) / parts
                guard j1 > j0 else { return }
                one(m: m, n: j1 - j0, a: a, b: tb == .none ? b + j0 : b + j0 * ldb, c: c + j0, epilogue)
            }
        } else {
            // Row blocks of A and C.
            let parts = min(threads, max(1, m / 8))
            parallelFor(parts) { p in
                let i0 = m * p / parts, i1 = m * (p + 1) / parts
                guard i1 > i0 else { return }
                one(m: i1 - i0, n: n, a: ta == .none ? a + i0 * lda : a + i0, b: b, c: c + i0 * ldc, epilogue.offset(by: i0))
            }
        }
    }
}

/// Convolution geometry (NCHW), from Caffe2's arguments: `kernel` or `kernel_h`/`kernel_w`,
/// `stride`, `pad` or `pad_t`/`pad_l`/`pad_b`/`pad_r`, `dilation`, `group`. Output sizes use floor.
struct ConvGeometry: Sendable, Equatable {
    var kh = 1, kw = 1, sh = 1, sw = 1, padT = 0, padL = 0, padB = 0, padR = 0, dh = 1, dw = 1, group = 1

    init(_ io: OpIO, needsKernel: Bool = true) throws(OperatorError) {
        if io.has("kernels") {
            let k = try io.ints("kernels")
            try io.argument("kernels", k.count == 2, "must hold 2 values")
            (kh, kw) = (k[0], k[1])
        } else if io.has("kernel_h") || io.has("kernel_w") {
            (kh, kw) = (try io.int("kernel_h"), try io.int("kernel_w"))
        } else if needsKernel || io.has("kernel") {
            let k = try io.int("kernel")
            (kh, kw) = (k, k)
        }
        let s = try io.int("stride", 1)
        (sh, sw) = (try io.int("stride_h", s), try io.int("stride_w", s))
        let p = try io.int("pad", 0)
        (padT, padL, padB, padR) = (try io.int("pad_t", p), try io.int("pad_l", p), try io.int("pad_b", p), try io.int("pad_r", p))
        let d = try io.int("dilation", 1)
        (dh, dw) = (try io.int("dilation_h", d), try io.int("dilation_w", d))
        group = try io.int("group", 1)
        try io.argument("kernel", kh > 0 && kw > 0, "must be positive, got \(kh)×\(kw)")
        try io.argument("stride", sh > 0 && sw > 0, "must be positive, got \(sh)×\(sw)")
        try io.argument("pad", min(padT, padL, padB, padR) >= 0, "must be ≥ 0")
        try io.argument("dilation", dh > 0 && dw > 0, "must be positive")
        try io.argument("group", group > 0, "must be positive, got \(group)")
        try io.argument("order", (try io.string("order", "NCHW")) == "NCHW", "must be NCHW")
    }

    func outputSize(h: Int, w: Int) -> (Int, Int) {
        ((h + padT + padB - (dh * (kh - 1) + 1)) / sh + 1, (w + padL + padR - (dw * (kw - 1) + 1)) / sw + 1)
    }

    var isPointwise: Bool { kh == 1 && kw == 1 && sh == 1 && sw == 1 && padT == 0 && padL == 0 && padB == 0 && padR == 0 }

    /// `im2col` of output rows `rows` with the channels split across the pool.
    func im2col(_ ctx: ExecutionContext, _ x: UnsafePointer<Float>, channels: Int, h: Int, w: Int, ho: Int, wo: Int,
                rows: Range<Int>, col: UnsafeMutablePointer<Float>) {
        let parts = min(channels, (ctx.pool?.liveThreadCount ?? 0) + 1)
        let rowsPerChannel = kh * kw * rows.count * wo
        ctx.parallelFor(parts) { p in
            let c0 = channels * p / parts, c1 = channels * (p + 1) / parts
            im2col(x + c0 * h * w, channels: c1 - c0, h: h, w: w, ho: ho, wo: wo, rows: rows, col: col + c0 * rowsPerChannel)
        }
    }

    /// `col2imAdd` of output rows `rows` with the channels split across the pool (each channel's
    /// plane is its own).
    func col2imAdd(_ ctx: ExecutionContext, _ col: UnsafePointer<Float>, channels: Int, h: Int, w: Int, ho: Int, wo: Int,
                   rows: Range<Int>, dx: UnsafeMutablePointer<Float>) {
        let parts = min(channels, (ctx.pool?.liveThreadCount ?? 0) + 1)
        let rowsPerChannel = kh * kw * rows.count * wo
        ctx.parallelFor(parts) { p in
            let c0 = channels * p / parts, c1 = channels * (p + 1) / parts
            col2imAdd(col + c0 * rowsPerChannel, channels: c1 - c0, h: h, w: w, ho: ho, wo: wo, rows: rows, dx: dx + c0 * h * w)
        }
    }

    /// Unfolds `channels` planes of x (h×w) into col ((channels·kh·kw) × (rows.count·wo), rows
    /// `rowStride` apart, rows.count·wo by default): the columns of output rows `rows` (of `ho`).
    func im2col(_ x: UnsafePointer<Float>, channels: Int, h: Int, w: Int, ho: Int, wo: Int, rows: Range<Int>,
                col: UnsafeMutablePointer<Float>, rowStride: Int? = nil) {
        let rowStride = rowStride ?? rows.count * wo
        // For each kernel column, the output columns whose input column lies inside the plane
        // (the rest are padding zeros), so the copy loop needs no bounds test.
        let inside = (0..<kw).map { kj in validOutputColumns(offset: kj * dw - padL, w: w, wo: wo) }
        var row = 0
        for c in 0..<channels {
            let plane = x + c * h * w
            for ki in 0..<kh {
                for kj in 0..<kw {
                    let dst = col + row * rowStride
                    let (lo, hi) = inside[kj], offset = kj * dw - padL
                    for oy in rows {
                        let iy = oy * sh - padT + ki * dh
                        let out = dst + (oy - rows.lowerBound) * wo
                        if iy < 0 || iy >= h || hi <= lo {
                            out.update(repeating: 0, count: wo)
                            continue
                        }
                        let src = plane + iy * w + offset
                        if lo > 0 { out.update(repeating: 0, count: lo) }
                        if sw == 1 {
                            (out + lo).update(from: src + lo, count: hi - lo)
                        } else {
                            for ox in lo..<hi { out[ox] = src[ox * sw] }
                        }
                        if hi < wo { (out + hi).update(repeating: 0, count: wo - hi) }
                    }
                    row += 1
                }
            }
        }
    }

    /// The output columns `lo..<hi` whose input column `ox·sw + offset` lies in `0..<w`.
    func validOutputColumns(offset: Int, w: Int, wo: Int) -> (Int, Int) {
        // lo: the least ox ≥ 0 with ox·sw + offset ≥ 0; hi: one past the last with ox·sw + offset ≤ w − 1.
        let lo = offset >= 0 ? 0 : (-offset + sw - 1) / sw
        let last = w - 1 - offset
        let hi = last < 0 ? 0 : min(wo, last / sw + 1)
        return (min(lo, wo), max(min(lo, wo), hi))
    }

    /// Folds col (the columns of output rows `rows`, rows `rowStride` apart) back, adding into dx
    /// (the adjoint of ``im2col(_:channels:h:w:ho:wo:rows:col:rowStride:)``).
    func col2imAdd(_ col: UnsafePointer<Float>, channels: Int, h: Int, w: Int, ho: Int, wo: Int, rows: Range<Int>,
                   dx: UnsafeMutablePointer<Float>, rowStride: Int? = nil) {
        let rowStride = rowStride ?? rows.count * wo
        let inside = (0..<kw).map { kj in validOutputColumns(offset: kj * dw - padL, w: w, wo: wo) }
        var row = 0
        for c in 0..<channels {
            let plane = dx + c * h * w
            for ki in 0..<kh {
                for kj in 0..<kw {
                    let src = col + row * rowStride
                    let (lo, hi) = inside[kj], offset = kj * dw - padL
                    for oy in rows {
                        let iy = oy * sh - padT + ki * dh
                        if iy < 0 || iy >= h || hi <= lo { continue }
                        let dst = plane + iy * w + offset
                        let s = src + (oy - rows.lowerBound) * wo
                        if sw == 1 {
                            // Contiguous: a loop the compiler vectorises.
                            for ox in lo..<hi { dst[ox] += s[ox] }
                        } else {
                            for ox in lo..<hi { dst[ox * sw] += s[ox] }
                        }
                    }
                    row += 1
                }
            }
        }
    }
}

/// `Conv(X, W[, b]) -> Y`, NCHW, by im2col + sgemm (1×1 stride-1 convolutions skip im2col).
/// The columns are unfolded a band of output rows at a time (about 8 MB of them) into the net's
/// shared scratch memory, so no op keeps a whole-image column buffer. With `algo` "winograd"
/// (3×3, stride 1, no dilation, one group) it runs ``WinogradF4x3`` (4× fewer multiplications) or
/// ``WinogradF2x3`` (2.25×) where the shapes favour them (``choose(n:c:ho:wo:)``); the same results
/// up to float rounding (relative differences of order 1e-6 and 1e-5).
/// Inference nets may fuse the following AffineChannel, a Sum with a residual blob and a Relu
/// into it (``NetDef/fusedForInference(keeping:)``): `Conv(X, W[, b][, scale, shift][, residual])`
/// with `fused_affine`, `fused_residual` and `fused_relu`; see ``ConvEpilogue``.
final class ConvOp: Operator, @unchecked Sendable {
    let io: OpIO
    let geo: ConvGeometry
    /// How 3×3 stride-1 convolutions run (`algo`).
    enum Algorithm {
        case im2col
        /// "winograd": per call, F(4×4, 3×3), F(2×2, 3×3) or im2col, whichever the shapes favour (see ``choose(n:c:ho:wo:)``).
        case winograd
        /// "winograd_f2", "winograd_f4": that variant whatever the shapes.
        case fixed(any WinogradAlgorithm.Type)

        var isIm2col: Bool { if case .im2col = self { true } else { false } }
    }
    let algorithm: Algorithm
    let fusedAffine: Bool
    let fusedResidual: Bool
    let fusedRelu: Bool
    /// Floats of im2col columns per band.
    static let bandFloats = 1 << 21
    /// The fewest output columns a thread's own band may have: below this the sgemm's 32-column
    /// panels run mostly empty, and splitting by output channels pays more.
    static let minBandColumns = 256

    init(_ io: OpIO) throws(OperatorError) {
        self.io = io
        geo = try ConvGeometry(io)
        let algo = try io.string("algo", "im2col")
        switch algo {
        case "im2col": algorithm = .im2col
        case "winograd": algorithm = .winograd
        case "winograd_f2": algorithm = .fixed(WinogradF2x3.self)
        case "winograd_f4": algorithm = .fixed(WinogradF4x3.self)
        default:
            algorithm = .im2col
            try io.argument("algo", false, "must be im2col, winograd, winograd_f2 or winograd_f4, got '\(algo)'")
        }
        fusedAffine = try io.bool("fused_affine", false)
        fusedResidual = try io.bool("fused_residual", false)
        fusedRelu = try io.bool("fused_relu", false)
        let plain = io.inputCount - (fusedAffine ? 2 : 0) - (fusedResidual ? 1 : 0)
        try io.argument("fused_affine", plain == 2 || plain == 3,
                        "and fused_residual set, the inputs must be (X, W[, b]\(fusedAffine ? ", scale, shift" : "")\(fusedResidual ? ", residual" : ""))")
        if !algorithm.isIm2col {
            try io.argument("algo", geo.kh == 3 && geo.kw == 3 && geo.sh == 1 && geo.sw == 1 && geo.dh == 1 && geo.dw == 1 && geo.group == 1,
                            "winograd needs a 3×3 convolution with stride 1, dilation 1 and one group")
        }
    }

    /// Checks X and W against each other and returns (n, c, h, w, m, ho, wo).
    static func shapes(_ io: OpIO, _ geo: ConvGeometry, x: Tensor, w: Tensor) throws(OpRunError) -> (Int, Int, Int, Int, Int, Int, Int) {
        try io.require(x.rank == 4, input: 0, "must be NCHW, has shape \(x.shape)")
        try io.require(w.rank == 4, input: 1, "must be (M, C/group, kh, kw), has shape \(w.shape)")
        let (n, c, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let m = w.shape[0]
        try io.require(c % geo.group == 0 && m % geo.group == 0, input: 1, "channels \(c) → \(m) are not divisible by group \(geo.group)")
        try io.require(w.shape[1] == c / geo.group && w.shape[2] == geo.kh && w.shape[3] == geo.kw, input: 1,
                       "has shape \(w.shape), expected \([m, c / geo.group, geo.kh, geo.kw]) for input \(x.shape)")
        let (ho, wo) = geo.outputSize(h: h, w: wd)
        try io.require(ho > 0 && wo > 0, input: 0, "of size \(h)×\(wd) is smaller than the \(geo.kh)×\(geo.kw) kernel with this padding")
        return (n, c, h, wd, m, ho, wo)
    }

    func run(_ ctx: ExecutionContext) throws {
        let (x, xd) = try io.inputData(0)
        let (w, wdata) = try io.inputData(1)
        let (n, c, h, wd, m, ho, wo) = try Self.shapes(io, geo, x: x, w: w)
        let (_, y) = try io.outputData(0, shape: [n, m, ho, wo])
        var epilogue = ConvEpilogue(relu: fusedRelu)
        func perChannel(_ i: Int) throws(OpRunError) -> UnsafePointer<Float> {
            let (t, d) = try io.inputData(i)
            try io.require(t.count == m, input: i, "has \(t.count) values for \(m) output channels")
            return d.baseAddress!
        }
        let plain = io.inputCount - (fusedAffine ? 2 : 0) - (fusedResidual ? 1 : 0)
        if plain == 3 { epilogue.bias = try perChannel(2) }
        if fusedAffine { (epilogue.scale, epilogue.shift) = (try perChannel(plain), try perChannel(plain + 1)) }
        if fusedResidual {
            let (r, rd) = try io.inputData(io.inputCount - 1)
            try io.require(r.shape == [n, m, ho, wo], input: io.inputCount - 1, "has shape \(r.shape), the output \([n, m, ho, wo])")
            try io.require(rd.baseAddress != UnsafePointer(y.baseAddress), input: io.inputCount - 1, "must not be the output blob")
            epilogue.residual = (rd.baseAddress!, y.baseAddress!)
        }
        let g = geo.group, cg = c / g, mg = m / g, k = cg * geo.kh * geo.kw, hw = ho * wo
        let scratch = ctx.scratch ?? ScratchBuffers(context: io.workspace.context)
        if let winograd = choose(n: n, c: c, ho: ho, wo: wo) {
            try scratch.withBuffer(count: winograd.points * m * c) { u in
                winograd.filters(ctx, wdata.baseAddress!, k: m, c: c, into: u)
                try winograd.run(ctx, scratch: scratch, x: xd.baseAddress!, n: n, c: c, h: h, w: wd, u: u, k: m,
                                 y: y.baseAddress!, ho: ho, wo: wo, padT: geo.padT, padL: geo.padL, epilogue: epilogue)
            }
            return
        }
        if g == 1 && !geo.isPointwise && Self.batchesImages(n: n, hw: hw) {
            try batchedForward(ctx, scratch, x: xd.baseAddress!, n: n, c: c, h: h, w: wd, weights: wdata.baseAddress!, m: m,
                               y: y.baseAddress!, ho: ho, wo: wo, epilogue: epilogue)
            return
        }
        for img in 0..<n {
            for gi in 0..<g {
                let xg = xd.baseAddress! + (img * c + gi * cg) * h * wd
                let yg = y.baseAddress! + (img * m + gi * mg) * hw
                let wg = wdata.baseAddress! + gi * mg * k
                let ep = epilogue.offset(by: gi * mg)
                if geo.isPointwise {
                    // Column blocks of Y, each multiplied and finished while in cache.
                    let blocks = max((ctx.pool?.liveThreadCount ?? 0) + 1, hw / 2048)
                    ctx.parallelFor(blocks) { p in
                        let j0 = hw * p / blocks, j1 = hw * (p + 1) / blocks
                        guard j1 > j0 else { return }
                        ep.fused(yg + j0, rows: mg, stride: hw, count: j1 - j0) { e in
                            BLAS.sgemm(.none, .none, m: mg, n: j1 - j0, k: k, a: wg, lda: k, b: xg + j0, ldb: hw, c: yg + j0, ldc: hw, epilogue: e)
                        }
                    }
                } else {
                    try unfoldAndMultiply(ctx, scratch, x: xg, channels: cg, h: h, w: wd, weights: wg, m: mg, y: yg, ho: ho, wo: wo, epilogue: ep)
                }
            }
        }
    }

    /// Whether a convolution unfolds several images into one GEMM: many small maps (RoI features
    /// in the box and mask heads), where one GEMM per image would have a few dozen columns. Never
    /// for a minibatch of images (they are fewer than this), so training the backbone sums as before.
    static func batchesImages(n: Int, hw: Int) -> Bool { n >= 8 && hw < minBandColumns }
    /// The columns of a band of batched images in the forward pass: wider than a row band's, so
    /// that each GEMM packs the weights once for more images (Mask R-CNN's 256-channel mask head:
    /// 4 → 18 RoIs a band, its four convolutions ~10 % faster). Each output is one image's sum
    /// whatever the band; the gradient keeps ``bandFloats``, since its dW sums over the band's
    /// columns and a different band would round training differently.
    static let batchBandFloats = 1 << 23

    /// `n` small images at once: bands of whole images unfolded side by side (channel rows of
    /// images·hw columns), Y' (m × images·hw) = W · col in one GEMM, then each image's m × hw
    /// block copied out and finished. Each output is the same sum as one image's GEMM gives.
    private func batchedForward(_ ctx: ExecutionContext, _ scratch: ScratchBuffers, x: UnsafePointer<Float>, n: Int, c: Int, h: Int, w: Int,
                                weights: UnsafePointer<Float>, m: Int, y: UnsafeMutablePointer<Float>, ho: Int, wo: Int,
                                epilogue: ConvEpilogue) throws {
        let k = c * geo.kh * geo.kw, hw = ho * wo
        let perBand = max(1, min(n, Self.batchBandFloats / max(1, k * hw)))
        try scratch.withBuffer(count: (k + m) * perBand * hw) { buffer in
            let col = buffer, out = buffer + k * perBand * hw
            for first in stride(from: 0, to: n, by: perBand) {
                let images = min(perBand, n - first), cols = images * hw
                ctx.parallelFor(images) { i in
                    geo.im2col(x + (first + i) * c * h * w, channels: c, h: h, w: w, ho: ho, wo: wo, rows: 0..<ho, col: col + i * hw, rowStride: cols)
                }
                ctx.gemm(.none, .none, m: m, n: cols, k: k, a: weights, b: col, c: out)
                ctx.parallelFor(images) { i in
                    let yi = y + (first + i) * m * hw
                    for o in 0..<m { (yi + o * hw).update(from: out + o * cols + i * hw, count: hw) }
                    epilogue.apply(yi, rows: m, stride: hw, count: hw)
                }
            }
        }
    }

    /// The Winograd variant for these shapes, nil for im2col. Measured on R-50-FPN's layers (one
    /// thread, docs/benchmarks.md): the transforms cost per tile and per channel, the GEMMs lose
    /// efficiency below ~256 tiles, and the filter transform is paid on every call; so F(4×4) where
    /// the n images have ≥ 200 tiles of 4 × 4 and ≥ 128 input channels (at 247 tiles, RetinaNet's
    /// P4 towers at 800 × 1,216, F(4×4) took 19 ms where F(2×2) took 28), else F(2×2) where that
    /// has ≥ 256 tiles, else im2col. (Small maps count together: ``WinogradAlgorithm/run`` bands images.)
    func choose(n: Int, c: Int, ho: Int, wo: Int) -> (any WinogradAlgorithm.Type)? {
        switch algorithm {
        case .im2col: return nil
        case .fixed(let variant): return variant
        case .winograd:
            func tiles(_ m: Int) -> Int { n * ((ho + m - 1) / m) * ((wo + m - 1) / m) }
            if tiles(4) >= 200 && c >= 128 { return WinogradF4x3.self }
            return tiles(2) >= 256 ? WinogradF2x3.self : nil
        }
    }

    /// Y (m × ho·wo, one group of one image) = W (m × k) · im2col(X), a band of output rows at a
    /// time. With several threads, when bands of at least ``minBandColumns`` columns can be dealt
    /// out evenly (a multiple of the threads, rows shared out to ±1), each thread unfolds and
    /// multiplies its own bands (single-threaded sgemm, no synchronisation between the two
    /// steps); otherwise (small maps) each band's im2col and sgemm are split across the pool, the
    /// sgemm by output channels.
    private func unfoldAndMultiply(_ ctx: ExecutionContext, _ scratch: ScratchBuffers, x: UnsafePointer<Float>, channels: Int, h: Int, w: Int,
                                   weights: UnsafePointer<Float>, m: Int, y: UnsafeMutablePointer<Float>, ho: Int, wo: Int,
                                   epilogue: ConvEpilogue) throws {
        let k = channels * geo.kh * geo.kw, hw = ho * wo
        let bandRows = max(1, min(ho, Self.bandFloats / max(1, k * wo)))
        let threads = (ctx.pool?.liveThreadCount ?? 0) + 1
        let bands = threads * (((ho + bandRows - 1) / bandRows + threads - 1) / threads)
        let rowsPerBand = (ho + bands - 1) / bands
        if threads > 1 && ho >= bands && rowsPerBand * wo >= Self.minBandColumns {
            let bandSize = k * rowsPerBand * wo
            try scratch.withBuffer(count: threads * bandSize) { buffer in
                ctx.parallelFor(threads) { p in
                    for band in stride(from: p, to: bands, by: threads) {
                        let rows = (ho * band / bands)..<(ho * (band + 1) / bands), col = buffer + p * bandSize, y0 = rows.lowerBound
                        geo.im2col(x, channels: channels, h: h, w: w, ho: ho, wo: wo, rows: rows, col: col)
                        epilogue.fused(y + y0 * wo, rows: m, stride: hw, count: rows.count * wo) { e in
                            BLAS.sgemm(.none, .none, m: m, n: rows.count * wo, k: k, alpha: 1, a: weights, lda: k, b: col, ldb: rows.count * wo,
                                       beta: 0, c: y + y0 * wo, ldc: hw, epilogue: e)
                        }
                    }
                }
            }
            return
        }
        try scratch.withBuffer(count: k * bandRows * wo) { col in
            for y0 in stride(from: 0, to: ho, by: bandRows) {
                let rows = y0..<min(ho, y0 + bandRows)
                geo.im2col(ctx, x, channels: channels, h: h, w: w, ho: ho, wo: wo, rows: rows, col: col)
                ctx.gemm(.none, .none, m: m, n: rows.count * wo, k: k, a: weights, b: col, c: y + y0 * wo, ldc: hw, epilogue: epilogue)
            }
        }
    }
}

/// What Conv does to each output value after the convolution sum, with the arithmetic of the ops
/// it stands for, in their order: its bias (`y += b`), a fused AffineChannel (`y = y·scale + shift`),
/// a fused two-input Sum with a residual blob (`y = (0 + y) + r`, as Sum accumulates), a fused Relu
/// (`y = y > 0 ? y : 0`).
struct ConvEpilogue: @unchecked Sendable {
    var bias: UnsafePointer<Float>?
    var scale: UnsafePointer<Float>?
    var shift: UnsafePointer<Float>?
    /// The residual blob's data and the output's, to find a value's partner by its offset.
    var residual: (values: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>)?
    var relu = false

    /// The same for output channels from `first` on.
    func offset(by first: Int) -> ConvEpilogue {
        ConvEpilogue(bias: bias.map { $0 + first }, scale: scale.map { $0 + first }, shift: shift.map { $0 + first },
                     residual: residual, relu: relu)
    }

    /// Whether it leaves the convolution sums as they are.
    var isEmpty: Bool { bias == nil && scale == nil && residual == nil && !relu }

    /// Applies it to `rows` output channels (0, 1, … of this epilogue), `count` values each, `stride` apart.
    func apply(_ y: UnsafeMutablePointer<Float>, rows: Int, stride: Int, count: Int) {
        guard !isEmpty else { return }
        for r in 0..<rows {
            let p = y + r * stride
            if let bias {
                let b = bias[r]
                for i in 0..<count { p[i] += b }
            }
            if let scale, let shift {
                let s = scale[r], t = shift[r]
                for i in 0..<count { p[i] = p[i] * s + t }
            }
            if let (values, output) = residual {
                let q = values + (p - output)
                for i in 0..<count { p[i] = (0 + p[i]) + q[i] }
            }
            if relu {
                for i in 0..<count { p[i] = p[i] > 0 ? p[i] : 0 }
            }
        }
    }

    /// Runs `gemm`, which writes `rows` × `count` values at `c` (row stride `stride`, row r being
    /// output channel r of this epilogue), giving it this epilogue in the GEMM kernel's form (nil
    /// when empty) so that each value is finished in the pass that stores it; applies it
    /// afterwards when `gemm` says it could not (OpenBLAS ran). The values are the same either way.
    func fused(_ c: UnsafeMutablePointer<Float>, rows: Int, stride: Int, count: Int, _ gemm: (UnsafePointer<sd_epilogue>?) -> Bool) {
        guard !isEmpty else {
            _ = gemm(nil)
            return
        }
        var kernelForm = sd_epilogue(bias: bias, scale: scale, shift: shift, residual: residual.map { UnsafePointer($0.values + (c - $0.output)) },
                                     ldr: stride, relu: relu ? 1 : 0)
        if !withUnsafePointer(to: &kernelForm, gemm) { apply(c, rows: rows, stride: stride, count: count) }
    }
}

/// A convolution gradient's dY (input 2, checked against `dy`) and its outputs dW, db (when
/// `hasBias`) and dX (when `computeDX`; shaped as X), all zeroed.
func convGradientOutputs(_ io: OpIO, x: Tensor, w: Tensor, dy: [Int], hasBias: Bool, computeDX: Bool) throws(OpRunError)
    -> (UnsafeBufferPointer<Float>, UnsafeMutableBufferPointer<Float>, UnsafeMutableBufferPointer<Float>?, UnsafeMutableBufferPointer<Float>?) {
    let (t, dyd) = try io.inputData(2)
    try io.require(t.shape == dy, input: 2, "has shape \(t.shape), expected \(dy)")
    let (_, dw) = try io.outputData(0, shape: w.shape)
    dw.update(repeating: 0)
    var db: UnsafeMutableBufferPointer<Float>?
    if hasBias {
        db = try io.outputData(1, shape: [dy[1]]).1
        db!.update(repeating: 0)
    }
    var dx: UnsafeMutableBufferPointer<Float>?
    if computeDX {
        dx = try io.outputData(hasBias ? 2 : 1, shape: x.shape).1
        dx!.update(repeating: 0)
    }
    return (dyd, dw, db, dx)
}

/// `ConvGradient(X, W, dY) -> (dW[, db][, dX])`: the `no_bias` and `compute_dX` arguments say
/// which outputs there are.
final class ConvGradientOp: Operator, Sendable {
    let io: OpIO
    let geo: ConvGeometry
    let hasBias: Bool
    let computeDX: Bool

    init(_ io: OpIO) throws(OperatorError) {
        self.io = io
        geo = try ConvGeometry(io)
        hasBias = !(try io.bool("no_bias", false))
        computeDX = try io.bool("compute_dX", true)
        try io.argument("outputs", io.outputCount == 1 + (hasBias ? 1 : 0) + (computeDX ? 1 : 0), "do not match no_bias/compute_dX")
    }

    func run(_ ctx: ExecutionContext) throws {
        let (x, xd) = try io.inputData(0)
        let (w, wdata) = try io.inputData(1)
        let (n, c, h, wd, m, ho, wo) = try ConvOp.shapes(io, geo, x: x, w: w)
        let (dyd, dw, db, dx) = try convGradientOutputs(io, x: x, w: w, dy: [n, m, ho, wo], hasBias: hasBias, computeDX: computeDX)
        let g = geo.group, cg = c / g, k = cg * geo.kh * geo.kw, hw = ho * wo
        let bandRows = max(1, min(ho, ConvOp.bandFloats / max(1, k * wo)))
        let scratch = ctx.scratch ?? ScratchBuffers(context: io.workspace.context)
        if g == 1 && !geo.isPointwise && ConvOp.batchesImages(n: n, hw: hw) {
            try batchedGradient(ctx, scratch, x: xd.baseAddress!, n: n, c: c, h: h, w: wd, weights: wdata.baseAddress!, m: m,
                                dy: dyd.baseAddress!, ho: ho, wo: wo, dw: dw.baseAddress!, dx: dx?.baseAddress)
        } else {
            try perImageGradient(ctx, scratch, xd: xd.baseAddress!, n: n, c: c, h: h, wd: wd, wdata: wdata.baseAddress!, m: m, dyd: dyd.baseAddress!,
                                 ho: ho, wo: wo, dw: dw.baseAddress!, dx: dx?.baseAddress, bandRows: bandRows)
        }
        if let db {
            for img in 0..<n {
                for oc in 0..<m {
                    let p = dyd.baseAddress! + (img * m + oc) * hw
                    var acc: Float = 0
                    for i in 0..<hw { acc += p[i] }
                    db[oc] += acc
                }
            }
        }
    }

    /// ``ConvOp``'s batched layout backwards: per band of images, dY' (m × images·hw) gathered
    /// from dY, dW += dY' · colᵀ, and dX's columns W ᵀ · dY' folded back image by image.
    private func batchedGradient(_ ctx: ExecutionContext, _ scratch: ScratchBuffers, x: UnsafePointer<Float>, n: Int, c: Int, h: Int, w: Int,
                                 weights: UnsafePointer<Float>, m: Int, dy: UnsafePointer<Float>, ho: Int, wo: Int,
                                 dw: UnsafeMutablePointer<Float>, dx: UnsafeMutablePointer<Float>?) throws {
        let k = c * geo.kh * geo.kw, hw = ho * wo
        let perBand = max(1, min(n, ConvOp.bandFloats / max(1, k * hw)))
        try scratch.withBuffer(count: (k + m) * perBand * hw) { buffer in
            let col = buffer, dyBand = buffer + k * perBand * hw
            for first in stride(from: 0, to: n, by: perBand) {
                let images = min(perBand, n - first), cols = images * hw
                ctx.parallelFor(images) { i in
                    geo.im2col(x + (first + i) * c * h * w, channels: c, h: h, w: w, ho: ho, wo: wo, rows: 0..<ho, col: col + i * hw, rowStride: cols)
                    let dyi = dy + (first + i) * m * hw
                    for o in 0..<m { (dyBand + o * cols + i * hw).update(from: dyi + o * hw, count: hw) }
                }
                ctx.gemm(.none, .transpose, m: m, n: k, k: cols, a: dyBand, b: col, beta: 1, c: dw)
                guard let dx else { continue }
                ctx.gemm(.transpose, .none, m: k, n: cols, k: m, a: weights, b: dyBand, c: col)
                ctx.parallelFor(images) { i in
                    geo.col2imAdd(col + i * hw, channels: c, h: h, w: w, ho: ho, wo: wo, rows: 0..<ho, dx: dx + (first + i) * c * h * w, rowStride: cols)
                }
            }
        }
    }

    /// One image (and group) at a time, a band of output rows at a time.
    private func perImageGradient(_ ctx: ExecutionContext, _ scratch: ScratchBuffers, xd: UnsafePointer<Float>, n: Int, c: Int, h: Int, wd: Int,
                                  wdata: UnsafePointer<Float>, m: Int, dyd: UnsafePointer<Float>, ho: Int, wo: Int,
                                  dw: UnsafeMutablePointer<Float>, dx: UnsafeMutablePointer<Float>?, bandRows: Int) throws {
        let g = geo.group, cg = c / g, mg = m / g, k = cg * geo.kh * geo.kw, hw = ho * wo
        for img in 0..<n {
            for gi in 0..<g {
                let xg = xd + (img * c + gi * cg) * h * wd
                let dyg = dyd + (img * m + gi * mg) * hw
                let wg = wdata + gi * mg * k
                let dwg = dw + gi * mg * k
                let dxg = dx.map { $0 + (img * c + gi * cg) * h * wd }
                if geo.isPointwise {
                    // dW_g += dY_g (mg × hw) · Xᵀ (hw × k); dX_g += W_gᵀ (k × mg) · dY_g
                    ctx.gemm(.none, .transpose, m: mg, n: k, k: hw, a: dyg, b: xg, beta: 1, c: dwg)
                    if let dxg { ctx.gemm(.transpose, .none, m: k, n: hw, k: mg, a: wg, b: dyg, beta: 1, c: dxg) }
                    continue
                }
                try scratch.withBuffer(count: k * bandRows * wo) { col in
                    for y0 in stride(from: 0, to: ho, by: bandRows) {
                        let rows = y0..<min(ho, y0 + bandRows), cols = rows.count * wo
                        // dW_g += dY_g[:, band] (mg × cols) · colᵀ (cols × k)
                        geo.im2col(ctx, xg, channels: cg, h: h, w: wd, ho: ho, wo: wo, rows: rows, col: col)
                        ctx.gemm(.none, .transpose, m: mg, n: k, k: cols, a: dyg + y0 * wo, lda: hw, b: col, beta: 1, c: dwg)
                        if let dxg {
                            // dcol = W_gᵀ (k × mg) · dY_g[:, band] (mg × cols), folded back into dX
                            ctx.gemm(.transpose, .none, m: k, n: cols, k: mg, a: wg, b: dyg + y0 * wo, ldb: hw, c: col)
                            geo.col2imAdd(ctx, col, channels: cg, h: h, w: wd, ho: ho, wo: wo, rows: rows, dx: dxg)
                        }
                    }
                }
            }
        }
    }
}

/// `FC(X, W, b; axis=1) -> Y = X·Wᵀ + b`, W stored (out, in) as in Caffe2.
final class FCOp: Operator, Sendable {
    let io: OpIO
    let axis: Int
    init(_ io: OpIO) throws(OperatorError) {
        self.io = io
        axis = try io.int("axis", 1)
    }

    static func shapes(_ io: OpIO, axis: Int, x: Tensor, w: Tensor) throws(OpRunError) -> (Int, Int, Int) {
        try io.require(axis >= 0 && axis <= x.rank, input: 0, "has rank \(x.rank); axis \(axis) is out of range")
        let mRows = x.shape[..<axis].reduce(1, *), k = x.shape[axis...].reduce(1, *)
        try io.require(w.rank == 2 && w.shape[1] == k, input: 1, "has shape \(w.shape), expected (N, \(k)) for input \(x.shape)")
        return (mRows, k, w.shape[0])
    }

    func run(_ ctx: ExecutionContext) throws {
        let (x, xd) = try io.inputData(0)
        let (w, wd) = try io.inputData(1)
        let (mRows, k, nOut) = try Self.shapes(io, axis: axis, x: x, w: w)
        let (b, bd) = try io.inputData(2)
        try io.require(b.count == nOut, input: 2, "has \(b.count) values for \(nOut) outputs")
        let (_, y) = try io.outputData(0, shape: Array(x.shape[..<axis]) + [nOut])
        for r in 0..<mRows { (y.baseAddress! + r * nOut).update(from: bd.baseAddress!, count: nOut) }
        ctx.gemm(.none, .transpose, m: mRows, n: nOut, k: k, a: xd.baseAddress!, b: wd.baseAddress!, beta: 1, c: y.baseAddress!)
    }
}

/// `FCGradient(X, W, dY) -> (dW, db[, dX])`.
final class FCGradientOp: Operator, Sendable {
    let io: OpIO
    let axis: Int
    init(_ io: OpIO) throws(OperatorError) {
        self.io = io
        axis = try io.int("axis", 1)
    }

    func run(_ ctx: ExecutionContext) throws {
        let (x, xd) = try io.inputData(0)
        let (w, wd) = try io.inputData(1)
        let (mRows, k, nOut) = try FCOp.shapes(io, axis: axis, x: x, w: w)
        let (dy, dyd) = try io.inputData(2)
        try io.require(dy.count == mRows * nOut, input: 2, "has shape \(dy.shape), expected \(mRows)×\(nOut)")
        let (_, dw) = try io.outputData(0, shape: w.shape)
        ctx.gemm(.transpose, .none, m: nOut, n: k, k: mRows, a: dyd.baseAddress!, b: xd.baseAddress!, c: dw.baseAddress!)
        let (_, db) = try io.outputData(1, shape: [nOut])
        db.update(repeating: 0)
        for r in 0..<mRows { for j in 0..<nOut { db[j] += dyd[r * nOut + j] } }
        if io.outputCount > 2 {
            let (_, dx) = try io.outputData(2, shape: x.shape)
            ctx.gemm(.none, .none, m: mRows, n: k, k: nOut, a: dyd.baseAddress!, b: wd.baseAddress!, c: dx.baseAddress!)
        }
    }
}

func registerConvAndFC(_ r: inout OperatorRegistry) {
    r.register("Conv", OperatorSchema(inputs: 2...6, outputs: 1...1, gradient: { g throws(GradientRefusal) in
        try GradientRefusal.ifFused(g.def, ["fused_affine", "fused_residual", "fused_relu"])
        var args = g.def.arguments
        let hasBias = g.def.inputs.count > 2
        if !hasBias { args["no_bias"] = .int(1) }
        var outs = [g.inputGradient(1)]
        if hasBias { outs.append(g.inputGradient(2)) }
        var inputs = Set(g.def.inputs.indices)
        if g.needsGradient(0) {
            outs.append(g.inputGradient(0))
        } else {
            // Nothing reads dX (the net's input image): the unfold and GEMM that make it are skipped.
            args["compute_dX"] = .int(0)
            inputs.remove(0)
        }
        return GradientResult(ops: [OperatorDef("ConvGradient", inputs: [g.input(0), g.input(1), g.outputGradient(0)!],
                                                outputs: outs, arguments: args)],
                              inputsWithGradient: inputs)
    }) { io throws(OperatorError) in try ConvOp(io) })
    r.register("ConvGradient", OperatorSchema(inputs: 3...3, outputs: 1...3) { io throws(OperatorError) in try ConvGradientOp(io) })
    r.register("FC", OperatorSchema(inputs: 3...3, outputs: 1...1, gradient: { g in
        GradientResult(ops: [OperatorDef("FCGradient", inputs: [g.input(0), g.input(1), g.outputGradient(0)!],
                                         outputs: [g.inputGradient(1), g.inputGradient(2), g.inputGradient(0)], arguments: g.def.arguments)],
                       inputsWithGradient: [0, 1, 2])
    }) { io throws(OperatorError) in try FCOp(io) })
    r.register("FCGradient", OperatorSchema(inputs: 3...3, outputs: 2...3) { io throws(OperatorError) in try FCGradientOp(io) })
}

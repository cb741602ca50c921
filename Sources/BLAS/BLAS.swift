import CBLAS
import CBLASPreinit
import CKernels
#if canImport(Glibc)
import Glibc
#endif

/// Whether a matrix operand is used as stored or transposed.
public enum Transpose: Sendable {
    case none, transpose

    var cblas: CBLAS_TRANSPOSE { self == .none ? CblasNoTrans : CblasTrans }
}

/// A thin, checked Swift layer over OpenBLAS (row-major, float32).
///
/// OpenBLAS keeps one thread count per process; ``threadCount`` reads and sets it, so the
/// engine can give BLAS the same core budget its own thread pool uses (see
/// `Portability.CPUBudget`) and the two never oversubscribe the cores together. Executables that
/// link this module start OpenBLAS with one thread (unless `OPENBLAS_NUM_THREADS`,
/// `GOTO_NUM_THREADS` or `OMP_NUM_THREADS` says otherwise): its load-time thread start would
/// otherwise kill the process under a low `ulimit -u` or pids limit (see ``singleThreadedAtLoad``).
public enum BLAS {
    /// Whether OpenBLAS was started with one thread by this module (true) or the environment
    /// chose its thread count (false).
    public static var singleThreadedAtLoad: Bool { sd_blas_preinit_applied() != 0 }

    /// The number of threads OpenBLAS uses for one call.
    public static var threadCount: Int {
        get { Int(openblas_get_num_threads()) }
        set { openblas_set_num_threads(Int32(max(1, newValue))) }
    }

    /// Which code runs ``sgemm``.
    public enum GEMMKernel: String, Sendable {
        /// Our packed AVX-512 kernel (`Sources/CKernels`), used where the CPU has AVX-512F: it does not
        /// depend on the kernels OpenBLAS picks (or `OPENBLAS_CORETYPE` forces) for this CPU.
        case native
        /// OpenBLAS's `cblas_sgemm`.
        case openblas
    }

    /// The GEMM in use: `native` where the CPU has AVX-512F, otherwise `openblas`; the environment
    /// variable `SD_GEMM=openblas` chooses OpenBLAS everywhere. Fixed for the life of the process.
    public static let gemmKernel: GEMMKernel = {
        let requested = getenv("SD_GEMM").map { String(cString: $0).lowercased() }
        return requested != "openblas" && sd_sgemm_available() == 1 ? .native : .openblas
    }()

    /// The kernel family OpenBLAS selected for this CPU (e.g. `Haswell`, `SkylakeX`).
    public static var coreName: String { String(cString: openblas_get_corename()) }

    /// OpenBLAS's build configuration string.
    public static var configuration: String { String(cString: openblas_get_config()) }

    /// `C = alpha · op(A) · op(B) + beta · C`, row-major.
    ///
    /// `op(A)` is m×k and `op(B)` is k×n; `lda`, `ldb`, `ldc` are the row strides of the stored
    /// matrices (defaulting to their packed widths). The buffers must be large enough for those
    /// shapes and strides: this is checked, and a violation is a programming error.
    ///
    /// With `epilogue` (`sd_epilogue`: bias, affine, residual, ReLU per row of C) our kernel
    /// applies it to each value of C in the pass that stores it; the result says whether it was
    /// applied, false when OpenBLAS ran (then the caller applies it). Without one it is true.
    @discardableResult
    public static func sgemm(
        _ transA: Transpose, _ transB: Transpose,
        m: Int, n: Int, k: Int,
        alpha: Float = 1,
        a: UnsafePointer<Float>, lda: Int? = nil,
        b: UnsafePointer<Float>, ldb: Int? = nil,
        beta: Float = 0,
        c: UnsafeMutablePointer<Float>, ldc: Int? = nil,
        epilogue: UnsafePointer<sd_epilogue>? = nil
    ) -> Bool {
        let lda = lda ?? (transA == .none ? k : m)
        let ldb = ldb ?? (transB == .none ? n : k)
        let ldc = ldc ?? n
        precondition(m >= 0 && n >= 0 && k >= 0, "sgemm: negative dimension m=\(m) n=\(n) k=\(k)")
        precondition(lda >= max(1, transA == .none ? k : m), "sgemm: lda \(lda) too small")
        precondition(ldb >= max(1, transB == .none ? n : k), "sgemm: ldb \(ldb) too small")
        precondition(ldc >= max(1, n), "sgemm: ldc \(ldc) too small")
        guard m > 0, n > 0 else { return true }
        // Our kernel computes whole 12-row panels: below 6 rows OpenBLAS wastes less.
        if gemmKernel == .native, m >= 6,
           sd_sgemm_epilogue(transA == .none ? 0 : 1, transB == .none ? 0 : 1, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, epilogue) == 0 {
            return true
        }
        cblas_sgemm(CblasRowMajor, transA.cblas, transB.cblas,
                    blasint(m), blasint(n), blasint(k),
                    alpha, a, blasint(lda), b, blasint(ldb), beta, c, blasint(ldc))
        return epilogue == nil
    }

    /// `y = alpha · op(A) · x + beta · y`, with A stored m×n row-major.
    public static func sgemv(
        _ trans: Transpose, m: Int, n: Int, alpha: Float = 1,
        a: UnsafePointer<Float>, lda: Int? = nil,
        x: UnsafePointer<Float>, beta: Float = 0, y: UnsafeMutablePointer<Float>
    ) {
        guard m > 0, n > 0 else { return }
        cblas_sgemv(CblasRowMajor, trans.cblas, blasint(m), blasint(n), alpha, a, blasint(lda ?? n), x, 1, beta, y, 1)
    }

    /// `y += alpha · x` over `count` elements.
    public static func saxpy(count: Int, alpha: Float, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>) {
        guard count > 0 else { return }
        cblas_saxpy(blasint(count), alpha, x, 1, y, 1)
    }

    /// `x *= alpha` over `count` elements.
    public static func sscal(count: Int, alpha: Float, x: UnsafeMutablePointer<Float>) {
        guard count > 0 else { return }
        cblas_sscal(blasint(count), alpha, x, 1)
    }

    /// The dot product of two vectors of `count` elements.
    public static func sdot(count: Int, x: UnsafePointer<Float>, y: UnsafePointer<Float>) -> Float {
        guard count > 0 else { return 0 }
        return cblas_sdot(blasint(count), x, 1, y, 1)
    }
}

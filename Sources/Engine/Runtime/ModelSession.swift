import BLAS
import Operators
import Portability
import Storage

/// The bootstrap every command shares (training, testing, inference, benchmarks): the model of
/// a config, the core budget, one BLAS thread (the ops split their GEMMs across the engine's own
/// pool instead, so BLAS threads and pool threads never compete for the cores), the context, the
/// operator registry, and workspaces initialised by the model's init net — with Detectron's
/// semantics, fed each RPN level's cell anchors (`anchors_fpnL`).
struct ModelSession {
    let model: DetectionModel
    let budget: CPUBudget
    let context: CPUContext
    let registry: OperatorRegistry
    let semantics: ModelSemantics
    let seed: UInt64

    /// `threads` overrides the detected core budget (benchmarks, `--threads`).
    init(_ cfg: Config, train: Bool, threads: Int? = nil) throws {
        model = try FasterRCNN.build(cfg, train: train)
        semantics = try ModelSemantics.of(cfg)
        budget = CPUBudget.detect(override: threads)
        BLAS.threadCount = 1
        context = CPUContext()
        registry = OperatorRegistry.engine
        seed = UInt64(cfg.int("RNG_SEED"))
    }

    /// A workspace holding the model's initial parameters (the init net, seeded by RNG_SEED) and,
    /// with Detectron's semantics, its cell anchors.
    func makeWorkspace() throws -> Workspace {
        let ws = Workspace(context: context)
        try Net(model.initNet, workspace: ws, registry: registry, seed: seed).run()
        if semantics == .detectron {
            for (level, cell) in model.cellAnchors {
                ws.feedBlob(DerivedBlobs.anchors(level), try Tensor(cell, shape: [cell.count / 4, 4], context: context))
            }
        }
        return ws
    }

    /// A pool for one net: `threads` in all, counting the calling thread.
    func makePool(threads: Int, name: String) -> ThreadPool { ThreadPool(threadCount: max(0, threads - 1), name: name) }
}

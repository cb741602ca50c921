import BLAS
import Operators
import Portability
import Storage

/// The bootstrap every command shares (training, testing, inference, benchmarks): the model of
/// a config, the core budget, one BLAS thread (the ops split their GEMMs across the engine's own
/// pool instead, so BLAS threads and pool threads never compete for the cores), the context, the
/// operator registry of the components, and workspaces initialised by the model's init net and
/// fed each RPN level's anchors (`anchors_fpnL`, as the semantics make them).
struct ModelSession {
    let model: DetectionModel
    let budget: CPUBudget
    let context: CPUContext
    let registry: OperatorRegistry
    let seed: UInt64

    /// `threads` overrides the detected core budget (benchmarks, `--threads`).
    init(_ cfg: Config, train: Bool, components: ModelComponents, threads: Int? = nil) throws {
        model = try components.build(cfg, train: train)
        budget = CPUBudget.detect(override: threads)
        BLAS.threadCount = 1
        context = CPUContext()
        registry = components.operators
        seed = UInt64(cfg.int("RNG_SEED"))
    }

    /// A workspace holding the model's initial parameters (the init net, seeded by RNG_SEED) and
    /// its anchors (for a 32 × 32 input when the semantics make them per input size:
    /// ``DetectionSemantics/anchorsFollowInput``).
    func makeWorkspace() throws -> Workspace {
        let ws = Workspace(context: context)
        try Net(model.initNet, workspace: ws, registry: registry, seed: seed).run()
        try feedAnchors(into: ws, paddedHeight: 32, paddedWidth: 32)
        return ws
    }

    /// Each RPN level's `anchors_fpnL` for a padded input of that size (models whose net reads them).
    func feedAnchors(into ws: Workspace, paddedHeight: Int, paddedWidth: Int) throws {
        for (level, cell) in model.cellAnchors where model.net.externalInputs.contains(DerivedBlobs.anchors(level)) {
            let anchors = model.semantics.anchorInput(cell: cell, level: level, paddedHeight: paddedHeight, paddedWidth: paddedWidth)
            ws.feedBlob(DerivedBlobs.anchors(level), try Tensor(anchors, shape: [anchors.count / 4, 4], context: context))
        }
    }

    /// A pool for one net: `threads` in all, counting the calling thread.
    func makePool(threads: Int, name: String) -> ThreadPool { ThreadPool(threadCount: max(0, threads - 1), name: name) }
}

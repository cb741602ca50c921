import Foundation

/// Detectron's linear scaling rule between replica counts (`GETTING_STARTED.md`, the tutorial
/// configs): the learning rate per image stays constant, so going from `from` to `to` replicas
/// multiplies SOLVER.BASE_LR by to/from and divides SOLVER.MAX_ITER and SOLVER.STEPS by it.
/// The warm-up stays as it is, and TRAIN.SNAPSHOT_ITERS too: the trainer already divides it by
/// NUM_GPUS (`int(SNAPSHOT_ITERS / NUM_GPUS)`), as Detectron does.
public struct ScheduleScaling: Sendable, Equatable {
    public var numGPUs: Int
    public var baseLR: Double
    public var maxIter: Int
    public var steps: [Int]
    public var snapshotIters: Int
    /// Iteration counts that did not divide exactly and were rounded.
    public var rounded: [String]

    /// The schedule of `cfg`, written for `from` replicas, rescaled for `to`.
    public init(_ cfg: Config, from: Int, to: Int) throws(EngineError) {
        guard from > 0, to > 0 else { throw .usage("replica counts must be positive, got --from-gpus \(from) --to-gpus \(to)") }
        let ratio = Double(to) / Double(from)
        var rounded: [String] = []
        func iterations(_ value: Int, _ key: String) -> Int {
            let exact = Double(value) / ratio
            let r = Int(exact.rounded())
            if Double(r) != exact { rounded.append("\(key) \(value) → \(r) (exactly \(exact))") }
            return r
        }
        numGPUs = to
        // Scale in decimal so 0.0025 × 2 prints as 0.005, not 0.005000000000000001.
        baseLR = (cfg.double("SOLVER.BASE_LR") * ratio * 1e12).rounded() / 1e12
        maxIter = iterations(cfg.int("SOLVER.MAX_ITER"), "SOLVER.MAX_ITER")
        steps = cfg.ints("SOLVER.STEPS").map { iterations($0, "SOLVER.STEPS") }
        snapshotIters = cfg.int("TRAIN.SNAPSHOT_ITERS")
        self.rounded = rounded
    }

    /// The values as `KEY VALUE` command-line overrides.
    public var overrides: [String] {
        ["NUM_GPUS", String(numGPUs), "SOLVER.BASE_LR", String(baseLR), "SOLVER.MAX_ITER", String(maxIter),
         "SOLVER.STEPS", "[\(steps.map(String.init).joined(separator: ", "))]", "TRAIN.SNAPSHOT_ITERS", String(snapshotIters)]
    }

    /// The values as a YAML config fragment (merge it over the original file).
    public var yaml: String {
        """
        NUM_GPUS: \(numGPUs)
        SOLVER:
          BASE_LR: \(baseLR)
          MAX_ITER: \(maxIter)
          STEPS: [\(steps.map(String.init).joined(separator: ", "))]
        TRAIN:
          # The trainer snapshots every SNAPSHOT_ITERS / NUM_GPUS = \(snapshotIters / max(numGPUs, 1)) iterations.
          SNAPSHOT_ITERS: \(snapshotIters)

        """
    }

    /// Applies the rule to `cfg` when SOLVER.SCALE_SCHEDULE_FROM_GPUS (ours, 0 = off) names the
    /// replica count its schedule was written for and NUM_GPUS differs; returns what changed.
    public static func applyIfRequested(_ cfg: inout Config) throws(EngineError) -> String? {
        let from = cfg.int("SOLVER.SCALE_SCHEDULE_FROM_GPUS"), to = cfg.int("NUM_GPUS")
        guard from > 0, from != to else { return nil }
        let s = try ScheduleScaling(cfg, from: from, to: to)
        let before = "BASE_LR \(cfg.double("SOLVER.BASE_LR")), MAX_ITER \(cfg.int("SOLVER.MAX_ITER")), STEPS \(cfg.ints("SOLVER.STEPS"))"
        cfg.set("SOLVER.BASE_LR", .float(s.baseLR))
        cfg.set("SOLVER.MAX_ITER", .int(s.maxIter))
        cfg.set("SOLVER.STEPS", .list(s.steps.map { .int($0) }, tuple: false))
        return "linear scaling rule (SOLVER.SCALE_SCHEDULE_FROM_GPUS \(from) → NUM_GPUS \(to)): \(before) → "
            + "BASE_LR \(s.baseLR), MAX_ITER \(s.maxIter), STEPS \(s.steps)"
            + (s.rounded.isEmpty ? "" : "; rounded: " + s.rounded.joined(separator: ", "))
    }
}

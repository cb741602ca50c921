import Foundation

/// Detectron's learning-rate schedule (`utils/lr_policy.py`) with linear or constant warm-up.
public struct LearningRateSchedule: Sendable {
    /// Detectron's `utils/lr_policy.py` policies.
    public static let policies = ["step", "steps_with_decay", "steps_with_lrs", "steps_with_relative_lrs", "cosine_decay", "exp_decay"]
    public let policy: String
    public let baseLR: Double
    public let gamma: Double
    public let steps: [Int]
    public let lrs: [Double]
    public let stepSize: Int
    public let maxIter: Int
    public let warmUpIters: Int
    public let warmUpFactor: Double
    public let warmUpMethod: String

    public init(_ cfg: Config) {
        policy = cfg.string("SOLVER.LR_POLICY")
        baseLR = cfg.double("SOLVER.BASE_LR")
        gamma = cfg.double("SOLVER.GAMMA")
        steps = cfg.ints("SOLVER.STEPS")
        lrs = cfg.doubles("SOLVER.LRS")
        stepSize = cfg.int("SOLVER.STEP_SIZE")
        maxIter = cfg.int("SOLVER.MAX_ITER")
        warmUpIters = cfg.int("SOLVER.WARM_UP_ITERS")
        warmUpFactor = cfg.double("SOLVER.WARM_UP_FACTOR")
        warmUpMethod = cfg.string("SOLVER.WARM_UP_METHOD")
    }

    /// Detectron's `get_step_index`: the last step of SOLVER.STEPS at or before `t` (the first is 0).
    func stepIndex(_ t: Int) -> Int { max(0, min((steps + [maxIter]).lastIndex { $0 <= t } ?? 0, steps.count - 1)) }

    /// The learning rate at iteration `t` (as float32, like Detectron's). The policy and warm-up
    /// method are checked by ``Config/checkImplemented()``.
    public func lr(_ t: Int) -> Float {
        var lr: Double
        switch policy {
        case "steps_with_decay": lr = baseLR * pow(gamma, Double(stepIndex(t)))
        case "steps_with_lrs": lr = lrs[stepIndex(t)]
        case "steps_with_relative_lrs": lr = lrs[stepIndex(t)] * baseLR
        case "step": lr = baseLR * pow(gamma, Double(t / max(stepSize, 1)))
        case "cosine_decay": lr = baseLR * 0.5 * (cos(Double.pi * Double(t) / Double(maxIter)) + 1)
        case "exp_decay": lr = baseLR * exp(Double(t) / Double(maxIter) * log(gamma))
        default: preconditionFailure("SOLVER.LR_POLICY \(policy) passed checkImplemented but has no formula")
        }
        if t < warmUpIters {
            let alpha = Double(t) / Double(warmUpIters)
            lr *= warmUpMethod == "linear" ? warmUpFactor * (1 - alpha) + alpha : warmUpFactor
        }
        return Float(lr)
    }
}

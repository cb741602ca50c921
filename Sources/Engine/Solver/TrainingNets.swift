import Foundation
import Operators
import Storage

/// The nets of one training replica: the model's forward and its gradients, then Detectron's
/// parameter update (run after the gradients are summed over replicas) — biases get a 2×
/// gradient and no decay, GN parameters their own decay, the rest WEIGHT_DECAY, then
/// MomentumSGDUpdate. Feeds `lr`, `one`, the decays and zero momentum buffers.
struct TrainingNets {
    var forwardBackward: NetDef
    var update: NetDef
    var trainable: [ParamInfo]
    /// The gradient blob of each trainable parameter, in the same order.
    var gradients: [String]

    /// Both as one net (a single replica's whole iteration, for benchmarks).
    var combined: NetDef {
        var net = forwardBackward
        net.ops += update.ops
        return net
    }
}

func makeTrainingNet(_ cfg: Config, model: DetectionModel, ws: Workspace, registry: OperatorRegistry) throws -> TrainingNets {
    let ctx = ws.context
    var net = model.net
    let gradients = try addGradientOperators(to: &net, losses: model.losses, wrt: Set(model.params.filter(\.trainable).map(\.name)),
                                             registry: registry)
    ws.feedBlob("lr", try Tensor([0] as [Float], shape: [1], context: ctx))
    ws.feedBlob("one", try Tensor([1] as [Float], shape: [1], context: ctx))
    ws.feedBlob("weight_decay", try Tensor([Float(cfg.double("SOLVER.WEIGHT_DECAY"))], shape: [1], context: ctx))
    ws.feedBlob("weight_decay_gn", try Tensor([Float(cfg.double("SOLVER.WEIGHT_DECAY_GN"))], shape: [1], context: ctx))
    var update = NetDef(name: net.name + "_update", executor: net.executor)
    var trainable: [ParamInfo] = [], gradientNames: [String] = []
    for p in model.params where p.trainable {
        guard let g = gradients[p.name] else { continue }
        trainable.append(p)
        gradientNames.append(g)
        if !ws.hasBlob(p.name + "_momentum") {
            ws.feedBlob(p.name + "_momentum", try Tensor([Float](repeating: 0, count: p.shape.reduce(1, *)), shape: p.shape, context: ctx))
        }
        switch p.kind {
        case .bias:
            update.add("Scale", [g], [g], ["scale": .float(cfg.double("SOLVER.BIAS_LR"))])
        case .gnScale, .gnBias:
            if cfg.double("SOLVER.WEIGHT_DECAY_GN") > 0 { update.add("WeightedSum", [g, "one", p.name, "weight_decay_gn"], [g]) }
        default:
            if cfg.double("SOLVER.WEIGHT_DECAY") > 0 { update.add("WeightedSum", [g, "one", p.name, "weight_decay"], [g]) }
        }
        update.add("MomentumSGDUpdate", [g, p.name + "_momentum", "lr", p.name], [g, p.name + "_momentum", p.name],
                   ["momentum": .float(cfg.double("SOLVER.MOMENTUM"))])
    }
    // Everything the update reads comes from the forward-backward net or the workspace.
    var seen = Set<String>()
    update.externalInputs = update.ops.flatMap(\.inputs).filter { seen.insert($0).inserted }
    return TrainingNets(forwardBackward: net, update: update, trainable: trainable, gradients: gradientNames)
}

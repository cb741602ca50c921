import Operators

/// A parameter of a model: its blob, shape, how it starts, and how the solver treats it.
public struct ParamInfo: Sendable, Equatable {
    public enum Kind: Sendable, Equatable { case weight, bias, gnScale, gnBias, affine }
    public var name: String
    public var shape: [Int]
    public var kind: Kind
    /// The filler op and its arguments (Detectron's `weight_init` / `bias_init`).
    public var fill: String
    public var fillArguments: [String: ArgumentValue]
    /// Whether the solver updates it (frozen: AffineChannel, and everything before FREEZE_AT).
    public var trainable: Bool
}

/// Builds Detectron nets the way its `ModelHelper` does: ops appended to a `NetDef`, parameters
/// recorded with their initialisers, Detectron's blob and parameter names.
public final class ModelBuilder {
    public var net: NetDef
    public private(set) var params: [ParamInfo] = []
    private var paramIndex: [String: Int] = [:]
    /// Whether the net is the training net (heads add their losses).
    public let train: Bool
    /// The `Conv` argument `algo` of 3×3 stride-1 convolutions ("winograd", "winograd_f4",
    /// "winograd_f2"), nil for im2col.
    public let winograd: String?

    public init(name: String, train: Bool, winograd: String? = nil) {
        self.net = NetDef(name: name)
        self.train = train
        self.winograd = winograd
    }

    @discardableResult
    public func op(_ type: String, _ inputs: [String], _ outputs: [String], _ args: [String: ArgumentValue] = [:]) -> String {
        net.ops.append(OperatorDef(type, inputs: inputs, outputs: outputs, arguments: args))
        return outputs[0]
    }

    public func param(_ name: String, _ shape: [Int], _ kind: ParamInfo.Kind, fill: String, args: [String: ArgumentValue] = [:], trainable: Bool = true) {
        if let i = paramIndex[name] {
            precondition(params[i].shape == shape, "parameter \(name) reused with shape \(shape), made with \(params[i].shape)")
            return
        }
        paramIndex[name] = params.count
        params.append(ParamInfo(name: name, shape: shape, kind: kind, fill: fill, fillArguments: args, trainable: trainable))
    }

    /// Marks every parameter made so far as frozen (used for FREEZE_AT).
    public func freezeAll() { for i in params.indices { params[i].trainable = false } }

    /// Caffe2 `Conv` with Detectron's naming: weight `<name>_w`, bias `<name>_b` unless `noBias`.
    @discardableResult
    public func conv(_ input: String, _ output: String, dimIn: Int, dimOut: Int, kernel: Int, stride: Int = 1, pad: Int = 0, group: Int = 1,
              dilation: Int = 1, weightFill: (String, [String: ArgumentValue]) = ("XavierFill", [:]), noBias: Bool = false,
              biasFill: (String, [String: ArgumentValue]) = ("ConstantFill", ["value": .float(0)]),
              weightName: String? = nil, biasName: String? = nil) -> String {
        let w = weightName ?? output + "_w", b = biasName ?? output + "_b"
        param(w, [dimOut, dimIn / group, kernel, kernel], .weight, fill: weightFill.0, args: weightFill.1)
        var inputs = [input, w]
        if !noBias {
            param(b, [dimOut], .bias, fill: biasFill.0, args: biasFill.1)
            inputs.append(b)
        }
        var args: [String: ArgumentValue] = ["kernel": .int(kernel), "stride": .int(stride), "pad": .int(pad)]
        if group > 1 { args["group"] = .int(group) }
        if dilation > 1 { args["dilation"] = .int(dilation) }
        if let winograd, kernel == 3 && stride == 1 && group == 1 && dilation == 1 { args["algo"] = .string(winograd) }
        return op("Conv", inputs, [output], args)
    }

    /// Caffe2 `ConvTranspose` (weights (dimIn, dimOut, k, k)) with Detectron's naming; `trainable`
    /// false for fixed weights (Detectron's `do_not_update_params`).
    @discardableResult
    public func convTranspose(_ input: String, _ output: String, dimIn: Int, dimOut: Int, kernel: Int, stride: Int, pad: Int,
                              weightFill: (String, [String: ArgumentValue]), trainable: Bool = true) -> String {
        param(output + "_w", [dimIn, dimOut, kernel, kernel], .weight, fill: weightFill.0, args: weightFill.1, trainable: trainable)
        param(output + "_b", [dimOut], .bias, fill: "ConstantFill", args: ["value": .float(0)], trainable: trainable)
        return op("ConvTranspose", [input, output + "_w", output + "_b"], [output], ["kernel": .int(kernel), "stride": .int(stride), "pad": .int(pad)])
    }

    /// Conv then GroupNorm (`ConvGN`): the conv blob `<prefix>`, the normalised one `<prefix>_gn`
    /// with `<prefix>_gn_s` / `_gn_b`.
    @discardableResult
    public func convGN(_ input: String, _ prefix: String, dimIn: Int, dimOut: Int, kernel: Int, stride: Int = 1, pad: Int = 0,
                groups: Int, epsilon: Double, weightFill: (String, [String: ArgumentValue])) -> String {
        conv(input, prefix, dimIn: dimIn, dimOut: dimOut, kernel: kernel, stride: stride, pad: pad, weightFill: weightFill, noBias: true)
        return groupNorm(prefix, prefix + "_gn", dim: dimOut, groups: groups, epsilon: epsilon)
    }

    @discardableResult
    public func groupNorm(_ input: String, _ output: String, dim: Int, groups: Int, epsilon: Double, paramPrefix: String? = nil) -> String {
        let prefix = paramPrefix ?? output
        param(prefix + "_s", [dim], .gnScale, fill: "ConstantFill", args: ["value": .float(1)])
        param(prefix + "_b", [dim], .gnBias, fill: "ConstantFill", args: ["value": .float(0)])
        return op("GroupNorm", [input, prefix + "_s", prefix + "_b"], [output, output + "_mean", output + "_std"],
                  ["group": .int(groups), "epsilon": .float(epsilon)])
    }

    /// `AffineChannel` with `<name>_s` / `<name>_b`, frozen (Detectron's BN stand-in).
    @discardableResult
    public func affineChannel(_ input: String, _ output: String, dim: Int, inPlace: Bool = false) -> String {
        param(output + "_s", [dim], .affine, fill: "ConstantFill", args: ["value": .float(1)], trainable: false)
        param(output + "_b", [dim], .affine, fill: "ConstantFill", args: ["value": .float(0)], trainable: false)
        return op("AffineChannel", [input, output + "_s", output + "_b"], [inPlace ? input : output])
    }

    @discardableResult
    public func relu(_ blob: String) -> String { op("Relu", [blob], [blob]) }

    @discardableResult
    public func fc(_ input: String, _ output: String, dimIn: Int, dimOut: Int,
            weightFill: (String, [String: ArgumentValue]) = ("XavierFill", [:])) -> String {
        param(output + "_w", [dimOut, dimIn], .weight, fill: weightFill.0, args: weightFill.1)
        param(output + "_b", [dimOut], .bias, fill: "ConstantFill", args: ["value": .float(0)])
        return op("FC", [input, output + "_w", output + "_b"], [output])
    }

    /// The op list that creates every parameter (`param_init_net`), seeded per parameter name.
    public func initNet() -> NetDef {
        var n = NetDef(name: net.name + "_init")
        for p in params {
            var args = p.fillArguments
            args["shape"] = .ints(p.shape)
            n.ops.append(OperatorDef(p.fill, inputs: [], outputs: [p.name], arguments: args))
        }
        return n
    }
}

extension ParamInfo {
    public static func gauss(_ std: Double) -> (String, [String: ArgumentValue]) { ("GaussianFill", ["std": .float(std)]) }
}

extension ModelBuilder {
    /// The builder of a config's train or test net, after the checks every model type shares:
    /// MODEL.NUM_CLASSES counts the background, TEST.CONV_ALGO is one this engine runs.
    convenience init(_ cfg: Config, train: Bool) throws(ConfigError) {
        let k = cfg.int("MODEL.NUM_CLASSES")
        guard k >= 2 else { throw .invalid(key: "MODEL.NUM_CLASSES", reason: "must count the background too (≥ 2), got \(k)") }
        let algo = cfg.string("TEST.CONV_ALGO")
        guard ["winograd", "winograd_f4", "winograd_f2", "im2col"].contains(algo) else {
            throw .invalid(key: "TEST.CONV_ALGO", reason: "is '\(algo)'; use winograd, winograd_f4, winograd_f2 or im2col")
        }
        self.init(name: train ? "train" : "test", train: train, winograd: !train && algo != "im2col" ? algo : nil)
    }
}

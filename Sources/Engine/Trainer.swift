import BLAS
import COCO
import DataLoading
import Foundation
import Operators
import Portability
import Storage

/// Loads the named datasets of a config (`TRAIN.DATASETS` / `TEST.DATASETS`) from the catalog.
func loadDatasets(_ cfg: Config, key: String) throws(EngineError) -> [JSONDataset] {
    let names = cfg.strings(key)
    guard !names.isEmpty else { throw .config("config key \(key) is empty: name at least one dataset, e.g. ('shapes_train',)") }
    let root = cfg.string("DATA_ROOT")
    let catalog = DatasetCatalog(root: root.isEmpty ? nil : root)
    var out: [JSONDataset] = []
    for name in names {
        do throws(COCOError) {
            // A dataset can also be given directly, as "ANNOTATIONS.json::IMAGE_DIR".
            if let sep = name.range(of: "::") {
                let json = String(name[..<sep.lowerBound]), dir = String(name[sep.upperBound...])
                out.append(try JSONDataset(name: ((json as NSString).lastPathComponent as NSString).deletingPathExtension, annotationFile: json, imageDirectory: dir))
                continue
            }
            out.append(try catalog.load(name))
        } catch {
            throw .data("dataset \(name) (\(key)): \(error)")
        }
    }
    for d in out.dropFirst() where d.classes != out[0].classes {
        throw .data("datasets \(out[0].name) and \(d.name) have different categories; they cannot train one model")
    }
    let k = cfg.int("MODEL.NUM_CLASSES")
    if out[0].classes.count != k {
        throw .config("config key MODEL.NUM_CLASSES is \(k) but \(out[0].name) has \(out[0].classes.count - 1) categories plus background: set MODEL.NUM_CLASSES \(out[0].classes.count)")
    }
    return out
}

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

/// What a training run reports as it goes.
public struct TrainingEvent: Sendable {
    public var iteration: Int
    public var lr: Float
    public var losses: [String: Float]
    public var total: Float
    public var secondsPerIteration: Double
}

/// `detectron train`: Detectron's `train_net.py` — roidb, loader, net with gradients and
/// solver ops, the LR schedule, logging, snapshots and resume.
public final class Trainer {
    public private(set) var cfg: Config
    public let outputDirectory: String
    let log: @Sendable (String) -> Void
    /// The training categories, saved with the weights so inference can name classes.
    var categoriesJSON = "[]"

    public init(config: Config, log: @escaping @Sendable (String) -> Void) {
        self.cfg = config
        self.outputDirectory = (config.string("OUTPUT_DIR") as NSString).appendingPathComponent("train")
        self.log = log
    }

    var finalPath: String { (outputDirectory as NSString).appendingPathComponent("model_final.safetensors") }

    var snapshots: Snapshots { Snapshots(directory: outputDirectory) }
    var statsPath: String { (outputDirectory as NSString).appendingPathComponent("training_stats.jsonl") }

    /// Trains; returns the path of `model_final`.
    @discardableResult
    public func run(onLog: ((TrainingEvent) -> Void)? = nil) throws -> String {
        if let note = try ScheduleScaling.applyIfRequested(&cfg) { log(note) }
        try Files.makeDirectory(outputDirectory)
        if cfg.bool("TRAIN.AUTO_RESUME"), FileManager.default.fileExists(atPath: finalPath) {
            log("model_final exists at \(finalPath): training is done (delete it to train again)")
            return finalPath
        }
        let datasets = try loadDatasets(cfg, key: "TRAIN.DATASETS")
        var roidb: [RoidbEntry] = []
        for d in datasets {
            let (entries, stats) = try d.trainingRoidb(flipped: cfg.bool("TRAIN.USE_FLIPPED"))
            roidb += entries
            for w in stats.warnings { log("\(d.name): \(w)") }
        }
        guard !roidb.isEmpty else { throw EngineError.data("no training image has a usable box") }
        log("training on \(roidb.count) roidb entries from \(datasets.map(\.name).joined(separator: ", "))")
        // Sorted keys: the same training writes the same file, byte for byte.
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        categoriesJSON = String(decoding: (try? encoder.encode(datasets[0].coco.categories)) ?? Data("[]".utf8), as: UTF8.self)

        let model = try FasterRCNN.build(cfg, train: true)
        let communicator = try makeCommunicator(cfg)
        let replicaCount = communicator.localReplicas
        let isFirstProcess = communicator.firstReplica == 0
        if isFirstProcess {
            for name in Files.removeStaleTemporaries(in: outputDirectory) { log("removed \(name), a partial file a killed run left") }
        }
        if communicator.worldSize > 1 {
            log("data-parallel training: \(communicator.worldSize) replicas (NUM_GPUS), \(replicaCount) in this process, "
                + "each with TRAIN.IMS_PER_BATCH \(cfg.int("TRAIN.IMS_PER_BATCH")) images")
        }
        let budget = CPUBudget.detect()
        // One BLAS thread: the ops split their GEMMs across the pool instead, so BLAS threads and
        // pool threads never compete for the cores. Replicas in one process share the cores.
        BLAS.threadCount = 1
        let threadsPerReplica = max(1, budget.threads / replicaCount)
        let ctx = CPUContext()
        let registry = OperatorRegistry.engine(cfg)
        let seed = UInt64(cfg.int("RNG_SEED"))
        var workspaces: [Workspace] = []
        for _ in 0..<replicaCount {
            let ws = Workspace(context: ctx)
            try Net(model.initNet, workspace: ws, registry: registry, seed: seed).run()
            for (level, cell) in model.cellAnchors {
                ws.feedBlob("anchors_fpn\(level)", try Tensor(cell, shape: [cell.count / 4, 4], context: ctx))
            }
            workspaces.append(ws)
        }
        // Weights are read into the first replica; the broadcast below gives them to the others.
        let ws = workspaces[0]
        var start = 0
        var progress = TrainingProgress(iteration: -1, window: [])
        if cfg.bool("TRAIN.AUTO_RESUME"), let (path, _) = snapshots.latest {
            let metadata = try loadCheckpoint(path, into: ws, model: model, momentum: true)
            progress = try TrainingProgress(metadata: metadata, file: path)
            start = progress.iteration + 1
            log("resuming from \(path) at iteration \(start)")
        } else if !cfg.string("TRAIN.WEIGHTS").isEmpty {
            let w = cfg.string("TRAIN.WEIGHTS")
            if w.hasPrefix("http://") || w.hasPrefix("https://") {
                throw EngineError.config("config key TRAIN.WEIGHTS is a URL (\(w)); weights are not downloaded: fetch the file elsewhere and pass its local path, or set TRAIN.WEIGHTS '' to train from scratch")
            }
            try loadCheckpoint(w, into: ws, model: model, momentum: false, log: log)
        }

        var replicas: [Replica] = [], trainable: [ParamInfo] = [], gradients: [String] = []
        for (r, rws) in workspaces.enumerated() {
            let nets = try makeTrainingNet(cfg, model: model, ws: rws, registry: registry)
            trainable = nets.trainable
            gradients = nets.gradients
            let pool = ThreadPool(threadCount: threadsPerReplica - 1, name: "sd-train\(r)")
            let global = UInt64(communicator.firstReplica + r)
            replicas.append(Replica(index: r, workspace: rws,
                                    forwardBackward: try Net(nets.forwardBackward, workspace: rws, registry: registry, pool: pool, seed: seed &+ global),
                                    update: try Net(nets.update, workspace: rws, registry: registry, pool: pool, seed: seed), pool: pool))
        }
        log("\(trainable.count) trainable parameters (\(trainable.reduce(0) { $0 + $1.shape.reduce(1, *) }) values), \(model.params.count - trainable.count) frozen")
        let group = ReplicaGroup(replicas: replicas, communicator: communicator, gradients: gradients,
                                 shared: model.params.map(\.name) + trainable.map { $0.name + "_momentum" })
        defer { group.shutdown() }
        // Every replica starts from the first one's parameters and momentum (Detectron broadcasts from GPU 0).
        try group.broadcastParameters()
        // …and from the same iteration (ranks of an MPI run may see different snapshot folders).
        start = try agreeOnFirstReplica(start, communicator)

        // The loader: aspect-ratio grouped batches, targets made in its workers.
        let targets = RPNTargetMaker(cfg: cfg, cellAnchors: model.cellAnchors, levels: model.rpnLevels)
        let dataset = TrainingDataset(roidb: roidb, scales: cfg.ints("TRAIN.SCALES"), maxSize: cfg.int("TRAIN.MAX_SIZE"),
                                      pixelMeans: pixelMeans(cfg), targets: targets)
        // One loader per replica; replica g of N takes batches g, g + N, … of the one sampled
        // sequence, as Detectron's GPUs take minibatches in turn from its single queue. The
        // sequence is a function of RNG_SEED alone: a resumed run skips the batches it has had.
        var options = DataLoaderOptions()
        options.batchSize = cfg.int("TRAIN.IMS_PER_BATCH")
        options.seed = seed
        options.numWorkers = cfg.int("DATA_LOADER.NUM_THREADS")
        options.workerKind = try workerKind(cfg)
        options.prefetchFactor = options.numWorkers > 0 ? 2 : nil
        options.persistentWorkers = options.numWorkers > 0
        options.warn = { [log] in log("warning: \($0)") }
        let sampler: any BatchSampler = cfg.bool("TRAIN.ASPECT_GROUPING")
            ? AspectRatioGroupedBatchSampler(horizontal: roidb.map { $0.width >= $0.height }, batchSize: options.batchSize, seed: options.seed)
            : SimpleBatchSampler(count: roidb.count, batchSize: options.batchSize, shuffle: true, seed: options.seed, dropLast: true)
        let streams = try (0..<replicaCount).map { r in
            let mine = ReplicaBatchSampler(base: sampler, replicas: communicator.worldSize, index: communicator.firstReplica + r)
            guard !mine.batches(epoch: 0).isEmpty else {
                throw EngineError.data("\(roidb.count) training images make fewer than \(communicator.worldSize) minibatches of \(options.batchSize): lower NUM_GPUS or TRAIN.IMS_PER_BATCH")
            }
            return BatchStream(loader: try DataLoader(transportable: dataset, options: options, batchSampler: mine) { samples in
                try MinibatchCollate.collate(samples, targets: targets, context: ctx)
            }, consumed: start)
        }

        let schedule = LearningRateSchedule(cfg)
        let maxIter = schedule.maxIter
        let snapshotEvery = max(1, cfg.int("TRAIN.SNAPSHOT_ITERS") / cfg.int("NUM_GPUS"))
        let evalPeriod = cfg.int("TEST.EVAL_PERIOD")
        // The rate of the iteration before `start`: a resumed run rescales the momentum at a decay
        // step exactly as the uninterrupted run would have.
        var currentLR: Float = start > 0 ? schedule.lr(start - 1) : 0
        // The last 20 iterations' losses (from the snapshot when resuming), times and waits.
        var window = start > 0 ? progress.losses : [], times: [Double] = [], waits: [Double] = []
        var totalTime = 0.0, totalWait = 0.0
        var lastSnapshot: String? = snapshots.latest?.path
        // Only the process of replica 0 writes (an MPI run's other ranks compute and keep quiet).
        if isFirstProcess {
            if start == 0 { _ = FileManager.default.createFile(atPath: statsPath, contents: nil) } else { try TrainingStatsFile.truncate(statsPath, after: start - 1) }
        }
        let stats = isFirstProcess ? FileHandle(forWritingAtPath: statsPath) : nil
        stats?.seekToEndOfFile()
        defer { try? stats?.close() }
        let interactive = isatty(2) != 0
        func record(_ json: [String: Any]) throws {
            let line = String(decoding: try JSONSerialization.data(withJSONObject: json, options: [.sortedKeys]), as: UTF8.self)
            if interactive { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
            log("json_stats: \(line)")
            stats?.write(Data((line + "\n").utf8))
        }
        let trainStart = Date()
        for t in start..<maxIter {
            let lr = schedule.lr(t)
            if lr != currentLR || t == start {
                for r in replicas { try r.workspace.fetchBlob("lr").mutableData(as: Float.self)[0] = lr }
                // Momentum correction on big changes (the decay steps).
                if lr != currentLR, cfg.bool("SOLVER.SCALE_MOMENTUM"), currentLR > 1e-7,
                   max(lr / currentLR, currentLR / lr) > Float(cfg.double("SOLVER.SCALE_MOMENTUM_THRESHOLD")) {
                    let ratio = lr / currentLR
                    for r in replicas {
                        for p in trainable {
                            let m = try r.workspace.fetchBlob(p.name + "_momentum").mutableData(as: Float.self)
                            for i in 0..<m.count { m[i] *= ratio }
                        }
                    }
                    log("iteration \(t): learning rate \(currentLR) → \(lr), momentum rescaled by \(ratio)")
                }
                currentLR = lr
            }
            let t0 = Date()
            let dataWait = Locked(0.0)
            try group.step { r in
                let w0 = Date()
                let batch = try streams[r.index].next()
                let waited = Date().timeIntervalSince(w0)
                dataWait.withLock { $0 = max($0, waited) }
                for (name, tensor) in batch.blobs { r.workspace.feedBlob(name, tensor) }
                r.workspace.feed("roidb", value: batch.roidb)
            }
            // Losses (already scaled by 1/NUM_GPUS) are summed over the replicas, the accuracy
            // averaged, as Detectron logs them.
            var losses = try replicaLosses(group, names: model.losses)
            let total = model.losses.reduce(Float(0)) { $0 + losses[$1]! }
            if !total.isFinite {
                throw EngineError.diverged(iteration: t, losses: losses.keys.sorted().map { "\($0) \(losses[$0]!)" }.joined(separator: ", "), lastSnapshot: lastSnapshot)
            }
            losses["loss"] = total
            window.append(losses)
            times.append(Date().timeIntervalSince(t0))
            waits.append(dataWait.current)
            totalTime += times.last!
            totalWait += waits.last!
            if window.count > 20 { window.removeFirst() }
            if times.count > 20 { times.removeFirst(); waits.removeFirst() }
            // training_stats.jsonl gets the lines of an uninterrupted run; the first iteration of a
            // resumed one is shown on the terminal only.
            let logged = (t + 1) % 20 == 0 || t == 0 || t == maxIter - 1
            let logNow = isFirstProcess && (logged || t == start)
            if logNow || (interactive && isFirstProcess) {
                let med = medians(window)
                let secs = times.sorted()[times.count / 2]
                let eta = secs * Double(maxIter - t - 1)
                if logNow {
                    // data_time: time blocked on the loader (the slowest replica's), as detectron2 logs it.
                    var json: [String: Any] = ["iter": t, "lr": Double(lr), "time": secs, "eta": formatETA(eta),
                                               "data_time": waits.sorted()[waits.count / 2]]
                    for (k, v) in med { json[k] = Double(v) }
                    if logged {
                        try record(json)
                    } else {
                        let line = String(decoding: try JSONSerialization.data(withJSONObject: json, options: [.sortedKeys]), as: UTF8.self)
                        log("json_stats: \(line)")
                    }
                    onLog?(TrainingEvent(iteration: t, lr: lr, losses: med, total: med["loss"] ?? total, secondsPerIteration: secs))
                } else {
                    FileHandle.standardError.write(Data(String(format: "\r\u{1B}[K[%d/%d] loss %.3f  lr %.5f  %.2f s/it  eta %@", t + 1, maxIter,
                                                                med["loss"] ?? total, lr, secs, formatETA(eta)).utf8))
                }
            }
            if isFirstProcess && evalPeriod > 0 && (t + 1) % evalPeriod == 0 && t + 1 < maxIter {
                for line in try evaluate(ws: ws, model: model, trainable: trainable, iteration: t) { try record(line) }
            }
            if isFirstProcess && (t + 1) % snapshotEvery == 0 && t + 1 < maxIter {
                let path = snapshots.path(t)
                try saveCheckpoint(path, ws: ws, model: model, trainable: trainable, progress: TrainingProgress(iteration: t, window: window))
                lastSnapshot = path
                log("wrote snapshot \(path)")
                for old in snapshots.prune(keep: cfg.int("TRAIN.SNAPSHOT_KEEP")) { log("deleted snapshot \(old) (TRAIN.SNAPSHOT_KEEP \(cfg.int("TRAIN.SNAPSHOT_KEEP")))") }
                writePlot()
            }
        }
        if interactive { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
        if isFirstProcess {
            try saveCheckpoint(finalPath, ws: ws, model: model, trainable: trainable, progress: TrainingProgress(iteration: maxIter - 1, window: window))
        }
        for stream in streams { stream.shutdown() }
        log(String(format: "training done in %.1f s (%.2f%% of the iterations' time blocked on the data loader); %@",
                   Date().timeIntervalSince(trainStart), 100 * totalWait / max(totalTime, 1e-9),
                   isFirstProcess ? "wrote \(finalPath)" : "replica 0's process wrote \(finalPath)"))
        if isFirstProcess { writePlot() }
        return finalPath
    }

    func medians(_ window: [[String: Float]]) -> [String: Float] {
        var out: [String: Float] = [:]
        for k in window.last?.keys ?? [:].keys {
            let v = window.compactMap { $0[k] }.sorted()
            out[k] = v[v.count / 2]
        }
        return out
    }

    func saveCheckpoint(_ path: String, ws: Workspace, model: DetectionModel, trainable: [ParamInfo], progress: TrainingProgress) throws {
        var blobs: [(String, [Int], [Float])] = []
        for p in model.params { blobs.append((p.name, p.shape, try ws.fetchBlob(p.name).toArray(as: Float.self))) }
        for p in trainable { blobs.append((p.name + "_momentum", p.shape, try ws.fetchBlob(p.name + "_momentum").toArray(as: Float.self))) }
        try Checkpoint.write(blobs.map { (name: $0.0, shape: $0.1, values: $0.2) },
                             metadata: ["config": cfg.description, "iteration": String(progress.iteration), "format": "swiftdetectron-1",
                                        "categories": categoriesJSON, TrainingProgress.metadataKey: progress.json], to: path)
    }

    /// `TEST.EVAL_PERIOD`: tests the current weights on TEST.DATASETS (results in
    /// OUTPUT_DIR/train/eval_iterN/test/<dataset>/) and returns the json_stats lines of their box AP.
    func evaluate(ws: Workspace, model: DetectionModel, trainable: [ParamInfo], iteration: Int) throws -> [[String: Any]] {
        let dir = (outputDirectory as NSString).appendingPathComponent("eval_iter\(iteration)")
        try Files.makeDirectory(dir)
        let weights = (dir as NSString).appendingPathComponent("weights.safetensors")
        try saveCheckpoint(weights, ws: ws, model: model, trainable: [], progress: TrainingProgress(iteration: iteration, window: []))
        defer { try? FileManager.default.removeItem(atPath: weights) }
        var c = cfg
        try c.merge(overrides: ["OUTPUT_DIR", dir])
        log("iteration \(iteration): evaluating on \(cfg.strings("TEST.DATASETS").joined(separator: ", ")) (TEST.EVAL_PERIOD \(cfg.int("TEST.EVAL_PERIOD")))")
        return try Tester(config: c, log: log).run(weights: weights).compactMap { outcome in
            outcome.evaluation.map { TrainingPlot.evaluationStats(iteration: iteration, dataset: outcome.dataset, result: $0) }
        }
    }

    /// Appends the box AP of the final test to training_stats.jsonl and redraws the plot (the
    /// CLI tests the final model after training; with TEST.EVAL_PERIOD that is the last point).
    public func recordFinalTest(_ outcomes: [Tester.Outcome]) throws {
        guard cfg.int("TEST.EVAL_PERIOD") > 0 else { return }
        let iteration = LearningRateSchedule(cfg).maxIter - 1
        var text = Array(((try? String(contentsOfFile: statsPath, encoding: .utf8)) ?? "").utf8)
        for o in outcomes {
            guard let r = o.evaluation else { continue }
            let json = TrainingPlot.evaluationStats(iteration: iteration, dataset: o.dataset, result: r)
            text += Array(String(decoding: try JSONSerialization.data(withJSONObject: json, options: [.sortedKeys]), as: UTF8.self).utf8) + [10]
        }
        try Files.writeAtomically(text, to: statsPath)
        writePlot()
    }

    /// loss_curve.svg and loss_curve.png from training_stats.jsonl (a plot that cannot be written
    /// is reported, never fatal).
    func writePlot() {
        do {
            try TrainingPlot.write(stats: TrainingStatsFile.read(statsPath), to: (outputDirectory as NSString).appendingPathComponent("loss_curve"))
        } catch {
            log("warning: could not write the loss plot: \(error)")
        }
    }
}

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
    let gradients = try addGradientOperators(to: &net, losses: model.losses, registry: registry)
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

/// The communicator for this run: MPI when started by `mpirun` with more than one rank, else
/// NUM_GPUS replicas in this process.
func makeCommunicator(_ cfg: Config) throws -> any ReplicaCommunicator {
    let gpus = cfg.int("NUM_GPUS")
    guard gpus >= 1 else { throw EngineError.config("config key NUM_GPUS is \(gpus); it must be at least 1 (replicas)") }
    if let mpi = try MPICommunicator.fromEnvironment() {
        guard mpi.worldSize == gpus else {
            throw EngineError.config("mpirun started \(mpi.worldSize) ranks but NUM_GPUS is \(gpus): one replica per rank, so pass NUM_GPUS \(mpi.worldSize) (or mpirun -np \(gpus))")
        }
        return mpi
    }
    return InProcessCommunicator(replicas: gpus)
}

/// The value replica 0 has, on every replica (e.g. the iteration to resume from).
func agreeOnFirstReplica(_ value: Int, _ communicator: any ReplicaCommunicator) throws -> Int {
    let values = try communicate((0..<communicator.localReplicas).map { _ in [Float(value)] }) { try communicator.broadcastFromFirst([$0]) }
    return Int(values[0][0])
}

/// Each replica's losses summed over all replicas, and `accuracy_cls` averaged.
func replicaLosses(_ group: ReplicaGroup, names: [String]) throws -> [String: Float] {
    let keys = names + ["accuracy_cls"]
    let mine = try group.replicas.map { r in try keys.map { try r.workspace.fetchBlob($0).toArray(as: Float.self)[0] } }
    let buffers = try communicate(mine) { try group.communicator.allReduceSum([$0]) }
    var out: [String: Float] = [:]
    for (i, k) in keys.enumerated() { out[k] = buffers[0][i] }
    out["accuracy_cls"] = out["accuracy_cls"]! / Float(group.communicator.worldSize)
    return out
}

/// Runs `body` on scratch copies of `values` (one buffer per local replica) and returns them.
func communicate(_ values: [[Float]], _ body: ([UnsafeMutableBufferPointer<Float>]) throws -> Void) rethrows -> [[Float]] {
    let buffers = values.map { v in
        let b = UnsafeMutableBufferPointer<Float>.allocate(capacity: v.count)
        _ = b.initialize(from: v)
        return b
    }
    defer { for b in buffers { b.deallocate() } }
    try body(buffers)
    return buffers.map { Array($0) }
}

/// Feeds a checkpoint's blobs into a workspace by name, checking shapes; reports what the model
/// has that the file lacks, and what the file has that the model does not use. Returns the
/// checkpoint's metadata.
@discardableResult
func loadCheckpoint(_ path: String, into ws: Workspace, model: DetectionModel, momentum: Bool,
                    log: ((String) -> Void)? = nil) throws -> [String: String] {
    let contents = try Checkpoint.read(path)
    var missing: [String] = []
    for p in model.params {
        guard let b = contents.blobs[p.name] else { missing.append(p.name); continue }
        guard b.shape == p.shape else { throw WeightsError.shapeMismatch(file: path, blob: p.name, file_: b.shape, model: p.shape) }
        ws.feedBlob(p.name, try Tensor(b.values, shape: b.shape, context: ws.context))
        if momentum, let m = contents.blobs[p.name + "_momentum"], m.shape == p.shape {
            ws.feedBlob(p.name + "_momentum", try Tensor(m.values, shape: m.shape, context: ws.context))
        }
    }
    let known = Set(model.params.map(\.name)).union(model.params.map { $0.name + "_momentum" })
    let unused = contents.blobs.keys.filter { !known.contains($0) }.sorted()
    if !missing.isEmpty {
        log?("\(path): \(missing.count) model blobs not in the file keep their initial values: \(missing.prefix(8).joined(separator: ", "))\(missing.count > 8 ? ", …" : "")")
    }
    if !unused.isEmpty { log?("\(path): \(unused.count) blobs in the file are not used by the model: \(unused.prefix(8).joined(separator: ", "))") }
    return contents.metadata
}

func pixelMeans(_ cfg: Config) -> [Float] { pixelTriple(cfg, "PIXEL_MEANS") ?? [102.9801, 115.9465, 122.7717] }

func pixelStds(_ cfg: Config) -> [Float] { pixelTriple(cfg, "PIXEL_STDS") ?? [1, 1, 1] }

/// The three numbers of a `[[[a, b, c]]]` config key (Detectron's PIXEL_MEANS shape).
private func pixelTriple(_ cfg: Config, _ key: String) -> [Float]? {
    guard case let .list(a, _)? = cfg.value(key), case let .list(b, _)? = a.first, case let .list(c, _)? = b.first else { return nil }
    return c.map { if case let .float(v) = $0 { return Float(v) } else if case let .int(v) = $0 { return Float(v) } else { return 0 } }
}

func formatETA(_ seconds: Double) -> String {
    let s = Int(max(0, seconds))
    return String(format: "%d:%02d:%02d", s / 3600, (s / 60) % 60, s % 60)
}

/// DATA_LOADER.WORKER_KIND: `threads` (the default) or `processes`.
func workerKind(_ cfg: Config) throws(EngineError) -> WorkerKind {
    let raw = cfg.string("DATA_LOADER.WORKER_KIND")
    guard let kind = WorkerKind(rawValue: raw.lowercased()) else {
        throw .config("config key DATA_LOADER.WORKER_KIND is '\(raw)'; use threads or processes")
    }
    return kind
}

/// The engine's worker-role registrations: an executable that calls `WorkerGuard.enter` adds
/// these to its data-loader role so training can use process workers.
public enum EngineWorkers {
    public static var datasets: [any TransportableDataset.Type] { [TrainingDataset.self] }
}

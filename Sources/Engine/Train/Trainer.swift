import COCO
import DataLoading
import Foundation
import Logging
import Operators
import Portability
import Storage

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
    let components: ModelComponents
    /// Where log lines go (the CLI's handler prints them; a library user brings their own).
    let logger: Logger
    /// Where the live status line goes (`[t/N] loss … eta …`, every iteration), nil to clear it
    /// before a log line; nil: no live line. The engine never writes to the terminal itself: the
    /// CLI sets this when its standard error is a terminal.
    public var status: (@Sendable (String?) -> Void)?
    /// The training categories, saved with the weights so inference can name classes.
    var categoriesJSON = "[]"

    public init(config: Config, components: ModelComponents = .standard, logger: Logger) {
        self.cfg = config
        self.outputDirectory = (config.string("OUTPUT_DIR") as NSString).appendingPathComponent("train")
        self.components = components
        self.logger = logger
    }

    var finalPath: String { (outputDirectory as NSString).appendingPathComponent("model_final.safetensors") }

    var snapshots: Snapshots { Snapshots(directory: outputDirectory) }
    var statsPath: String { (outputDirectory as NSString).appendingPathComponent("training_stats.jsonl") }

    /// Trains; returns the path of `model_final`.
    @discardableResult
    public func run(onLog: ((TrainingEvent) -> Void)? = nil) throws -> String {
        if let note = try ScheduleScaling.applyIfRequested(&cfg) { logger.info("\(note)") }
        try Files.makeDirectory(outputDirectory)
        if cfg.bool("TRAIN.AUTO_RESUME"), FileManager.default.fileExists(atPath: finalPath) {
            logger.info("model_final exists at \(finalPath): training is done (delete it to train again)")
            return finalPath
        }
        let datasets = try loadDatasets(cfg, key: "TRAIN.DATASETS")
        var roidb: [RoidbEntry] = []
        for d in datasets {
            let (entries, stats) = try d.trainingRoidb(flipped: cfg.bool("TRAIN.USE_FLIPPED"))
            roidb += entries
            for w in stats.warnings { logger.info("\(d.name): \(w)") }
        }
        guard !roidb.isEmpty else { throw EngineError.data("no training image has a usable box") }
        logger.info("training on \(roidb.count) roidb entries from \(datasets.map(\.name).joined(separator: ", "))")
        // Sorted keys: the same training writes the same file, byte for byte.
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        categoriesJSON = String(decoding: (try? encoder.encode(datasets[0].coco.categories)) ?? Data("[]".utf8), as: UTF8.self)

        let session = try ModelSession(cfg, train: true, components: components)
        let model = session.model
        let communicator = try makeCommunicator(cfg)
        let replicaCount = communicator.localReplicas
        let isFirstProcess = communicator.firstReplica == 0
        if isFirstProcess {
            for name in Files.removeStaleTemporaries(in: outputDirectory) { logger.info("removed \(name), a partial file a killed run left") }
        }
        if communicator.worldSize > 1 {
            logger.info("data-parallel training: \(communicator.worldSize) replicas (NUM_GPUS), \(replicaCount) in this process, each with TRAIN.IMS_PER_BATCH \(cfg.int("TRAIN.IMS_PER_BATCH")) images")
        }
        // Replicas in one process share the cores.
        let threadsPerReplica = max(1, session.budget.threads / replicaCount)
        let ctx = session.context
        let registry = session.registry
        let seed = session.seed
        let workspaces = try (0..<replicaCount).map { _ in try session.makeWorkspace() }
        // Weights are read into the first replica; the broadcast below gives them to the others.
        let ws = workspaces[0]
        var start = 0
        var progress = TrainingProgress(iteration: -1, window: [])
        if cfg.bool("TRAIN.AUTO_RESUME"), let (path, _) = snapshots.latest {
            let metadata = try loadCheckpoint(path, into: ws, model: model, momentum: true)
            progress = try TrainingProgress(metadata: metadata, file: path)
            start = progress.iteration + 1
            logger.info("resuming from \(path) at iteration \(start)")
        } else if !cfg.string("TRAIN.WEIGHTS").isEmpty {
            let w = cfg.string("TRAIN.WEIGHTS")
            if w.hasPrefix("http://") || w.hasPrefix("https://") {
                throw EngineError.config(.invalid(key: "TRAIN.WEIGHTS", reason: "is a URL (\(w)); weights are not downloaded: fetch the file elsewhere and pass its local path, or set TRAIN.WEIGHTS '' to train from scratch"))
            }
            try loadCheckpoint(w, into: ws, model: model, momentum: false, logger: logger)
        }

        var replicas: [Replica] = [], trainable: [ParamInfo] = [], gradients: [String] = []
        for (r, rws) in workspaces.enumerated() {
            let nets = try makeTrainingNet(cfg, model: model, ws: rws, registry: registry)
            trainable = nets.trainable
            gradients = nets.gradients
            let pool = session.makePool(threads: threadsPerReplica, name: "sd-train\(r)")
            let global = UInt64(communicator.firstReplica + r)
            replicas.append(Replica(index: r, workspace: rws,
                                    forwardBackward: try Net(nets.forwardBackward, workspace: rws, registry: registry, pool: pool, seed: seed &+ global),
                                    update: try Net(nets.update, workspace: rws, registry: registry, pool: pool, seed: seed), pool: pool))
        }
        logger.info("\(trainable.count) trainable parameters (\(trainable.reduce(0) { $0 + $1.shape.reduce(1, *) }) values), \(model.params.count - trainable.count) frozen")
        let group = ReplicaGroup(replicas: replicas, communicator: communicator, gradients: gradients,
                                 shared: model.params.map(\.name) + trainable.map { $0.name + "_momentum" })
        defer { group.shutdown() }
        // Every replica starts from the first one's parameters and momentum (Detectron broadcasts from GPU 0).
        try group.broadcastParameters()
        // …and from the same iteration (ranks of an MPI run may see different snapshot folders).
        start = try agreeOnFirstReplica(start, communicator)

        // The loader: aspect-ratio grouped batches, targets made in its workers.
        let targets = model.trainingTargets!   // a training net's
        let stride = cfg.int("FPN.COARSEST_STRIDE")
        let masks = cfg.bool("MODEL.MASK_ON")
        if masks { try TrainingDataset.checkMaskGroundTruth(roidb) }
        let dataset = TrainingDataset(roidb: roidb, scales: cfg.ints("TRAIN.SCALES"), maxSize: cfg.int("TRAIN.MAX_SIZE"),
                                      pixelMeans: pixelMeans(cfg), targets: targets, masks: masks)
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
        options.warn = { [logger] in logger.warning("\($0)") }
        let sampler: any BatchSampler = cfg.bool("TRAIN.ASPECT_GROUPING")
            ? AspectRatioGroupedBatchSampler(horizontal: roidb.map { $0.width >= $0.height }, batchSize: options.batchSize, seed: options.seed)
            : SimpleBatchSampler(count: roidb.count, batchSize: options.batchSize, shuffle: true, seed: options.seed, dropLast: true)
        let streams = try (0..<replicaCount).map { r in
            let mine = ReplicaBatchSampler(base: sampler, replicas: communicator.worldSize, index: communicator.firstReplica + r)
            guard !mine.batches(epoch: 0).isEmpty else {
                throw EngineError.data("\(roidb.count) training images make fewer than \(communicator.worldSize) minibatches of \(options.batchSize): lower NUM_GPUS or TRAIN.IMS_PER_BATCH")
            }
            return BatchStream(loader: try DataLoader(transportable: dataset, options: options, batchSampler: mine) { samples in
                try MinibatchCollate.collate(samples, targets: targets, stride: stride, context: ctx)
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
        let status = isFirstProcess ? self.status : nil
        func record(_ json: [String: Any]) throws {
            let line = String(decoding: try JSONSerialization.data(withJSONObject: json, options: [.sortedKeys]), as: UTF8.self)
            status?(nil)
            logger.info("json_stats: \(line)")
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
                    logger.info("iteration \(t): learning rate \(currentLR) → \(lr), momentum rescaled by \(ratio)")
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
            // Losses (already scaled by 1/NUM_GPUS) are summed over the replicas, the metrics
            // averaged, as Detectron logs them.
            var losses = try replicaLosses(group, names: model.losses, metrics: model.metrics)
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
            if logNow || status != nil {
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
                        status?(nil)
                        logger.info("json_stats: \(line)")
                    }
                    onLog?(TrainingEvent(iteration: t, lr: lr, losses: med, total: med["loss"] ?? total, secondsPerIteration: secs))
                } else {
                    status?(String(format: "[%d/%d] loss %.3f  lr %.5f  %.2f s/it  eta %@", t + 1, maxIter, med["loss"] ?? total, lr, secs, formatETA(eta)))
                }
            }
            if isFirstProcess && evalPeriod > 0 && (t + 1) % evalPeriod == 0 && t + 1 < maxIter {
                for line in try evaluate(ws: ws, model: model, trainable: trainable, iteration: t) { try record(line) }
            }
            if isFirstProcess && (t + 1) % snapshotEvery == 0 && t + 1 < maxIter {
                let path = snapshots.path(t)
                try saveCheckpoint(path, ws: ws, model: model, trainable: trainable, progress: TrainingProgress(iteration: t, window: window))
                lastSnapshot = path
                status?(nil)
                logger.info("wrote snapshot \(path)")
                for old in snapshots.prune(keep: cfg.int("TRAIN.SNAPSHOT_KEEP")) { logger.info("deleted snapshot \(old) (TRAIN.SNAPSHOT_KEEP \(cfg.int("TRAIN.SNAPSHOT_KEEP")))") }
                writePlot()
            }
        }
        status?(nil)
        if isFirstProcess {
            try saveCheckpoint(finalPath, ws: ws, model: model, trainable: trainable, progress: TrainingProgress(iteration: maxIter - 1, window: window))
        }
        for stream in streams { stream.shutdown() }
        let done = String(format: "training done in %.1f s (%.2f%% of the iterations' time blocked on the data loader); %@",
                          Date().timeIntervalSince(trainStart), 100 * totalWait / max(totalTime, 1e-9),
                          isFirstProcess ? "wrote \(finalPath)" : "replica 0's process wrote \(finalPath)")
        logger.info("\(done)")
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
        logger.info("iteration \(iteration): evaluating on \(cfg.strings("TEST.DATASETS").joined(separator: ", ")) (TEST.EVAL_PERIOD \(cfg.int("TEST.EVAL_PERIOD")))")
        return try Tester(config: c, components: components, logger: logger).run(weights: weights).compactMap { outcome in
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
            logger.warning("could not write the loss plot: \(error)")
        }
    }
}

func formatETA(_ seconds: Double) -> String {
    let s = Int(max(0, seconds))
    return String(format: "%d:%02d:%02d", s / 3600, (s / 60) % 60, s % 60)
}

/// DATA_LOADER.WORKER_KIND: `threads` (the default) or `processes`.
func workerKind(_ cfg: Config) throws(EngineError) -> WorkerKind {
    let raw = cfg.string("DATA_LOADER.WORKER_KIND")
    guard let kind = WorkerKind(rawValue: raw.lowercased()) else {
        throw .config(.invalid(key: "DATA_LOADER.WORKER_KIND", reason: "is '\(raw)'; use threads or processes"))
    }
    return kind
}

/// The engine's worker-role registrations: an executable that calls `WorkerGuard.enter` adds
/// these to its data-loader role so training can use process workers.
public enum EngineWorkers {
    public static var datasets: [any TransportableDataset.Type] { [TrainingDataset.self] }
}

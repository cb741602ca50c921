import Foundation
import Glibc
@testable import Engine
import Operators
import Portability
import Storage
import Testing

/// The text of a /proc file, read with read(2): LeakSanitizer reports the buffer of
/// FileManager.contents(atPath:) as leaked for procfs files (which report size 0). "" if it is gone.
func procText(_ path: String) -> String {
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { return "" }
    defer { close(fd) }
    var out: [UInt8] = [], chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, 4096) }
        if n <= 0 { break }
        out += chunk[..<n]
    }
    return String(decoding: out, as: UTF8.self)
}

/// A small conv net whose loss is the mean over its images (no sampling): conv → relu → FC →
/// softmax loss scaled by 1/replicas, with its gradients and a momentum-SGD update.
private func smallTrainingNets(replicas: Int) throws -> (forward: NetDef, update: NetDef, gradients: [String]) {
    var net = NetDef(name: "dp", externalInputs: ["data", "label", "c1_w", "c1_b", "fc_w", "fc_b"])
    net.add("Conv", ["data", "c1_w", "c1_b"], ["c1"], ["kernel": .int(3), "pad": .int(1)])
    net.add("Relu", ["c1"], ["c1"])
    net.add("FC", ["c1", "fc_w", "fc_b"], ["logits"])
    net.add("SoftmaxWithLoss", ["logits", "label"], ["prob", "loss"], ["scale": .float(1.0 / Double(replicas))])
    let grads = try addGradientOperators(to: &net, losses: ["loss"])
    var update = NetDef(name: "dp_update", externalInputs: [])
    var names: [String] = []
    for p in ["c1_w", "c1_b", "fc_w", "fc_b"] {
        let g = try #require(grads[p])
        names.append(g)
        update.add("WeightedSum", [g, "one", p, "weight_decay"], [g])
        update.add("MomentumSGDUpdate", [g, p + "_momentum", "lr", p], [g, p + "_momentum", p], ["momentum": .float(0.9)])
    }
    var seen = Set<String>()
    update.externalInputs = update.ops.flatMap(\.inputs).filter { seen.insert($0).inserted }
    return (net, update, names)
}

/// Image `i` of iteration `t` (3×6×6) and its label, the same whatever replica gets it.
private func sample(_ t: Int, _ i: Int) -> ([Float], Int32) {
    var rng = SplitMix64(seed: UInt64(t * 1000 + i))
    return ((0..<(3 * 6 * 6)).map { _ in Float(rng.next() % 2001) / 1000 - 1 }, Int32(rng.next() % 3))
}

/// Trains the small net for `iterations` with `replicas` replicas of `perReplica` images each;
/// replica r of iteration t gets images r·perReplica … of that iteration. Returns replica 0's
/// parameters after each iteration, the gradients of the first, and whether the replicas were
/// bitwise identical after every update.
private func trainSmallNet(replicas: Int, perReplica: Int, iterations: Int) throws -> (params: [[Float]], firstGradients: [[Float]], identical: Bool) {
    let (forward, update, gradients) = try smallTrainingNets(replicas: replicas)
    let ctx = CPUContext()
    var members: [Replica] = []
    for r in 0..<replicas {
        let ws = Workspace(context: ctx)
        var rng = SplitMix64(seed: UInt64(r + 1))   // different on purpose: the broadcast must fix it
        for (name, shape) in [("c1_w", [4, 3, 3, 3]), ("c1_b", [4]), ("fc_w", [3, 4 * 6 * 6]), ("fc_b", [3])] {
            let n = shape.reduce(1, *)
            ws.feedBlob(name, try Tensor((0..<n).map { _ in Float(rng.next() % 2001) / 10_000 - 0.1 }, shape: shape, context: ctx))
            ws.feedBlob(name + "_momentum", try Tensor([Float](repeating: 0, count: n), shape: shape, context: ctx))
        }
        ws.feedBlob("lr", try Tensor([0.05] as [Float], shape: [1], context: ctx))
        ws.feedBlob("one", try Tensor([1] as [Float], shape: [1], context: ctx))
        ws.feedBlob("weight_decay", try Tensor([1e-4] as [Float], shape: [1], context: ctx))
        ws.feedBlob("data", try Tensor([Float](repeating: 0, count: perReplica * 3 * 36), shape: [perReplica, 3, 6, 6], context: ctx))
        ws.feedBlob("label", try Tensor([Int32](repeating: 0, count: perReplica), shape: [perReplica], context: ctx))
        let pool = ThreadPool(threadCount: 0)
        members.append(Replica(index: r, workspace: ws, forwardBackward: try Net(forward, workspace: ws, pool: pool),
                               update: try Net(update, workspace: ws, pool: pool), pool: pool))
    }
    let params = ["c1_w", "c1_b", "fc_w", "fc_b"]
    let group = ReplicaGroup(replicas: members, communicator: InProcessCommunicator(replicas: replicas), gradients: gradients,
                             shared: params + params.map { $0 + "_momentum" })
    defer { group.shutdown() }
    try group.broadcastParameters()
    var history: [[Float]] = [], firstGradients: [[Float]] = [], identical = true
    for t in 0..<iterations {
        try group.forEachReplica { r in
            var data: [Float] = [], labels: [Int32] = []
            for i in 0..<perReplica {
                let (x, y) = sample(t, r.index * perReplica + i)
                data += x
                labels.append(y)
            }
            r.workspace.feedBlob("data", try Tensor(data, shape: [perReplica, 3, 6, 6], context: ctx))
            r.workspace.feedBlob("label", try Tensor(labels, shape: [perReplica], context: ctx))
            try r.forwardBackward.run()
        }
        try group.communicator.allReduceSum(try gradients.map { g in try members.map { try $0.workspace.fetchBlob(g).mutableData(as: Float.self) } })
        if t == 0 { firstGradients = try gradients.map { try members[0].workspace.fetchBlob($0).toArray(as: Float.self) } }
        try group.forEachReplica { try $0.update.run() }
        let mine = try params.map { try members[0].workspace.fetchBlob($0).toArray(as: Float.self) }
        for other in members.dropFirst() {
            for p in params + params.map({ $0 + "_momentum" }) {
                let theirs = try other.workspace.fetchBlob(p).toArray(as: Float.self)
                let ours = try members[0].workspace.fetchBlob(p).toArray(as: Float.self)
                if theirs != ours { identical = false }
            }
        }
        history.append(mine.flatMap { $0 })
    }
    return (history, firstGradients, identical)
}

@Suite("Data-parallel training")
struct DataParallelTests {
    @Test("2 replicas × 1 image equal 1 replica × 2 images: same gradients, same parameters after 20 iterations; replicas bitwise identical after every update")
    func replicasMatchOneBigBatch() throws {
        let one = try trainSmallNet(replicas: 1, perReplica: 2, iterations: 20)
        let two = try trainSmallNet(replicas: 2, perReplica: 1, iterations: 20)
        #expect(two.identical, "replicas drifted apart")
        // Same sums in another order: float rounding only. Stated tolerance: 1e-5 × (1 + |x|).
        func close(_ a: [Float], _ b: [Float]) -> Float {
            zip(a, b).map { abs($0 - $1) / (1 + abs($0)) }.max() ?? 0
        }
        let gradientGap = zip(one.firstGradients, two.firstGradients).map { close($0, $1) }.max() ?? 0
        let parameterGap = close(one.params.last!, two.params.last!)
        print("largest relative difference, 1×2 vs 2×1 images: gradients \(gradientGap), parameters after 20 iterations \(parameterGap)")
        #expect(gradientGap <= 1e-5)
        #expect(parameterGap <= 1e-5)
        // And the run did move: the parameters changed.
        #expect(close(one.params.first!, one.params.last!) > 1e-3)
    }

    @Test("the in-process all-reduce sums in replica order and writes the same sum everywhere; broadcast copies replica 0")
    func inProcessCommunicator() throws {
        let comm = InProcessCommunicator(replicas: 3)
        var a: [Float] = [1, 2], b: [Float] = [10, 20], c: [Float] = [100, 200]
        try a.withUnsafeMutableBufferPointer { pa in
            try b.withUnsafeMutableBufferPointer { pb in
                try c.withUnsafeMutableBufferPointer { pc in
                    try comm.allReduceSum([[pa, pb, pc]])
                }
            }
        }
        #expect(a == [111, 222] && b == a && c == a)
        let values = try communicate([[5], [6], [7]]) { try comm.broadcastFromFirst([$0]) }
        #expect(values == [[5], [5], [5]])
        #expect(throws: EngineError.self) { _ = try communicate([[1], [2, 3], [4]]) { try comm.allReduceSum([$0]) } }
    }

    @Test("scale-schedule reproduces the tutorial's 1/2/4/8-GPU table from any of its configs")
    func linearScalingRule() throws {
        var table: [Int: Config] = [:]
        for n in [1, 2, 4, 8] {
            var c = Config()
            try c.merge(file: repoRoot + "/configs/getting_started/tutorial_\(n)gpu_e2e_faster_rcnn_R-50-FPN.yaml")
            table[n] = c
        }
        for from in [1, 2, 4, 8] {
            for to in [1, 2, 4, 8] {
                let s = try ScheduleScaling(table[from]!, from: from, to: to)
                let want = table[to]!
                #expect(s.numGPUs == want.int("NUM_GPUS"))
                #expect(s.baseLR == want.double("SOLVER.BASE_LR"), "\(from) → \(to): BASE_LR \(s.baseLR)")
                #expect(s.maxIter == want.int("SOLVER.MAX_ITER") && s.steps == want.ints("SOLVER.STEPS"), "\(from) → \(to)")
                #expect(s.snapshotIters == want.int("TRAIN.SNAPSHOT_ITERS") && s.rounded.isEmpty)
            }
        }
        // The opt-in key applies it at start.
        var c = table[1]!
        try c.merge(overrides: ["NUM_GPUS", "4", "SOLVER.SCALE_SCHEDULE_FROM_GPUS", "1"])
        let note = try #require(try ScheduleScaling.applyIfRequested(&c))
        #expect(note.contains("BASE_LR 0.01, MAX_ITER 15000, STEPS [0, 7500, 10000]"), "\(note)")
        #expect(c.double("SOLVER.BASE_LR") == 0.01 && c.int("SOLVER.MAX_ITER") == 15000 && c.ints("SOLVER.STEPS") == [0, 7500, 10000])
    }

    @Test("NUM_GPUS 2 trains two in-process replicas: summed losses logged, snapshots written once")
    func trainerWithTwoReplicas() throws {
        let (spec, _, dir) = try tinyDataset()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let out = dir + "/dp"
        var args = ["train", "--skip-test", "--cfg", shapesConfig] + tinyConfig(dataset: spec, output: out, maxIter: 20)
        args += ["NUM_GPUS", "2", "TRAIN.USE_FLIPPED", "True"]
        let r = try Processes.run(ProcessConfiguration(executable: detectronExecutable, arguments: args), timeout: 300)
        #expect(r.status.isSuccess, "\(r.error.suffix(1500))")
        #expect(r.output.contains("data-parallel training: 2 replicas (NUM_GPUS), 2 in this process"), "\(r.output.prefix(3000))")
        let final = try Checkpoint.read(out + "/train/model_final.safetensors")
        #expect(final.metadata["iteration"] == "19")
        let stats = try String(contentsOfFile: out + "/train/training_stats.jsonl", encoding: .utf8).split(separator: "\n")
        #expect(stats.count == 2)
    }

    /// `mpirun`'s path, or nil when Open MPI is not installed (the MPI tests are then skipped, visibly).
    static let mpirunPath = try? Processes.resolveExecutable("mpirun")

    /// The environment for `mpirun` and its ranks (root needs the allow-run-as-root pair).
    private var mpiEnvironment: [String: String] {
        var env = ProcessInfo.processInfo.environment
        env["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
        env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
        env["DETECTRON_NUM_THREADS"] = "1"
        // Under AddressSanitizer: Open MPI keeps its MPI_Init allocations for the life of the
        // process and unloads its plugins before LeakSanitizer's exit check, which then reports
        // them; leak checking is off in the ranks only (the engine code they run is leak-checked
        // through the in-process backend). Other ASan checks stay on.
        env["ASAN_OPTIONS"] = (env["ASAN_OPTIONS"].map { $0 + ":" } ?? "") + "detect_leaks=0"
        return env
    }

    /// Starts `mpirun` with its output in `logPath` (a pipe nobody reads could fill and stall it).
    private func spawnLogged(_ mpirunPath: String, _ args: [String], _ env: [String: String], logPath: String) throws -> ChildProcess {
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let logFile = try #require(FileHandle(forWritingAtPath: logPath))
        defer { try? logFile.close() }
        var config = ProcessConfiguration(executable: mpirunPath, arguments: args, environment: env)
        config.standardOutput = .descriptor(logFile.fileDescriptor)
        config.standardError = .descriptor(logFile.fileDescriptor)
        return try Processes.spawn(config)
    }

    @Test("mpirun -np 2 trains like two in-process replicas: same parameters (within 1e-5 relative; bitwise here)", .enabled(if: mpirunPath != nil, "no mpirun: ci/setup installs openmpi-bin"))
    func mpiMatchesInProcess() throws {
        let mpirunPath = try #require(Self.mpirunPath), env = mpiEnvironment
        let (spec, _, dir) = try tinyDataset()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        func args(_ out: String) -> [String] {
            ["train", "--skip-test", "--cfg", shapesConfig] + tinyConfig(dataset: spec, output: dir + "/" + out, maxIter: 10)
                + ["NUM_GPUS", "2", "TRAIN.USE_FLIPPED", "True"]
        }
        let local = try Processes.run(ProcessConfiguration(executable: detectronExecutable, arguments: args("inproc"), environment: env), timeout: 300)
        #expect(local.status.isSuccess, "\(local.error.suffix(1500))")
        let mpi = try Processes.run(ProcessConfiguration(executable: mpirunPath, arguments: ["-np", "2", detectronExecutable] + args("mpi"), environment: env),
                                    timeout: 300)
        #expect(mpi.status.isSuccess, "\(mpi.output.suffix(1500)) \(mpi.error.suffix(1500))")
        #expect(mpi.output.contains("2 replicas (NUM_GPUS), 1 in this process"), "\(mpi.output.prefix(2000))")
        let a = try Checkpoint.read(dir + "/inproc/train/model_final.safetensors").blobs
        let b = try Checkpoint.read(dir + "/mpi/train/model_final.safetensors").blobs
        #expect(a.keys.sorted() == b.keys.sorted())
        var worst: Float = 0
        for (name, blob) in a {
            guard let other = b[name] else { continue }
            for (x, y) in zip(blob.values, other.values) { worst = max(worst, abs(x - y) / (1 + abs(x))) }
        }
        print("mpirun -np 2 vs in-process: largest relative parameter difference \(worst)")
        #expect(worst <= 1e-5)
    }

    @Test("an error on one MPI rank stops the whole job, naming the rank and the cause", .enabled(if: mpirunPath != nil, "no mpirun: ci/setup installs openmpi-bin"))
    func mpiRankError() throws {
        let mpirunPath = try #require(Self.mpirunPath), env = mpiEnvironment
        let (spec, _, dir) = try tinyDataset()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // The image turns unreadable after the roidb is built: whichever rank loads it first fails.
        let args = ["-np", "2", detectronExecutable, "train", "--skip-test", "--cfg", shapesConfig]
            + tinyConfig(dataset: spec, output: dir + "/mpi-error", maxIter: 100_000) + ["NUM_GPUS", "2", "TRAIN.USE_FLIPPED", "True"]
        let logPath = dir + "/mpi-error.log"
        let job = try spawnLogged(mpirunPath, args, env, logPath: logPath)
        let t0 = Date()
        while !FileManager.default.fileExists(atPath: dir + "/mpi-error/train/training_stats.jsonl") && Date().timeIntervalSince(t0) < 60 { usleep(100_000) }
        try Data("broken".utf8).write(to: URL(fileURLWithPath: dir + "/a.jpg"))
        let brokenAt = Date()
        let status = job.wait(timeout: 30)
        if status == nil { _ = job.terminate(grace: 1) }
        #expect(status != nil && status?.isSuccess == false, "the job did not stop")
        print(String(format: "mpirun stopped %.2f s after the image broke", Date().timeIntervalSince(brokenAt)))
        let text = try String(contentsOfFile: logPath, encoding: .utf8)
        #expect(text.contains("MPI rank") && text.contains("failed") && text.contains(dir + "/a.jpg"), "\(text.suffix(1500))")
    }

    @Test("killing one MPI rank stops the other within 10 s, and mpirun names the rank that died", .enabled(if: mpirunPath != nil, "no mpirun: ci/setup installs openmpi-bin"))
    func mpiRankDeath() throws {
        let mpirunPath = try #require(Self.mpirunPath), env = mpiEnvironment
        let (spec, _, dir) = try tinyDataset()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let out = dir + "/mpi-kill"
        let args = ["-np", "2", detectronExecutable, "train", "--skip-test", "--cfg", shapesConfig]
            + tinyConfig(dataset: spec, output: out, maxIter: 100_000) + ["NUM_GPUS", "2", "TRAIN.USE_FLIPPED", "True"]
        let logPath = dir + "/mpi-kill.log"
        let job = try spawnLogged(mpirunPath, args, env, logPath: logPath)
        // Find rank 1 once it is training: its environment says so and its arguments name our folder.
        var victim: Int32?
        let t0 = Date()
        while victim == nil && Date().timeIntervalSince(t0) < 60 {
            usleep(200_000)
            guard FileManager.default.fileExists(atPath: out + "/train/training_stats.jsonl") else { continue }
            for name in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
                guard let pid = Int32(name),
                      procText("/proc/\(name)/cmdline").contains(out),
                      procText("/proc/\(name)/environ").split(separator: "\0").contains("OMPI_COMM_WORLD_RANK=1") else { continue }
                victim = pid
            }
        }
        let pid = try #require(victim, "rank 1 never started training")
        kill(pid, SIGKILL)
        let killedAt = Date()
        let status = job.wait(timeout: 10)
        let waited = Date().timeIntervalSince(killedAt)
        if status == nil { _ = job.terminate(grace: 1) }
        #expect(status != nil && status?.isSuccess == false, "mpirun still running \(waited) s after rank 1 died")
        let text = try String(contentsOfFile: logPath, encoding: .utf8)
        print("mpirun stopped \(String(format: "%.2f", waited)) s after rank 1 was killed")
        #expect(text.contains("rank 1"), "\(text.suffix(1500))")
    }
}

@Suite("Multi-worker testing")
struct MultiWorkerTestingTests {
    /// Detections of a results file, sorted, as comparable text.
    func sortedDetections(_ path: String) throws -> [String] {
        let list = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [[String: Any]])
        return try list.map { String(decoding: try JSONSerialization.data(withJSONObject: $0, options: [.sortedKeys]), as: UTF8.self) }.sorted()
    }

    @Test("--multi-worker-testing gives the same detections as one process, and a failing worker fails the run naming its file, leaving no process behind")
    func sameDetectionsAndFailures() throws {
        let (_, _, dir) = try tinyDataset()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let spec = "\(dir)/shapes/annotations/instances_train.json::\(dir)/shapes/train"
        var env = ProcessInfo.processInfo.environment
        env["DETECTRON_NUM_THREADS"] = "1"
        func detectron(_ args: [String]) throws -> (status: TerminationStatus, output: String, error: String) {
            try Processes.run(ProcessConfiguration(executable: detectronExecutable, arguments: args, environment: env), timeout: 300)
        }
        #expect(try detectron(["make-shapes", "--out", dir + "/shapes", "--train", "2", "--val", "7", "--seed", "4"]).status.isSuccess)
        let trained = try detectron(["train", "--skip-test", "--cfg", shapesConfig] + tinyConfig(dataset: spec, output: dir + "/model", maxIter: 10)
                                    + ["MODEL.NUM_CLASSES", "5"])
        #expect(trained.status.isSuccess, "\(trained.error.suffix(1000))")
        let weights = dir + "/model/train/model_final.safetensors"
        let val = "\(dir)/shapes/annotations/instances_val.json::\(dir)/shapes/val"
        func test(_ out: String, multi: Bool) throws -> (status: TerminationStatus, output: String, error: String) {
            try detectron(["test", "--weights", weights] + (multi ? ["--multi-worker-testing"] : []) + ["--cfg", shapesConfig]
                          + tinyConfig(dataset: spec, output: dir + "/" + out, maxIter: 10)
                          + ["TEST.DATASETS", "('\(val)',)", "TEST.SCORE_THRESH", "0.0", "NUM_GPUS", "2", "MODEL.NUM_CLASSES", "5"])
        }
        let one = try test("one", multi: false)
        #expect(one.status.isSuccess, "\(one.error.suffix(1000))")
        let two = try test("two", multi: true)
        #expect(two.status.isSuccess, "\(two.error.suffix(1000))")
        #expect(two.output.contains("7 images in 2 workers × 1 threads: 0:4, 4:7"), "\(two.output.suffix(2000))")
        let a = try sortedDetections(dir + "/one/test/instances_val/bbox_instances_val_results.json")
        let b = try sortedDetections(dir + "/two/test/instances_val/bbox_instances_val_results.json")
        #expect(a.count > 20 && a == b, "\(a.count) vs \(b.count) detections")
        #expect(FileManager.default.fileExists(atPath: dir + "/two/test/instances_val/detection_results.json"))

        // A corrupt image in the second worker's range.
        let victim = dir + "/shapes/val/val_000005.jpg"
        try Data("not a jpeg".utf8).write(to: URL(fileURLWithPath: victim))
        let failed = try test("broken", multi: true)
        #expect(!failed.status.isSuccess)
        #expect(failed.error.contains("test worker for images 4:7") && failed.error.contains(victim), "\(failed.error.suffix(1500))")
        let leftovers = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).filter { name in
            Int(name) != nil && procText("/proc/\(name)/cmdline").contains(dir + "/broken")
        }
        #expect(leftovers.isEmpty, "processes left behind: \(leftovers)")
    }
}

import BLAS
@testable import Engine
import Foundation
import Glibc
import Portability
import Storage
import Testing

@Suite("Host limits")
struct HostTests {
    @Test("executables start OpenBLAS with one thread unless the environment chooses")
    func blasSingleThreadedAtLoad() throws {
        // This test bundle is such an executable.
        let env = ProcessInfo.processInfo.environment
        if env["SWIFTDETECTRON_BLAS_PREINIT"] == "1" {
            #expect(BLAS.singleThreadedAtLoad)
            #expect(env["OPENBLAS_NUM_THREADS"] == "1")
        } else {
            #expect(!BLAS.singleThreadedAtLoad)
            #expect(env["OPENBLAS_NUM_THREADS"] != nil || env["GOTO_NUM_THREADS"] != nil || env["OMP_NUM_THREADS"] != nil)
        }
        let r = try Processes.run(ProcessConfiguration(executable: detectronExecutable, arguments: ["doctor"],
                                                       environment: env.filter { !$0.key.hasSuffix("NUM_THREADS") && !$0.key.hasPrefix("SWIFTDETECTRON_BLAS") }),
                                  timeout: 60)
        #expect(r.output.contains("BLAS threads             1 at load"), "\(r.output)")
    }

    @Test("detectron runs under ulimit -u 1: OpenBLAS does not kill it at load, workers fall back (as nobody: root is exempt)",
          .enabled(if: geteuid() == 0, "needs root to drop to nobody; ci/matrix's nproc-low leg covers other hosts"))
    func lowProcessLimit() throws {
        let runuser = try Processes.resolveExecutable("runuser"), prlimit = try Processes.resolveExecutable("prlimit")
        var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasSuffix("NUM_THREADS") && !$0.key.hasPrefix("SWIFTDETECTRON_BLAS") }
        // LeakSanitizer's exit check needs a thread of its own, which ulimit -u 1 forbids.
        env["ASAN_OPTIONS"] = (env["ASAN_OPTIONS"].map { $0 + ":" } ?? "") + "detect_leaks=0"
        let r = try Processes.run(ProcessConfiguration(executable: runuser,
                                                       arguments: ["-u", "nobody", "--", prlimit, "--nproc=1:1", "--", detectronExecutable, "doctor"],
                                                       environment: env), timeout: 60)
        #expect(r.status.isSuccess, "\(r.output) \(r.error)")
        #expect(!r.error.contains("blas_thread_init"), "\(r.error)")
        #expect(r.output.contains("per-user process limit is reached (ulimit -u is 1)"), "\(r.output)")
    }
}

@Suite("Weights in other formats")
struct WeightFormatTests {
    let pickles = repoRoot + "/Tests/PickleTests/Fixtures"

    @Test("Detectron pickles read as checkpoints: model-zoo blobs and ImageNet flat dicts; convert-weights writes them as safetensors")
    func detectronPickles() throws {
        let zoo = try Checkpoint.read(pickles + "/detectron_p2.pkl")
        #expect(zoo.blobs["conv1_w"]?.shape == [2, 3, 3, 3] && zoo.blobs["res_conv1_bn_s"]?.values == [1.5, -0.25])
        #expect(zoo.metadata["detectron_cfg"] == "MODEL:\n  NUM_CLASSES: 81\n")
        let flat = try Checkpoint.read(pickles + "/imagenet_flat.pkl")
        #expect(flat.blobs.keys.sorted() == ["res2_0_branch2a_bn_b", "res2_0_branch2a_w"])
        let out = NSTemporaryDirectory() + "sd-convert-\(UInt32.random(in: 0...UInt32.max)).safetensors"
        defer { try? FileManager.default.removeItem(atPath: out) }
        let r = try Processes.run(ProcessConfiguration(executable: detectronExecutable, arguments: ["convert-weights", pickles + "/detectron_p2.pkl", out]), timeout: 60)
        #expect(r.status.isSuccess, "\(r.error)")
        #expect(r.output.contains("6 blobs"), "\(r.output)")
        let back = try Checkpoint.read(out)
        for (name, blob) in zoo.blobs {
            #expect(back.blobs[name]?.shape == blob.shape && back.blobs[name]?.values == blob.values, "\(name)")
        }
        #expect(back.metadata["converted_from"] == pickles + "/detectron_p2.pkl")
    }

    @Test("loading a pickle into a model checks every shape, naming the blob; foreign globals and torch archives of other models are refused clearly")
    func shapeChecksAndRefusals() throws {
        var cfg = Config()
        try cfg.merge(file: shapesConfig)
        let model = try ModelComponents.standard.build(cfg, train: false)
        let ws = Workspace(context: CPUContext())
        #expect(throws: WeightsError.self) { try loadCheckpoint(pickles + "/detectron_p2.pkl", into: ws, model: model, momentum: false) }
        do {
            try loadCheckpoint(pickles + "/detectron_p2.pkl", into: ws, model: model, momentum: false)
        } catch let e as WeightsError {
            #expect(e.description.contains("blob conv1_w has shape [2, 3, 3, 3] in the file"), "\(e)")
        }
        do {
            _ = try Checkpoint.read(pickles + "/evil.pkl")
            Issue.record("evil.pkl was accepted")
        } catch {
            #expect(error.description.contains("os.system"), "\(error)")
        }
        do {
            _ = try Checkpoint.read(pickles + "/torch_state.pth")
            Issue.record("a torch archive of another model was accepted")
        } catch {
            #expect(error.description.contains("only torchvision's fasterrcnn_resnet50_fpn names are mapped"), "\(error)")
        }
    }
}

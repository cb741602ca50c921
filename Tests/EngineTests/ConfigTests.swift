import Engine
import Foundation
import Testing

/// The repository root (configs live there).
let repoRoot: String = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { url.deleteLastPathComponent() }
    return url.path
}()

@Suite("Config")
struct ConfigTests {
    @Test("Detectron's tutorial and baseline configs load with their values")
    func tutorialConfigs() throws {
        for (g, lr, iters, steps) in [(1, 0.0025, 60000, [0, 30000, 40000]), (2, 0.005, 30000, [0, 15000, 20000]),
                                      (4, 0.01, 15000, [0, 7500, 10000]), (8, 0.02, 7500, [0, 3750, 5000])] {
            var c = Config()
            try c.merge(file: repoRoot + "/configs/getting_started/tutorial_\(g)gpu_e2e_faster_rcnn_R-50-FPN.yaml")
            #expect(c.int("NUM_GPUS") == g)
            #expect(c.double("SOLVER.BASE_LR") == lr)
            #expect(c.int("SOLVER.MAX_ITER") == iters)
            #expect(c.ints("SOLVER.STEPS") == steps)
            #expect(c.ints("TRAIN.SCALES") == [500])
            #expect(c.strings("TRAIN.DATASETS") == ["coco_2014_train"])
            #expect(c.int("TEST.RPN_PRE_NMS_TOP_N") == 1000)
            #expect(c.value("TRAIN.SCALES") == .list([.int(500)], tuple: true))
        }
        var base = Config()
        try base.merge(file: repoRoot + "/configs/12_2017_baselines/e2e_faster_rcnn_R-50-FPN_1x.yaml")
        #expect(base.strings("TRAIN.DATASETS") == ["coco_2014_train", "coco_2014_valminusminival"])
        #expect(base.int("TRAIN.MAX_SIZE") == 1333 && base.int("TRAIN.BATCH_SIZE_PER_IM") == 512)
    }

    @Test("unknown keys fail with the full key and the closest existing one")
    func unknownKey() {
        var c = Config()
        #expect(throws: ConfigError.nonExistentKey("TRAIN.SCALE", suggestion: "TRAIN.SCALES")) { try c.merge(overrides: ["TRAIN.SCALE", "(500,)"]) }
        #expect(throws: ConfigError.nonExistentKey("SOLVER.BASE_LRR", suggestion: "SOLVER.BASE_LR")) {
            try c.merge(yaml: "SOLVER:\n  BASE_LRR: 0.1\n", source: "x.yaml")
        }
        #expect(ConfigError.nonExistentKey("TRAIN.SCALE", suggestion: "TRAIN.SCALES").description
            == "config key TRAIN.SCALE does not exist (did you mean TRAIN.SCALES?)")
    }

    @Test("renamed keys say the new name; deprecated keys are skipped with a warning")
    func renamedAndDeprecated() throws {
        var c = Config()
        #expect(throws: ConfigError.self) { try c.merge(yaml: "TEST:\n  SCALES: (600,)\n", source: "x.yaml") }
        do { try c.merge(overrides: ["TRAIN.DATASET", "coco_2014_train"]) } catch {
            #expect(error.description.hasPrefix("config key TRAIN.DATASET was renamed to TRAIN.DATASETS"))
        }
        try c.merge(yaml: "FINAL_MSG: hello\nUSE_GPU_NMS: True\n", source: "x.yaml")
        #expect(c.warnings.count == 2)
    }

    @Test("types must match the default's: no int → float promotion; tuple ↔ list converts; strings stay strings")
    func types() throws {
        var c = Config()
        #expect(throws: ConfigError.typeMismatch(key: "SOLVER.BASE_LR", expected: "float", got: "int", value: "1")) {
            try c.merge(overrides: ["SOLVER.BASE_LR", "1"])
        }
        try c.merge(overrides: ["SOLVER.BASE_LR", "1.0", "TRAIN.SCALES", "[400, 500]", "OUTPUT_DIR", "/tmp/x", "TRAIN.USE_FLIPPED", "False"])
        #expect(c.double("SOLVER.BASE_LR") == 1.0)
        #expect(c.value("TRAIN.SCALES") == .list([.int(400), .int(500)], tuple: true))
        #expect(c.string("OUTPUT_DIR") == "/tmp/x")
        #expect(c.bool("TRAIN.USE_FLIPPED") == false)
        #expect(throws: ConfigError.oddOverrideList(count: 1)) { try c.merge(overrides: ["NUM_GPUS"]) }
        #expect(throws: ConfigError.typeMismatch(key: "NUM_GPUS", expected: "int", got: "str", value: "'two'")) {
            try c.merge(overrides: ["NUM_GPUS", "two"])
        }
        #expect(ConfigValue.literal("(800,)") == .list([.int(800)], tuple: true))
        #expect(ConfigValue.literal("('a', 'b')") == .list([.string("a"), .string("b")], tuple: true))
        #expect(ConfigValue.literal("FPN.add_fpn_ResNet50_conv5_body") == nil)
    }

    @Test("case-insensitive suggestions do not depend on the locale (the Turkish-i trap)")
    func turkishI() {
        var c = Config()
        setenv("LC_ALL", "tr_TR.UTF-8", 1)
        defer { unsetenv("LC_ALL") }
        #expect(throws: ConfigError.nonExistentKey("train.scale", suggestion: "TRAIN.SCALES")) { try c.merge(overrides: ["train.scale", "1"]) }
    }
}

@Suite("Learning-rate schedule")
struct ScheduleTests {
    @Test("the 1x baseline: 0.00667 at 0, 0.02 from 500, 0.002 from 60k, 0.0002 from 80k; linear warm-up")
    func baseline() throws {
        var c = Config()
        try c.merge(file: repoRoot + "/configs/12_2017_baselines/e2e_faster_rcnn_R-50-FPN_1x.yaml")
        let s = LearningRateSchedule(c)
        #expect(abs(s.lr(0) - 0.02 / 3) < 1e-7)
        #expect(abs(s.lr(250) - 0.02 * (1.0 / 3 * 0.5 + 0.5)) < 1e-7)
        #expect(s.lr(500) == Float(0.02))
        #expect(s.lr(59999) == Float(0.02))
        #expect(abs(s.lr(60000) - 0.002) < 1e-9)
        #expect(abs(s.lr(80000) - 0.0002) < 1e-10)
        #expect(abs(s.lr(89999) - 0.0002) < 1e-10)
    }
}

import Foundation

extension Config {
    /// Keys Detectron skips with a warning.
    static let deprecated: Set<String> = [
        "FINAL_MSG", "MODEL.DILATION", "ROOT_GPU_ID", "RPN.ON", "TRAIN.BBOX_NORMALIZE_TARGETS_PRECOMPUTED",
        "TRAIN.DROPOUT", "USE_GPU_NMS", "TEST.NUM_TEST_IMAGES",
    ]

    /// Keys Detectron renamed: old → (new, conversion hint).
    static let renamed: [String: (String, String)] = [
        "TRAIN.DATASET": ("TRAIN.DATASETS", "also convert to a tuple, e.g. 'coco_2014_train' -> ('coco_2014_train',)"),
        "TEST.DATASET": ("TEST.DATASETS", "also convert to a tuple, e.g. 'coco_2014_val' -> ('coco_2014_val',)"),
        "TEST.SCALES": ("TEST.SCALE", "also convert from a tuple, e.g. (600,) -> 600"),
        "TRAIN.PROPOSAL_FILE": ("TRAIN.PROPOSAL_FILES", "also convert to a tuple"),
        "TEST.PROPOSAL_FILE": ("TEST.PROPOSAL_FILES", "also convert to a tuple"),
        "MODEL.ROI_HEAD": ("FAST_RCNN.ROI_BOX_HEAD", ""),
        "MODEL.PS_GRID_SIZE": ("RFCN.PS_GRID_SIZE", ""),
        "MRCNN.MASK_HEAD_NAME": ("MRCNN.ROI_MASK_HEAD", ""),
        "TRAIN.CPP_RPN": ("none", "the C++ RPN ops were removed; delete this key"),
        "TEST.CPP_RPN": ("none", "the C++ RPN ops were removed; delete this key"),
    ]

    private static func t(_ v: [ConfigValue]) -> ConfigValue { .list(v, tuple: true) }
    private static func l(_ v: [ConfigValue]) -> ConfigValue { .list(v, tuple: false) }

    /// Detectron's defaults (`core/config.py`) for the keys this engine reads, plus the engine's own
    /// named options (marked "ours"). Built for each `Config` (no global state).
    static var defaultTree: [String: ConfigValue] {
        let pairs: [(String, ConfigValue)] = [
            // MODEL
            ("MODEL.TYPE", .string("")), ("MODEL.CONV_BODY", .string("")), ("MODEL.NUM_CLASSES", .int(-1)),
            ("MODEL.CLS_AGNOSTIC_BBOX_REG", .bool(false)), ("MODEL.BBOX_REG_WEIGHTS", t([.float(10), .float(10), .float(5), .float(5)])),
            ("MODEL.FASTER_RCNN", .bool(false)), ("MODEL.MASK_ON", .bool(false)), ("MODEL.KEYPOINTS_ON", .bool(false)),
            ("MODEL.RPN_ONLY", .bool(false)),
            // Detectron's default is dag. Here every op splits its work across the pool, and running
            // the ops in order measured 1.3–1.5× faster than running independent ops side by side
            // (docs/benchmarks.md); the results are identical. dag stays available.
            ("MODEL.EXECUTION_TYPE", .string("simple")),
            ("MODEL.SEMANTICS", .string("detectron")),   // ours: detectron, or torchvision (inference: its box arithmetic and transforms)
            // TRAIN
            ("TRAIN.WEIGHTS", .string("")), ("TRAIN.DATASETS", t([])), ("TRAIN.SCALES", t([.int(600)])), ("TRAIN.MAX_SIZE", .int(1000)),
            ("TRAIN.IMS_PER_BATCH", .int(2)), ("TRAIN.BATCH_SIZE_PER_IM", .int(64)), ("TRAIN.FG_FRACTION", .float(0.25)),
            ("TRAIN.FG_THRESH", .float(0.5)), ("TRAIN.BG_THRESH_HI", .float(0.5)), ("TRAIN.BG_THRESH_LO", .float(0.0)),
            ("TRAIN.USE_FLIPPED", .bool(true)), ("TRAIN.BBOX_THRESH", .float(0.5)), ("TRAIN.SNAPSHOT_ITERS", .int(20000)),
            ("TRAIN.PROPOSAL_FILES", t([])), ("TRAIN.ASPECT_GROUPING", .bool(true)),
            ("TRAIN.RPN_POSITIVE_OVERLAP", .float(0.7)), ("TRAIN.RPN_NEGATIVE_OVERLAP", .float(0.3)), ("TRAIN.RPN_FG_FRACTION", .float(0.5)),
            ("TRAIN.RPN_BATCH_SIZE_PER_IM", .int(256)), ("TRAIN.RPN_NMS_THRESH", .float(0.7)), ("TRAIN.RPN_PRE_NMS_TOP_N", .int(12000)),
            ("TRAIN.RPN_POST_NMS_TOP_N", .int(2000)), ("TRAIN.RPN_STRADDLE_THRESH", .int(0)), ("TRAIN.RPN_MIN_SIZE", .int(0)),
            ("TRAIN.CROWD_FILTER_THRESH", .float(0.7)), ("TRAIN.GT_MIN_AREA", .int(-1)), ("TRAIN.FREEZE_CONV_BODY", .bool(false)),
            ("TRAIN.AUTO_RESUME", .bool(true)),
            ("TRAIN.SNAPSHOT_KEEP", .int(0)),   // ours: keep only the newest N model_iter snapshots (0 keeps all, as Detectron)
            ("TRAIN.COPY_WEIGHTS", .bool(false)), ("TRAIN.FREEZE_AT", .int(2)),
            ("TRAIN.GENERATE_PROPOSALS_ON_GPU", .bool(false)),
            // TEST
            ("TEST.EVAL_PERIOD", .int(0)),   // ours (detectron2's): test on TEST.DATASETS every N iterations while training (0: off)
            ("TEST.WEIGHTS", .string("")), ("TEST.DATASETS", t([])), ("TEST.SCALE", .int(600)), ("TEST.MAX_SIZE", .int(1000)),
            ("TEST.NMS", .float(0.3)), ("TEST.BBOX_REG", .bool(true)), ("TEST.PROPOSAL_FILES", t([])), ("TEST.PROPOSAL_LIMIT", .int(2000)),
            ("TEST.RPN_NMS_THRESH", .float(0.7)), ("TEST.RPN_PRE_NMS_TOP_N", .int(12000)), ("TEST.RPN_POST_NMS_TOP_N", .int(2000)),
            ("TEST.RPN_MIN_SIZE", .int(0)), ("TEST.DETECTIONS_PER_IM", .int(100)), ("TEST.SCORE_THRESH", .float(0.05)),
            ("TEST.COMPETITION_MODE", .bool(true)), ("TEST.PRECOMPUTED_PROPOSALS", .bool(true)),
            // ours: 3×3 stride-1 convolutions of test nets by Winograd's algorithms ("winograd": per
            // layer F(4×4, 3×3), F(2×2, 3×3) or im2col, whichever its shapes favour; "winograd_f2" or
            // "winograd_f4" force one), results equal up to float rounding; or "im2col" as in training.
            ("TEST.CONV_ALGO", .string("winograd")),
            // ours: test nets fuse Conv → AffineChannel → [Sum →] Relu and Sum → Relu into one op each
            // (the same arithmetic in the same order: bitwise the same results, fewer memory passes).
            // False keeps every intermediate blob (e.g. for `infer --save-blobs`).
            ("TEST.FUSE_OPS", .bool(true)),
            ("TEST.BBOX_AUG.ENABLED", .bool(false)), ("TEST.SOFT_NMS.ENABLED", .bool(false)), ("TEST.BBOX_VOTE.ENABLED", .bool(false)),
            // SOLVER
            ("SOLVER.BASE_LR", .float(0.001)), ("SOLVER.LR_POLICY", .string("step")), ("SOLVER.GAMMA", .float(0.1)),
            ("SOLVER.STEP_SIZE", .int(30000)), ("SOLVER.STEPS", l([])), ("SOLVER.LRS", l([])), ("SOLVER.MAX_ITER", .int(40000)),
            ("SOLVER.MOMENTUM", .float(0.9)), ("SOLVER.WEIGHT_DECAY", .float(0.0005)), ("SOLVER.WEIGHT_DECAY_GN", .float(0.0)),
            ("SOLVER.BIAS_LR", .float(2.0)),   // ours: Detectron fixes the bias learning rate at 2× BASE_LR
            ("SOLVER.WARM_UP_ITERS", .int(500)), ("SOLVER.WARM_UP_FACTOR", .float(1.0 / 3.0)),
            ("SOLVER.WARM_UP_METHOD", .string("linear")), ("SOLVER.SCALE_MOMENTUM", .bool(true)),
            ("SOLVER.SCALE_SCHEDULE_FROM_GPUS", .int(0)),   // ours: apply the linear scaling rule from this many replicas
            ("SOLVER.SCALE_MOMENTUM_THRESHOLD", .float(1.1)), ("SOLVER.LOG_LR_CHANGE_THRESHOLD", .float(1.1)),
            // FAST_RCNN
            ("FAST_RCNN.ROI_BOX_HEAD", .string("")), ("FAST_RCNN.MLP_HEAD_DIM", .int(1024)), ("FAST_RCNN.CONV_HEAD_DIM", .int(256)),
            ("FAST_RCNN.NUM_STACKED_CONVS", .int(4)), ("FAST_RCNN.ROI_XFORM_METHOD", .string("RoIPoolF")),
            ("FAST_RCNN.ROI_XFORM_SAMPLING_RATIO", .int(0)), ("FAST_RCNN.ROI_XFORM_RESOLUTION", .int(14)),
            // RPN (single-scale, ignored with FPN)
            ("RPN.RPN_ON", .bool(false)), ("RPN.SIZES", t([.int(64), .int(128), .int(256), .int(512)])), ("RPN.STRIDE", .int(16)),
            ("RPN.ASPECT_RATIOS", t([.float(0.5), .int(1), .int(2)])),
            // FPN
            ("FPN.FPN_ON", .bool(false)), ("FPN.DIM", .int(256)), ("FPN.ZERO_INIT_LATERAL", .bool(false)), ("FPN.COARSEST_STRIDE", .int(32)),
            ("FPN.MULTILEVEL_ROIS", .bool(false)), ("FPN.ROI_CANONICAL_SCALE", .int(224)), ("FPN.ROI_CANONICAL_LEVEL", .int(4)),
            ("FPN.ROI_MAX_LEVEL", .int(5)), ("FPN.ROI_MIN_LEVEL", .int(2)), ("FPN.MULTILEVEL_RPN", .bool(false)),
            ("FPN.RPN_MAX_LEVEL", .int(6)), ("FPN.RPN_MIN_LEVEL", .int(2)), ("FPN.RPN_ASPECT_RATIOS", t([.float(0.5), .int(1), .int(2)])),
            ("FPN.RPN_ANCHOR_START_SIZE", .int(32)), ("FPN.EXTRA_CONV_LEVELS", .bool(false)),
            ("FPN.USE_GN", .bool(false)),
            ("FPN.P6_FROM_P5", .bool(false)),   // ours: P6's convolution reads P5, not C5 (torchvision's LastLevelP6P7(256, 256), retinanet_resnet50_fpn v1)
            // MRCNN (MODEL.MASK_ON)
            ("MRCNN.ROI_MASK_HEAD", .string("")),
            ("MRCNN.RESOLUTION", .int(14)),
            ("MRCNN.ROI_XFORM_METHOD", .string("RoIAlign")),
            ("MRCNN.ROI_XFORM_RESOLUTION", .int(7)),
            ("MRCNN.ROI_XFORM_SAMPLING_RATIO", .int(0)),
            ("MRCNN.DIM_REDUCED", .int(256)),
            ("MRCNN.DILATION", .int(2)),
            ("MRCNN.UPSAMPLE_RATIO", .int(1)),
            ("MRCNN.USE_FC_OUTPUT", .bool(false)),
            ("MRCNN.CONV_INIT", .string("GaussianFill")),
            ("MRCNN.CLS_SPECIFIC_MASK", .bool(true)),
            ("MRCNN.WEIGHT_LOSS_MASK", .float(1.0)),
            ("MRCNN.THRESH_BINARIZE", .float(0.5)),
            // RETINANET (model type retinanet)
            ("RETINANET.RETINANET_ON", .bool(false)),
            ("RETINANET.ASPECT_RATIOS", t([.float(0.5), .float(1.0), .float(2.0)])),
            ("RETINANET.SCALES_PER_OCTAVE", .int(3)),
            ("RETINANET.ANCHOR_SCALE", .int(4)),
            ("RETINANET.NUM_CONVS", .int(4)),
            ("RETINANET.BBOX_REG_WEIGHT", .float(1.0)),
            ("RETINANET.BBOX_REG_BETA", .float(0.11)),
            ("RETINANET.PRE_NMS_TOP_N", .int(1000)),
            ("RETINANET.POSITIVE_OVERLAP", .float(0.5)),
            ("RETINANET.NEGATIVE_OVERLAP", .float(0.4)),
            ("RETINANET.LOSS_ALPHA", .float(0.25)),
            ("RETINANET.LOSS_GAMMA", .float(2.0)),
            ("RETINANET.PRIOR_PROB", .float(0.01)),
            ("RETINANET.SHARE_CLS_BBOX_TOWER", .bool(false)),
            ("RETINANET.CLASS_SPECIFIC_BBOX", .bool(false)),
            ("RETINANET.SOFTMAX", .bool(false)),
            ("RETINANET.INFERENCE_TH", .float(0.05)),
            ("RETINANET.USE_GN", .bool(false)),   // ours (detectron2's RETINANET.NORM "GN", torchvision v2): GroupNorm after each tower conv
            // RESNETS
            ("RESNETS.NUM_GROUPS", .int(1)), ("RESNETS.WIDTH_PER_GROUP", .int(64)), ("RESNETS.STRIDE_1X1", .bool(true)),
            ("RESNETS.TRANS_FUNC", .string("bottleneck_transformation")), ("RESNETS.STEM_FUNC", .string("basic_bn_stem")),
            ("RESNETS.SHORTCUT_FUNC", .string("basic_bn_shortcut")), ("RESNETS.RES5_DILATION", .int(1)),
            ("RESNETS.STEM_OUT_DIM", .int(64)),     // ours: Detectron fixes the stem at 64 channels
            ("RESNETS.RES2_OUT_DIM", .int(256)),    // ours: Detectron fixes res2's output at 256 (×2 per stage)
            // GROUP_NORM
            ("GROUP_NORM.DIM_PER_GP", .int(-1)), ("GROUP_NORM.NUM_GROUPS", .int(32)), ("GROUP_NORM.EPSILON", .float(1e-5)),
            // DATA_LOADER
            ("DATA_LOADER.NUM_THREADS", .int(4)), ("DATA_LOADER.MINIBATCH_QUEUE_SIZE", .int(64)), ("DATA_LOADER.BLOBS_QUEUE_CAPACITY", .int(8)),
            ("DATA_LOADER.WORKER_KIND", .string("threads")),   // ours: threads or processes
            // Misc
            ("NUM_GPUS", .int(1)), ("USE_NCCL", .bool(false)), ("DEDUP_BOXES", .float(1.0 / 16.0)),
            ("BBOX_XFORM_CLIP", .float(log(1000.0 / 16.0))),
            ("PIXEL_MEANS", l([l([l([.float(102.9801), .float(115.9465), .float(122.7717)])])])),
            ("PIXEL_STDS", l([l([l([.float(1), .float(1), .float(1)])])])),   // ours: torchvision semantics divide by these
            ("RNG_SEED", .int(3)), ("EPS", .float(1e-14)), ("ROOT_DIR", .string(".")), ("OUTPUT_DIR", .string("/tmp")),
            ("MATLAB", .string("matlab")), ("VIS", .bool(false)), ("VIS_TH", .float(0.9)), ("EXPECTED_RESULTS", l([])),
            ("EXPECTED_RESULTS_RTOL", .float(0.1)), ("EXPECTED_RESULTS_ATOL", .float(0.005)), ("MEMONGER", .bool(true)),
            ("MEMONGER_SHARE_ACTIVATIONS", .bool(false)), ("DOWNLOAD_CACHE", .string("/tmp/detectron-download-cache")),
            ("DATA_ROOT", .string("")),   // ours: where named datasets live (else DETECTRON_DATA, else data)
            ("LINEAR_SCALING.ENABLED", .bool(false)),   // ours: apply the linear scaling rule at start
            ("LINEAR_SCALING.REFERENCE_GPUS", .int(1)),  // ours: the GPU count the schedule was written for
        ]
        var tree: [String: ConfigValue] = [:]
        for (key, v) in pairs + detectronOnlyKeys {
            var parts = key.split(separator: ".").map(String.init)
            let leaf = parts.removeLast()
            func insert(_ node: inout [String: ConfigValue], _ path: ArraySlice<String>) {
                guard let head = path.first else { node[leaf] = v; return }
                var child: [String: ConfigValue]
                if case let .node(c)? = node[head] { child = c } else { child = [:] }
                insert(&child, path.dropFirst())
                node[head] = .node(child)
            }
            insert(&tree, parts[...])
        }
        return tree
    }
}

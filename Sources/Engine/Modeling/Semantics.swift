import Imaging
import Operators
import Storage

/// The test-time settings a detector reads from its config once (Detectron's `cfg.TEST.*` and
/// the input keys), so detection never consults the config tree.
public struct TestSettings: Sendable {
    public var scale: Int
    public var maxSize: Int
    public var pixelMeans: [Float]
    public var pixelStds: [Float]
    /// The padded input's sizes are multiples of this (FPN.COARSEST_STRIDE).
    public var stride: Int
    public var bboxReg: Bool
    public var bboxRegWeights: (Float, Float, Float, Float)
    public var bboxTransformClip: Float
    public var classAgnosticBoxes: Bool
    public var scoreThreshold: Float
    public var nmsThreshold: Float
    public var detectionsPerImage: Int
    public var numClasses: Int
    /// RetinaNet: the score a level's candidates must exceed, and how many of them each level keeps.
    public var retinaNetThreshold: Float
    public var retinaNetPreNMSTopN: Int

    public init(_ cfg: Config) {
        scale = cfg.int("TEST.SCALE")
        maxSize = cfg.int("TEST.MAX_SIZE")
        pixelMeans = Engine.pixelMeans(cfg)
        pixelStds = Engine.pixelStds(cfg)
        stride = cfg.int("FPN.COARSEST_STRIDE")
        bboxReg = cfg.bool("TEST.BBOX_REG")
        let w = cfg.doubles("MODEL.BBOX_REG_WEIGHTS").map(Float.init)
        bboxRegWeights = (w[0], w[1], w[2], w[3])
        bboxTransformClip = Float(cfg.double("BBOX_XFORM_CLIP"))
        classAgnosticBoxes = cfg.bool("MODEL.CLS_AGNOSTIC_BBOX_REG")
        scoreThreshold = Float(cfg.double("TEST.SCORE_THRESH"))
        nmsThreshold = Float(cfg.double("TEST.NMS"))
        detectionsPerImage = cfg.int("TEST.DETECTIONS_PER_IM")
        numClasses = cfg.int("MODEL.NUM_CLASSES")
        retinaNetThreshold = Float(cfg.double("RETINANET.INFERENCE_TH"))
        retinaNetPreNMSTopN = cfg.int("RETINANET.PRE_NMS_TOP_N")
    }
}

/// An image made ready for the net: the `data` blob, the `im_info` row, and what maps the net's
/// boxes back to the image.
public struct PreparedInput {
    public var data: Tensor
    public var imInfo: [Float]
    /// The size boxes are clipped to before post-processing, in the frame the net's RoIs are in
    /// after ``roiScale`` is divided out.
    public var clipHeight: Float
    public var clipWidth: Float
    /// RoIs are divided by this before decoding (Detectron: the image's scale; torchvision: 1).
    public var roiScale: Float
    /// Final boxes are multiplied by these per axis (torchvision: original / resized; Detectron: 1).
    public var outputScaleX: Float
    public var outputScaleY: Float

    public init(data: Tensor, imInfo: [Float], clipHeight: Float, clipWidth: Float, roiScale: Float = 1,
                outputScaleX: Float = 1, outputScaleY: Float = 1) {
        self.data = data
        self.imInfo = imInfo
        self.clipHeight = clipHeight
        self.clipWidth = clipWidth
        self.roiScale = roiScale
        self.outputScaleX = outputScaleX
        self.outputScaleY = outputScaleY
    }
}

/// Whose rules a detector follows (`MODEL.SEMANTICS`) — chosen once, by name, from
/// ``ModelComponents/semantics``: the input transform, box arithmetic, anchors, proposal
/// filtering and detection post-processing. The structure of the model and its numeric settings
/// come from the ordinary config keys either way.
public protocol DetectionSemantics: Sendable {
    /// Whether a model with these semantics can be trained here.
    var trains: Bool { get }
    /// Box arithmetic: Detectron's +1 or torchvision's continuous coordinates.
    var boxConvention: BoxConvention { get }
    /// A level's cell anchors (one anchor per aspect ratio of `size` pixels).
    func cellAnchors(stride: Int, size: Double, aspectRatios: [Double]) -> [Float]
    /// What the net's `anchors_fpnL` input holds for a padded input of that size: the cell
    /// anchors (the proposal op tiles them) or the whole grid.
    func anchorInput(cell: [Float], level: Int, paddedHeight: Int, paddedWidth: Int) -> [Float]
    /// Whether ``anchorInput(cell:level:paddedHeight:paddedWidth:)`` depends on the input size
    /// (then it is fed for every image).
    var anchorsFollowInput: Bool { get }
    /// GenerateProposals' per-level `post_nms_topN` and `min_size` given the config's values.
    func proposalFilter(postNMSTopN: Int, minSize: Int) -> (postNMSTopN: Int, minSize: Double)
    /// The image as the net's input.
    func prepare(_ image: Image, _ settings: TestSettings, context: any Context) throws -> PreparedInput
    /// Final detections from per-class boxes (R, 4K, clipped, in the prepared frame) and
    /// class probabilities (R, K).
    func detections(scores: [Float], boxes: [Float], rows: Int, _ settings: TestSettings) -> [(classIndex: Int, score: Float, box: [Float])]
    // RetinaNet's rules; Detectron's are the default (`RetinaNet.swift`).
    /// RetinaNet's A cell anchors of a level: `octaves` sizes stride · `anchorScale` · 2^(o/octaves)
    /// for each aspect ratio, in the order the heads' channels follow.
    func retinaNetCellAnchors(stride: Int, octaves: Int, anchorScale: Int, aspectRatios: [Double]) -> [Float]
    /// RetinaNet's sigmoid classifier: the classes per anchor for MODEL.NUM_CLASSES, and the label of its first.
    func retinaNetClasses(numClasses: Int) -> (perAnchor: Int, firstLabel: Int)
    /// RetinaNet's detections from every level's outputs (coarsest last), in the prepared frame, clipped.
    func retinaNetDetections(_ levels: [DenseLevelOutputs], _ input: PreparedInput, _ settings: TestSettings)
        -> [(classIndex: Int, score: Float, box: [Float])]
}

/// Detectron's rules: `im_detect_bbox` and `box_results_with_nms_and_limit`.
public struct DetectronSemantics: DetectionSemantics {
    public init() {}
    public var trains: Bool { true }
    public var boxConvention: BoxConvention { .detectron }
    public var anchorsFollowInput: Bool { false }

    public func cellAnchors(stride: Int, size: Double, aspectRatios: [Double]) -> [Float] {
        Boxes.cellAnchors(stride: stride, sizes: [size], aspectRatios: aspectRatios)
    }

    public func anchorInput(cell: [Float], level: Int, paddedHeight: Int, paddedWidth: Int) -> [Float] { cell }

    public func proposalFilter(postNMSTopN: Int, minSize: Int) -> (postNMSTopN: Int, minSize: Double) { (postNMSTopN, Double(minSize)) }

    public func prepare(_ image: Image, _ settings: TestSettings, context: any Context) throws -> PreparedInput {
        let s = InputBlob.scale(width: image.width, height: image.height, target: settings.scale, maxSize: settings.maxSize)
        let blob = try InputBlob.blob([(image, s)], pixelMeans: settings.pixelMeans, stride: settings.stride, context: context)
        // At test, im_info holds the padded size (Detectron keeps this on purpose); boxes go back
        // to the original image and are clipped to it.
        return PreparedInput(data: blob, imInfo: [Float(blob.dim(2)), Float(blob.dim(3)), Float(s)],
                             clipHeight: Float(image.height), clipWidth: Float(image.width), roiScale: Float(s))
    }

    public func detections(scores: [Float], boxes: [Float], rows: Int, _ settings: TestSettings) -> [(classIndex: Int, score: Float, box: [Float])] {
        Boxes.nmsAndLimit(scores: scores, boxes: boxes, rows: rows, classes: settings.numClasses, threshold: settings.scoreThreshold,
                          nms: settings.nmsThreshold, limit: settings.detectionsPerImage)
    }
}

/// torchvision's `fasterrcnn_resnet50_fpn` at inference (`GeneralizedRCNN.forward`): no +1 in box
/// arithmetic, anchors centred on 0 and tiled over the padded input, every NMS survivor of a
/// level kept (the limit applies after collecting), its input transform, and
/// `postprocess_detections` in the resized image then `transform.postprocess` (boxes scaled by
/// original / resized size per axis, in float32).
public struct TorchvisionSemantics: DetectionSemantics {
    public init() {}
    public var trains: Bool { false }
    public var boxConvention: BoxConvention { .torchvision }
    public var anchorsFollowInput: Bool { true }

    /// torchvision's RPN drops proposals with a side under this many pixels of the resized image
    /// (`RegionProposalNetwork.min_size`, fixed in torchvision).
    static let rpnMinSize = 1e-3

    public func cellAnchors(stride: Int, size: Double, aspectRatios: [Double]) -> [Float] {
        Boxes.torchvisionCellAnchors(sizes: [size], aspectRatios: aspectRatios)
    }

    /// Each level's feature map is the input halved `level` times (rounding up, as the strided
    /// convs and pools do), its stride per axis the input size divided by the map size (integer
    /// division: P6 of an 800-row input has 13 rows and stride 61, not 64).
    public func anchorInput(cell: [Float], level: Int, paddedHeight: Int, paddedWidth: Int) -> [Float] {
        var fh = paddedHeight, fw = paddedWidth
        for _ in 0..<level { (fh, fw) = ((fh + 1) / 2, (fw + 1) / 2) }
        return Boxes.anchorGrid(cell: cell, height: fh, width: fw, strideH: paddedHeight / fh, strideW: paddedWidth / fw)
    }

    public func proposalFilter(postNMSTopN: Int, minSize: Int) -> (postNMSTopN: Int, minSize: Double) { (0, Self.rpnMinSize) }

    public func prepare(_ image: Image, _ settings: TestSettings, context: any Context) throws -> PreparedInput {
        let (prepared, scale) = TorchvisionTransform.prepare(image, mean: settings.pixelMeans, std: settings.pixelStds,
                                                             minSize: settings.scale, maxSize: settings.maxSize)
        let blob = try InputBlob.batch([prepared], stride: settings.stride, context: context)
        // im_info holds the resized size before padding: torchvision clips proposals to it.
        let (rh, rw) = (Float(prepared.height), Float(prepared.width))
        return PreparedInput(data: blob, imInfo: [rh, rw, Float(scale)], clipHeight: rh, clipWidth: rw,
                             outputScaleX: Float(image.width) / rw, outputScaleY: Float(image.height) / rh)
    }

    public func detections(scores: [Float], boxes: [Float], rows: Int, _ settings: TestSettings) -> [(classIndex: Int, score: Float, box: [Float])] {
        Boxes.torchvisionDetections(scores: scores, boxes: boxes, rows: rows, classes: settings.numClasses, threshold: settings.scoreThreshold,
                                    nms: settings.nmsThreshold, limit: settings.detectionsPerImage)
    }
}

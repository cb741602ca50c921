import COCO
import Imaging
import Operators
import Storage

/// Mask R-CNN's test settings (`MRCNN.*`, the RoI levels), read once.
public struct MaskSettings: Sendable {
    /// A mask per class (the detection's class channel) or one for all.
    public var classSpecific: Bool
    /// The predicted masks' side M.
    public var resolution: Int
    /// Pixels with probability above this are on (strictly, as `segm_results`).
    public var threshold: Float
    public var roiLevels: ClosedRange<Int>
    public var canonicalScale: Double
    public var canonicalLevel: Int

    public init(_ cfg: Config) {
        classSpecific = cfg.bool("MRCNN.CLS_SPECIFIC_MASK")
        resolution = cfg.int("MRCNN.RESOLUTION")
        threshold = Float(cfg.double("MRCNN.THRESH_BINARIZE"))
        roiLevels = cfg.int("FPN.ROI_MIN_LEVEL")...cfg.int("FPN.ROI_MAX_LEVEL")
        canonicalScale = Double(cfg.int("FPN.ROI_CANONICAL_SCALE"))
        canonicalLevel = cfg.int("FPN.ROI_CANONICAL_LEVEL")
    }
}

enum MaskPaste {
    /// Detectron's `segm_results` for one detection (torchvision's `paste_mask_in_image` with
    /// `> 0.5` is the same arithmetic): the M×M soft mask gets a one-pixel zero border, the box
    /// (x1, y1, x2, y2 in image pixels) is expanded by (M + 2)/M about its centre in float32 and
    /// truncated toward zero, the padded mask is resized bilinearly (OpenCV's INTER_LINEAR) to
    /// the integer box's (x2 − x1 + 1) × (y2 − y1 + 1) (at least 1), binarised by
    /// `> threshold`, and pasted, clipped, into a zero image of `height` × `width` — returned as
    /// its RLE (made column by column from the box, so the rest of the image costs nothing).
    static func paste(_ probs: ArraySlice<Float>, side m: Int, box: [Float], height: Int, width: Int, threshold: Float) throws(MaskError) -> RLE {
        let padded = m + 2
        var buffer = [Float](repeating: 0, count: padded * padded)
        var p = probs.startIndex
        for y in 0..<m {
            for x in 0..<m {
                buffer[(y + 1) * padded + x + 1] = probs[p]
                p += 1
            }
        }
        let scale = Float(Double(m + 2) / Double(m))
        let wHalf = (box[2] - box[0]) * 0.5 * scale, hHalf = (box[3] - box[1]) * 0.5 * scale
        let xc = (box[2] + box[0]) * 0.5, yc = (box[3] + box[1]) * 0.5
        let (bx1, by1, bx2, by2) = (Int(Int32(xc - wHalf)), Int(Int32(yc - hHalf)), Int(Int32(xc + wHalf)), Int(Int32(yc + hHalf)))
        let w = max(bx2 - bx1 + 1, 1), h = max(by2 - by1 + 1, 1)
        let resized = Resize.linear(buffer, width: padded, height: padded, channels: 1, toWidth: w, toHeight: h)
        let (x0, x1) = (max(bx1, 0), min(bx2 + 1, width)), (y0, y1) = (max(by1, 0), min(by2 + 1, height))
        // Column-major runs, starting with 0s; what lies outside the box only lengthens runs of 0s.
        var counts: [UInt32] = [], on = false, run = 0
        func zeros(_ n: Int) {
            guard n > 0 else { return }
            if on { counts.append(UInt32(run)); (on, run) = (false, 0) }
            run += n
        }
        func pixel(_ value: Bool) {
            if value != on { counts.append(UInt32(run)); (on, run) = (value, 0) }
            run += 1
        }
        if x0 < x1 && y0 < y1 {
            zeros(x0 * height)
            for x in x0..<x1 {
                zeros(y0)
                for y in y0..<y1 { pixel(resized[(y - by1) * w + (x - bx1)] > threshold) }
                zeros(height - y1)
            }
            zeros((width - x1) * height)
        } else {
            zeros(width * height)
        }
        counts.append(UInt32(run))
        return try RLE(height: height, width: width, counts: counts)
    }
}

extension Detector {
    /// Mask R-CNN's cascade after the box post-processing (`im_detect_mask`, `segm_results`): the
    /// detections (prepared frame) scaled into the net's input as `mask_rois`, distributed to the
    /// FPN levels by the semantics' rule, the mask net run, and each detection's soft mask (its
    /// class's channel, or the only one) pasted into the image at its box (image frame).
    func masks(_ found: [(classIndex: Int, score: Float, box: [Float])], imageBoxes: [[Float]], input: PreparedInput,
               imageHeight: Int, imageWidth: Int) throws -> [RLE] {
        guard let mask = maskSettings, !found.isEmpty else { return [] }
        let ctx = ws.context
        var rois: [Float] = []
        for d in found { rois += [0] + d.box.map { $0 * input.roiScale } }
        let (levels, restore) = Boxes.distribute(rois, minLevel: mask.roiLevels.lowerBound, maxLevel: mask.roiLevels.upperBound,
                                                 canonicalScale: mask.canonicalScale, canonicalLevel: mask.canonicalLevel,
                                                 convention: model.semantics.boxConvention)
        for (level, rows) in zip(mask.roiLevels, levels) {
            ws.feedBlob("mask_rois_fpn\(level)", try Tensor(rows, shape: [rows.count / 5, 5], context: ctx))
        }
        ws.feedBlob("mask_rois_idx_restore_int32", try Tensor(restore, shape: [restore.count], context: ctx))
        try maskNet().run()
        let probs = try ws.fetchBlob("mask_fcn_probs").toArray(as: Float.self)
        let plane = mask.resolution * mask.resolution, channels = probs.count / (found.count * plane)
        guard channels * found.count * plane == probs.count, channels == (mask.classSpecific ? settings.numClasses : 1) else {
            throw EngineError.data("mask_fcn_probs holds \(probs.count) values for \(found.count) detections: not \(mask.classSpecific ? settings.numClasses : 1) "
                                   + "masks of \(mask.resolution)×\(mask.resolution) each (MRCNN.RESOLUTION, MODEL.NUM_CLASSES or MRCNN.CLS_SPECIFIC_MASK do not match the net)")
        }
        return try found.indices.map { i throws in
            let c = mask.classSpecific ? found[i].classIndex : 0
            let start = (i * channels + c) * plane
            return try MaskPaste.paste(probs[start..<start + plane], side: mask.resolution, box: imageBoxes[i], height: imageHeight,
                                       width: imageWidth, threshold: mask.threshold)
        }
    }
}

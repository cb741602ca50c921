import COCO
import Operators

/// Mask R-CNN's training targets of one minibatch (`roi_data/mask_rcnn.add_mask_rcnn_blobs`),
/// made after the Fast R-CNN sampling: per image, each foreground RoI matched to a ground truth by
/// IoU (+1, float32, first maximum) against the boxes of the ground truths' polygons, and those
/// polygons rasterised in the RoI's frame at M×M; `masks_int32` per RoI (with the class-specific
/// expansion: −1 outside its class's M² block, including all of the background's).
struct MaskTargets {
    /// (image, x1, y1, x2, y2) × the image's scale, per mask RoI.
    var rois: [Float] = []
    /// Per sampled RoI: 1 where it has a mask target.
    var hasMask: [Int32] = []
    /// M² (or K·M² per class) values per mask RoI: 1, 0, or −1 (ignored).
    var targets: [Int32] = []

    /// Appends one image's: `candidates` the RoIs in original space (flat), `fg` and `bg` the
    /// indices sampled in that order, `fgLabels` their classes; `classes` K for class-specific
    /// targets (nil: one mask per RoI).
    mutating func add(image: Int, entry: MinibatchRoidb.Entry, candidates: [Float], fg: [Int], fgLabels: [Int32], bg: [Int],
                      resolution m: Int, classes: Int?) throws {
        let plane = m * m
        hasMask += fgLabels.map { $0 > 0 ? 1 : 0 } + bg.map { _ in 0 }
        func box(_ i: Int) -> [Float] { Array(candidates[4 * i..<4 * i + 4]) }
        func append(_ roi: [Float], _ mask: [Int32], label: Int32) {
            rois += [Float(image)] + roi.map { $0 * entry.scale }
            guard let k = classes else {
                targets += mask
                return
            }
            var expanded = [Int32](repeating: -1, count: k * plane)
            if label > 0 { expanded.replaceSubrange(Int(label) * plane..<(Int(label) + 1) * plane, with: mask) }
            targets += expanded
        }
        guard !fg.isEmpty else {
            // No foreground: the first background RoI, all targets ignored, class 0 (blobs cannot be empty).
            guard let first = bg.first else { return }
            hasMask[hasMask.count - bg.count] = 1
            append(box(first), [Int32](repeating: -1, count: plane), label: 0)
            return
        }
        // The ground truths with masks (non-crowd, class > 0) and the boxes of their polygons.
        let withMask = entry.classes.indices.filter { entry.classes[$0] > 0 && !entry.crowd[$0] && $0 < entry.polygons.count && !entry.polygons[$0].isEmpty }
        let polygonBoxes = withMask.map { j -> (Float, Float, Float, Float) in
            let xs = entry.polygons[j].flatMap { p in stride(from: 0, to: p.count, by: 2).map { p[$0] } }
            let ys = entry.polygons[j].flatMap { p in stride(from: 1, to: p.count, by: 2).map { p[$0] } }
            return (Float(xs.min()!), Float(ys.min()!), Float(xs.max()!), Float(ys.max()!))
        }
        for (i, label) in zip(fg, fgLabels) {
            let roi = box(i)
            guard !withMask.isEmpty else {
                // Only crowd regions (Detectron fails here): nothing to learn from this RoI.
                append(roi, [Int32](repeating: -1, count: plane), label: label)
                continue
            }
            var best: Float = -1, arg = 0
            for (n, b) in polygonBoxes.enumerated() {
                let v = Boxes.iou((roi[0], roi[1], roi[2], roi[3]), b)
                if v > best { best = v; arg = n }
            }
            append(roi, try Self.rasterise(entry.polygons[withMask[arg]], box: roi, resolution: m), label: label)
        }
    }

    /// `segms.polys_to_mask_wrt_box`: the polygons mapped into the box's frame in float32 —
    /// x' = (x − x1)·M / max(x2 − x1, 1) (no +1), likewise y — each rasterised at M×M by frPoly
    /// and their union taken; row-major, 1 inside.
    static func rasterise(_ polygons: [[Double]], box: [Float], resolution m: Int) throws -> [Int32] {
        let w = max(box[2] - box[0], 1), h = max(box[3] - box[1], 1), side = Float(m)
        var parts: [RLE] = []
        for p in polygons {
            let q = p.enumerated().map { k, v -> Double in
                k % 2 == 0 ? Double((Float(v) - box[0]) * side / w) : Double((Float(v) - box[1]) * side / h)
            }
            parts.append(try RLE.frPoly(q, height: m, width: m))
        }
        return RLE.merge(parts).decode(order: .rowMajor).map(Int32.init)
    }
}

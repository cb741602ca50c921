import COCO
import Foundation
import Testing

/// A fixture of tools/make_mask_fixtures.py (pycocotools' output).
func maskFixture<T: Decodable>(_ name: String, as: T.Type) throws -> T {
    let url = try #require(Bundle.module.url(forResource: name, withExtension: "json", subdirectory: "Fixtures/masks"), "missing fixture \(name)")
    return try JSONDecoder().decode(T.self, from: Data(contentsOf: url))
}

/// `{"size": [h, w], "counts": "<compressed>"}`.
struct CompressedRLE: Decodable {
    var size: [Int]
    var counts: String
    func rle() throws -> RLE { try RLE(height: size[0], width: size[1], compressedCounts: counts) }
}

@Suite("The mask API equals pycocotools")
struct MaskTests {
    struct MaskCase: Decodable { var kind: String; var h: Int; var w: Int; var mask: [String]; var counts: [UInt32]; var string: String; var area: Int; var bbox: [Double] }
    struct StringCase: Decodable { var h: Int; var w: Int; var counts: [UInt32]; var string: String; var area: Int; var bbox: [Double] }
    struct PolyCase: Decodable { var kind: String; var h: Int; var w: Int; var polygon: [Double]; var counts: [UInt32]; var string: String }
    struct BoxCase: Decodable { var h: Int; var w: Int; var box: [Double]; var counts: [UInt32]; var string: String }
    struct MergeCase: Decodable { var rles: [CompressedRLE]; var intersect: Bool; var result: CompressedRLE; var result_counts: [UInt32] }
    struct IoUCase: Decodable {
        var dt: [CompressedRLE]; var gt: [CompressedRLE]; var iscrowd: [Int]; var iou: [[Double]]
        var dt_boxes: [[Double]]; var gt_boxes: [[Double]]; var box_iou: [[Double]]
    }

    @Test("encode (both layouts), decode, the string, area and toBbox on masks pycocotools encoded")
    func encodeDecode() throws {
        for c in try maskFixture("rle", as: [MaskCase].self) {
            let rowMajor = c.mask.flatMap { $0.utf8.map { $0 == UInt8(ascii: "1") ? UInt8(1) : 0 } }
            var columnMajor = [UInt8](repeating: 0, count: c.h * c.w)
            for y in 0..<c.h { for x in 0..<c.w { columnMajor[x * c.h + y] = rowMajor[y * c.w + x] } }
            let rle = try RLE.encode(rowMajor, height: c.h, width: c.w, order: .rowMajor)
            #expect(rle.counts == c.counts, "\(c.kind) \(c.h)×\(c.w)")
            #expect(try RLE.encode(columnMajor, height: c.h, width: c.w) == rle)
            #expect(rle.compressedCounts == c.string)
            #expect(rle.area == c.area)
            #expect(rle.toBbox() == c.bbox, "\(c.kind) \(c.mask)")
            #expect(rle.decode(order: .rowMajor) == rowMajor)
            #expect(rle.decode() == columnMajor)
        }
    }

    @Test("the compressed string both ways: multi-group numbers, differences from the fourth count, negative differences")
    func compressedStrings() throws {
        for c in try maskFixture("strings", as: [StringCase].self) {
            let rle = try RLE(height: c.h, width: c.w, counts: c.counts)
            #expect(rle.compressedCounts == c.string, "\(c.counts)")
            #expect(try RLE(height: c.h, width: c.w, compressedCounts: c.string).counts == c.counts)
            #expect(rle.area == c.area)
            #expect(rle.toBbox() == c.bbox, "\(c.counts)")
        }
        // mask.py's examples and the reference's worked ones.
        #expect(try RLE(height: 7, width: 1, counts: [2, 3, 1, 1]).compressedCounts == "231N")
        #expect(try RLE(height: 7, width: 1, counts: [0, 6, 1]).compressedCounts == "061")
        #expect(try RLE(height: 100, width: 1, counts: [100]).compressedCounts == "T3")
        #expect(try RLE(height: 16, width: 1, counts: [16]).compressedCounts == "`0")
    }

    @Test("frPoly run for run: concave, partly outside, negative, tiny, self-intersecting, odd counts, 1-pixel images")
    func frPoly() throws {
        let cases = try maskFixture("frpoly", as: [PolyCase].self)
        #expect(cases.count > 250)
        for c in cases {
            let rle = try RLE.frPoly(c.polygon, height: c.h, width: c.w)
            #expect(rle.counts == c.counts, "\(c.kind) \(c.h)×\(c.w) \(c.polygon)")
            #expect(rle.compressedCounts == c.string)
        }
    }

    @Test("frPoly equals a step-by-step port of rleFrPoly on random polygons, long edges included")
    func frPolyAgainstStepByStep() throws {
        var rng = SplitMix(seed: 7)
        for trial in 0..<600 {
            let h = rng.int(1, 24), w = rng.int(1, 24)
            // Near the image, far outside, and (every 100th) edges of over 2²⁰ lattice steps.
            let spread = [1.5, 3.0, 40.0, 300.0][trial % 4] * (trial % 100 == 99 ? 40 : 1)
            var xy: [Double] = []
            for _ in 0..<rng.int(1, 7) {
                for extent in [w, h] {
                    let v = Double(extent) / 2 + (rng.unit() * 2 - 1) * spread * Double(extent)
                    let places = [1.0, 10, 100, 1000][rng.int(0, 3)]
                    xy.append((v * places).rounded() / places)
                }
            }
            if trial % 3 == 0 { xy.append(1.25) }  // an odd count
            #expect(try RLE.frPoly(xy, height: h, width: w).counts == stepByStepFrPoly(xy, height: h, width: w), "\(h)×\(w) \(xy)")
        }
    }

    @Test("frBbox: the box as a polygon; [0, 0, 1, 1] is the first pixel")
    func frBbox() throws {
        for c in try maskFixture("frbbox", as: [BoxCase].self) {
            let rle = try RLE.frBbox(c.box, height: c.h, width: c.w)
            #expect(rle.counts == c.counts, "\(c.box) in \(c.h)×\(c.w)")
            #expect(rle.compressedCounts == c.string)
        }
        #expect(try RLE.frBbox([0, 0, 1, 1], height: 3, width: 3).decode(order: .rowMajor) == [1, 0, 0, 0, 0, 0, 0, 0, 0])
    }

    @Test("merge: union and intersection run for run; none is the empty 0×0 RLE, sizes that differ too")
    func merge() throws {
        for c in try maskFixture("merge", as: [MergeCase].self) {
            let merged = RLE.merge(try c.rles.map { try $0.rle() }, intersect: c.intersect)
            #expect(merged.counts == c.result_counts, "\(c.rles.map(\.counts)) intersect \(c.intersect)")
            #expect([merged.height, merged.width] == c.result.size)
            #expect(merged.compressedCounts == c.result.counts)
        }
    }

    @Test("iou of masks and of boxes: the crowd rule (over the detection's area), −1 for masks of another size")
    func iou() throws {
        for c in try maskFixture("iou", as: [IoUCase].self) {
            let crowd = c.iscrowd.map { $0 != 0 }
            let masks = RLE.iou(try c.dt.map { try $0.rle() }, try c.gt.map { try $0.rle() }, isCrowd: crowd)
            let boxes = RLE.iou(boxes: c.dt_boxes, c.gt_boxes, isCrowd: crowd)
            for d in c.dt.indices {
                for g in c.gt.indices {
                    #expect(masks[d * c.gt.count + g] == c.iou[d][g], "mask dt \(d) gt \(g)")
                    #expect(abs(boxes[d * c.gt.count + g] - c.box_iou[d][g]) <= 1e-15, "box dt \(d) gt \(g)")
                }
            }
        }
    }

    @Test("annToRLE: polygon parts rasterised at the image's size and merged; an RLE as it is")
    func annToRLE() throws {
        let parts = COCOFile.Segmentation.polygons([[0, 0, 2, 0, 2, 2, 0, 2], [3, 3, 4, 3, 4, 4, 3, 4]])
        let rle = try parts.rle(imageHeight: 5, imageWidth: 5)
        #expect(rle.area == 5)
        #expect(rle == RLE.merge([try RLE.frPoly([0, 0, 2, 0, 2, 2, 0, 2], height: 5, width: 5), try RLE.frPoly([3, 3, 4, 3, 4, 4, 3, 4], height: 5, width: 5)]))
        let crowd = try RLE(height: 2, width: 3, counts: [1, 2, 3])
        #expect(try COCOFile.Segmentation.uncompressedRLE(crowd).rle(imageHeight: 9, imageWidth: 9) == crowd)
    }

    @Test("malformed input is a typed error that names it")
    func errors() throws {
        #expect(throws: MaskError.countsSum(height: 2, width: 2, sum: 3)) { try RLE(height: 2, width: 2, counts: [1, 2]) }
        #expect(throws: MaskError.badSize(height: -1, width: 4)) { try RLE(height: -1, width: 4, counts: []) }
        #expect(throws: MaskError.badSize(height: 70000, width: 70000)) { try RLE.frPoly([0, 0, 1, 0, 1, 1], height: 70000, width: 70000) }
        #expect(throws: MaskError.maskLength(height: 2, width: 2, count: 3)) { try RLE.encode([0, 1, 1], height: 2, width: 2) }
        func message(_ body: () throws -> Void) -> String {
            do { try body(); return "no error" } catch { return (error as? MaskError)?.description ?? "not a MaskError: \(error)" }
        }
        #expect(message { _ = try RLE(height: 2, width: 2, compressedCounts: "04!") }
            == "compressed RLE counts \"04!\": character '!' at 2 is outside '0' … 'o'")
        #expect(message { _ = try RLE(height: 2, width: 2, compressedCounts: "0o") }
            == "compressed RLE counts \"0o\": it ends inside a number (its last character has the continuation bit 0x20)")
        #expect(message { _ = try RLE(height: 2, width: 2, compressedCounts: "N") } == "compressed RLE counts \"N\": run #0 decodes to -2")
        #expect(message { _ = try RLE(height: 3, width: 2, compressedCounts: "13") } == "compressed RLE counts \"13\": its runs sum to 4, not 3·2 = 6")
        #expect(message { _ = try RLE(height: 9, width: 9, compressedCounts: "oooooooo0") }
            == "compressed RLE counts \"oooooooo0\": number #0 has more than 7 groups of 5 bits")
        #expect(message { _ = try RLE.frPoly([0, 0, 3e9, 0, 1, 1], height: 4, width: 4) }
            == "polygon [0.0, 0.0, 3000000000.0, 0.0, 1.0, 1.0]: coordinate #2 = 3000000000.0 is not finite or beyond ±2·10⁸ (pycocotools' int arithmetic overflows there)")
        #expect(message { _ = try RLE.frPoly([0, 0, .nan, 0, 1, 1], height: 4, width: 4) }.contains("coordinate #2 = nan is not finite"))
        #expect(message { _ = try RLE.frBbox([0, 0, 1], height: 4, width: 4) } == "box [0.0, 0.0, 1.0] must be [x, y, width, height] of finite numbers")
        #expect(message { _ = try COCOFile.Segmentation.polygons([]).rle(imageHeight: 4, imageWidth: 4) }
            == "segmentation not supported: an empty polygon list (pycocotools' frPyObjects fails on it)")
        #expect(message { _ = try COCOFile.Segmentation.polygons([[0, 0, 1, 1], [0, 0, 2, 0, 2, 2]]).rle(imageHeight: 4, imageWidth: 4) }
            .contains("the first polygon has 4 numbers; pycocotools' frPyObjects reads 4 as a box"))
        // Later parts may be short: pycocotools rasterises them to nothing.
        #expect(try COCOFile.Segmentation.polygons([[0, 0, 2, 0, 2, 2], [1, 1]]).rle(imageHeight: 4, imageWidth: 4)
            == RLE.frPoly([0, 0, 2, 0, 2, 2], height: 4, width: 4))
    }
}

/// rleFrPoly as the C does it, every lattice point stored: the oracle for ``RLE/frPoly(_:height:width:)``.
func stepByStepFrPoly(_ xy: [Double], height h: Int, width w: Int) -> [UInt32] {
    let k = xy.count / 2
    var x = (0..<k).map { Int(5 * xy[2 * $0] + 0.5) }, y = (0..<k).map { Int(5 * xy[2 * $0 + 1] + 0.5) }
    var u: [Int] = [], v: [Int] = []
    if k > 0 {
        x.append(x[0])
        y.append(y[0])
    }
    for j in 0..<k {
        var (xs, xe, ys, ye) = (x[j], x[j + 1], y[j], y[j + 1])
        let dx = abs(xe - xs), dy = abs(ys - ye)
        let flip = (dx >= dy && xs > xe) || (dx < dy && ys > ye)
        if flip { swap(&xs, &xe); swap(&ys, &ye) }
        guard dx > 0 || dy > 0 else { u.append(xs); v.append(Int.min); continue }  // the C's (int)NaN, never read
        if dx >= dy {
            let s = Double(ye - ys) / Double(dx)
            for d in 0...dx { let t = flip ? dx - d : d; u.append(t + xs); v.append(Int(Double(ys) + s * Double(t) + 0.5)) }
        } else {
            let s = Double(xe - xs) / Double(dy)
            for d in 0...dy { let t = flip ? dy - d : d; v.append(t + ys); u.append(Int(Double(xs) + s * Double(t) + 0.5)) }
        }
    }
    var toggles: [UInt32] = []
    for j in u.indices.dropFirst() where u[j] != u[j - 1] {
        let xd = (Double(u[j] < u[j - 1] ? u[j] : u[j] - 1) + 0.5) / 5 - 0.5
        if floor(xd) != xd || xd < 0 || xd > Double(w - 1) { continue }
        var yd = (Double(min(v[j], v[j - 1])) + 0.5) / 5 - 0.5
        if yd < 0 { yd = 0 } else if yd > Double(h) { yd = Double(h) }
        toggles.append(UInt32(Int(xd) * h + Int(ceil(yd))))
    }
    toggles.append(UInt32(h * w))
    toggles.sort()
    var previous: UInt32 = 0, runs: [UInt32] = []
    var pending = false
    for t in toggles {
        let d = t - previous
        previous = t
        if runs.isEmpty { runs.append(d) } else if pending { runs[runs.count - 1] += d; pending = false } else if d == 0 { pending = true } else { runs.append(d) }
    }
    return runs
}

/// A seeded generator for the random tests (deterministic across runs).
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE5_E9B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func unit() -> Double { Double(next() >> 11) / Double(1 << 53) }
    mutating func int(_ lo: Int, _ hi: Int) -> Int { lo + Int(next() % UInt64(hi - lo + 1)) }
}

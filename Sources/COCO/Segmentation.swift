import Foundation

extension COCOFile {
    /// An annotation's `segmentation`, in the forms COCO files use.
    ///
    /// An RLE is checked when the file is read (its counts must describe its size); polygons are
    /// checked when they are rasterised (``rle(imageHeight:imageWidth:)``), since bbox evaluation
    /// and Detectron's roidb (which drops polygons of fewer than 6 numbers) read files that
    /// pycocotools could not rasterise.
    public enum Segmentation: Sendable, Equatable {
        /// [[x0, y0, x1, y1, …], …]: the parts of one object.
        case polygons([[Double]])
        /// Counts written as a list of numbers: COCO's crowd regions.
        case uncompressedRLE(RLE)
        /// Counts written as the compressed string (``RLE/compressedCounts``).
        case compressedRLE(RLE)

        /// The mask, as pycocotools' `COCO.annToRLE`: polygons rasterised at the image's size
        /// (`frPyObjects` → `frPoly`, one RLE per part) and merged; an RLE as it is, at its own
        /// size (a size other than the image's gives IoU −1 in evaluation, as in pycocotools).
        ///
        /// Throws what pycocotools cannot convert: an empty polygon list, a first polygon of 4
        /// numbers or fewer (its `frPyObjects` takes 4 numbers for a box and rejects the list),
        /// coordinates beyond ±2·10⁸.
        public func rle(imageHeight: Int, imageWidth: Int) throws(MaskError) -> RLE {
            switch self {
            case let .polygons(polygons):
                guard let first = polygons.first else {
                    throw .unsupportedSegmentation("an empty polygon list (pycocotools' frPyObjects fails on it)")
                }
                guard first.count > 4 else {
                    throw .unsupportedSegmentation("the first polygon has \(first.count) numbers; pycocotools' frPyObjects reads 4 as a box and fails on fewer (a polygon needs at least 3 points)")
                }
                var parts: [RLE] = []
                for p in polygons { parts.append(try RLE.frPoly(p, height: imageHeight, width: imageWidth)) }
                return RLE.merge(parts)
            case let .uncompressedRLE(rle), let .compressedRLE(rle):
                return rle
            }
        }
    }
}

extension COCOFile.Segmentation {
    /// Mirrored left to right in an image `imageWidth` wide, as Detectron's `flip_segms`: polygon
    /// x' = W − x − 1; an RLE decoded, mirrored and encoded again (compressed or not as it was).
    public func flipped(imageWidth: Int) -> COCOFile.Segmentation {
        func mirror(_ rle: RLE) -> RLE {
            // Column-major: column x becomes column W − 1 − x, each column's runs unchanged.
            let h = rle.height, w = rle.width
            let cols = rle.decode()
            var out = [UInt8](repeating: 0, count: cols.count)
            for x in 0..<w { out[x * h..<(x + 1) * h] = cols[(w - 1 - x) * h..<(w - x) * h] }
            return (try? RLE.encode(out, height: h, width: w)) ?? rle
        }
        switch self {
        case let .polygons(parts):
            let W = Double(imageWidth)
            return .polygons(parts.map { p in p.enumerated().map { $0.offset % 2 == 0 ? W - $0.element - 1 : $0.element } })
        case let .uncompressedRLE(rle): return .uncompressedRLE(mirror(rle))
        case let .compressedRLE(rle): return .compressedRLE(mirror(rle))
        }
    }
}

extension COCOFile.Segmentation: Codable {
    enum RLEKeys: String, CodingKey { case counts, size }

    static let expected = "segmentation must be polygons [[x, y, …], …] or an RLE {\"size\": [h, w], \"counts\": …}"

    /// An RLE's `size` as (height, width).
    static func rleSize(_ size: [Int]) throws(MaskError) -> (Int, Int) {
        guard size.count == 2 else { throw .unsupportedSegmentation("RLE size \(size) must be [height, width]") }
        return (size[0], size[1])
    }

    public init(from decoder: any Decoder) throws {
        if let polygons = try? decoder.singleValueContainer().decode([[Double]].self) {
            self = .polygons(polygons)
            return
        }
        guard let c = try? decoder.container(keyedBy: RLEKeys.self) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: Self.expected))
        }
        let size = try c.decode([Int].self, forKey: .size)
        let string = try? c.decode(String.self, forKey: .counts)
        let list = string == nil ? try c.decode([UInt32].self, forKey: .counts) : nil
        do throws(MaskError) {
            let (h, w) = try Self.rleSize(size)
            if let string {
                self = .compressedRLE(try RLE(height: h, width: w, compressedCounts: string))
            } else {
                self = .uncompressedRLE(try RLE(height: h, width: w, counts: list ?? []))
            }
        } catch {
            throw DecodingError.dataCorruptedError(forKey: .counts, in: c, debugDescription: error.description)
        }
    }

    public func encode(to encoder: any Encoder) throws {
        switch self {
        case let .polygons(p):
            var c = encoder.singleValueContainer()
            try c.encode(p)
        case let .uncompressedRLE(r):
            var c = encoder.container(keyedBy: RLEKeys.self)
            try c.encode(r.counts, forKey: .counts)
            try c.encode([r.height, r.width], forKey: .size)
        case let .compressedRLE(r):
            var c = encoder.container(keyedBy: RLEKeys.self)
            try c.encode(r.compressedCounts, forKey: .counts)
            try c.encode([r.height, r.width], forKey: .size)
        }
    }
}

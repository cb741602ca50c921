/// Errors of the mask API (``RLE``): input pycocotools would turn into undefined behaviour —
/// uninitialised pixels, buffer overruns, C integer overflow — or reject. Each names the input.
public enum MaskError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A negative height or width, or h·w beyond pycocotools' 32-bit run lengths.
    case badSize(height: Int, width: Int)
    /// A binary mask whose length is not h·w.
    case maskLength(height: Int, width: Int, count: Int)
    /// Run lengths that do not add up to h·w: pycocotools' `decode` would leave pixels
    /// uninitialised (sum too small) or write past the mask (too large).
    case countsSum(height: Int, width: Int, sum: Int)
    /// A compressed counts string (`rleToString`'s form) that no RLE encodes to; the string is
    /// shortened to its first 40 characters.
    case badCompressedCounts(String, reason: String)
    /// A polygon (its first coordinates) that pycocotools cannot rasterise.
    case badPolygon(String, reason: String)
    /// A box that is not [x, y, width, height] of finite numbers.
    case badBox([Double])
    /// A segmentation that pycocotools' `frPyObjects` rejects.
    case unsupportedSegmentation(String)

    public var description: String {
        switch self {
        case let .badSize(h, w):
            return "RLE size \(h)×\(w) is invalid: height and width must be ≥ 0 with h·w < 2³² (pycocotools' run lengths are 32-bit)"
        case let .maskLength(h, w, n):
            return "a \(h)×\(w) mask needs \(h * w) pixels, the buffer has \(n)"
        case let .countsSum(h, w, sum):
            return "RLE counts of a \(h)×\(w) mask sum to \(sum), not h·w = \(h * w)"
        case let .badCompressedCounts(s, reason):
            return "compressed RLE counts \"\(s)\": \(reason)"
        case let .badPolygon(p, reason):
            return "polygon [\(p)]: \(reason)"
        case let .badBox(b):
            return "box \(b) must be [x, y, width, height] of finite numbers"
        case let .unsupportedSegmentation(reason):
            return "segmentation not supported: \(reason)"
        }
    }

    static func shortened(_ s: String) -> String {
        s.count <= 40 ? s : String(s.prefix(40)) + "…"
    }

    static func shortened(_ polygon: [Double]) -> String {
        let head = polygon.prefix(8).map { "\($0)" }.joined(separator: ", ")
        return polygon.count > 8 ? head + ", … (\(polygon.count) numbers)" : head
    }
}

/// The planes of a YCbCr JPEG with 2×2-subsampled chroma, as libjpeg decodes them before it
/// upsamples the chroma and converts to RGB: Y is `width` × `height` (rows `yStride` bytes
/// apart), Cb and Cr are (width + 1) / 2 × (height + 1) / 2 (rows `cStride` bytes apart).
/// ``JPEG/decodeYCbCr420(_:source:maxPixels:)`` makes them.
public struct YCbCr420Planes: Sendable, Equatable {
    public var width: Int
    public var height: Int
    public var yStride: Int
    public var cStride: Int
    public var y: [UInt8]
    public var cb: [UInt8]
    public var cr: [UInt8]

    /// Whether planes of these sizes can hold a width × height image: strides multiples of 16
    /// covering a row, buffers covering the rows.
    public static func fits(width: Int, height: Int, yStride: Int, cStride: Int, yCount: Int, cbCount: Int, crCount: Int) -> Bool {
        yStride >= width && cStride >= (width + 1) / 2 && yStride % 16 == 0 && cStride % 16 == 0
            && yCount >= yStride * height && cbCount >= cStride * ((height + 1) / 2) && crCount == cbCount
    }

    public init(width: Int, height: Int, yStride: Int, cStride: Int, y: [UInt8], cb: [UInt8], cr: [UInt8]) {
        precondition(Self.fits(width: width, height: height, yStride: yStride, cStride: cStride, yCount: y.count, cbCount: cb.count, crCount: cr.count),
                     "YCbCr 4:2:0 planes of \(width)×\(height) need 16-byte-multiple strides covering the rows")
        self.width = width
        self.height = height
        self.yStride = yStride
        self.cStride = cStride
        self.y = y
        self.cb = cb
        self.cr = cr
    }
}

/// Decoded pixels a blob can be prepared from: an 8-bit image, or the planes of a 4:2:0 JPEG
/// (converted to BGR inside the resize, exactly as libjpeg-turbo would have).
public enum DecodedPixels: Sendable, Equatable {
    case image(Image)
    case ycbcr420(YCbCr420Planes)

    public var width: Int {
        switch self {
        case let .image(i): i.width
        case let .ycbcr420(p): p.width
        }
    }

    public var height: Int {
        switch self {
        case let .image(i): i.height
        case let .ycbcr420(p): p.height
        }
    }
}

import Storage

/// The channel order of a colour image's interleaved pixels.
public enum ChannelOrder: String, Sendable, Codable {
    /// Red, green, blue — what files and PIL/torchvision use.
    case rgb
    /// Blue, green, red — what Detectron (OpenCV) feeds its networks.
    case bgr
}

/// An 8-bit image with interleaved channels, height × width × channels (HWC), row-major.
public struct Image: Sendable, Equatable {
    public var width: Int
    public var height: Int
    /// 1 (grey) or 3 (colour).
    public var channels: Int
    /// The order of the three colour channels (ignored for grey images).
    public var order: ChannelOrder
    /// `height * width * channels` bytes.
    public var pixels: [UInt8]

    public init(width: Int, height: Int, channels: Int = 3, order: ChannelOrder = .rgb, pixels: [UInt8]) {
        precondition(pixels.count == width * height * channels, "pixel count \(pixels.count) does not match \(height)×\(width)×\(channels)")
        self.width = width
        self.height = height
        self.channels = channels
        self.order = order
        self.pixels = pixels
    }

    /// A filled image.
    public init(width: Int, height: Int, channels: Int = 3, order: ChannelOrder = .rgb, fill: UInt8 = 0) {
        self.init(width: width, height: height, channels: channels, order: order,
                  pixels: [UInt8](repeating: fill, count: width * height * channels))
    }

    /// The same image with its colour channels in `order`.
    public func converted(to newOrder: ChannelOrder) -> Image {
        guard channels == 3, newOrder != order else { return self }
        var out = self
        out.order = newOrder
        out.pixels.withUnsafeMutableBufferPointer { p in
            var i = 0
            while i < p.count {
                p.swapAt(i, i + 2)
                i += 3
            }
        }
        return out
    }

    /// The pixels as a uint8 tensor of shape `[height, width, channels]` in `context`.
    public func tensor(context: any Context) throws(StorageError) -> Tensor {
        try Tensor(pixels, shape: [height, width, channels], context: context)
    }
}

/// The element types a ``Tensor`` can hold.
public enum DType: String, Sendable, Codable, CaseIterable, CustomStringConvertible {
    case float32, int32, int64, uint8

    /// Bytes per element.
    public var byteSize: Int {
        switch self {
        case .float32, .int32: return 4
        case .int64: return 8
        case .uint8: return 1
        }
    }

    public var description: String { rawValue }
}

/// A Swift type that can be a tensor element.
public protocol TensorElement: BitwiseCopyable, Sendable {
    static var dtype: DType { get }
}

extension Float: TensorElement { public static var dtype: DType { .float32 } }
extension Int32: TensorElement { public static var dtype: DType { .int32 } }
extension Int64: TensorElement { public static var dtype: DType { .int64 } }
extension UInt8: TensorElement { public static var dtype: DType { .uint8 } }

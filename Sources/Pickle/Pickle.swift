import Foundation

/// A value read from a Python pickle. Only data comes out: containers, scalars, text, bytes and
/// arrays. Classes are never instantiated and functions never called — the few globals these
/// files need (numpy's array reconstruction, PyTorch's tensor rebuild, `OrderedDict`,
/// `_codecs.encode`) are interpreted by the reader itself; any other global is refused by name.
public indirect enum PickleValue: Sendable, Equatable {
    case none
    case bool(Bool)
    case int(Int)
    case float(Double)
    case string(String)
    case bytes([UInt8])
    case list([PickleValue])
    case tuple([PickleValue])
    /// Keys and values in insertion order (Python dicts keep it).
    case dict([PickleEntry])
    case array(NDArray)
    /// A global the reader knows, not yet applied (e.g. `numpy.dtype` before its REDUCE).
    case global(String)
    /// An intermediate the reader builds (a numpy dtype, an empty ndarray awaiting BUILD, a storage).
    case `internal`(PickleInternal)

    /// The value for string key `key` of a dict.
    public subscript(key: String) -> PickleValue? {
        guard case let .dict(entries) = self else { return nil }
        return entries.first { $0.key == .string(key) || $0.key == .bytes(Array(key.utf8)) }?.value
    }

    /// Text from `string`, or `bytes` read as Latin-1 (Python 2 `str`, as `encoding='latin1'` does).
    public var text: String? {
        switch self {
        case let .string(s): return s
        case let .bytes(b): return String(b.map { Character(Unicode.Scalar($0)) })
        default: return nil
        }
    }
}

public struct PickleEntry: Sendable, Equatable {
    public var key: PickleValue
    public var value: PickleValue
}

/// Reader-internal values (never part of a finished result).
public enum PickleInternal: Sendable, Equatable {
    case dtype(NDArray.DType?)
    case emptyArray
    /// A PyTorch storage: its dtype, the archive key of its bytes and its element count.
    case storage(NDArray.DType, key: String, count: Int)
}

/// An n-dimensional array: dtype, shape and C-contiguous little-endian bytes.
public struct NDArray: Sendable, Equatable {
    public enum DType: String, Sendable, Equatable, CaseIterable {
        case float32, float64, float16, bfloat16, int64, int32, int16, int8, uint8, bool

        public var size: Int {
            switch self {
            case .float64, .int64: return 8
            case .float32, .int32: return 4
            case .float16, .bfloat16, .int16: return 2
            case .int8, .uint8, .bool: return 1
            }
        }

        /// From numpy's type string (`f4`, `<f8`, `i8`, …).
        init?(numpy code: String) {
            let c = code.trimmingCharacters(in: CharacterSet(charactersIn: "<>=|"))
            switch c {
            case "f4", "float32": self = .float32
            case "f8", "float64": self = .float64
            case "f2", "float16": self = .float16
            case "i8", "int64": self = .int64
            case "i4", "int32": self = .int32
            case "i2", "int16": self = .int16
            case "i1", "int8": self = .int8
            case "u1", "uint8": self = .uint8
            case "b1", "bool": self = .bool
            default: return nil
            }
        }
    }

    public var dtype: DType
    public var shape: [Int]
    public var data: [UInt8]

    public init(dtype: DType, shape: [Int], data: [UInt8]) {
        self.dtype = dtype
        self.shape = shape
        self.data = data
    }

    public var count: Int { shape.reduce(1, *) }

    /// The values as float32 (float16/bfloat16/float64/integers converted).
    public func floats() -> [Float] {
        data.withUnsafeBytes { raw in
            (0..<count).map { i -> Float in
                let o = i * dtype.size
                switch dtype {
                case .float32: return Float(bitPattern: raw.loadUnaligned(fromByteOffset: o, as: UInt32.self).littleEndian)
                case .float64: return Float(Double(bitPattern: raw.loadUnaligned(fromByteOffset: o, as: UInt64.self).littleEndian))
                case .float16: return Float(Float16(bitPattern: raw.loadUnaligned(fromByteOffset: o, as: UInt16.self).littleEndian))
                case .bfloat16: return Float(bitPattern: UInt32(raw.loadUnaligned(fromByteOffset: o, as: UInt16.self).littleEndian) << 16)
                case .int64: return Float(Int64(littleEndian: raw.loadUnaligned(fromByteOffset: o, as: Int64.self)))
                case .int32: return Float(Int32(littleEndian: raw.loadUnaligned(fromByteOffset: o, as: Int32.self)))
                case .int16: return Float(Int16(littleEndian: raw.loadUnaligned(fromByteOffset: o, as: Int16.self)))
                case .int8: return Float(raw.load(fromByteOffset: o, as: Int8.self))
                case .uint8, .bool: return Float(raw[o])
                }
            }
        }
    }
}

/// Why a pickle could not be read. Every case names the file.
public enum PickleError: Error, Sendable, Equatable, CustomStringConvertible {
    case truncated(file: String, offset: Int)
    case malformed(file: String, offset: Int, reason: String)
    case refusedGlobal(file: String, global: String)
    case unsupported(file: String, reason: String)

    public var description: String {
        switch self {
        case let .truncated(f, o): return "\(f): the pickle ends early (at byte \(o)); the file is truncated — copy or download it again"
        case let .malformed(f, o, r): return "\(f): not a valid pickle at byte \(o): \(r)"
        case let .refusedGlobal(f, g):
            return "\(f): the pickle refers to \(g), which is not a weight format this reader knows; arbitrary Python objects are never "
                + "created — save the weights as a dict of numpy arrays or a state_dict, or convert them with Python first"
        case let .unsupported(f, r): return "\(f): \(r)"
        }
    }
}

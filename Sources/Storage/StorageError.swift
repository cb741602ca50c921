/// Every error the storage layer throws. Each message names the tensor, blob or type involved and
/// says what to do.
public enum StorageError: Error, Equatable, Sendable, CustomStringConvertible {
    case outOfMemory(requested: Int, limit: Int, device: DeviceOption)
    case dtypeMismatch(stored: DType, requested: DType)
    case shapeMismatch(stored: [Int], expected: [Int])
    case negativeDimension(shape: [Int])
    case uninitialized(shape: [Int], dtype: DType)
    case deviceMismatch(source: DeviceOption, destination: DeviceOption)
    case blobTypeMismatch(blob: String, stored: String, requested: String)
    case blobEmpty(blob: String, requested: String)
    case blobNotFound(name: String, suggestion: String?)
    case netNotFound(name: String, available: [String])
    case netExists(name: String)
    case elementCountMismatch(shape: [Int], count: Int)

    public var description: String {
        switch self {
        case let .outOfMemory(requested, limit, device):
            return limit > 0
                ? "out of memory on \(device): \(requested) bytes requested with a limit of \(limit) bytes (raise the context's byteLimit or free tensors)"
                : "out of memory on \(device): \(requested) bytes requested (free tensors or use a smaller input)"
        case let .dtypeMismatch(stored, requested):
            return "tensor holds \(stored) but was accessed as \(requested) (access it as \(stored), or resize it with dtype: .\(requested))"
        case let .shapeMismatch(stored, expected):
            return "tensor has shape \(stored) but shape \(expected) was expected"
        case let .negativeDimension(shape):
            return "shape \(shape) has a negative dimension (every dimension must be ≥ 0)"
        case let .uninitialized(shape, dtype):
            return "tensor of shape \(shape) and dtype \(dtype) has no data yet (write it through mutableData(as:) first)"
        case let .deviceMismatch(source, destination):
            return "cannot copy a tensor on \(source) into one on \(destination) directly (copy through the host)"
        case let .blobTypeMismatch(blob, stored, requested):
            return "blob '\(blob)' holds \(stored) but \(requested) was requested"
        case let .blobEmpty(blob, requested):
            return "blob '\(blob)' is empty but \(requested) was requested (feed it first)"
        case let .blobNotFound(name, suggestion):
            let hint = suggestion.map { " (did you mean '\($0)'?)" } ?? ""
            return "blob '\(name)' does not exist in the workspace\(hint)"
        case let .netNotFound(name, available):
            return "net '\(name)' does not exist in the workspace (nets: \(available.isEmpty ? "none" : available.joined(separator: ", ")))"
        case let .netExists(name):
            return "a net named '\(name)' already exists (remove it first or pass overwrite: true)"
        case let .elementCountMismatch(shape, count):
            return "shape \(shape) holds \(shape.reduce(1, *)) elements but \(count) values were given"
        }
    }
}

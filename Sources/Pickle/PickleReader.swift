import Foundation

/// Reads the pickle protocol subset weight files use (protocols 0–5: containers, numbers, text,
/// bytes, memo, globals, REDUCE/BUILD/NEWOBJ, persistent ids), interpreting a fixed list of
/// globals and refusing every other one. Malformed or truncated input is an error, never a crash.
public struct PickleReader {
    /// The globals the reader interprets; nothing else is accepted.
    public static let knownGlobals: Set<String> = [
        "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct", "numpy.ndarray", "numpy.dtype",
        "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar",
        "numpy.core.numeric._frombuffer", "numpy._core.numeric._frombuffer",
        "collections.OrderedDict", "_codecs.encode",
        "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor", "torch._utils._rebuild_parameter",
        "torch.FloatStorage", "torch.DoubleStorage", "torch.HalfStorage", "torch.BFloat16Storage", "torch.LongStorage",
        "torch.IntStorage", "torch.ShortStorage", "torch.CharStorage", "torch.ByteStorage", "torch.BoolStorage",
    ]

    let bytes: [UInt8]
    let file: String
    /// Turns a persistent id (PyTorch's storage tuples) into a value.
    let persistentLoad: ((PickleValue) throws(PickleError) -> PickleValue)?
    /// The bytes of a PyTorch storage, by archive key.
    let storageBytes: ((String) throws(PickleError) -> [UInt8])?

    public init(bytes: [UInt8], file: String, persistentLoad: ((PickleValue) throws(PickleError) -> PickleValue)? = nil,
                storageBytes: ((String) throws(PickleError) -> [UInt8])? = nil) {
        self.bytes = bytes
        self.file = file
        self.persistentLoad = persistentLoad
        self.storageBytes = storageBytes
    }

    /// Reads a pickle file.
    public static func load(_ path: String) throws(PickleError) -> PickleValue {
        // An empty file is no pickle; checked first because Foundation's reader leaks its 4 KiB
        // buffer on files that report size 0.
        var st = stat()
        if stat(path, &st) == 0 && st.st_size == 0 { throw .truncated(file: path, offset: 0) }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw .unsupported(file: path, reason: FileManager.default.fileExists(atPath: path) ? "cannot read the file" : "no such file")
        }
        return try PickleReader(bytes: [UInt8](data), file: path).read()
    }

    private enum Item {
        case value(PickleValue)
        case mark
    }

    public func read() throws(PickleError) -> PickleValue {
        var pos = 0
        var stack: [Item] = []
        var memo: [Int: PickleValue] = [:]

        func need(_ n: Int) throws(PickleError) {
            guard n >= 0, pos + n <= bytes.count else { throw .truncated(file: file, offset: bytes.count) }
        }
        func take(_ n: Int) throws(PickleError) -> ArraySlice<UInt8> {
            try need(n)
            defer { pos += n }
            return bytes[pos..<pos + n]
        }
        func uint(_ n: Int) throws(PickleError) -> Int {
            let s = try take(n)
            var v: UInt64 = 0
            for (i, b) in s.enumerated() { v |= UInt64(b) << (8 * UInt64(i)) }
            guard v <= UInt64(Int.max) else { throw .malformed(file: file, offset: pos, reason: "a length of \(v) bytes") }
            return Int(v)
        }
        func line() throws(PickleError) -> String {
            guard let end = bytes[pos...].firstIndex(of: 0x0A) else { throw .truncated(file: file, offset: bytes.count) }
            defer { pos = end + 1 }
            return String(decoding: bytes[pos..<end], as: UTF8.self)
        }
        func malformed(_ reason: String) -> PickleError { .malformed(file: file, offset: pos, reason: reason) }
        func pop() throws(PickleError) -> PickleValue {
            guard case let .value(v)? = stack.popLast() else { throw malformed("the stack is empty or a mark is in the way") }
            return v
        }
        func popToMark() throws(PickleError) -> [PickleValue] {
            guard let m = stack.lastIndex(where: { if case .mark = $0 { return true } else { return false } }) else {
                throw malformed("no mark on the stack")
            }
            let items = stack[(m + 1)...].map { item -> PickleValue in if case let .value(v) = item { return v } else { return .none } }
            stack.removeSubrange(m...)
            return items
        }
        func push(_ v: PickleValue) { stack.append(.value(v)) }
        func signedInt(_ s: ArraySlice<UInt8>) -> Int? {
            guard !s.isEmpty else { return 0 }
            guard s.count <= 8 else {
                // Wider than 64 bits: fits only if the extra bytes are sign extension.
                let head = s.prefix(8), rest = s.dropFirst(8)
                let negative = head.last! & 0x80 != 0
                guard rest.allSatisfy({ $0 == (negative ? 0xFF : 0) }) else { return nil }
                return signedInt(head)
            }
            var v: UInt64 = 0
            for (i, b) in s.enumerated() { v |= UInt64(b) << (8 * UInt64(i)) }
            if s.last! & 0x80 != 0 && s.count < 8 { v |= ~0 << (8 * UInt64(s.count)) }
            return Int(Int64(bitPattern: v))
        }
        func modifyTop(_ body: (inout PickleValue) throws(PickleError) -> Void) throws(PickleError) {
            var v = try pop()
            try body(&v)
            push(v)
        }
        func addItems(_ items: [PickleValue], to target: inout PickleValue) throws(PickleError) {
            switch target {
            case var .list(l):
                l += items
                target = .list(l)
            default: throw malformed("APPEND to a value that is not a list")
            }
        }
        func setItems(_ items: [PickleValue], on target: inout PickleValue) throws(PickleError) {
            guard items.count % 2 == 0, case var .dict(entries) = target else { throw malformed("SETITEM(S) on a value that is not a dict") }
            for k in stride(from: 0, to: items.count, by: 2) {
                if let i = entries.firstIndex(where: { $0.key == items[k] }) {
                    entries[i].value = items[k + 1]
                } else {
                    entries.append(PickleEntry(key: items[k], value: items[k + 1]))
                }
            }
            target = .dict(entries)
        }

        while true {
            try need(1)
            let op = bytes[pos]
            pos += 1
            switch op {
            case 0x80: _ = try take(1)                                   // PROTO
            case 0x95: _ = try take(8)                                   // FRAME
            case 0x2E:                                                   // STOP
                let result = try pop()
                return result
            case 0x28: stack.append(.mark)                               // MARK
            case 0x7D: push(.dict([]))                                   // EMPTY_DICT
            case 0x5D: push(.list([]))                                   // EMPTY_LIST
            case 0x29: push(.tuple([]))                                  // EMPTY_TUPLE
            case 0x8F: push(.list([]))                                   // EMPTY_SET (as a list)
            case 0x64:                                                   // DICT
                var d = PickleValue.dict([])
                try setItems(try popToMark(), on: &d)
                push(d)
            case 0x6C: push(.list(try popToMark()))                      // LIST
            case 0x74: push(.tuple(try popToMark()))                     // TUPLE
            case 0x91: push(.list(try popToMark()))                      // FROZENSET
            case 0x85: let a = try pop(); push(.tuple([a]))              // TUPLE1
            case 0x86: let b = try pop(), a = try pop(); push(.tuple([a, b]))
            case 0x87: let c = try pop(), b = try pop(), a = try pop(); push(.tuple([a, b, c]))
            case 0x73:                                                   // SETITEM
                let v = try pop(), k = try pop()
                try modifyTop { (t: inout PickleValue) throws(PickleError) in try setItems([k, v], on: &t) }
            case 0x75:                                                   // SETITEMS
                let items = try popToMark()
                try modifyTop { (t: inout PickleValue) throws(PickleError) in try setItems(items, on: &t) }
            case 0x61:                                                   // APPEND
                let v = try pop()
                try modifyTop { (t: inout PickleValue) throws(PickleError) in try addItems([v], to: &t) }
            case 0x65, 0x90:                                             // APPENDS, ADDITEMS
                let items = try popToMark()
                try modifyTop { (t: inout PickleValue) throws(PickleError) in try addItems(items, to: &t) }
            case 0x4A: push(.int(Int(Int32(truncatingIfNeeded: try uint(4)))))    // BININT
            case 0x4B: push(.int(try uint(1)))                                     // BININT1
            case 0x4D: push(.int(try uint(2)))                                     // BININT2
            case 0x8A, 0x8B:                                                       // LONG1, LONG4
                let n = try uint(op == 0x8A ? 1 : 4)
                guard let v = signedInt(try take(n)) else { throw malformed("an integer wider than 64 bits") }
                push(.int(v))
            case 0x49:                                                             // INT (text)
                let s = try line()
                if s == "00" { push(.bool(false)) } else if s == "01" { push(.bool(true)) } else {
                    guard let v = Int(s) else { throw malformed("INT \(s)") }
                    push(.int(v))
                }
            case 0x4C:                                                             // LONG (text)
                var s = try line()
                if s.hasSuffix("L") { s.removeLast() }
                guard let v = Int(s) else { throw malformed("LONG \(s)") }
                push(.int(v))
            case 0x47:                                                             // BINFLOAT (big-endian)
                var v: UInt64 = 0
                for b in try take(8) { v = v << 8 | UInt64(b) }
                push(.float(Double(bitPattern: v)))
            case 0x46:                                                             // FLOAT (text)
                let s = try line()
                guard let v = Double(s) else { throw malformed("FLOAT \(s)") }
                push(.float(v))
            case 0x4E: push(.none)
            case 0x88: push(.bool(true))
            case 0x89: push(.bool(false))
            case 0x55: push(.bytes(Array(try take(try uint(1)))))                  // SHORT_BINSTRING
            case 0x54: push(.bytes(Array(try take(try uint(4)))))                  // BINSTRING
            case 0x43: push(.bytes(Array(try take(try uint(1)))))                  // SHORT_BINBYTES
            case 0x42: push(.bytes(Array(try take(try uint(4)))))                  // BINBYTES
            case 0x8E, 0x96: push(.bytes(Array(try take(try uint(8)))))            // BINBYTES8, BYTEARRAY8
            case 0x8C: push(.string(String(decoding: try take(try uint(1)), as: UTF8.self)))   // SHORT_BINUNICODE
            case 0x58: push(.string(String(decoding: try take(try uint(4)), as: UTF8.self)))   // BINUNICODE
            case 0x8D: push(.string(String(decoding: try take(try uint(8)), as: UTF8.self)))   // BINUNICODE8
            case 0x56: push(.string(try line()))                                               // UNICODE (raw-unicode-escape; ASCII here)
            case 0x53:                                                                          // STRING (quoted text)
                let s = try line()
                guard s.count >= 2, let q = s.first, q == "'" || q == "\"", s.last == q else { throw malformed("STRING \(s)") }
                push(.bytes(Array(s.dropFirst().dropLast().utf8)))
            case 0x71: memo[try uint(1)] = try top()                               // BINPUT
            case 0x72: memo[try uint(4)] = try top()                               // LONG_BINPUT
            case 0x70:                                                             // PUT
                guard let i = Int(try line()) else { throw malformed("PUT index") }
                memo[i] = try top()
            case 0x94: memo[memo.count] = try top()                                // MEMOIZE
            case 0x68, 0x6A, 0x67:                                                 // BINGET, LONG_BINGET, GET
                let i: Int
                if op == 0x67 { guard let v = Int(try line()) else { throw malformed("GET index") }; i = v } else { i = try uint(op == 0x68 ? 1 : 4) }
                guard let v = memo[i] else { throw malformed("memo \(i) was never stored") }
                push(v)
            case 0x63:                                                             // GLOBAL
                let module = try line(), name = try line()
                push(try global(module + "." + name))
            case 0x93:                                                             // STACK_GLOBAL
                let name = try pop(), module = try pop()
                guard let n = name.text, let m = module.text else { throw malformed("STACK_GLOBAL needs two strings") }
                push(try global(m + "." + n))
            case 0x52:                                                             // REDUCE
                let args = try pop(), callable = try pop()
                push(try reduce(callable, args))
            case 0x81:                                                             // NEWOBJ
                let args = try pop(), cls = try pop()
                push(try reduce(cls, args))
            case 0x92:                                                             // NEWOBJ_EX
                _ = try pop()
                let args = try pop(), cls = try pop()
                push(try reduce(cls, args))
            case 0x62:                                                             // BUILD
                let state = try pop()
                try modifyTop { (t: inout PickleValue) throws(PickleError) in t = try build(t, state) }
            case 0x51:                                                             // BINPERSID
                let pid = try pop()
                guard let persistentLoad else { throw .unsupported(file: file, reason: "a persistent id outside a PyTorch archive") }
                push(try persistentLoad(pid))
            case 0x50:                                                             // PERSID
                let pid = try line()
                guard let persistentLoad else { throw .unsupported(file: file, reason: "a persistent id outside a PyTorch archive") }
                push(try persistentLoad(.string(pid)))
            case 0x30: _ = try pop()                                               // POP
            case 0x31: _ = try popToMark()                                         // POP_MARK
            case 0x32: push(try top())                                             // DUP
            case 0x97, 0x98:
                throw .unsupported(file: file, reason: "out-of-band buffers (pickle protocol 5 NEXT_BUFFER) are not supported")
            default:
                throw malformed(String(format: "unknown opcode 0x%02X", op))
            }
        }

        func top() throws(PickleError) -> PickleValue {
            guard case let .value(v)? = stack.last else { throw malformed("nothing to store in the memo") }
            return v
        }
    }

    // MARK: The known globals

    func global(_ name: String) throws(PickleError) -> PickleValue {
        guard Self.knownGlobals.contains(name) else { throw .refusedGlobal(file: file, global: name) }
        return .global(name.replacingOccurrences(of: "numpy._core.", with: "numpy.core."))
    }

    func reduce(_ callable: PickleValue, _ args: PickleValue) throws(PickleError) -> PickleValue {
        guard case let .global(name) = callable, case let .tuple(a) = args else {
            throw .malformed(file: file, offset: 0, reason: "REDUCE of something that is not a known global with a tuple")
        }
        switch name {
        case "collections.OrderedDict":
            return .dict([])
        case "_codecs.encode":
            // Python 3 writes bytes at protocol 2 as _codecs.encode(text, 'latin1').
            guard let text = a.first?.text else { throw .malformed(file: file, offset: 0, reason: "_codecs.encode without text") }
            return .bytes(latin1Bytes(text))
        case "numpy.dtype":
            return .internal(.dtype(a.first?.text.flatMap { NDArray.DType(numpy: $0) }))
        case "numpy.core.multiarray._reconstruct":
            return .internal(.emptyArray)
        case "numpy.core.numeric._frombuffer":
            // Protocol 5: _frombuffer(buffer, dtype, shape, order) — the same state as an ndarray BUILD.
            guard a.count == 4, let order = a[3].text else { throw .malformed(file: file, offset: 0, reason: "_frombuffer(buffer, dtype, shape, order) expected") }
            return try build(.internal(.emptyArray), .tuple([.int(1), a[2], a[1], .bool(order == "F"), a[0]]))
        case "numpy.core.multiarray.scalar":
            // scalar(dtype, raw bytes): a 0-d array.
            guard a.count == 2, case let .internal(.dtype(dt?)) = a[0], case let .bytes(raw) = a[1], raw.count == dt.size else {
                throw .unsupported(file: file, reason: "a numpy scalar of an unsupported type")
            }
            return .array(NDArray(dtype: dt, shape: [], data: raw))
        case "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor":
            return try rebuildTensor(a)
        case "torch._utils._rebuild_parameter":
            guard let data = a.first else { throw .malformed(file: file, offset: 0, reason: "_rebuild_parameter without data") }
            return data
        default:
            throw .refusedGlobal(file: file, global: name)
        }
    }

    func build(_ target: PickleValue, _ state: PickleValue) throws(PickleError) -> PickleValue {
        switch target {
        case .internal(.dtype):
            // numpy dtype state: (version, byte order, …); only little-endian or not-applicable is accepted.
            if case let .tuple(s) = state, s.count > 1, let order = s[1].text, order == ">" {
                throw .unsupported(file: file, reason: "a big-endian numpy array")
            }
            return target
        case .internal(.emptyArray):
            // ndarray state: (version, shape, dtype, is_fortran, raw data)
            guard case let .tuple(s) = state, s.count == 5, case let .tuple(dims) = s[1], case let .internal(.dtype(dt)) = s[2] else {
                throw .malformed(file: file, offset: 0, reason: "an ndarray state that is not (version, shape, dtype, fortran, data)")
            }
            guard let dt else { throw .unsupported(file: file, reason: "a numpy array of a dtype other than float, int, uint8 or bool") }
            let shape = try dims.map { d throws(PickleError) -> Int in
                guard case let .int(n) = d, n >= 0 else { throw .malformed(file: file, offset: 0, reason: "a negative or non-integer dimension") }
                return n
            }
            let fortran: Bool
            switch s[3] { case let .bool(b): fortran = b; case let .int(i): fortran = i != 0; default: fortran = false }
            let raw: [UInt8]
            switch s[4] {
            case let .bytes(b): raw = b
            case let .string(t): raw = latin1Bytes(t)
            case .list: throw .unsupported(file: file, reason: "a numpy array of Python objects")
            default: throw .malformed(file: file, offset: 0, reason: "ndarray data is not bytes")
            }
            let count = try checkedCount(shape)
            guard raw.count == count * dt.size else {
                throw .malformed(file: file, offset: 0, reason: "an array of shape \(shape) (\(dt.rawValue)) holds \(raw.count) bytes, not \(count * dt.size)")
            }
            var array = NDArray(dtype: dt, shape: shape, data: raw)
            if fortran && shape.count > 1 {
                // Column-major: reverse the strides to gather C order.
                var strides = [Int](repeating: 1, count: shape.count)
                for i in 1..<shape.count { strides[i] = strides[i - 1] * shape[i - 1] }
                array = gather(dt, raw, shape: shape, strides: strides, offset: 0)
            }
            return .array(array)
        case .dict:
            return target   // e.g. an OrderedDict's _metadata attribute: not needed
        default:
            return target
        }
    }

    func checkedCount(_ shape: [Int]) throws(PickleError) -> Int {
        var n = 1
        for d in shape {
            let (m, overflow) = n.multipliedReportingOverflow(by: d)
            guard !overflow, m <= 1 << 40 else { throw .malformed(file: file, offset: 0, reason: "an array of shape \(shape) is impossibly large") }
            n = m
        }
        return n
    }

    /// Copies elements at `offset + Σ index·stride` (in elements) into C order.
    func gather(_ dt: NDArray.DType, _ raw: [UInt8], shape: [Int], strides: [Int], offset: Int) -> NDArray {
        let count = shape.reduce(1, *), size = dt.size
        // C-contiguous (the usual case): one copy.
        var expected = 1, contiguous = true
        for d in stride(from: shape.count - 1, through: 0, by: -1) where shape[d] > 1 {
            if strides[d] != expected { contiguous = false }
            expected *= shape[d]
        }
        if contiguous { return NDArray(dtype: dt, shape: shape, data: Array(raw[offset * size..<(offset + count) * size])) }
        var out = [UInt8](repeating: 0, count: count * size)
        var index = [Int](repeating: 0, count: shape.count)
        for i in 0..<count {
            var src = offset
            for d in 0..<shape.count { src += index[d] * strides[d] }
            for b in 0..<size { out[i * size + b] = raw[src * size + b] }
            var d = shape.count - 1
            while d >= 0 {
                index[d] += 1
                if index[d] < shape[d] { break }
                index[d] = 0
                d -= 1
            }
        }
        return NDArray(dtype: dt, shape: shape, data: out)
    }

    /// `_rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])`.
    func rebuildTensor(_ a: [PickleValue]) throws(PickleError) -> PickleValue {
        guard a.count >= 4, case let .internal(.storage(dt, key, storageCount)) = a[0], case let .int(offset) = a[1],
              case let .tuple(sizeValues) = a[2], case let .tuple(strideValues) = a[3], sizeValues.count == strideValues.count else {
            throw .malformed(file: file, offset: 0, reason: "a tensor rebuild without (storage, offset, size, stride)")
        }
        var shape: [Int] = [], strides: [Int] = []
        for (s, t) in zip(sizeValues, strideValues) {
            guard case let .int(n) = s, case let .int(st) = t, n >= 0, st >= 0 else {
                throw .malformed(file: file, offset: 0, reason: "a tensor size or stride that is not a non-negative integer")
            }
            shape.append(n)
            strides.append(st)
        }
        guard let storageBytes else { throw .unsupported(file: file, reason: "a tensor outside a PyTorch archive") }
        let raw = try storageBytes(key)
        guard raw.count >= storageCount * dt.size else {
            throw .malformed(file: file, offset: 0, reason: "storage \(key) holds \(raw.count) bytes, fewer than its \(storageCount) \(dt.rawValue) elements")
        }
        let count = try checkedCount(shape)
        if count > 0 {
            var last = offset
            for (n, st) in zip(shape, strides) { last += (n - 1) * st }
            guard offset >= 0, last < storageCount else {
                throw .malformed(file: file, offset: 0, reason: "a tensor of shape \(shape) reaches past its storage \(key) (\(storageCount) elements)")
            }
        }
        return .array(gather(dt, raw, shape: shape, strides: strides, offset: offset))
    }

    /// The Latin-1 bytes of `text` (each scalar below 256 is one byte), read straight from its
    /// UTF-8 storage: Python 3 pickles array data at protocol 2 as such text, hundreds of MB of it.
    func latin1Bytes(_ text: String) -> [UInt8] {
        var text = text
        return text.withUTF8 { utf8 in
            var out = [UInt8]()
            out.reserveCapacity(utf8.count)
            var i = 0
            while i < utf8.count {
                let b = utf8[i]
                if b < 0x80 {
                    out.append(b)
                    i += 1
                } else if i + 1 < utf8.count {
                    // Two-byte sequences (U+0080…U+07FF); a scalar above U+00FF keeps its low byte.
                    let width = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : 2
                    var scalar = UInt32(b) & (width == 2 ? 0x1F : width == 3 ? 0x0F : 0x07)
                    for k in 1..<width where i + k < utf8.count { scalar = scalar << 6 | UInt32(utf8[i + k] & 0x3F) }
                    out.append(UInt8(truncatingIfNeeded: scalar))
                    i += width
                } else {
                    i += 1
                }
            }
            return out
        }
    }
}

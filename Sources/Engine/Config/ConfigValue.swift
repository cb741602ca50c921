import Foundation

/// A config value, typed the way Detectron's YAML/`literal_eval` reads them.
public indirect enum ConfigValue: Equatable, Sendable, CustomStringConvertible {
    case none
    case bool(Bool)
    case int(Int)
    case float(Double)
    case string(String)
    /// A tuple `(…)` or a list `[…]`: Detectron converts freely between the two.
    case list([ConfigValue], tuple: Bool)
    case node([String: ConfigValue])

    /// The Python type name, for errors.
    public var typeName: String {
        switch self {
        case .none: return "None"
        case .bool: return "bool"
        case .int: return "int"
        case .float: return "float"
        case .string: return "str"
        case let .list(_, tuple): return tuple ? "tuple" : "list"
        case .node: return "dict"
        }
    }

    public var description: String {
        switch self {
        case .none: return "None"
        case let .bool(b): return b ? "True" : "False"
        case let .int(i): return String(i)
        case let .float(d):
            if d == d.rounded() && abs(d) < 1e15 { return String(format: "%.1f", d) }
            return String(d)
        case let .string(s): return "'\(s)'"
        case let .list(items, tuple):
            let inner = items.map(\.description).joined(separator: ", ")
            return tuple ? "(\(inner)\(items.count == 1 ? "," : ""))" : "[\(inner)]"
        case let .node(d): return "{" + d.keys.sorted().map { "\($0): \(d[$0]!)" }.joined(separator: ", ") + "}"
        }
    }

    /// Python's `ast.literal_eval` over the literals configs use: numbers, True/False/None,
    /// quoted strings, tuples and lists. nil when the text is not a literal (it stays a string).
    public static func literal(_ text: String) -> ConfigValue? {
        var p = LiteralParser(Array(text.unicodeScalars))
        guard let v = p.value() else { return nil }
        p.skipSpace()
        return p.atEnd ? v : nil
    }
}

private struct LiteralParser {
    let s: [Unicode.Scalar]
    var i = 0
    init(_ s: [Unicode.Scalar]) { self.s = s }
    var atEnd: Bool { i >= s.count }

    mutating func skipSpace() { while i < s.count, s[i] == " " || s[i] == "\t" || s[i] == "\n" { i += 1 } }

    mutating func value() -> ConfigValue? {
        skipSpace()
        guard i < s.count else { return nil }
        let c = s[i]
        if c == "(" || c == "[" {
            let close: Unicode.Scalar = c == "(" ? ")" : "]"
            i += 1
            var items: [ConfigValue] = []
            var sawComma = false
            while true {
                skipSpace()
                guard i < s.count else { return nil }
                if s[i] == close { i += 1; break }
                guard let v = value() else { return nil }
                items.append(v)
                skipSpace()
                guard i < s.count else { return nil }
                if s[i] == "," { i += 1; sawComma = true; continue }
                if s[i] == close { i += 1; break }
                return nil
            }
            // "(x)" without a comma is just x in Python.
            if c == "(" && items.count == 1 && !sawComma { return items[0] }
            return .list(items, tuple: c == "(")
        }
        if c == "'" || c == "\"" {
            i += 1
            var out = ""
            while i < s.count && s[i] != c {
                if s[i] == "\\" && i + 1 < s.count { i += 1 }
                out.unicodeScalars.append(s[i])
                i += 1
            }
            guard i < s.count else { return nil }
            i += 1
            return .string(out)
        }
        var word = ""
        while i < s.count, !",)] \t\n".unicodeScalars.contains(s[i]) {
            word.unicodeScalars.append(s[i])
            i += 1
        }
        switch word {
        case "True": return .bool(true)
        case "False": return .bool(false)
        case "None": return ConfigValue.none
        default: break
        }
        if let n = Int(word) { return .int(n) }
        let lower = word.lowercased()
        if lower.contains("inf") || lower.contains("nan") { return nil }
        if let d = Double(word), word.contains(where: { ".eE".contains($0) }) { return .float(d) }
        return nil
    }
}

import Foundation
import Storage
import Yams

/// Why a config could not be read or merged; each message names the full key.
public enum ConfigError: Error, Equatable, Sendable, CustomStringConvertible {
    case nonExistentKey(String, suggestion: String?)
    case renamedKey(String, to: String, hint: String)
    case typeMismatch(key: String, expected: String, got: String, value: String)
    case oddOverrideList(count: Int)
    case unreadable(file: String, reason: String)
    case invalidYAML(file: String, reason: String)
    case invalid(key: String, reason: String)
    /// A Detectron setting this engine refuses: the feature it selects is not in this version (the
    /// refusal Detectron configs get instead of a silently different model).
    case unsupported(key: String, value: String, feature: String, hint: String)

    public var description: String {
        switch self {
        case let .nonExistentKey(k, s):
            return "config key \(k) does not exist" + (s.map { " (did you mean \($0)?)" } ?? "")
        case let .renamedKey(k, to, hint): return "config key \(k) was renamed to \(to)\(hint.isEmpty ? "" : "; \(hint)")"
        case let .typeMismatch(k, e, g, v): return "config key \(k) expects a value of type \(e), got \(g) \(v) (write it as the default's type, e.g. 1.0 for a float)"
        case let .oddOverrideList(n): return "KEY VALUE overrides come in pairs; got \(n) words"
        case let .unreadable(f, r): return "\(f): cannot read: \(r)"
        case let .invalidYAML(f, r): return "\(f): invalid YAML: \(r)"
        case let .invalid(k, r): return "config key \(k): \(r)"
        case let .unsupported(k, v, f, h): return "config key \(k) is \(v): \(f) is not implemented in this version" + (h.isEmpty ? "" : " (\(h))")
        }
    }
}

/// Detectron's config tree: defaults, YAML files, `KEY VALUE` overrides, with Detectron's
/// strictness — unknown keys fail (with the closest existing key), renamed keys say the new name,
/// deprecated keys are skipped with a warning, and values must have the default's type
/// (tuple ↔ list converts; there is no int → float promotion).
public struct Config: Sendable, CustomStringConvertible {
    public private(set) var root: [String: ConfigValue]
    /// Warnings from merging (deprecated keys).
    public private(set) var warnings: [String] = []

    public init() { root = Self.defaultTree }

    // MARK: Reading

    /// The value at a dotted key, e.g. `TRAIN.SCALES`.
    public func value(_ key: String) -> ConfigValue? {
        var node: ConfigValue = .node(root)
        for part in key.split(separator: ".") {
            guard case let .node(d) = node, let next = d[String(part)] else { return nil }
            node = next
        }
        return node
    }

    private func require(_ key: String) -> ConfigValue {
        guard let v = value(key) else { preconditionFailure("config key \(key) is read but has no default") }
        return v
    }

    public func int(_ key: String) -> Int {
        if case let .int(v) = require(key) { return v }
        preconditionFailure("config key \(key) is not an int")
    }

    public func double(_ key: String) -> Double {
        switch require(key) {
        case let .float(v): return v
        case let .int(v): return Double(v)
        default: preconditionFailure("config key \(key) is not a number")
        }
    }

    public func bool(_ key: String) -> Bool {
        if case let .bool(v) = require(key) { return v }
        preconditionFailure("config key \(key) is not a bool")
    }

    public func string(_ key: String) -> String {
        if case let .string(v) = require(key) { return v }
        preconditionFailure("config key \(key) is not a string")
    }

    public func ints(_ key: String) -> [Int] {
        guard case let .list(items, _) = require(key) else { preconditionFailure("config key \(key) is not a list") }
        return items.map { if case let .int(v) = $0 { return v } else if case let .float(v) = $0 { return Int(v) } else { preconditionFailure("\(key) holds \($0)") } }
    }

    public func doubles(_ key: String) -> [Double] {
        guard case let .list(items, _) = require(key) else { preconditionFailure("config key \(key) is not a list") }
        return items.map { if case let .float(v) = $0 { return v } else if case let .int(v) = $0 { return Double(v) } else { preconditionFailure("\(key) holds \($0)") } }
    }

    public func strings(_ key: String) -> [String] {
        guard case let .list(items, _) = require(key) else { preconditionFailure("config key \(key) is not a list") }
        return items.map { if case let .string(v) = $0 { return v } else { return $0.description } }
    }

    // MARK: Merging

    /// Merges a YAML config file.
    public mutating func merge(file path: String) throws(ConfigError) {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw .unreadable(file: path, reason: FileManager.default.fileExists(atPath: path) ? "not readable UTF-8" : "no such file")
        }
        try merge(yaml: text, source: path)
    }

    /// Merges YAML text; `source` names it in errors.
    public mutating func merge(yaml text: String, source: String) throws(ConfigError) {
        let node: Node?
        do {
            node = try Yams.compose(yaml: text)
        } catch {
            throw .invalidYAML(file: source, reason: "\(error)")
        }
        guard let node else { return }
        guard case .mapping = node else { throw .invalidYAML(file: source, reason: "the top level must be a mapping of keys") }
        var tree = root
        var notes = warnings
        let snapshot = self
        try Self.merge(Self.convert(node), prefix: "", into: &tree, warnings: &notes, suggest: snapshot.suggest)
        root = tree
        warnings = notes
    }

    /// Merges `KEY VALUE` pairs (the command line's remainder), values read as Python literals.
    public mutating func merge(overrides: [String]) throws(ConfigError) {
        guard overrides.count % 2 == 0 else { throw .oddOverrideList(count: overrides.count) }
        for k in stride(from: 0, to: overrides.count, by: 2) {
            let key = overrides[k], raw = overrides[k + 1]
            if Self.deprecated.contains(key) {
                warnings.append("deprecated config key \(key) is ignored")
                continue
            }
            if let (to, hint) = Self.renamed[key] { throw .renamedKey(key, to: to, hint: hint) }
            guard let old = value(key) else { throw .nonExistentKey(key, suggestion: suggest(key)) }
            let decoded = ConfigValue.literal(raw) ?? .string(raw)
            let v = try Self.coerce(decoded, like: old, key: key)
            set(key, v)
        }
    }

    /// Sets a value at a dotted key that exists (no type check: for code, not users).
    public mutating func set(_ key: String, _ v: ConfigValue) {
        func go(_ node: inout [String: ConfigValue], _ parts: ArraySlice<Substring>) {
            let head = String(parts.first!)
            if parts.count == 1 { node[head] = v; return }
            guard case var .node(child) = node[head] else { return }
            go(&child, parts.dropFirst())
            node[head] = .node(child)
        }
        go(&root, key.split(separator: ".")[...])
    }

    private static func merge(_ new: ConfigValue, prefix: String, into tree: inout [String: ConfigValue],
                              warnings: inout [String], suggest: (String) -> String?) throws(ConfigError) {
        guard case let .node(d) = new else { return }
        for k in d.keys.sorted() {
            let full = prefix.isEmpty ? k : prefix + "." + k
            let v = d[k]!
            guard let old = tree[k] else {
                if Self.deprecated.contains(full) {
                    warnings.append("deprecated config key \(full) is ignored")
                    continue
                }
                if let (to, hint) = Self.renamed[full] { throw .renamedKey(full, to: to, hint: hint) }
                throw .nonExistentKey(full, suggestion: suggest(full))
            }
            if case var .node(child) = old {
                guard case .node = v else { throw .typeMismatch(key: full, expected: "dict", got: v.typeName, value: v.description) }
                try merge(v, prefix: full, into: &child, warnings: &warnings, suggest: suggest)
                tree[k] = .node(child)
            } else {
                tree[k] = try Self.coerce(v, like: old, key: full)
            }
        }
    }

    /// Detectron's `_check_and_coerce_cfg_value_type`.
    static func coerce(_ v: ConfigValue, like old: ConfigValue, key: String) throws(ConfigError) -> ConfigValue {
        switch (old, v) {
        case (.none, _): return v
        case (.string, .string): return v
        case (.string, _): return .string(v.description.trimmingCharacters(in: CharacterSet(charactersIn: "'")))
        case (.bool, .bool), (.int, .int), (.float, .float): return v
        case let (.list(_, tuple), .list(items, _)): return .list(items, tuple: tuple)
        case (.node, .node): return v
        default: throw .typeMismatch(key: key, expected: old.typeName, got: v.typeName, value: v.description)
        }
    }

    /// YAML scalars are read as Python literals (`(800,)` is a tuple, `0.5` a float), else kept as strings.
    static func convert(_ node: Node) -> ConfigValue {
        switch node {
        case let .mapping(m):
            var d: [String: ConfigValue] = [:]
            for (k, v) in m { d[k.string ?? "\(k)"] = convert(v) }
            return .node(d)
        case let .sequence(s):
            return .list(s.map(convert), tuple: false)
        case let .scalar(s):
            let text = s.string
            if s.style == .singleQuoted || s.style == .doubleQuoted { return .string(text) }
            switch text {
            case "true", "True", "TRUE", "yes", "Yes", "on", "On": return .bool(true)
            case "false", "False", "FALSE", "no", "No", "off", "Off": return .bool(false)
            case "null", "~", "": return .none
            default: return ConfigValue.literal(text) ?? .string(text)
            }
        case let .alias(a):
            return .string("\(a)")
        }
    }

    /// The closest existing full key, for typos.
    func suggest(_ key: String) -> String? {
        var all: [String] = []
        func walk(_ d: [String: ConfigValue], _ prefix: String) {
            for (k, v) in d {
                let full = prefix.isEmpty ? k : prefix + "." + k
                all.append(full)
                if case let .node(c) = v { walk(c, full) }
            }
        }
        walk(root, "")
        return closestName(to: key, in: all)
    }

    /// The merged config as YAML-like text, keys sorted (printed at start, saved with weights).
    public var description: String {
        var lines: [String] = []
        func walk(_ d: [String: ConfigValue], _ indent: String) {
            for k in d.keys.sorted() {
                if case let .node(c) = d[k]! {
                    lines.append("\(indent)\(k):")
                    walk(c, indent + "  ")
                } else {
                    lines.append("\(indent)\(k): \(d[k]!)")
                }
            }
        }
        walk(root, "")
        return lines.joined(separator: "\n")
    }
}

import Portability

/// A net that a ``Workspace`` can hold by name. The operator layer supplies the implementation.
public protocol WorkspaceNet: AnyObject, Sendable {
    var name: String { get }
}

/// Named blobs and nets, the way Caffe2 holds a model's state.
///
/// Blobs are created on demand (``createBlob(_:)`` returns the existing blob of that name),
/// fed and fetched by name. Releasing the workspace, or calling ``reset()``, drops every blob and
/// net it owns, so all their tensor memory returns to its ``Context`` unless a caller still
/// holds a tensor.
///
/// ## Thread safety
/// Every method may be called from any thread at any time: one lock guards the name tables, and
/// each ``Blob`` guards its own slot. The contents of a tensor are not locked (see ``Tensor``):
/// two threads must not write the same tensor at once, which the executors guarantee by giving
/// every blob a single writer at a time.
public final class Workspace: Sendable {
    /// The context tensors made by this workspace allocate from.
    public let context: any Context

    private struct Tables {
        var blobs: [String: Blob] = [:]
        var nets: [String: any WorkspaceNet] = [:]
    }
    private let tables = Locked(Tables())

    public init(context: any Context) {
        self.context = context
    }

    // MARK: Blobs

    /// The blob called `name`, created empty if it does not exist yet.
    @discardableResult
    public func createBlob(_ name: String) -> Blob {
        tables.withLock { t in
            if let b = t.blobs[name] { return b }
            let b = Blob(name: name, trackedBy: context)
            t.blobs[name] = b
            return b
        }
    }

    /// Whether a blob called `name` exists.
    public func hasBlob(_ name: String) -> Bool { tables.withLock { $0.blobs[name] != nil } }

    /// The blob called `name`; throws naming it (and the closest existing name) when missing.
    public func blob(_ name: String) throws(StorageError) -> Blob {
        let found: Blob? = tables.withLock { $0.blobs[name] }
        guard let found else {
            throw .blobNotFound(name: name, suggestion: closestName(to: name, in: blobNames))
        }
        return found
    }

    /// Stores `tensor` in the blob called `name` (created if needed).
    public func feedBlob(_ name: String, _ tensor: Tensor) { createBlob(name).set(tensor) }

    /// Stores any value in the blob called `name` (created if needed).
    public func feed(_ name: String, value: some Sendable) { createBlob(name).set(value) }

    /// The tensor in the blob called `name`.
    public func fetchBlob(_ name: String) throws(StorageError) -> Tensor { try blob(name).tensor() }

    /// The value of type `T` in the blob called `name`.
    public func fetch<T>(_ name: String, as type: T.Type) throws(StorageError) -> T { try blob(name).get(type) }

    /// Removes the blob called `name`; returns whether it existed.
    @discardableResult
    public func removeBlob(_ name: String) -> Bool {
        tables.withLock { $0.blobs.removeValue(forKey: name) != nil }
    }

    /// The names of all blobs, sorted.
    public var blobNames: [String] { tables.withLock { $0.blobs.keys.sorted() } }

    // MARK: Nets

    /// Adds `net` under its name.
    public func addNet(_ net: any WorkspaceNet, overwrite: Bool = false) throws(StorageError) {
        let clash: Bool = tables.withLock { t in
            if !overwrite, t.nets[net.name] != nil { return true }
            t.nets[net.name] = net
            return false
        }
        if clash { throw .netExists(name: net.name) }
    }

    public func hasNet(_ name: String) -> Bool { tables.withLock { $0.nets[name] != nil } }

    /// The net called `name`.
    public func net(_ name: String) throws(StorageError) -> any WorkspaceNet {
        let found: (any WorkspaceNet)? = tables.withLock { $0.nets[name] }
        guard let found else { throw .netNotFound(name: name, available: netNames) }
        return found
    }

    @discardableResult
    public func removeNet(_ name: String) -> Bool {
        tables.withLock { $0.nets.removeValue(forKey: name) != nil }
    }

    public var netNames: [String] { tables.withLock { $0.nets.keys.sorted() } }

    // MARK: Lifetime

    /// Drops every blob and net. Tensor memory returns to the context unless held elsewhere.
    public func reset() {
        // Take the tables out under the lock, release them outside it: a tensor's deinit must
        // never run while the workspace lock is held.
        let old: Tables = tables.withLock { t in
            let taken = t
            t = Tables()
            return taken
        }
        withExtendedLifetime(old) {}
    }
}

/// The candidate closest to `name` by edit distance, if it is close enough to be a likely typo
/// (at most max(2, a third of the name's length)). Case-blind by ASCII folding, so the answer
/// does not depend on the locale (`train.scale` → `TRAIN.SCALES` under a Turkish locale too).
/// Used for blob, operator and config key names.
public func closestName(to name: String, in candidates: [String]) -> String? {
    func fold(_ s: String) -> [UInt8] { s.utf8.map { ($0 >= 97 && $0 <= 122) ? $0 - 32 : $0 } }
    let target = fold(name)
    var best: (String, Int)?
    for c in candidates {
        let d = editDistance(target, fold(c))
        if d <= max(2, target.count / 3), best == nil || d < best!.1 { best = (c, d) }
    }
    return best?.0
}

private func editDistance(_ a: [UInt8], _ b: [UInt8]) -> Int {
    if a.isEmpty { return b.count }
    if b.isEmpty { return a.count }
    var prev = Array(0...b.count)
    var cur = [Int](repeating: 0, count: b.count + 1)
    for i in 1...a.count {
        cur[0] = i
        for j in 1...b.count {
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
        }
        swap(&prev, &cur)
    }
    return prev[b.count]
}

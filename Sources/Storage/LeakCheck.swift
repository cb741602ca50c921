/// What a leak check found still alive.
public struct LeakReport: Error, Sendable, CustomStringConvertible {
    public var bytes: Int
    public var allocations: Int
    public var tensors: Int
    public var blobs: Int

    public var description: String {
        var parts: [String] = []
        if bytes != 0 { parts.append("\(bytes) bytes") }
        if allocations != 0 { parts.append("\(allocations) allocations") }
        if tensors != 0 { parts.append("\(tensors) tensors") }
        if blobs != 0 { parts.append("\(blobs) blobs") }
        return "Potential leak of " + parts.joined(separator: ", ") + " (more alive than when the check started)"
    }
}

/// A snapshot of a context's live memory, tensors and blobs, checked later for growth — the
/// model is swift-collections' `LifetimeTracker`.
///
/// ```swift
/// let check = LeakCheck(context)
/// try runTrainingIterations()
/// try check.verify()   // throws "Potential leak of 4096 bytes, 1 tensors …"
/// ```
public struct LeakCheck: Sendable {
    public let context: any Context
    public let start: MemoryAccounting

    public init(_ context: any Context) {
        self.context = context
        self.start = context.accounting
    }

    /// What is alive now beyond the snapshot (all zero when nothing leaked).
    public var growth: LeakReport {
        let now = context.accounting
        return LeakReport(bytes: now.liveBytes - start.liveBytes,
                          allocations: now.liveAllocations - start.liveAllocations,
                          tensors: now.liveTensors - start.liveTensors,
                          blobs: now.liveBlobs - start.liveBlobs)
    }

    /// Throws the report unless nothing more is alive than at the snapshot.
    public func verify() throws(LeakReport) {
        let g = growth
        if g.bytes > 0 || g.allocations > 0 || g.tensors > 0 || g.blobs > 0 { throw g }
    }
}

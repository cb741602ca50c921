// The parent process of the data loader's process-worker tests: a guarded executable that
// registers the test datasets, runs loaders as the arguments say and prints what it saw.
// Usage: DataLoaderProbe [options]   (see `Options` below)
import DataLoading
import Foundation
import Glibc
import Portability

/// A deterministic dataset: sample i is 16 floats drawn from its own generator. It can fail,
/// crash or dawdle on request, to test the loader's error paths.
struct NumbersDataset: TransportableDataset {
    struct Sample: ByteCodable, Equatable {
        var index: Int
        var values: [Float]
        func encode(to w: inout ByteWriter) { w.write(Int64(index)); w.write(array: values) }
        init(index: Int, values: [Float]) { self.index = index; self.values = values }
        init(from r: inout ByteReader) throws(ByteReader.Truncated) {
            index = Int(try r.read(Int64.self))
            values = try r.readArray(of: Float.self)
        }
    }
    struct Failure: Error, CustomStringConvertible {
        let index: Int
        var description: String { "sample \(index) is broken on purpose" }
    }

    static let kind = "numbers"
    var count: Int
    var failAt: Int
    var crashAt: Int
    var crashSignal: Int32
    var slowMicros: UInt32

    func element(at index: Int, rng: inout SampleRNG) throws -> Sample {
        if slowMicros > 0 { usleep(slowMicros) }
        if index == failAt { throw Failure(index: index) }
        if index == crashAt && WorkerGuard.currentRole != nil {
            // With a marker path, crash only the first time (tests respawning).
            let marker = ProcessInfo.processInfo.environment["PROBE_CRASH_ONCE"]
            if marker == nil || !FileManager.default.fileExists(atPath: marker!) {
                if let marker { _ = FileManager.default.createFile(atPath: marker, contents: nil) }
                // The default action, not the Swift runtime's crash reporter (which returns from a
                // signal sent with kill).
                signal(crashSignal, SIG_DFL)
                kill(getpid(), crashSignal)
            }
        }
        return Sample(index: index, values: (0..<16).map { _ in Float(rng.unit()) })
    }

    func describe() -> [UInt8] {
        var w = ByteWriter()
        w.write(Int64(count)); w.write(Int64(failAt)); w.write(Int64(crashAt)); w.write(crashSignal); w.write(slowMicros)
        return w.bytes
    }

    init(count: Int, failAt: Int = -1, crashAt: Int = -1, crashSignal: Int32 = SIGKILL, slowMicros: UInt32 = 0) {
        (self.count, self.failAt, self.crashAt, self.crashSignal, self.slowMicros) = (count, failAt, crashAt, crashSignal, slowMicros)
    }

    init(description: [UInt8]) throws {
        var v: NumbersDataset?
        try description.withUnsafeBytes { raw throws in
            var r = ByteReader(raw)
            v = NumbersDataset(count: Int(try r.read(Int64.self)), failAt: Int(try r.read(Int64.self)), crashAt: Int(try r.read(Int64.self)),
                               crashSignal: try r.read(Int32.self), slowMicros: try r.read(UInt32.self))
        }
        self = v!
    }
}

if ProcessInfo.processInfo.environment["PROBE_SKIP_GUARD"] == nil {
    WorkerGuard.enter(roles: [DataLoaderWorker.role: DataLoaderWorker.entry(datasets: [NumbersDataset.self, ImageFolderDataset.self])])
}

func say(_ s: String) { FileHandle.standardOutput.write(Data((s + "\n").utf8)) }

let (opts, flags): ([String: String], Set<String>) = {
    var o: [String: String] = [:], f = Set<String>()
    var argv = Array(CommandLine.arguments.dropFirst())
    while !argv.isEmpty {
        let a = argv.removeFirst()
        if a.hasPrefix("--"), let v = argv.first, !v.hasPrefix("--") { o[String(a.dropFirst(2))] = v; argv.removeFirst() } else { f.insert(String(a.dropFirst(2))) }
    }
    return (o, f)
}()
func int(_ k: String, _ d: Int) -> Int { opts[k].flatMap { Int($0) } ?? d }
if let limit = opts["nproc"].flatMap(Int.init) { _ = Limits.setProcesses(limit) }

var options = DataLoaderOptions()
options.batchSize = int("batch", 4)
options.shuffle = !flags.contains("no-shuffle")
options.seed = UInt64(int("seed", 7))
options.numWorkers = int("workers", 2)
options.workerKind = opts["kind"] == "threads" ? .threads : .processes
options.persistentWorkers = flags.contains("persistent")
options.respawnDeadWorkers = flags.contains("respawn")
options.fallbackToMainThread = !flags.contains("no-fallback")
if let t = opts["timeout"].flatMap(Double.init) { options.timeout = t }
if let p = opts["prefetch"].flatMap(Int.init) { options.prefetchFactor = p }
if let shm = opts["dev-shm"] { options.sharedMemory = SharedMemoryPolicy(devShmPath: shm, memfdAvailable: false, environment: ["DETECTRON_SHM_TRANSPORT": "shm"]) }
options.warn = { say("warning: \($0)") }
let epochs = int("epochs", 1)

/// A batch's fingerprint: its indices and the sum of its values.
func fingerprint(_ b: [NumbersDataset.Sample]) -> String {
    "\(b.map(\.index)) \(b.reduce(0.0) { $0 + $1.values.reduce(0.0) { $0 + Double($1) } })"
}

/// Processes whose parent is this one (live or zombie).
func childProcesses() -> Int {
    let me = getpid()
    return ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap(Int32.init).filter { pid in
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return false }
        let fields = stat[stat.index(close, offsetBy: 2)...].split(separator: " ")
        return fields.count > 1 && Int32(fields[1]) == me
    }.count
}

/// RSS after returning freed heap pages to the kernel (`malloc_trim`), so the figure follows live
/// memory rather than how the allocator happened to keep freed blocks.
func rssKB() -> Int {
    Heap.trim()
    let f = ((try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8)) ?? "0 0").split(separator: " ")
    return (Int(f[1]) ?? 0) * Int(sysconf(Int32(_SC_PAGESIZE))) / 1024
}

do {
    if let dir = opts["images"] {
        let ds = try ImageFolderDataset(directory: dir, scale: int("scale", 64), maxSize: int("max-size", 96))
        let loader = try DataLoader(transportable: ds, options: options) { $0 }
        for e in 0..<epochs {
            let it = try loader.makeIterator(epoch: e)
            var n = 0
            while let b = try it.next() { n += b.count }
            let r = loader.resources
            say("epoch \(e) images \(n) rss \(rssKB()) fds \(r.openDescriptors) processes \(r.workerProcesses) segments \(r.sharedSegments)")
        }
        if let reason = loader.fallbackReason { say("fallback \(reason)") }
    } else {
        let ds = NumbersDataset(count: int("count", 40), failAt: int("fail-at", -1), crashAt: int("crash-at", -1),
                                crashSignal: Int32(int("crash-signal", Int(SIGKILL))), slowMicros: UInt32(int("slow-us", 0)))
        let loader = try DataLoader(transportable: ds, options: options) { $0 }
        var reference = options
        reference.numWorkers = 0
        reference.persistentWorkers = false
        reference.prefetchFactor = nil
        reference.timeout = 0
        let mainThread = try DataLoader(dataset: ds, options: reference) { $0 }
        for e in 0..<epochs {
            let got = try loader.makeIterator(epoch: e).collect().map(fingerprint)
            let want = try mainThread.makeIterator(epoch: e).collect().map(fingerprint)
            say("epoch \(e) batches \(got.count) \(got == want ? "identical" : "DIFFERENT") first \(got.first ?? "-")")
        }
        if let reason = loader.fallbackReason { say("fallback \(reason)") }
        let r = loader.resources
        say("resources processes \(r.workerProcesses) segments \(r.sharedSegments)")
    }
    say("children \(childProcesses())")
    say("done")
} catch {
    say("error \(error)")
    exit(3)
}

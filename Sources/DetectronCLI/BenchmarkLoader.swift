import ArgumentParser
import DataLoading
import Foundation
import Imaging
import Portability
import Storage

/// `detectron benchmark-loader`: images/s of the Detectron input pipeline over a folder of images (JPEG, PNG).
struct BenchmarkLoader: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "benchmark-loader",
        abstract: "Run the Detectron image pipeline (decode, scale, mean subtraction, batching) over a folder of images (JPEG or PNG, by content) and print images/s.",
        discussion: "The last line is one JSON object: images_per_s, seconds, images, workers, kind, batch_size, decode_only. Use a release build."
    )

    @Option(help: "A folder of images (JPEG or PNG).") var images: String
    @Option(help: "Worker count (0: the calling thread).") var workers = 2
    @Option(help: "threads or processes.") var kind: WorkerKind = .threads
    @Option(name: .customLong("batch-size"), help: "Images per batch.") var batchSize = 2
    @Option(name: .customLong("prefetch-factor"), help: "Batches in flight per worker (PyTorch's prefetch_factor; default 2).") var prefetchFactor: Int?
    @Option(help: "Passes over the folder (the first is a warm-up and not timed).") var epochs = 3
    @Option(help: "Shorter side (TEST.SCALE).") var scale = 500
    @Option(name: .customLong("max-size"), help: "Longest side (TEST.MAX_SIZE).") var maxSize = 833
    @Flag(help: "Decode at 1/2, 1/4 or 1/8 in the DCT domain when the target allows (faster, not bit-exact with Detectron).") var dct = false
    @Flag(name: .customLong("decode-only"), help: "Only decode the files, one thread, no loader: the raw libjpeg-turbo rate.") var decodeOnly = false

    func run() throws {
        let ds = try ImageFolderDataset(directory: images, scale: scale, maxSize: maxSize, dctDownscale: dct)
        guard ds.count > 0 else { throw ValidationError("\(images) holds no JPEG or PNG images") }
        var timed = 0
        var seconds = 0.0
        if decodeOnly {
            let files = ds.files.map { try? JPEG.readFile($0) }
            for epoch in 0..<epochs {
                let t0 = Date()
                for bytes in files { if let bytes { _ = try ImageFile.decode(bytes, order: .bgr) } }
                if epoch > 0 {
                    seconds += Date().timeIntervalSince(t0)
                    timed += files.count
                }
            }
        } else {
            var o = DataLoaderOptions()
            o.batchSize = batchSize
            o.numWorkers = workers
            o.workerKind = kind
            o.persistentWorkers = workers > 0
            o.prefetchFactor = workers > 0 ? prefetchFactor : nil
            o.shuffle = true
            // Batches are 8 MB: reuse their blocks (the ones in flight and the one in use).
            let ctx = CPUContext(cacheBytes: 1 << 28)
            let loader = try DataLoader(transportable: ds, options: o) { items in try Collate.images(items, context: ctx).0 }
            for epoch in 0..<epochs {
                let t0 = Date()
                let it = try loader.makeIterator(epoch: epoch)
                var n = 0
                while let blob = try it.next() { n += blob.dim(0) }
                if epoch > 0 {
                    seconds += Date().timeIntervalSince(t0)
                    timed += n
                }
            }
            if let reason = loader.fallbackReason { print("note: workers fell back to the calling thread: \(reason)") }
        }
        let rate = Double(timed) / max(seconds, 1e-9)
        print(String(format: "%@: %.1f images/s (%d images in %.2f s, %d %@ worker(s), batch %d)",
                     decodeOnly ? "decode only" : "pipeline", rate, timed, seconds, decodeOnly ? 0 : workers, kind.rawValue, batchSize))
        let json: [String: Any] = ["images_per_s": (rate * 10).rounded() / 10, "seconds": seconds, "images": timed,
                                   "workers": decodeOnly ? 0 : workers, "kind": kind.rawValue, "batch_size": batchSize, "decode_only": decodeOnly]
        print(String(decoding: try JSONSerialization.data(withJSONObject: json, options: [.sortedKeys]), as: UTF8.self))
    }
}

extension WorkerKind: ExpressibleByArgument {}

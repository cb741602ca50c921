@testable import Engine
import Foundation
import Imaging
import Portability
import Testing

@Suite("Inference over many files", .serialized)
struct InferTests {
    @Test("infer over a directory with a corrupt JPEG: reported and skipped, the others (JPEG and PNG) done, non-zero exit with the count; --fail-fast stops at it")
    func survivesBadFile() throws {
        let (spec, _, dir) = try tinyDataset()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // Weights: one training iteration of the tiny model.
        let train = try Processes.run(ProcessConfiguration(executable: detectronExecutable,
                                                           arguments: ["train", "--skip-test", "--cfg", shapesConfig] + tinyConfig(dataset: spec, output: dir + "/out", maxIter: 1)),
                                      timeout: 300)
        try #require(train.status.isSuccess, "\(train.error.suffix(1000))")
        let images = dir + "/images"
        try FileManager.default.createDirectory(atPath: images, withIntermediateDirectories: true)
        let good = try JPEG.readFile(dir + "/a.jpg")
        _ = FileManager.default.createFile(atPath: images + "/1_photo.jpg", contents: Data(good))
        _ = FileManager.default.createFile(atPath: images + "/0_broken.jpg", contents: Data(good.prefix(good.count / 3)))
        try JPEG.decode(good).write(to: images + "/2_scan.png")
        _ = FileManager.default.createFile(atPath: images + "/notes.txt", contents: Data("not an image".utf8))
        func infer(_ extra: [String], out: String) throws -> (status: TerminationStatus, output: String, error: String) {
            try Processes.run(ProcessConfiguration(executable: detectronExecutable,
                                                   arguments: ["infer", "--cfg", shapesConfig, "--weights", dir + "/out/train/model_final.safetensors",
                                                               "--output-dir", out] + extra + [images] + tinyConfig(dataset: spec, output: dir + "/out", maxIter: 1)), timeout: 300)
        }
        let r = try infer([], out: dir + "/infer")
        #expect(!r.status.isSuccess)
        let log = r.output + r.error
        #expect(log.contains("0_broken.jpg: skipped:") && log.contains("truncated"), "\(log.suffix(1500))")
        #expect(log.contains("1 of 3 images could not be processed"), "\(log.suffix(1500))")
        let written = try FileManager.default.contentsOfDirectory(atPath: dir + "/infer").sorted()
        #expect(written == ["1_photo.jpg", "1_photo.json", "2_scan.jpg", "2_scan.json"], "\(written)")
        let fast = try infer(["--fail-fast"], out: dir + "/infer-fast")
        #expect(!fast.status.isSuccess)
        #expect((fast.output + fast.error).contains("--fail-fast"), "\(fast.error.suffix(800))")
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: dir + "/infer-fast")) ?? []).isEmpty)
    }
}

import DataLoading
import Foundation
import Glibc
import Imaging
import Portability
import Testing

/// The probe executable (a guarded parent for process workers), beside the test bundle.
let loaderProbe: String = {
    let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    return URL(fileURLWithPath: exe).deletingLastPathComponent().appendingPathComponent("DataLoaderProbe").path
}()

/// Runs the probe; returns its status and output lines.
func runProbe(_ args: [String], env extra: [String: String] = [:], asNobody: Bool = false, timeout: Double = 120) throws -> (TerminationStatus, [String]) {
    var env = ProcessInfo.processInfo.environment
    env["SWIFT_BACKTRACE"] = "enable=no"
    for (k, v) in extra { env[k] = v }
    var config: ProcessConfiguration
    if asNobody {
        config = ProcessConfiguration(executable: "setpriv", arguments: ["--reuid=65534", "--regid=65534", "--clear-groups", loaderProbe] + args, environment: env)
    } else {
        config = ProcessConfiguration(executable: loaderProbe, arguments: args, environment: env)
    }
    let r = try Processes.run(config, timeout: timeout)
    return (r.status, r.output.split(separator: "\n").map(String.init))
}

/// A dataset of numbers with optional failures, for in-process tests.
struct Numbers: Dataset {
    struct Broken: Error, CustomStringConvertible {
        let index: Int
        var description: String { "sample \(index) is broken" }
    }
    var count: Int
    var failAt = -1
    var slowMicros: UInt32 = 0
    func element(at index: Int, rng: inout SampleRNG) throws -> [Double] {
        if slowMicros > 0 { usleep(slowMicros) }
        if index == failAt { throw Broken(index: index) }
        return [Double(index), rng.unit()]
    }
}

/// A directory of `count` small JPEGs (varied sizes and orientations).
func makeJPEGFolder(_ count: Int, corruptAt: Int? = nil) throws -> String {
    let dir = NSTemporaryDirectory() + "sd-loader-jpegs-\(UInt32.random(in: 0...UInt32.max))"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    for i in 0..<count {
        let (w, h) = i % 3 == 0 ? (40, 56) : (64, 48)
        var img = Image(width: w, height: h, channels: 3, fill: UInt8(i % 200))
        img.fill(x1: i % 20, y1: 3, x2: i % 20 + 10, y2: 20, Color(255, UInt8(i % 256), 0))
        var bytes = try JPEG.encode(img, quality: 85)
        if i == corruptAt { bytes = Array(bytes.prefix(bytes.count / 3)) }
        _ = FileManager.default.createFile(atPath: dir + String(format: "/img_%04d.jpg", i), contents: Data(bytes))
    }
    chmod(dir, 0o755)
    return dir
}

import Foundation
import PackagePlugin

/// `swift package portability-test [--filter X]`: builds the tests and runs the portability test
/// suite (module PortabilityTests), printing each result and a closing summary line.
@main
struct PortabilityTestPlugin: CommandPlugin {
    func performCommand(context: PluginContext, arguments: [String]) async throws {
        let build = try packageManager.build(.all(includingTests: true), parameters: .init(configuration: .debug, echoLogs: false))
        guard build.succeeded else {
            Diagnostics.error("building the tests failed:\n\(build.logText)")
            return
        }
        // The test bundle is an executable on Linux; swift-testing runs in it.
        let bundle = context.package.directoryURL
            .appendingPathComponent(".build/debug/\(context.package.displayName)PackageTests.xctest")
        var filter = ["PortabilityTests"]
        if let i = arguments.firstIndex(of: "--filter"), i + 1 < arguments.count { filter = [arguments[i + 1]] }
        let process = Process()
        process.executableURL = bundle
        process.arguments = ["--testing-library", "swift-testing"] + filter.flatMap { ["--filter", $0] }
        process.currentDirectoryURL = context.package.directoryURL
        try process.run()
        process.waitUntilExit()
        print(process.terminationStatus == 0
              ? "portability suite: passed"
              : "portability suite: FAILED (exit \(process.terminationStatus))")
        if process.terminationStatus != 0 {
            Diagnostics.error("the portability test suite failed")
        }
    }
}

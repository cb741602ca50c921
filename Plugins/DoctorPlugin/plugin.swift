import Foundation
import PackagePlugin

/// `swift package doctor [--json] [--output-dir D]`: builds `detectron` and runs its doctor.
@main
struct DoctorPlugin: CommandPlugin {
    func performCommand(context: PluginContext, arguments: [String]) async throws {
        let result = try packageManager.build(.product("detectron"), parameters: .init(configuration: .debug, echoLogs: false))
        guard result.succeeded, let exe = result.builtArtifacts.first(where: { $0.kind == .executable }) else {
            Diagnostics.error("building detectron failed:\n\(result.logText)")
            return
        }
        let process = Process()
        process.executableURL = exe.url
        process.arguments = ["doctor"] + arguments
        try process.run()
        process.waitUntilExit()
        if process.terminationStatus != 0 {
            Diagnostics.error("detectron doctor exited with status \(process.terminationStatus)")
        }
    }
}

import Foundation
import PackagePlugin

/// `swift package portability-test`: runs the portability test suite and prints its report.
@main
struct PortabilityTestPlugin: CommandPlugin {
    func performCommand(context: PluginContext, arguments: [String]) async throws {
        let result = try packageManager.test(.filtered(["PortabilityTests"]), parameters: .init(enableCodeCoverage: false))
        print(result.testTargets.isEmpty ? "no test results were reported" : "")
        var passed = 0, failed = 0, skipped = 0
        for target in result.testTargets {
            for testCase in target.testCases {
                for test in testCase.tests {
                    switch test.result {
                    case .succeeded: passed += 1
                    case .failed: failed += 1; print("FAILED \(testCase.name).\(test.name)")
                    case .skipped: skipped += 1
                    @unknown default: break
                    }
                }
            }
        }
        print("portability suite: \(passed) passed, \(failed) failed, \(skipped) skipped")
        if !result.succeeded {
            Diagnostics.error("the portability test suite failed")
        }
    }
}

import ArgumentParser

struct Detectron: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "detectron",
        abstract: "SwiftDetectron: a portable, Swift-native Detectron.",
        subcommands: [Train.self, Test.self, Infer.self, Doctor.self, MakeShapes.self, Evaluate.self, BenchmarkModel.self, BenchmarkConv.self, BenchmarkLoader.self, ScaleSchedule.self, ConvertWeights.self, InspectWeights.self, CheckConfigs.self]
    )
}

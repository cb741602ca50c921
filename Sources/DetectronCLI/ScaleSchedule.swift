import ArgumentParser
import Engine
import Portability

struct ScaleSchedule: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "scale-schedule",
        abstract: "Rescale a config's schedule for another replica count (Detectron's linear scaling rule).",
        discussion: """
        BASE_LR × to/from; MAX_ITER and STEPS ÷ to/from; warm-up and SNAPSHOT_ITERS unchanged (the trainer \
        divides SNAPSHOT_ITERS by NUM_GPUS itself). Prints a YAML fragment to merge over the config, and the same \
        values as KEY VALUE overrides; --output writes the fragment atomically instead.
        """
    )
    @OptionGroup var options: ConfigOptions
    @Option(name: .customLong("from-gpus"), help: "The replica count the config's schedule is written for.") var fromGPUs: Int
    @Option(name: .customLong("to-gpus"), help: "The replica count to train with.") var toGPUs: Int
    @Option(help: "Write the YAML fragment here instead of printing it.") var output: String?

    func run() throws {
        let cfg = try options.load(print: false)
        let s = try ScheduleScaling(cfg, from: fromGPUs, to: toGPUs)
        if let output {
            try Files.writeAtomically(Array(s.yaml.utf8), to: output)
            print("wrote \(output)")
        } else {
            print(s.yaml, terminator: "")
        }
        for note in s.rounded { print("# rounded: \(note)") }
        print("# overrides: " + s.overrides.map { $0.contains(" ") ? "'\($0)'" : $0 }.joined(separator: " "))
    }
}

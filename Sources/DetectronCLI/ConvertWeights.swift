import ArgumentParser
import Engine

struct ConvertWeights: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "convert-weights",
        abstract: "Write weights in this engine's checkpoint format (safetensors).",
        discussion: """
        Reads Detectron pickles — model-zoo checkpoints ({'blobs': …, 'cfg': …}) and ImageNet-pretrained bodies (a flat \
        dict, with _bn_s/_bn_b AffineChannel blobs) —, torchvision's fasterrcnn_resnet50_fpn state_dicts (torch.save .pth or \
        safetensors; names mapped to Detectron's, FrozenBatchNorm2d folded into AffineChannel), or this engine's own \
        checkpoints, and writes OUT atomically (Detectron blob names, gpu_0/ scopes dropped). Python objects in the file \
        are never executed.
        """
    )
    @Argument(help: "Weights to read (.pkl, .pth or .safetensors).") var input: String
    @Argument(help: "The checkpoint to write (.safetensors).") var output: String

    func run() throws {
        let contents = try Checkpoint.read(input)
        let names = contents.blobs.keys.sorted()
        try Checkpoint.write(names.map { (name: $0, shape: contents.blobs[$0]!.shape, values: contents.blobs[$0]!.values) },
                             metadata: contents.metadata.merging(["converted_from": input]) { _, new in new }, to: output)
        let values = contents.blobs.values.reduce(0) { $0 + $1.values.count }
        print("wrote \(output): \(names.count) blobs, \(values) values (from \(contents.metadata["format"] ?? "safetensors") \(input))")
    }
}

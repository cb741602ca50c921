import Foundation
import Imaging
import Testing

struct TorchvisionResizeCase: Decodable {
    var width: Int, height: Int, min_size: Int, max_size: Int
    var mean: [Float], std: [Float]
    var input: [UInt8], output: [Float]
    var out_width: Int, out_height: Int
}

@Suite("torchvision's detection transform")
struct TorchvisionTransformTests {
    // Fixtures: tools/make_torchvision_fixtures.py (GeneralizedRCNNTransform.normalize + resize).
    @Test("normalise + resize match GeneralizedRCNNTransform (sizes exact, values ≤ 1e-5)", arguments: 0..<5)
    func matchesTorchvision(_ i: Int) throws {
        let url = try #require(Bundle.module.url(forResource: "case\(i)", withExtension: "json", subdirectory: "Fixtures/torchvision_resize"))
        let c = try JSONDecoder().decode(TorchvisionResizeCase.self, from: Data(contentsOf: url))
        let image = Image(width: c.width, height: c.height, channels: 3, order: .rgb, pixels: c.input)
        let (out, _) = TorchvisionTransform.prepare(image, mean: c.mean, std: c.std, minSize: c.min_size, maxSize: c.max_size)
        #expect(out.width == c.out_width && out.height == c.out_height)
        // Both CHW.
        let worst = zip(out.pixels, c.output).map { abs($0 - $1) }.max() ?? .infinity
        #expect(worst <= 1e-5, "max difference \(worst)")
    }

    @Test("BGR input is converted: the same result as RGB")
    func channelOrder() {
        let rgb = Image(width: 5, height: 3, channels: 3, order: .rgb, pixels: (0..<45).map { UInt8($0 * 5) })
        let m: [Float] = [0.485, 0.456, 0.406], s: [Float] = [0.229, 0.224, 0.225]
        let a = TorchvisionTransform.prepare(rgb, mean: m, std: s, minSize: 6, maxSize: 20).0
        let b = TorchvisionTransform.prepare(rgb.converted(to: .bgr), mean: m, std: s, minSize: 6, maxSize: 20).0
        #expect(a == b)
    }

    @Test("size rule: floor(side × min(min/short, max/long)) in double, as eager PyTorch")
    func sizeRule() {
        // 800/480 · 480 = 800.0000000000001 in double (799.99994 in float32): 800 rows.
        let r = TorchvisionTransform.resizedSize(width: 640, height: 480, minSize: 800, maxSize: 1333)
        #expect(r.width == 1066 && r.height == 800)
        let tall = TorchvisionTransform.resizedSize(width: 333, height: 500, minSize: 800, maxSize: 1333)
        #expect(tall.width == 800 && tall.height == 1201)
        let bounded = TorchvisionTransform.resizedSize(width: 1000, height: 300, minSize: 800, maxSize: 1333)
        #expect(bounded.width == 1333 && bounded.height == 399)
    }
}

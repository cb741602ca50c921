@testable import Engine
import Foundation
import Imaging
import Testing

@Suite("Training plot")
struct TrainingPlotTests {
    /// json_stats lines as a Faster R-CNN run logs them, with two periodic evaluations.
    static var stats: [[String: Any]] { (0..<10).map { i -> [String: Any] in
        let f = 1 / Double(i + 1)
        return ["iter": i * 20 + 19, "lr": 0.02, "loss": 2 * f, "loss_rpn_cls_fpn2": 0.2 * f, "loss_rpn_cls_fpn3": 0.1 * f,
                "loss_rpn_bbox_fpn2": 0.1 * f, "loss_cls": 0.8 * f, "loss_bbox": 0.6 * f, "accuracy_cls": 0.9]
    } + [["iter": 99, "eval_dataset": "shapes_val", "AP": 0.4], ["iter": 199, "eval_dataset": "shapes_val", "AP": 0.6]] }

    @Test("the total, each loss family (RPN levels summed), the learning rate on its own axis and the AP points")
    func series() throws {
        let chart = TrainingPlot.chart(Self.stats)
        #expect(chart.series.map(\.name) == ["total loss", "RPN cls", "RPN box", "Fast R-CNN cls", "Fast R-CNN box",
                                             "box AP (shapes_val)", "learning rate"])
        let rpn = try #require(chart.series.first { $0.name == "RPN cls" })
        #expect(rpn.points.count == 10 && abs(rpn.points[0].y - 0.3) < 1e-12 && rpn.points[0].x == 20)
        #expect(chart.series.last?.axis == .secondary)
        #expect(chart.series.first { $0.name.hasPrefix("box AP") }?.style == .markers)
        let dir = NSTemporaryDirectory() + "sd-plot-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try TrainingPlot.write(stats: Self.stats, to: dir + "/loss_curve")
        let svg = try String(contentsOfFile: dir + "/loss_curve.svg", encoding: .utf8)
        #expect(svg.contains("data-name=\"Fast R-CNN box\"") && svg.contains("learning rate"))
        let png = try ImageFile.decode(contentsOf: dir + "/loss_curve.png")
        #expect(png.width == chart.width && png.height == chart.height)
    }
}

import COCO
import Foundation
import Imaging
import Portability

/// The training plot, `loss_curve.svg` and `loss_curve.png` in OUTPUT_DIR/train: the total loss
/// and each loss family (RPN cls/box summed over the FPN levels, Fast R-CNN cls/box, and any other
/// `loss_*` family a model logs, e.g. mask or keypoints) against the iteration, the box AP of
/// periodic evaluation as points on the same axis, and the learning rate on its own axis on the
/// right. Drawn from training_stats.jsonl, so a resumed run's plot covers the whole run.
enum TrainingPlot {
    /// The json_stats object of an evaluation during training (one per test dataset).
    static func evaluationStats(iteration: Int, dataset: String, result: COCOEvaluator.Result) -> [String: Any] {
        var json: [String: Any] = ["iter": iteration, "eval_dataset": dataset]
        for (name, v) in zip(COCOEvaluator.Result.statNames, result.stats).prefix(6) { json[name] = v }
        return json
    }

    /// A loss key's family: the per-level RPN losses are one family each.
    static func family(_ key: String) -> String? {
        guard key.hasPrefix("loss_") else { return nil }
        if let r = key.range(of: "_fpn", options: .backwards), key[r.upperBound...].allSatisfy(\.isNumber) {
            return String(key[..<r.lowerBound])
        }
        return key
    }

    /// The known families in plotting order, with their legend names; others follow by name.
    static let knownFamilies = [("loss_rpn_cls", "RPN cls"), ("loss_rpn_bbox", "RPN box"), ("loss_cls", "Fast R-CNN cls"),
                                ("loss_bbox", "Fast R-CNN box"), ("loss_mask", "mask"), ("loss_kps", "keypoints")]

    static let palette = [Color(31, 119, 180), Color(255, 127, 14), Color(44, 160, 44), Color(214, 39, 40),
                          Color(148, 103, 189), Color(140, 86, 75), Color(227, 119, 194), Color(23, 190, 207)]

    /// The chart of a run's json_stats lines.
    static func chart(_ stats: [[String: Any]]) -> LineChart {
        var total: [LineChart.Point] = [], lr: [LineChart.Point] = []
        var families: [String: [LineChart.Point]] = [:]
        var ap: [String: [LineChart.Point]] = [:]
        for line in stats {
            guard let it = line["iter"] as? Int else { continue }
            let x = Double(it + 1)
            if let dataset = line["eval_dataset"] as? String, let v = line["AP"] as? Double {
                ap[dataset, default: []].append(LineChart.Point(x: x, y: v))
                continue
            }
            guard let loss = line["loss"] as? Double else { continue }
            total.append(LineChart.Point(x: x, y: loss))
            if let v = line["lr"] as? Double { lr.append(LineChart.Point(x: x, y: v)) }
            var sums: [String: Double] = [:]
            for (k, v) in line {
                if let f = family(k), let v = v as? Double { sums[f, default: 0] += v }
            }
            for (f, v) in sums { families[f, default: []].append(LineChart.Point(x: x, y: v)) }
        }
        var series = [LineChart.Series(name: "total loss", points: total, color: palette[0])]
        let rank = { (f: String) in knownFamilies.firstIndex { $0.0 == f } ?? knownFamilies.count }
        for (i, f) in families.keys.sorted(by: { (rank($0), $0) < (rank($1), $1) }).enumerated() {
            let name = rank(f) < knownFamilies.count ? knownFamilies[rank(f)].1 : f
            series.append(LineChart.Series(name: name, points: families[f]!, color: palette[(i + 1) % palette.count]))
        }
        for (i, d) in ap.keys.sorted().enumerated() {
            series.append(LineChart.Series(name: "box AP (\(d))", points: ap[d]!, color: Color(0, 0, 0).mixed(i), style: .markers))
        }
        series.append(LineChart.Series(name: "learning rate", points: lr, color: Color(127, 127, 127), axis: .secondary))
        return LineChart(title: "training", xLabel: "iteration", yLabel: "loss / box AP", secondaryYLabel: "learning rate", series: series)
    }

    /// Writes `base.svg` and `base.png` atomically.
    static func write(stats: [[String: Any]], to base: String) throws {
        let c = chart(stats)
        try Files.writeAtomically(Array(c.svg().utf8), to: base + ".svg")
        try c.render().write(to: base + ".png")
    }
}

private extension Color {
    /// Black, then darker greys, for the AP markers of several datasets.
    func mixed(_ i: Int) -> Color { let v = UInt8(min(160, i * 60)); return Color(v, v, v) }
}

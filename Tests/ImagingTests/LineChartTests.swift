import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import Imaging
import Testing

/// One element of a parsed SVG: its name, attributes, text (entities decoded) and parent's index.
struct SVGNode {
    var name: String
    var attributes: [String: String]
    var text = ""
    var parent: Int?

    subscript(_ attribute: String) -> String? { attributes[attribute] }
}

/// Collects every element of a document in document order.
final class SVGCollector: NSObject, XMLParserDelegate {
    var nodes: [SVGNode] = []
    private var open: [Int] = []

    func parser(_ parser: XMLParser, didStartElement elementName: String, namespaceURI: String?, qualifiedName qName: String?,
                attributes attributeDict: [String: String] = [:]) {
        nodes.append(SVGNode(name: elementName, attributes: attributeDict, parent: open.last))
        open.append(nodes.count - 1)
    }

    func parser(_ parser: XMLParser, foundCharacters string: String) {
        if let i = open.last { nodes[i].text += string }
    }

    func parser(_ parser: XMLParser, didEndElement elementName: String, namespaceURI: String?, qualifiedName qName: String?) {
        _ = open.popLast()
    }
}

/// Parses `svg` with Foundation's XMLParser: whether it is well-formed, and its elements.
func parseSVG(_ svg: String) -> (ok: Bool, nodes: [SVGNode]) {
    let parser = XMLParser(data: Data(svg.utf8))
    let collector = SVGCollector()
    parser.delegate = collector
    let ok = parser.parse()
    return (ok, collector.nodes)
}

/// A compact tick label's value: "1.5k" → 1500, "0.25" → 0.25, "2e-12" → 2e-12.
func tickValue(_ label: String) -> Double? {
    let units: [Character: Double] = ["k": 1e3, "M": 1e6, "G": 1e9]
    var text = label
    var unit = 1.0
    if let last = text.last, let u = units[last] {
        text.removeLast()
        unit = u
    }
    return Double(text).map { $0 * unit }
}

/// The values of one axis's tick labels, in document order (nil for an unparsable label).
func tickValues(_ nodes: [SVGNode], axis: String) -> [Double?] {
    nodes.filter { $0.name == "text" && $0["class"] == "tick" && $0["data-axis"] == axis }.map { tickValue($0.text) }
}

/// The plot area, from the clip path's rectangle.
func plotArea(_ nodes: [SVGNode]) throws -> (left: Double, top: Double, right: Double, bottom: Double) {
    let rect = try #require(nodes.first { $0["class"] == "plot-area" })
    var v: [Double] = []
    for key in ["x", "y", "width", "height"] {
        let value = try #require(rect[key].flatMap { Double($0) }, "plot-area \(key)")
        v.append(value)
    }
    return (v[0], v[1], v[0] + v[2], v[1] + v[3])
}

/// How many pixels of `image` (RGB) in the given columns and rows are exactly `color`.
func pixelCount(_ image: Image, _ color: Color, x: ClosedRange<Int>, y: ClosedRange<Int>) -> Int {
    let (x0, x1) = (max(0, x.lowerBound), min(image.width - 1, x.upperBound))
    let (y0, y1) = (max(0, y.lowerBound), min(image.height - 1, y.upperBound))
    guard x0 <= x1, y0 <= y1 else { return 0 }
    var n = 0
    for row in y0...y1 {
        for col in x0...x1 {
            let i = (row * image.width + col) * 3
            if image.pixels[i] == color.r && image.pixels[i + 1] == color.g && image.pixels[i + 2] == color.b { n += 1 }
        }
    }
    return n
}

func pixel(_ image: Image, _ x: Int, _ y: Int) -> Color {
    let i = (y * image.width + x) * 3
    return Color(image.pixels[i], image.pixels[i + 1], image.pixels[i + 2])
}

@Suite("Line chart (SVG and raster)")
struct LineChartTests {
    /// Losses, the learning rate on the right axis and sparse AP markers, as the trainer plots them.
    static func trainingChart() -> LineChart {
        let t: [Double] = stride(from: 0.0, through: 1480.0, by: 20.0).map { $0 }
        func curve(_ f: (Double) -> Double) -> [LineChart.Point] { t.map { LineChart.Point(x: $0, y: f($0)) } }
        let p = LineChart.palette
        let ap: [LineChart.Point] = [250.0, 750.0, 1250.0].map { LineChart.Point(x: $0, y: 0.1 + $0 / 5000) }
        return LineChart(
            title: "Training: retinanet_R-50-FPN_1x", xLabel: "iteration", yLabel: "loss", secondaryYLabel: "learning rate",
            series: [
                LineChart.Series(name: "loss", points: curve { 0.3 + 2.0 * exp(-$0 / 400) }, color: p[0]),
                LineChart.Series(name: "loss_cls", points: curve { 0.1 + 1.2 * exp(-$0 / 300) }, color: p[1]),
                LineChart.Series(name: "loss_box_reg", points: curve { 0.2 + 0.6 * exp(-$0 / 500) }, color: p[2]),
                LineChart.Series(name: "lr", points: curve { 0.02 * min(1, ($0 + 1) / 500) }, color: p[3], axis: .secondary),
                LineChart.Series(name: "AP", points: ap, color: p[4], style: .markers),
            ])
    }

    /// What every chart must satisfy: well-formed SVG with an svg root of the chart's size, the
    /// axes, increasing tick labels on each axis, exactly one series element per series, no
    /// non-finite coordinates; and a rendered image of the chart's size.
    @discardableResult
    static func checkValid(_ chart: LineChart, _ context: String) throws -> [SVGNode] {
        let svg = chart.svg()
        let (ok, nodes) = parseSVG(svg)
        try #require(ok, "\(context): SVG does not parse")
        #expect(svg.contains("xmlns=\"http://www.w3.org/2000/svg\""), "\(context)")
        #expect(nodes.first?.name == "svg", "\(context)")
        #expect(nodes.first?["width"] == String(max(1, chart.width)), "\(context)")
        #expect(nodes.first?["height"] == String(max(1, chart.height)), "\(context)")
        let axes = Set(nodes.filter { $0["class"] == "axis" }.compactMap { $0["data-axis"] })
        #expect(axes.isSuperset(of: ["x", "y"]), "\(context)")
        for axis in ["x", "y", "y2"] {
            let values = tickValues(nodes, axis: axis)
            #expect(!values.contains(nil), "\(context): unparsable \(axis) tick label")
            let numbers = values.compactMap { $0 }
            #expect(zip(numbers, numbers.dropFirst()).allSatisfy { $0 < $1 }, "\(context): \(axis) ticks \(numbers)")
            #expect(numbers.allSatisfy { $0.isFinite }, "\(context)")
        }
        let seriesNodes = nodes.filter { $0["class"] == "series" }
        #expect(seriesNodes.count == chart.series.count, "\(context)")
        for series in chart.series {
            #expect(seriesNodes.filter { $0["data-name"] == series.name }.count == 1, "\(context): \(series.name)")
        }
        for node in nodes where node.name == "path" || node.name == "circle" || node.name == "line" {
            for key in ["d", "cx", "cy", "x1", "y1", "x2", "y2"] {
                if let value = node[key] { #expect(!value.contains("nan") && !value.contains("inf"), "\(context): \(key)=\(value)") }
            }
        }
        let image = chart.render()
        #expect(image.width == max(1, chart.width) && image.height == max(1, chart.height) && image.channels == 3, "\(context)")
        #expect(image.pixels.count == image.width * image.height * 3, "\(context)")
        return nodes
    }

    @Test("the SVG parses with axes, increasing nice ticks, the axis titles, the legend and one element per series")
    func svgStructure() throws {
        let chart = Self.trainingChart()
        let nodes = try Self.checkValid(chart, "training chart")
        #expect(Set(nodes.filter { $0["class"] == "axis" }.compactMap { $0["data-axis"] }) == ["x", "y", "y2"])
        for axis in ["x", "y", "y2"] {
            #expect((4...8).contains(tickValues(nodes, axis: axis).count), "\(axis)")
        }
        #expect(tickValues(nodes, axis: "x") == [0, 500, 1000, 1500])
        #expect(tickValues(nodes, axis: "y").first == 0)
        #expect(tickValues(nodes, axis: "y").last == 2.5)
        #expect(tickValues(nodes, axis: "y2").last == 0.02)
        let tickText = nodes.filter { $0["class"] == "tick" }.map(\.text)
        #expect(tickText.contains("1.5k") && tickText.contains("0.5") && tickText.contains("0.005"), "\(tickText)")
        #expect(Set(nodes.filter { $0["class"] == "axis-label" }.map(\.text)) == ["iteration", "loss", "learning rate"])
        #expect(nodes.contains { $0["class"] == "title" && $0.text == chart.title })

        let legend = nodes.filter { $0["class"] == "legend" }.map(\.text)
        #expect(legend == ["loss (left)", "loss_cls (left)", "loss_box_reg (left)", "lr (right)", "AP (left)"])

        let area = try plotArea(nodes)
        #expect(area.right > area.left + 400 && area.bottom > area.top + 200)
        func inside(_ x: Double, _ y: Double) -> Bool {
            x >= area.left - 0.01 && x <= area.right + 0.01 && y >= area.top - 0.01 && y <= area.bottom + 0.01
        }
        for series in chart.series {
            let index = try #require(nodes.firstIndex(where: { $0["class"] == "series" && $0["data-name"] == series.name }))
            let node = nodes[index]
            switch series.style {
            case .line:
                #expect(node.name == "path")
                #expect(node["stroke"]?.hasPrefix("#") == true)
                let tokens = (node["d"] ?? "").split(separator: " ").map(String.init)
                #expect(tokens.first == "M")
                #expect(tokens.filter { $0 == "M" }.count == 1, "\(series.name): one unbroken line")
                #expect(tokens.filter { $0 == "M" || $0 == "L" }.count == series.points.count)
                let numbers = tokens.filter { $0 != "M" && $0 != "L" }
                #expect(numbers.count == 2 * series.points.count)
                #expect(numbers.allSatisfy { ($0.split(separator: ".").dropFirst().first?.count ?? 0) <= 2 }, "at most 2 decimals")
                let values = numbers.compactMap { Double($0) }
                try #require(values.count == numbers.count)
                let xs = stride(from: 0, to: values.count, by: 2).map { values[$0] }
                let ys = stride(from: 1, to: values.count, by: 2).map { values[$0] }
                #expect(zip(xs, ys).allSatisfy { inside($0, $1) }, "\(series.name) stays in the plot area")
                #expect(zip(xs, xs.dropFirst()).allSatisfy { $0 < $1 })
                if series.name == "loss", let first = ys.first, let last = ys.last {
                    #expect(first < last, "a falling loss goes down the page")
                }
                if series.name == "lr", let last = ys.last {
                    #expect(abs(last - area.top) < 0.01, "lr ends at the top of its axis")
                }
            case .markers:
                #expect(node.name == "g")
                let circles = nodes.filter { $0.parent == index && $0.name == "circle" }
                #expect(circles.count == series.points.count)
                for c in circles {
                    let x = Double(c["cx"] ?? "") ?? -1, y = Double(c["cy"] ?? "") ?? -1
                    #expect(inside(x, y))
                }
            }
        }
    }

    @Test("XML special characters are escaped in names, titles and labels")
    func escaping() throws {
        var chart = LineChart(title: "Loss \"quoted\" & 'single' <tag>", xLabel: "iter < 10 & > 0", yLabel: "a\u{1}b",
                              series: [LineChart.Series(name: "a<b&c", points: [.init(x: 0, y: 1), .init(x: 1, y: 2)], color: .black)])
        chart.series.append(LineChart.Series(name: "\"x\" 'y'", points: [.init(x: 0, y: 0.5)], color: .green, style: .markers))
        let svg = chart.svg()
        #expect(svg.contains("data-name=\"a&lt;b&amp;c\""))
        #expect(!svg.contains("a<b&c"))
        let nodes = try Self.checkValid(chart, "escaping")
        #expect(nodes.contains { $0["class"] == "series" && $0["data-name"] == "a<b&c" })
        #expect(nodes.contains { $0["class"] == "series" && $0["data-name"] == "\"x\" 'y'" })
        #expect(nodes.filter { $0["class"] == "legend" }.map(\.text) == ["a<b&c", "\"x\" 'y'"])
        #expect(nodes.contains { $0["class"] == "title" && $0.text == chart.title })
        #expect(nodes.contains { $0.name == "title" && $0.text == chart.title })
        #expect(nodes.contains { $0["class"] == "axis-label" && $0.text == "iter < 10 & > 0" })
        // A control character, which XML cannot hold, is replaced.
        #expect(nodes.contains { $0["class"] == "axis-label" && $0.text == "a\u{FFFD}b" })
    }

    @Test("render() gives a width × height RGB image showing every series in its colour inside the plot area")
    func raster() throws {
        let chart = Self.trainingChart()
        let image = chart.render()
        #expect(image.width == 800 && image.height == 450 && image.channels == 3 && image.order == .rgb)
        let area = try plotArea(parseSVG(chart.svg()).nodes)
        let (l, t, r, b) = (Int(area.left), Int(area.top), Int(area.right), Int(area.bottom))
        for series in chart.series {
            #expect(pixelCount(image, series.color, x: l...r, y: t...b) > (series.style == .line ? 100 : 20), "\(series.name)")
        }
        #expect(pixel(image, 0, 0) == .white)
        #expect(pixel(image, image.width - 1, image.height - 1) == .white)
        #expect(pixel(image, l, (t + b) / 2) == .black, "left axis")
        #expect(pixel(image, r, (t + b) / 2) == .black, "right axis")
        #expect(pixel(image, (l + r) / 2, b) == .black, "x axis")
        // Text: dark pixels below the x axis, left of the y axis, and above the plot (title, legend).
        let ink = Color(34, 34, 34)
        #expect(pixelCount(image, ink, x: l...r, y: (b + 1)...(image.height - 1)) > 50)
        #expect(pixelCount(image, ink, x: 0...(l - 1), y: t...b) > 50)
        #expect(pixelCount(image, ink, x: 0...(image.width - 1), y: 0...(t - 1)) > 50, "title and legend")
        // Light grey grid lines inside the plot.
        #expect(pixelCount(image, Color(225, 225, 225), x: l...r, y: t...b) > 500)
        // And it survives a PNG round trip.
        let back = try PNG.decode(PNG.encode(image))
        #expect(back.width == 800 && back.height == 450 && back.pixels == image.pixels)
    }

    @Test("lines are continuous: a diagonal has a pixel in every row and column it crosses")
    func continuity() throws {
        let red = Color(200, 0, 0)
        let chart = LineChart(title: "diagonal", width: 640, height: 480,
                              series: [LineChart.Series(name: "d", points: [.init(x: 0, y: 0), .init(x: 1, y: 1)], color: red)])
        let image = chart.render()
        let area = try plotArea(parseSVG(chart.svg()).nodes)
        let (l, t, r, b) = (Int(area.left), Int(area.top), Int(area.right), Int(area.bottom))
        let emptyRows = ((t + 1)..<(b - 1)).filter { pixelCount(image, red, x: l...r, y: $0...$0) == 0 }
        let emptyColumns = ((l + 1)..<(r - 1)).filter { pixelCount(image, red, x: $0...$0, y: t...b) == 0 }
        #expect(emptyRows.isEmpty, "rows without the line: \(emptyRows)")
        #expect(emptyColumns.isEmpty, "columns without the line: \(emptyColumns)")
        // 2 px thick: each interior row holds at least 2 line pixels.
        #expect(((t + 2)..<(b - 2)).allSatisfy { pixelCount(image, red, x: l...r, y: $0...$0) >= 2 })
    }

    @Test("fixed ranges clip what falls outside the plot area")
    func clipping() throws {
        let green = Color(0, 160, 0), blue = Color(0, 0, 220)
        let zigzag: [LineChart.Point] = (0...20).map { LineChart.Point(x: Double($0), y: Double($0 % 3)) }
        var chart = LineChart(title: "clipped", xLabel: "x", yLabel: "y", series: [
            LineChart.Series(name: "zigzag", points: zigzag, color: green),
            LineChart.Series(name: "late", points: [.init(x: 15, y: 0.5), .init(x: 5, y: 0.5)], color: blue, style: .markers),
        ])
        chart.xRange = 0...10
        chart.yRange = 0...1
        let nodes = try Self.checkValid(chart, "clipped")
        #expect(tickValues(nodes, axis: "x").compactMap { $0 }.allSatisfy { (0...10).contains($0) })
        #expect(tickValues(nodes, axis: "y").compactMap { $0 }.allSatisfy { (0...1).contains($0) })
        let late = try #require(nodes.firstIndex(where: { $0["class"] == "series" && $0["data-name"] == "late" }))
        #expect(nodes.filter { node in node.name == "circle" && node.parent == late }.count == 1, "the marker beyond x = 10 is dropped")
        let image = chart.render()
        let area = try plotArea(nodes)
        let (l, t, r, b) = (Int(area.left), Int(area.top), Int(area.right), Int(area.bottom))
        #expect(pixelCount(image, green, x: l...r, y: t...b) > 100)
        #expect(pixelCount(image, green, x: (r + 1)...(image.width - 1), y: 0...(image.height - 1)) == 0)
        #expect(pixelCount(image, green, x: 0...(image.width - 1), y: (b + 1)...(image.height - 1)) == 0)
        #expect(pixelCount(image, blue, x: (r + 1)...(image.width - 1), y: 0...(image.height - 1)) == 0)
        #expect(pixelCount(image, blue, x: l...r, y: t...b) > 0)
    }

    @Test("edge cases give valid SVG and an image without crashing")
    func edgeCases() throws {
        let c = LineChart.palette
        func line(_ name: String, _ xy: [(Double, Double)], axis: LineChart.Axis = .primary, style: LineChart.Style = .line,
                  color: Color = LineChart.palette[0]) -> LineChart.Series {
            LineChart.Series(name: name, points: xy.map { LineChart.Point(x: $0.0, y: $0.1) }, color: color, axis: axis, style: style)
        }
        let ramp: [Double] = (0..<10).map { Double($0) }
        let diagonal: [(Double, Double)] = ramp.map { v in (v, v) }
        var cases: [(String, LineChart)] = []
        func add(_ name: String, _ chart: LineChart) { cases.append((name, chart)) }
        add("no series", LineChart(title: "empty", xLabel: "x", yLabel: "y"))
        add("no series, secondary label", LineChart(title: "empty", xLabel: "x", yLabel: "y", secondaryYLabel: "lr"))
        add("no labels at all", LineChart())
        add("one point", LineChart(title: "one", series: [line("p", [(5, 0.7)])]))
        add("one marker", LineChart(title: "one", series: [line("m", [(5, 0.7)], style: .markers)]))
        add("one point at 0, 0", LineChart(series: [line("p", [(0, 0)]), line("q", [], axis: .secondary)]))
        add("all equal", LineChart(series: [line("flat", ramp.map { v in (v, 0.5) })]))
        add("all zero", LineChart(series: [line("zero", ramp.map { v in (v, 0.0) }, axis: .secondary)]))
        add("all equal negative", LineChart(series: [line("neg", ramp.map { v in (v, -2.0) })]))
        add("all equal x", LineChart(series: [line("vertical", ramp.map { v in (3.0, v) })]))
        let nan = Double.nan, inf = Double.infinity
        add("non-finite", LineChart(series: [
            line("gaps", [(0, 1), (1, 2), (2, nan), (3, 1), (4, inf), (5, 2)]),
            line("x gaps", [(0, 1), (nan, 2), (-inf, 1), (3, 2)], color: c[1]),
            line("marker gaps", [(0, nan), (1, 1), (2, -inf)], style: .markers, color: c[2]),
        ]))
        add("only non-finite", LineChart(series: [line("nan", [(nan, nan), (1, inf)]), line("inf", [(inf, 1)], axis: .secondary)]))
        let sine: [(Double, Double)] = ramp.map { v in (v - 5, 3 * sin(v) - 1) }
        let falling: [(Double, Double)] = ramp.map { v in (v - 5, -v / 100) }
        add("negative", LineChart(title: "negative", series: [line("sin", sine), line("neg lr", falling, axis: .secondary)]))
        add("tiny values", LineChart(series: [line("tiny", ramp.map { v in (v, v * 1e-12) })]))
        let huge: [(Double, Double)] = ramp.map { v in (v * 1e6, 1e12 + v * 2e11) }
        add("huge values", LineChart(series: [line("huge", huge), line("too big", [(0, 1e301), (1, -1e300)], color: c[1])]))
        add("tiny image", LineChart(title: "a long title that cannot fit", xLabel: "x", yLabel: "y", secondaryYLabel: "z",
                                    width: 30, height: 20, series: [line("s", diagonal)]))
        add("zero size", LineChart(width: 0, height: 0, series: [line("s", diagonal)]))
        add("negative size", LineChart(width: -5, height: -3))
        add("non-ASCII text", LineChart(title: "Verlust \u{2013} Iteration \u{D7} 1000 \u{B5}s \u{1F680}", xLabel: "Iteration\u{2026}",
                                        yLabel: "\u{201E}Loss\u{201C}", series: [line("\u{3BB} \u{2192} 0", diagonal)]))
        let longNames: [LineChart.Series] = (0..<12).map { i in line(String(repeating: "series \(i) ", count: 8), diagonal) }
        add("long names", LineChart(series: longNames))
        var degenerate = LineChart(series: [line("s", diagonal)])
        degenerate.yRange = 1...1
        degenerate.xRange = -Double.infinity...Double.infinity
        add("degenerate fixed ranges", degenerate)
        let big: [(Double, Double)] = (0..<2000).map { i in (Double(i), sin(Double(i) / 50)) }
        add("many points, wide", LineChart(title: "big", width: 1600, height: 900, series: [line("s", big)]))

        var found: [String: [SVGNode]] = [:]
        for (name, chart) in cases { found[name] = try Self.checkValid(chart, name) }

        // A line is broken at every non-finite value: three runs, the lone ones as M x y L x y.
        let nonFinite = try #require(found["non-finite"])
        let gaps = try #require(nonFinite.first(where: { $0["data-name"] == "gaps" })?["d"])
        #expect(gaps.split(separator: " ").filter { $0 == "M" }.count == 3, "\(gaps)")
        let xGaps = try #require(nonFinite.first(where: { $0["data-name"] == "x gaps" })?["d"])
        #expect(xGaps.split(separator: " ").filter { $0 == "M" }.count == 2, "\(xGaps)")
        let markers = try #require(nonFinite.firstIndex(where: { $0["data-name"] == "marker gaps" }))
        #expect(nonFinite.filter { node in node.name == "circle" && node.parent == markers }.count == 1)
        let onePoint = try #require(found["one point"])
        let one = try #require(onePoint.first(where: { $0["data-name"] == "p" })?["d"])
        #expect(one.split(separator: " ").count == 6 && one.hasPrefix("M "), "\(one)")

        // Negative values: the axis reaches below zero, with a zero line.
        let negative = try #require(found["negative"])
        let ys = tickValues(negative, axis: "y").compactMap { $0 }
        #expect((ys.first ?? 0) < 0 && (ys.last ?? 0) > 0, "\(ys)")
        #expect((tickValues(negative, axis: "y2").compactMap { $0 }.first ?? 0) < 0)
        #expect(negative.contains { $0["class"] == "zero" })
        // All-equal values and single points still get ranges with several ticks.
        for name in ["all equal", "all zero", "all equal negative", "all equal x", "one point"] {
            let nodes = try #require(found[name])
            let axis = name == "all zero" ? "y2" : "y"
            #expect(tickValues(nodes, axis: axis).count >= 3, "\(name)")
            #expect(tickValues(nodes, axis: "x").count >= 3, "\(name)")
        }
        let tiny = try #require(found["tiny values"]), hugeNodes = try #require(found["huge values"])
        #expect(tickValues(tiny, axis: "y").count >= 3)
        #expect(tickValues(hugeNodes, axis: "y").count >= 3)
    }
}

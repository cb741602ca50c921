import Foundation

/// A line chart of training curves (losses, learning rate, periodic AP), drawn as standalone SVG
/// text or as an RGB `Image` with the bitmap font — both from the same layout.
///
/// Axis ranges come from the data: x from the smallest to the largest x, the y axes from 0 (or
/// the data's minimum when it is negative) to the largest y, each widened to "nice" tick steps
/// (1, 2 or 5 × 10^k, 4–8 ticks) unless fixed with `xRange` / `yRange` / `secondaryYRange`.
/// Non-finite values (and values of magnitude above 1e300) are skipped, and a line is broken
/// there. The right axis appears when a series uses it or `secondaryYLabel` is set.
public struct LineChart: Sendable, Equatable {
    /// Which y axis a series is drawn against.
    public enum Axis: String, Sendable, Equatable {
        /// The left axis.
        case primary
        /// The right axis.
        case secondary
    }

    /// How a series is drawn.
    public enum Style: String, Sendable, Equatable {
        /// A 2 px polyline through the points.
        case line
        /// A filled dot at every point (for sparse values such as periodic AP evaluations).
        case markers
    }

    /// One data point.
    public struct Point: Sendable, Equatable {
        public var x: Double
        public var y: Double
        public init(x: Double, y: Double) {
            self.x = x
            self.y = y
        }
    }

    /// One curve: its legend name, points (drawn in the order given), colour, axis and style.
    public struct Series: Sendable, Equatable {
        public var name: String
        public var points: [Point]
        public var color: Color
        public var axis: Axis
        public var style: Style

        public init(name: String, points: [Point], color: Color, axis: Axis = .primary, style: Style = .line) {
            self.name = name
            self.points = points
            self.color = color
            self.axis = axis
            self.style = style
        }

        /// From (x, y) pairs such as the trainer's `(iteration, loss)`.
        public init<X: BinaryInteger, Y: BinaryFloatingPoint>(name: String, xy: [(X, Y)], color: Color, axis: Axis = .primary,
                                                             style: Style = .line) {
            self.init(name: name, points: xy.map { Point(x: Double($0.0), y: Double($0.1)) }, color: color, axis: axis, style: style)
        }
    }

    public var title: String
    /// The x axis title.
    public var xLabel: String
    /// The left axis title.
    public var yLabel: String
    /// The right axis title (the right axis is also drawn when a series uses it).
    public var secondaryYLabel: String?
    /// The size in pixels (SVG user units); sizes below 1 are taken as 1.
    public var width: Int
    public var height: Int
    public var series: [Series]
    /// Fixed axis ranges (nil: from the data). Data outside them is clipped at the plot area.
    public var xRange: ClosedRange<Double>?
    public var yRange: ClosedRange<Double>?
    public var secondaryYRange: ClosedRange<Double>?

    /// Matplotlib's "tab10" colours, for series without a colour of their own.
    public static let palette: [Color] = [
        Color(31, 119, 180), Color(255, 127, 14), Color(44, 160, 44), Color(214, 39, 40), Color(148, 103, 189),
        Color(140, 86, 75), Color(227, 119, 194), Color(127, 127, 127), Color(188, 189, 34), Color(23, 190, 207),
    ]

    public init(title: String = "", xLabel: String = "", yLabel: String = "", secondaryYLabel: String? = nil,
                width: Int = 800, height: Int = 450, series: [Series] = []) {
        self.title = title
        self.xLabel = xLabel
        self.yLabel = yLabel
        self.secondaryYLabel = secondaryYLabel
        self.width = width
        self.height = height
        self.series = series
    }

    // MARK: - SVG

    /// The chart as a standalone SVG document.
    ///
    /// Line series are `<path class="series" data-name="…" d="M x y L x y …">` (a new `M` where
    /// the line breaks; a lone point is `M x y L x y`, drawn as a dot by the round caps), marker
    /// series `<g class="series" data-name="…">` of `<circle>`s; axis lines have class `axis`,
    /// tick labels `<text class="tick">`, axis titles `<text class="axis-label">` (each with
    /// `data-axis` x, y or y2), the legend `<text class="legend">`, and the plot area is the
    /// `<rect class="plot-area">` of the clip path `plot-area`.
    public func svg() -> String {
        let layout = ChartLayout(self)
        let s = layout.scale
        let plot = layout.plot
        func n(_ v: Double) -> String { LineChart.decimal(v, decimals: 2) }
        func esc(_ text: String) -> String { LineChart.xmlEscaped(text) }
        let fontSize = 10 * s
        let baseline = 9 * s  // from the top of a bitmap-font text box to its baseline
        let textColor = LineChart.hex(ChartLayout.textColor)

        var out = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        out += "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(layout.width)\" height=\"\(layout.height)\""
        out += " viewBox=\"0 0 \(layout.width) \(layout.height)\" font-family=\"sans-serif\" font-size=\"\(fontSize)\">\n"
        if !title.isEmpty { out += "<title>\(esc(title))</title>\n" }
        out += "<defs><clipPath id=\"plot-area\"><rect class=\"plot-area\" x=\"\(plot.left)\" y=\"\(plot.top)\""
        out += " width=\"\(plot.right - plot.left)\" height=\"\(plot.bottom - plot.top)\"/></clipPath></defs>\n"
        out += "<rect x=\"0\" y=\"0\" width=\"\(layout.width)\" height=\"\(layout.height)\" fill=\"#ffffff\"/>\n"

        // Grid.
        out += "<g class=\"grid\" stroke=\"\(LineChart.hex(ChartLayout.gridColor))\" stroke-width=\"1\" shape-rendering=\"crispEdges\">\n"
        for v in layout.x.ticks {
            let x = n(layout.px(v))
            out += "<line x1=\"\(x)\" y1=\"\(plot.top)\" x2=\"\(x)\" y2=\"\(plot.bottom)\"/>\n"
        }
        for v in layout.y.ticks {
            let y = n(layout.py(v, layout.y))
            out += "<line x1=\"\(plot.left)\" y1=\"\(y)\" x2=\"\(plot.right)\" y2=\"\(y)\"/>\n"
        }
        out += "</g>\n"
        if let zero = layout.zeroLine {
            let y = n(zero)
            out += "<line class=\"zero\" x1=\"\(plot.left)\" y1=\"\(y)\" x2=\"\(plot.right)\" y2=\"\(y)\" stroke=\""
            out += "\(LineChart.hex(ChartLayout.zeroColor))\" stroke-width=\"1\"/>\n"
        }

        // Series: lines clipped to the plot area; markers whose centre is inside it drawn whole.
        out += "<g class=\"plot\">\n"
        for (index, item) in self.series.enumerated() {
            let color = LineChart.hex(item.color)
            let name = esc(item.name)
            switch item.style {
            case .line:
                var d: [String] = []
                for run in layout.runs(of: index) {
                    for (k, p) in run.enumerated() { d.append("\(k == 0 ? "M" : "L") \(n(p.x)) \(n(p.y))") }
                    if run.count == 1 { d.append("L \(n(run[0].x)) \(n(run[0].y))") }
                }
                out += "<path class=\"series\" data-name=\"\(name)\" clip-path=\"url(#plot-area)\" fill=\"none\" stroke=\"\(color)\""
                out += " stroke-width=\"\(2 * s)\" stroke-linejoin=\"round\" stroke-linecap=\"round\" d=\"\(d.joined(separator: " "))\"/>\n"
            case .markers:
                out += "<g class=\"series\" data-name=\"\(name)\" fill=\"\(color)\">\n"
                for p in layout.markers(of: index) {
                    out += "<circle cx=\"\(n(p.x))\" cy=\"\(n(p.y))\" r=\"\(n(Double(layout.markerRadius) + 0.5))\"/>\n"
                }
                out += "</g>\n"
            }
        }
        out += "</g>\n"

        // Axes and tick marks.
        let black = LineChart.hex(Color.black)
        out += "<line class=\"axis\" data-axis=\"x\" x1=\"\(plot.left)\" y1=\"\(plot.bottom)\" x2=\"\(plot.right)\" y2=\"\(plot.bottom)\""
        out += " stroke=\"\(black)\" stroke-width=\"1\"/>\n"
        out += "<line class=\"axis\" data-axis=\"y\" x1=\"\(plot.left)\" y1=\"\(plot.top)\" x2=\"\(plot.left)\" y2=\"\(plot.bottom)\""
        out += " stroke=\"\(black)\" stroke-width=\"1\"/>\n"
        if layout.y2 != nil {
            out += "<line class=\"axis\" data-axis=\"y2\" x1=\"\(plot.right)\" y1=\"\(plot.top)\" x2=\"\(plot.right)\" y2=\"\(plot.bottom)\""
            out += " stroke=\"\(black)\" stroke-width=\"1\"/>\n"
        }
        out += "<g class=\"tick-marks\" stroke=\"\(black)\" stroke-width=\"1\">\n"
        for v in layout.x.ticks {
            let x = n(layout.px(v))
            out += "<line x1=\"\(x)\" y1=\"\(plot.bottom)\" x2=\"\(x)\" y2=\"\(plot.bottom + layout.tickLength)\"/>\n"
        }
        for v in layout.y.ticks {
            let y = n(layout.py(v, layout.y))
            out += "<line x1=\"\(plot.left - layout.tickLength)\" y1=\"\(y)\" x2=\"\(plot.left)\" y2=\"\(y)\"/>\n"
        }
        if let y2 = layout.y2 {
            for v in y2.ticks {
                let y = n(layout.py(v, y2))
                out += "<line x1=\"\(plot.right)\" y1=\"\(y)\" x2=\"\(plot.right + layout.tickLength)\" y2=\"\(y)\"/>\n"
            }
        }
        out += "</g>\n"

        // Text.
        out += "<g class=\"labels\" fill=\"\(textColor)\">\n"
        for label in layout.tickLabels {
            let (anchor, x): (String, Int) = switch label.axis {
            case .x: ("middle", label.left + label.width / 2)
            case .y: ("end", label.left + label.width)
            case .y2: ("start", label.left)
            }
            out += "<text class=\"tick\" data-axis=\"\(label.axis.rawValue)\" x=\"\(x)\" y=\"\(label.top + baseline)\""
            out += " text-anchor=\"\(anchor)\">\(esc(label.text))</text>\n"
        }
        if let xl = layout.xTitle {
            out += "<text class=\"axis-label\" data-axis=\"x\" x=\"\(xl.center)\" y=\"\(xl.top + baseline)\" text-anchor=\"middle\">"
            out += "\(esc(xLabel))</text>\n"
        }
        let verticalTitles: [(ChartLayout.AxisID, String, (left: Int, center: Int)?)] = [
            (.y, yLabel, layout.yTitle), (.y2, secondaryYLabel ?? "", layout.y2Title),
        ]
        for (axis, text, box) in verticalTitles {
            guard let box else { continue }
            // Rotated to read upwards; the baseline is the column `baseline` px into the text's band.
            let x = box.left + baseline, y = box.center
            out += "<text class=\"axis-label\" data-axis=\"\(axis.rawValue)\" x=\"\(x)\" y=\"\(y)\" text-anchor=\"middle\""
            out += " transform=\"rotate(-90 \(x) \(y))\">\(esc(text))</text>\n"
        }
        if let t = layout.titleBox {
            out += "<text class=\"title\" x=\"\(t.center)\" y=\"\(t.top + 9 * layout.titleScale)\" text-anchor=\"middle\""
            out += " font-size=\"\(10 * layout.titleScale)\" font-weight=\"bold\">\(esc(title))</text>\n"
        }
        out += "</g>\n"

        // Legend.
        out += "<g class=\"legend-entries\">\n"
        for entry in layout.legend {
            let item = self.series[entry.series]
            let color = LineChart.hex(item.color)
            let cy = entry.top + layout.charHeight / 2
            out += "<g class=\"legend-entry\">"
            switch item.style {
            case .line:
                out += "<line x1=\"\(entry.left)\" y1=\"\(cy)\" x2=\"\(entry.left + layout.swatchWidth)\" y2=\"\(cy)\" stroke=\"\(color)\""
                out += " stroke-width=\"\(2 * s)\"/>"
            case .markers:
                out += "<circle cx=\"\(entry.left + layout.swatchWidth / 2)\" cy=\"\(cy)\" r=\"\(n(Double(layout.markerRadius) + 0.5))\""
                out += " fill=\"\(color)\"/>"
            }
            out += "<text class=\"legend\" data-name=\"\(esc(item.name))\" x=\"\(entry.textLeft)\" y=\"\(entry.top + baseline)\""
            out += " fill=\"\(textColor)\">\(esc(entry.label))</text></g>\n"
        }
        out += "</g>\n</svg>\n"
        return out
    }

    // MARK: - Raster

    /// The chart drawn into an RGB image of `width` × `height` (no antialiasing; 2 px lines,
    /// the bitmap font, y axis titles rotated to read upwards).
    public func render() -> Image {
        let layout = ChartLayout(self)
        let s = layout.scale
        let plot = layout.plot
        var image = Image(width: layout.width, height: layout.height, channels: 3, order: .rgb, fill: 255)
        let clip = (left: plot.left, top: plot.top, right: plot.right, bottom: plot.bottom)

        // Grid and zero line.
        for v in layout.x.ticks {
            let x = Int(layout.px(v).rounded())
            image.fill(x1: x, y1: plot.top, x2: x, y2: plot.bottom, ChartLayout.gridColor)
        }
        for v in layout.y.ticks {
            let y = Int(layout.py(v, layout.y).rounded())
            image.fill(x1: plot.left, y1: y, x2: plot.right, y2: y, ChartLayout.gridColor)
        }
        if let zero = layout.zeroLine {
            let y = Int(zero.rounded())
            image.fill(x1: plot.left, y1: y, x2: plot.right, y2: y, ChartLayout.zeroColor)
        }

        // Series.
        let thickness = 2 * s
        for (index, item) in self.series.enumerated() {
            switch item.style {
            case .line:
                for run in layout.runs(of: index) {
                    if run.count == 1 {
                        image.chartSegment(run[0], run[0], item.color, thickness: thickness, clip: clip)
                    }
                    for k in run.indices.dropFirst() {
                        image.chartSegment(run[k - 1], run[k], item.color, thickness: thickness, clip: clip)
                    }
                }
            case .markers:
                for p in layout.markers(of: index) {
                    image.chartDot(x: Int(p.x.rounded()), y: Int(p.y.rounded()), radius: layout.markerRadius, item.color)
                }
            }
        }

        // Axes and tick marks.
        image.fill(x1: plot.left, y1: plot.bottom, x2: plot.right, y2: plot.bottom, .black)
        image.fill(x1: plot.left, y1: plot.top, x2: plot.left, y2: plot.bottom, .black)
        for v in layout.x.ticks {
            let x = Int(layout.px(v).rounded())
            image.fill(x1: x, y1: plot.bottom, x2: x, y2: plot.bottom + layout.tickLength, .black)
        }
        for v in layout.y.ticks {
            let y = Int(layout.py(v, layout.y).rounded())
            image.fill(x1: plot.left - layout.tickLength, y1: y, x2: plot.left, y2: y, .black)
        }
        if let y2 = layout.y2 {
            image.fill(x1: plot.right, y1: plot.top, x2: plot.right, y2: plot.bottom, .black)
            for v in y2.ticks {
                let y = Int(layout.py(v, y2).rounded())
                image.fill(x1: plot.right, y1: y, x2: plot.right + layout.tickLength, y2: y, .black)
            }
        }

        // Text.
        let ink = ChartLayout.textColor
        for label in layout.tickLabels {
            image.drawText(label.text, x: label.left, y: label.top, ink, scale: s)
        }
        if let xl = layout.xTitle {
            let text = LineChart.bitmapText(xLabel)
            image.drawText(text, x: xl.center - Image.textSize(text, scale: s).width / 2, y: xl.top, ink, scale: s)
        }
        if let yl = layout.yTitle {
            image.chartVerticalText(LineChart.bitmapText(yLabel), left: yl.left, centerY: yl.center, ink, scale: s)
        }
        if let yl = layout.y2Title {
            image.chartVerticalText(LineChart.bitmapText(secondaryYLabel ?? ""), left: yl.left, centerY: yl.center, ink, scale: s)
        }
        if let t = layout.titleBox {
            let text = LineChart.bitmapText(title)
            let w = Image.textSize(text, scale: layout.titleScale).width
            image.drawText(text, x: t.center - w / 2, y: t.top, ink, scale: layout.titleScale)
            if layout.titleScale > 1 {  // a heavier stroke for the title
                image.drawText(text, x: t.center - w / 2 + 1, y: t.top, ink, scale: layout.titleScale)
            }
        }

        // Legend.
        for entry in layout.legend {
            let item = self.series[entry.series]
            let cy = entry.top + layout.charHeight / 2
            switch item.style {
            case .line:
                image.fill(x1: entry.left, y1: cy - s, x2: entry.left + layout.swatchWidth, y2: cy - s + thickness - 1, item.color)
            case .markers:
                image.chartDot(x: entry.left + layout.swatchWidth / 2, y: cy, radius: layout.markerRadius, item.color)
            }
            image.drawText(LineChart.bitmapText(entry.label), x: entry.textLeft, y: entry.top, ink, scale: s)
        }
        return image
    }

    // MARK: - Formatting helpers

    /// `value` rounded to `decimals` (0–12) places with trailing zeros dropped — 0.25, 1.5, 3,
    /// -0.125 — in plain Swift (no locale). Huge values fall back to Swift's own description.
    static func decimal(_ value: Double, decimals: Int) -> String {
        guard value.isFinite else { return value.isNaN ? "nan" : (value < 0 ? "-inf" : "inf") }
        let d = max(0, min(decimals, 12))
        var p: UInt64 = 1
        for _ in 0..<d { p *= 10 }
        let scaled = (value.magnitude * Double(p)).rounded()
        guard scaled < 9e15 else {
            return value.magnitude < 9e18 ? String(Int64(value.rounded())) : "\(value)"
        }
        let units = UInt64(scaled)
        if units == 0 { return "0" }
        var text = String(units / p)
        let fraction = units % p
        if fraction != 0 {
            var digits = String(fraction)
            digits = String(repeating: "0", count: d - digits.count) + digits
            while digits.hasSuffix("0") { digits.removeLast() }
            text += "." + digits
        }
        return value < 0 ? "-" + text : text
    }

    /// A compact tick label for `value` on an axis stepping by `1, 2 or 5 × 10^exponent`: just
    /// enough decimals for the step, and k / M / G for thousands, millions and billions when the
    /// step is coarse enough (0, 500, 1k, 1.5k; 0.25; 0.005).
    /// Steps below 1e-6 and values from 1e12 up are written in scientific notation (2.5e-7, 1.5e12).
    static func tickLabel(_ value: Double, stepExponent k: Int, step: Double) -> String {
        if value.magnitude < step * 1e-6 { return "0" }
        if k < -6 || value.magnitude >= 1e12 { return scientific(value, stepExponent: k) }
        for (unit, suffix, u) in [(1e9, "G", 9), (1e6, "M", 6), (1e3, "k", 3)] where value.magnitude >= unit && k >= u - 2 {
            return decimal(value / unit, decimals: max(0, u - k)) + suffix
        }
        return decimal(value, decimals: max(0, -k))
    }

    /// `value` as mantissa e exponent, with the mantissa's decimals down to 10^k.
    static func scientific(_ value: Double, stepExponent k: Int) -> String {
        var exponent = Int(log10(value.magnitude).rounded(.down))
        func power(_ e: Int) -> Double { Double("1e\(e)") ?? 1 }
        var mantissa = value / power(exponent)
        let decimals = max(0, min(exponent - k, 12))
        if decimal(mantissa.magnitude, decimals: decimals) == "10" {  // rounded up to the next power of ten
            exponent += 1
            mantissa = value / power(exponent)
        }
        return decimal(mantissa, decimals: decimals) + "e" + String(exponent)
    }

    /// Text escaped for XML content and attribute values; characters XML 1.0 does not allow
    /// become U+FFFD, and tabs and line breaks spaces.
    static func xmlEscaped(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for scalar in text.unicodeScalars {
            switch scalar {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&apos;"
            case "\t", "\n", "\r": out += " "
            default:
                if scalar.value < 0x20 || scalar.value == 0xFFFE || scalar.value == 0xFFFF {
                    out.unicodeScalars.append("\u{FFFD}")
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out
    }

    /// Text the bitmap font can draw: ASCII 32–126 kept, a few common symbols spelled in ASCII
    /// (dashes and minus signs as "-", × as "x", µ as "u", curly quotes straight, … as "..."),
    /// anything else "?" (what `drawText` would show).
    static func bitmapText(_ text: String) -> String {
        var out = ""
        for scalar in text.unicodeScalars {
            switch scalar.value {
            case 32...126: out.unicodeScalars.append(scalar)
            case 0x09, 0x0A, 0x0D: out += " "
            case 0x2010...0x2015, 0x2212: out += "-"
            case 0x00D7: out += "x"
            case 0x00B5, 0x03BC: out += "u"
            case 0x2018, 0x2019: out += "'"
            case 0x201C, 0x201D: out += "\""
            case 0x2026: out += "..."
            case 0x00B7, 0x2022: out += "."
            case 0x00B2: out += "2"
            case 0x00B3: out += "3"
            case 0x00A0: out += " "
            default: out += "?"
            }
        }
        return out
    }

    /// "#rrggbb".
    static func hex(_ color: Color) -> String {
        let digits = Array("0123456789abcdef")
        var out = "#"
        for v in [color.r, color.g, color.b] {
            out.append(digits[Int(v >> 4)])
            out.append(digits[Int(v & 0xF)])
        }
        return out
    }
}

// MARK: - Layout

/// Where everything goes, in pixels; shared by `svg()` and `render()`.
private struct ChartLayout {
    enum AxisID: String { case x, y, y2 }

    /// An axis: its range, tick values and their labels.
    struct Scale {
        var lo: Double
        var hi: Double
        var ticks: [Double]
        var labels: [String]
    }

    struct TickLabel {
        var axis: AxisID
        var text: String  // bitmap-safe (tick labels are ASCII anyway)
        var left: Int
        var top: Int
        var width: Int
    }

    struct LegendEntry {
        var series: Int
        var label: String  // unescaped, may hold any character
        var left: Int
        var textLeft: Int
        var top: Int
    }

    static let textColor = Color(34, 34, 34)
    static let gridColor = Color(225, 225, 225)
    static let zeroColor = Color(170, 170, 170)

    let chart: LineChart
    let width: Int
    let height: Int
    /// Text scale of the bitmap font (1 up to 800 px on the short side, then larger).
    let scale: Int
    let titleScale: Int
    let charWidth: Int
    let charHeight: Int
    let tickLength: Int
    let swatchWidth: Int
    let markerRadius: Int
    let plot: (left: Int, top: Int, right: Int, bottom: Int)
    let x: Scale
    let y: Scale
    let y2: Scale?
    let tickLabels: [TickLabel]
    let xTitle: (center: Int, top: Int)?
    /// Vertical titles: the left edge of their band and their vertical centre.
    let yTitle: (left: Int, center: Int)?
    let y2Title: (left: Int, center: Int)?
    let titleBox: (center: Int, top: Int)?
    let legend: [LegendEntry]
    /// The y of the primary axis's 0 when the range spans it.
    let zeroLine: Double?

    init(_ chart: LineChart) {
        self.chart = chart
        width = max(1, chart.width)
        height = max(1, chart.height)
        let s = max(1, min(width, height) / 400)
        scale = s
        charWidth = BitmapFont.width * s
        charHeight = BitmapFont.height * s
        tickLength = 5 * s
        swatchWidth = 18 * s
        markerRadius = 3 * s
        let pad = 8 * s, gap = 3 * s

        // Axis ranges from the plottable points.
        var xs: [Double] = [], ys: [Double] = [], y2s: [Double] = []
        for series in chart.series {
            for p in series.points where ChartLayout.plottable(p) {
                xs.append(p.x)
                if series.axis == .primary { ys.append(p.y) } else { y2s.append(p.y) }
            }
        }
        x = ChartLayout.makeScale(xs, anchorZero: false, fixed: chart.xRange)
        y = ChartLayout.makeScale(ys, anchorZero: true, fixed: chart.yRange)
        let hasSecondary = chart.secondaryYLabel != nil || chart.series.contains { $0.axis == .secondary }
        y2 = hasSecondary ? ChartLayout.makeScale(y2s, anchorZero: true, fixed: chart.secondaryYRange) : nil

        func textWidth(_ text: String) -> Int { Image.textSize(LineChart.bitmapText(text), scale: s).width }
        let yLabelText = chart.yLabel, y2LabelText = chart.secondaryYLabel ?? ""
        let yTickWidth = y.labels.map(textWidth).max() ?? 0
        let y2TickWidth = y2?.labels.map(textWidth).max() ?? 0
        let firstX = x.labels.first.map(textWidth) ?? 0, lastX = x.labels.last.map(textWidth) ?? 0

        // Horizontal: [pad | y title | gap | tick labels | gap | tick] plot [tick | gap | labels | gap | y2 title | pad].
        var left = pad + (yLabelText.isEmpty ? 0 : charHeight + 2 * gap) + yTickWidth + gap + tickLength
        left = max(left, firstX / 2 + pad)
        var rightMargin = max(2 * pad, lastX / 2 + pad)
        if y2 != nil {
            rightMargin = max(rightMargin, tickLength + gap + y2TickWidth + gap + (y2LabelText.isEmpty ? 0 : charHeight + 2 * gap) + pad)
        }
        let right = max(left + 1, width - rightMargin)

        // Vertical: [pad | title | legend rows] plot [tick | gap | tick labels | gap | x title | pad].
        var top = pad
        let titleText = LineChart.bitmapText(chart.title)
        var ts = 2 * s
        if Image.textSize(titleText, scale: ts).width > width - 2 * pad { ts = s }
        titleScale = ts
        if chart.title.isEmpty {
            titleBox = nil
        } else {
            titleBox = (center: width / 2, top: top)
            top += BitmapFont.height * ts + 2 * gap
        }
        var entries: [LegendEntry] = []
        var lx = left, row = 0
        let rowHeight = charHeight + gap
        for (i, series) in chart.series.enumerated() {
            var label = series.name
            if hasSecondary { label += series.axis == .secondary ? " (right)" : " (left)" }
            let w = swatchWidth + gap + textWidth(label)
            if lx > left && lx + w > right {
                row += 1
                lx = left
            }
            entries.append(LegendEntry(series: i, label: label, left: lx, textLeft: lx + swatchWidth + gap, top: top + row * rowHeight))
            lx += w + 5 * gap
        }
        legend = entries
        if !entries.isEmpty { top += (row + 1) * rowHeight + gap }
        top += charHeight / 2 + gap  // room for the top tick label, centred on the plot's top edge
        let bottomMargin = tickLength + gap + charHeight + (chart.xLabel.isEmpty ? 0 : 2 * gap + charHeight) + pad
        let bottom = max(top + 1, height - bottomMargin)
        plot = (left, top, right, bottom)

        // Tick labels, dropping any that would overlap the one before.
        var labels: [TickLabel] = []
        var lastRight = Int.min
        for (v, text) in zip(x.ticks, x.labels) {
            let w = textWidth(text), cx = Int(ChartLayout.map(v, x, Double(left), Double(right)).rounded())
            guard cx - w / 2 >= lastRight + charWidth else { continue }
            labels.append(TickLabel(axis: .x, text: text, left: cx - w / 2, top: bottom + tickLength + gap, width: w))
            lastRight = cx - w / 2 + w
        }
        let yAxes: [(AxisID, Scale?)] = [(.y, y), (.y2, y2)]
        for (axis, sc) in yAxes {
            guard let sc else { continue }
            var lastTop = Int.max
            for (v, text) in zip(sc.ticks, sc.labels) {
                let w = textWidth(text), cy = Int(ChartLayout.map(v, sc, Double(bottom), Double(top)).rounded())
                let t = cy - charHeight / 2
                guard t + charHeight + 1 <= lastTop else { continue }
                let l = axis == .y ? left - tickLength - gap - w : right + tickLength + gap
                labels.append(TickLabel(axis: axis, text: text, left: l, top: t, width: w))
                lastTop = t
            }
        }
        tickLabels = labels

        xTitle = chart.xLabel.isEmpty ? nil : (center: (left + right) / 2, top: bottom + tickLength + gap + charHeight + 2 * gap)
        yTitle = yLabelText.isEmpty ? nil : (left: pad, center: (top + bottom) / 2)
        y2Title = y2 == nil || y2LabelText.isEmpty ? nil : (left: width - pad - charHeight, center: (top + bottom) / 2)
        zeroLine = y.lo < 0 && y.hi > 0 ? ChartLayout.map(0, y, Double(bottom), Double(top)) : nil
    }

    /// A finite point of sensible magnitude.
    static func plottable(_ p: LineChart.Point) -> Bool {
        p.x.isFinite && p.y.isFinite && p.x.magnitude <= 1e300 && p.y.magnitude <= 1e300
    }

    /// `v` mapped linearly from the scale's range onto [a, b].
    static func map(_ v: Double, _ sc: Scale, _ a: Double, _ b: Double) -> Double {
        a + (v - sc.lo) / (sc.hi - sc.lo) * (b - a)
    }

    func px(_ v: Double) -> Double { ChartLayout.map(v, x, Double(plot.left), Double(plot.right)) }
    func py(_ v: Double, _ sc: Scale) -> Double { ChartLayout.map(v, sc, Double(plot.bottom), Double(plot.top)) }

    /// A series' point in pixels, or nil when it is not drawable; far-off points are pulled in to
    /// ±1e15 px so the clipping arithmetic stays finite.
    func pixel(_ p: LineChart.Point, axis: LineChart.Axis) -> (x: Double, y: Double)? {
        guard ChartLayout.plottable(p) else { return nil }
        let sc = axis == .secondary ? (y2 ?? y) : y
        let (u, v) = (px(p.x), py(p.y, sc))
        guard u.isFinite, v.isFinite else { return nil }
        return (min(max(u, -1e15), 1e15), min(max(v, -1e15), 1e15))
    }

    /// The unbroken runs of a line series, in pixels.
    func runs(of index: Int) -> [[(x: Double, y: Double)]] {
        let series = chart.series[index]
        var runs: [[(x: Double, y: Double)]] = []
        var current: [(x: Double, y: Double)] = []
        for p in series.points {
            if let q = pixel(p, axis: series.axis) {
                current.append(q)
            } else if !current.isEmpty {
                runs.append(current)
                current = []
            }
        }
        if !current.isEmpty { runs.append(current) }
        return runs
    }

    /// The marker centres of a series that fall inside the plot area.
    func markers(of index: Int) -> [(x: Double, y: Double)] {
        let series = chart.series[index]
        let e = 0.5
        return series.points.compactMap { pixel($0, axis: series.axis) }.filter {
            $0.x >= Double(plot.left) - e && $0.x <= Double(plot.right) + e && $0.y >= Double(plot.top) - e && $0.y <= Double(plot.bottom) + e
        }
    }

    /// An axis over `values` (or the fixed range): anchored at 0 when asked and the values are
    /// not negative, widened to nice ticks.
    static func makeScale(_ values: [Double], anchorZero: Bool, fixed: ClosedRange<Double>?) -> Scale {
        if let fixed, fixed.lowerBound.isFinite, fixed.upperBound.isFinite, !degenerate(fixed.lowerBound, fixed.upperBound) {
            return niceScale(fixed.lowerBound, fixed.upperBound, expand: false)
        }
        guard var lo = values.min(), var hi = values.max() else { return niceScale(0, 1, expand: true) }
        if anchorZero { lo = min(lo, 0) }
        if degenerate(lo, hi) {
            // All values (nearly) equal: a range around them (from 0 when anchored and positive).
            let v = hi
            if v.magnitude < 1e-100 {
                (lo, hi) = (anchorZero ? 0 : v - 1, v + 1)
            } else {
                let d = v.magnitude * 0.5
                (lo, hi) = (anchorZero && v > 0 ? 0 : v - d, v + d)
            }
        }
        return niceScale(lo, hi, expand: true)
    }

    /// A range too narrow (or inverted) to divide into ticks.
    static func degenerate(_ lo: Double, _ hi: Double) -> Bool {
        !(hi > lo) || !(hi - lo).isFinite || hi - lo <= max(lo.magnitude, hi.magnitude) * 1e-9 || hi - lo < 1e-200
    }

    /// Ticks at multiples of the smallest 1, 2 or 5 × 10^k step giving at most 8 of them; with
    /// `expand` the range grows to the enclosing multiples, else it stays and the ticks are those
    /// inside it.
    static func niceScale(_ lo: Double, _ hi: Double, expand: Bool) -> Scale {
        let span = hi - lo
        let e = Int(log10(span).rounded(.down))
        let tolerance = 1e-9
        for k in (e - 2)...(e + 1) {
            guard let power = Double("1e\(k)"), power > 0 else { continue }
            for m in [1.0, 2.0, 5.0] {
                let step = m * power
                let first = expand ? (lo / step + tolerance).rounded(.down) : (lo / step - tolerance).rounded(.up)
                let last = expand ? (hi / step - tolerance).rounded(.up) : (hi / step + tolerance).rounded(.down)
                let count = last - first + 1
                guard count.isFinite, count <= 8, count >= 1 else { continue }
                let ticks = (0..<Int(count)).map { (first + Double($0)) * step }
                let labels = ticks.map { LineChart.tickLabel($0, stepExponent: k, step: step) }
                return Scale(lo: expand ? first * step : lo, hi: expand ? last * step : hi, ticks: ticks, labels: labels)
            }
        }
        return Scale(lo: lo, hi: hi, ticks: [lo, hi],
                     labels: [LineChart.decimal(lo, decimals: 3), LineChart.decimal(hi, decimals: 3)])
    }
}

// MARK: - Raster primitives

extension Image {
    /// A line `thickness` px wide from `a` to `b` (pixel coordinates), clipped to `clip`
    /// (inclusive bounds): Liang–Barsky on the segment, then Bresenham with a square pen.
    fileprivate mutating func chartSegment(_ a: (x: Double, y: Double), _ b: (x: Double, y: Double), _ color: Color, thickness: Int,
                                           clip: (left: Int, top: Int, right: Int, bottom: Int)) {
        let (l, t, r, btm) = (Double(clip.left), Double(clip.top), Double(clip.right), Double(clip.bottom))
        let dx = b.x - a.x, dy = b.y - a.y
        var t0 = 0.0, t1 = 1.0
        for (p, q) in [(-dx, a.x - l), (dx, r - a.x), (-dy, a.y - t), (dy, btm - a.y)] {
            if p == 0 {
                if q < 0 { return }
            } else {
                let u = q / p
                if p < 0 {
                    if u > t1 { return }
                    t0 = max(t0, u)
                } else {
                    if u < t0 { return }
                    t1 = min(t1, u)
                }
            }
        }
        guard t0 <= t1 else { return }
        func clamp(_ v: Double, _ lo: Double, _ hi: Double) -> Int { Int(min(max(v, lo), hi).rounded()) }
        var x0 = clamp(a.x + t0 * dx, l, r), y0 = clamp(a.y + t0 * dy, t, btm)
        let x1 = clamp(a.x + t1 * dx, l, r), y1 = clamp(a.y + t1 * dy, t, btm)
        let half = thickness / 2
        func pen(_ x: Int, _ y: Int) {
            let (px1, py1) = (max(clip.left, x - half), max(clip.top, y - half))
            let (px2, py2) = (min(clip.right, x - half + thickness - 1), min(clip.bottom, y - half + thickness - 1))
            fill(x1: px1, y1: py1, x2: px2, y2: py2, color)
        }
        let sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1
        let ddx = abs(x1 - x0), ddy = -abs(y1 - y0)
        var err = ddx + ddy
        while true {
            pen(x0, y0)
            if x0 == x1 && y0 == y1 { break }
            let e2 = 2 * err
            if e2 >= ddy {
                err += ddy
                x0 += sx
            }
            if e2 <= ddx {
                err += ddx
                y0 += sy
            }
        }
    }

    /// A filled disc.
    fileprivate mutating func chartDot(x: Int, y: Int, radius: Int, _ color: Color) {
        let r2 = radius * radius + radius
        for dy in -radius...radius {
            for dx in -radius...radius where dx * dx + dy * dy <= r2 { set(x: x + dx, y: y + dy, color) }
        }
    }

    /// Bitmap-font text rotated to read upwards, in the column band starting at `left`, centred
    /// on `centerY`.
    fileprivate mutating func chartVerticalText(_ text: String, left: Int, centerY: Int, _ color: Color, scale: Int) {
        let length = text.unicodeScalars.count * BitmapFont.width * scale
        let bottom = centerY + length / 2
        for (i, scalar) in text.unicodeScalars.enumerated() {
            let code = Int(scalar.value)
            let glyph = BitmapFont.glyphs[(32...126).contains(code) ? code - 32 : Int(("?" as Unicode.Scalar).value) - 32]
            for (row, mask) in glyph.enumerated() where mask != 0 {
                for col in 0..<BitmapFont.width where mask & (1 << col) != 0 {
                    for dy in 0..<scale {
                        for dx in 0..<scale {
                            let along = (i * BitmapFont.width + col) * scale + dx, across = row * scale + dy
                            set(x: left + across, y: bottom - along, color)
                        }
                    }
                }
            }
        }
    }
}

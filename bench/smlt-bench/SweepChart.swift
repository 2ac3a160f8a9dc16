import Foundation
import TensorBlob

/// Small multiples of gradient GB/s against worker count: one panel per (link rate, shards,
/// codec, params), one line per method. Plain SVG, no dependencies.
struct SweepChart {
    let rows: [AggregateResult]

    struct Panel: Hashable, Comparable {
        let shards: Int
        let codec: String
        let params: Int
        /// Bits per second of each link; 0 for loopback.
        let linkRate: Int
        let linkRateText: String
        init(_ r: AggregateResult) {
            shards = r.shards
            codec = r.codec
            params = r.params
            linkRate = r.linkRateBitsPerSecond ?? 0
            linkRateText = r.linkRate
        }
        /// Loopback first, then the rates from the fastest.
        static func < (a: Panel, b: Panel) -> Bool {
            func order(_ rate: Int) -> Int { rate == 0 ? Int.min : -rate }
            return (order(a.linkRate), a.params, a.codec, a.shards) < (order(b.linkRate), b.params, b.codec, b.shards)
        }
        var title: String { "\(linkRateText), K=\(shards) shards, \(codec), P=\(params.formatted())" }
        func contains(_ r: AggregateResult) -> Bool { Panel(r) == self }
    }

    static let colors: [AggregationMethod: String] = [
        .smlt: "#1f77b4", .smltMetrics: "#2ca02c", .redisLimit: "#7f7f7f", .scatterReduce: "#d62728",
    ]

    func svg() -> String {
        let panels = Array(Set(rows.map(Panel.init))).sorted()
        // A row of panels per link rate and size: its codecs x shard counts side by side.
        let columns = min(panels.count, Set(rows.map(\.shards)).count * Set(rows.map(\.codec)).count, 4)
        let rowsOfPanels = (panels.count + max(columns, 1) - 1) / max(columns, 1)
        let (pw, ph) = (360.0, 250.0)
        let (left, top, right, bottom) = (55.0, 40.0, 15.0, 45.0)
        let width = Double(max(columns, 1)) * pw
        let height = Double(rowsOfPanels) * ph + 60
        // One scale per link rate: a slow link's panels would be flat on loopback's scale.
        func yMax(_ panel: Panel) -> Double {
            niceCeiling(
                (rows.filter { ($0.linkRateBitsPerSecond ?? 0) == panel.linkRate }.map(\.gradientGBps).max() ?? 1) * 1.1
            )
        }
        let workerCounts = Array(Set(rows.map(\.workers))).sorted()
        var s = """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" \
            font-family="sans-serif" font-size="11">
            <rect width="100%" height="100%" fill="white"/>
            <text x="\(Int(width / 2))" y="18" text-anchor="middle" font-size="14">\
            smlt-bench sweep: gradient GB/s (N x P x 4 bytes / median step time), higher is better</text>

            """
        for (i, panel) in panels.enumerated() {
            let ox = Double(i % max(columns, 1)) * pw
            let oy = 30 + Double(i / max(columns, 1)) * ph
            let (x0, y0) = (ox + left, oy + top)
            let (w, h) = (pw - left - right, ph - top - bottom)
            func x(_ workers: Int) -> Double {
                guard workerCounts.count > 1, let idx = workerCounts.firstIndex(of: workers) else { return x0 + w / 2 }
                return x0 + w * Double(idx) / Double(workerCounts.count - 1)
            }
            let yMax = yMax(panel)
            func y(_ v: Double) -> Double { y0 + h - h * v / yMax }
            s += "<text x=\"\(Int(ox + pw / 2))\" y=\"\(Int(oy + 25))\" text-anchor=\"middle\">\(panel.title)</text>\n"
            s += "<rect x=\"\(x0)\" y=\"\(y0)\" width=\"\(w)\" height=\"\(h)\" fill=\"none\" stroke=\"#ccc\"/>\n"
            for t in 0...4 {
                let v = yMax * Double(t) / 4
                s += "<line x1=\"\(x0)\" x2=\"\(x0 + w)\" y1=\"\(y(v))\" y2=\"\(y(v))\" stroke=\"#eee\"/>\n"
                s += "<text x=\"\(x0 - 5)\" y=\"\(y(v) + 4)\" text-anchor=\"end\">\(fmt(v, 2))</text>\n"
            }
            for n in workerCounts {
                s += "<text x=\"\(x(n))\" y=\"\(y0 + h + 15)\" text-anchor=\"middle\">\(n)</text>\n"
            }
            s += "<text x=\"\(x0 + w / 2)\" y=\"\(y0 + h + 32)\" text-anchor=\"middle\">workers (N)</text>\n"
            for method in AggregationMethod.allCases {
                let points = rows.filter { $0.method == method && panel.contains($0) }.sorted {
                    $0.workers < $1.workers
                }
                guard !points.isEmpty else { continue }
                let color = Self.colors[method] ?? "black"
                let path = points.map { "\(x($0.workers)),\(y($0.gradientGBps))" }.joined(separator: " ")
                s += "<polyline points=\"\(path)\" fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\"/>\n"
                for p in points {
                    s += "<circle cx=\"\(x(p.workers))\" cy=\"\(y(p.gradientGBps))\" r=\"3\" fill=\"\(color)\"/>\n"
                }
            }
        }
        // Legend.
        var lx = 20.0
        let ly = height - 15
        for method in AggregationMethod.allCases where rows.contains(where: { $0.method == method }) {
            let color = Self.colors[method] ?? "black"
            s +=
                "<line x1=\"\(lx)\" x2=\"\(lx + 25)\" y1=\"\(ly - 4)\" y2=\"\(ly - 4)\" stroke=\"\(color)\" stroke-width=\"2\"/>\n"
            s += "<text x=\"\(lx + 30)\" y=\"\(ly)\">\(method.rawValue)</text>\n"
            lx += 140
        }
        return s + "</svg>\n"
    }
}

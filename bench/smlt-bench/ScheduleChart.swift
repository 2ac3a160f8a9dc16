import Foundation
import PlannerSimulation

/// Two bar panels per policy: the deadline hit rate (higher is better) and the median and p90
/// cost over optimal's (lower is better). Plain SVG, no dependencies, in the sweep chart's style.
struct ScheduleChart {
    let rows: [PolicyRow]
    let scenarios: Int
    let seed: UInt64

    static let colors: [String: String] = [
        "smlt": "#1f77b4", "fixed": "#7f7f7f", "one-shot": "#ff7f0e", "bo-1d": "#d62728", "scale-in": "#9467bd",
        "optimal": "#2ca02c",
    ]

    func svg() -> String {
        let (pw, ph) = (420.0, 300.0)
        let (left, top, right, bottom) = (55.0, 40.0, 15.0, 45.0)
        let width = 2 * pw
        let height = ph + 60
        var s = """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" \
            font-family="sans-serif" font-size="11">
            <rect width="100%" height="100%" fill="white"/>
            <text x="\(Int(width / 2))" y="18" text-anchor="middle" font-size="14">\
            smlt-bench schedule: \(scenarios) simulated scenarios (seed \(seed)), \(rows.first?.feasible ?? 0) feasible</text>

            """
        let ratioMax = max(2, niceCeiling((rows.map(\.costVsOptimalP90).max() ?? 1) * 1.05))
        let panels: [(String, Double, (PolicyRow) -> [Double])] = [
            ("deadline hit rate (feasible, with a deadline), higher is better", 1, { [$0.deadlineHitRate] }),
            (
                "cost / optimal: median (bar), p90 (tick), lower is better", ratioMax,
                {
                    [$0.costVsOptimalMedian, $0.costVsOptimalP90]
                }
            ),
        ]
        for (i, panel) in panels.enumerated() {
            let ox = Double(i) * pw
            let oy = 30.0
            let (x0, y0) = (ox + left, oy + top)
            let (w, h) = (pw - left - right, ph - top - bottom)
            func y(_ v: Double) -> Double { y0 + h - h * min(v, panel.1) / panel.1 }
            s += "<text x=\"\(Int(ox + pw / 2))\" y=\"\(Int(oy + 25))\" text-anchor=\"middle\">\(panel.0)</text>\n"
            s += "<rect x=\"\(x0)\" y=\"\(y0)\" width=\"\(w)\" height=\"\(h)\" fill=\"none\" stroke=\"#ccc\"/>\n"
            for t in 0...4 {
                let v = panel.1 * Double(t) / 4
                s += "<line x1=\"\(x0)\" x2=\"\(x0 + w)\" y1=\"\(y(v))\" y2=\"\(y(v))\" stroke=\"#eee\"/>\n"
                s += "<text x=\"\(x0 - 5)\" y=\"\(y(v) + 4)\" text-anchor=\"end\">\(fmt(v, 2))</text>\n"
            }
            if i == 1 {
                s +=
                    "<line x1=\"\(x0)\" x2=\"\(x0 + w)\" y1=\"\(y(1))\" y2=\"\(y(1))\" stroke=\"#2ca02c\" stroke-dasharray=\"4 3\"/>\n"
            }
            let slot = w / Double(max(1, rows.count))
            for (j, r) in rows.enumerated() {
                let values = panel.2(r)
                let color = Self.colors[r.policy] ?? "black"
                let bx = x0 + slot * Double(j) + slot * 0.15
                let bw = slot * 0.7
                s +=
                    "<rect x=\"\(bx)\" y=\"\(y(values[0]))\" width=\"\(bw)\" height=\"\(y0 + h - y(values[0]))\" fill=\"\(color)\"/>\n"
                s +=
                    "<text x=\"\(bx + bw / 2)\" y=\"\(y(values[0]) - 4)\" text-anchor=\"middle\">\(fmt(values[0], 2))</text>\n"
                if values.count > 1 {
                    s +=
                        "<line x1=\"\(bx)\" x2=\"\(bx + bw)\" y1=\"\(y(values[1]))\" y2=\"\(y(values[1]))\" stroke=\"black\" stroke-width=\"2\"/>\n"
                }
                s += "<text x=\"\(bx + bw / 2)\" y=\"\(y0 + h + 15)\" text-anchor=\"middle\">\(r.policy)</text>\n"
            }
        }
        return s + "</svg>\n"
    }
}

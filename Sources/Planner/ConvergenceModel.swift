import Foundation

/// Held-out loss against the examples trained on, `loss(E) = 1 / (β0·E + β1) + β2`, the curve
/// Optimus fits against steps. Counting examples instead of steps lets a run change its number
/// of workers (and so its global batch) and keep one curve; it assumes an example is worth the
/// same at every batch size, which re-fitting corrects as the run goes.
public struct ConvergenceModel: Sendable, Codable, Equatable {
    public var beta0: Double
    public var beta1: Double
    /// The loss the curve levels off at.
    public var floor: Double
    /// Evaluations the curve was fitted from.
    public var points: Int

    public init(beta0: Double, beta1: Double, floor: Double, points: Int) {
        self.beta0 = beta0
        self.beta1 = beta1
        self.floor = floor
        self.points = points
    }

    /// The predicted held-out loss after `examples` examples.
    public func loss(afterExamples examples: Double) -> Double { 1 / (beta0 * examples + beta1) + floor }

    /// Examples needed to reach `target`, or nil when the curve levels off above it.
    public func examples(toReach target: Double) -> Double? {
        guard target > floor, beta0 > 0 else { return nil }
        return max(0, (1 / (target - floor) - beta1) / beta0)
    }

    /// The curve through `observations` (examples, loss), or nil with fewer than four of them or
    /// no descent. Non-negative least squares in `1/(loss − β2)` for each candidate floor β2 on a
    /// grid below the lowest loss; the floor whose curve fits the losses best wins.
    public static func fit(_ observations: [(examples: Double, loss: Double)]) -> ConvergenceModel? {
        let points = observations.filter { $0.loss.isFinite && $0.examples >= 0 }
        guard points.count >= 4, let lowest = points.map(\.loss).min(), lowest > 0 else { return nil }
        var best: (sse: Double, model: ConvergenceModel)?
        for i in 0..<60 {
            let floor = lowest * Double(i) / 60
            let ys = points.map { 1 / ($0.loss - floor) }
            let xs = points.map(\.examples)
            let n = Double(points.count)
            let mx = xs.reduce(0, +) / n
            let my = ys.reduce(0, +) / n
            var sxx = 0.0
            var sxy = 0.0
            for (x, y) in zip(xs, ys) {
                sxx += (x - mx) * (x - mx)
                sxy += (x - mx) * (y - my)
            }
            guard sxx > 0 else { return nil }
            let b0 = sxy / sxx
            guard b0 > 0 else { continue }
            let b1 = max(1e-12, my - b0 * mx)
            let model = ConvergenceModel(beta0: b0, beta1: b1, floor: floor, points: points.count)
            let sse = points.reduce(0.0) { $0 + pow(model.loss(afterExamples: $1.examples) - $1.loss, 2) }
            if best == nil || sse < best!.sse { best = (sse, model) }
        }
        return best?.model
    }

    enum CodingKeys: String, CodingKey {
        case beta0 = "beta0"
        case beta1 = "beta1"
        case floor, points
    }
}

import Foundation

/// A small Gaussian process over one variable in [0, 1] with a Matérn 2.5 kernel, as
/// `bayes_opt` uses: targets normalised to zero mean and unit variance, a little noise on the
/// diagonal, the length scale chosen by marginal likelihood on a grid.
public struct GaussianProcess: Sendable {
    public private(set) var xs: [Double] = []
    public private(set) var ys: [Double] = []
    public private(set) var lengthScale = 0.25
    /// Noise variance added to the diagonal (in normalised units).
    public var noise = 1e-3
    private var chol: [[Double]] = []
    private var alpha: [Double] = []
    private var mean = 0.0
    private var scale = 1.0

    public init() {}

    static func matern52(_ a: Double, _ b: Double, length: Double) -> Double {
        let r = abs(a - b) / length
        let s5 = 5.0.squareRoot() * r
        return (1 + s5 + 5 * r * r / 3) * exp(-s5)
    }

    /// Adds observations and refits.
    public mutating func fit(xs: [Double], ys: [Double]) {
        self.xs = xs
        self.ys = ys
        guard !xs.isEmpty else { return }
        mean = ys.reduce(0, +) / Double(ys.count)
        let variance = ys.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(ys.count)
        scale = variance > 0 ? variance.squareRoot() : 1
        let z = ys.map { ($0 - mean) / scale }
        var best: (Double, [[Double]], [Double])?
        for length in [0.05, 0.1, 0.2, 0.4, 0.8, 1.6] {
            guard let l = Self.cholesky(kernelMatrix(length)) else { continue }
            let a = Self.solve(l, z)
            // Log marginal likelihood, up to a constant.
            var logDet = 0.0
            for i in 0..<l.count { logDet += log(l[i][i]) }
            let fitTerm = zip(z, a).reduce(0) { $0 + $1.0 * $1.1 }
            let lml = -0.5 * fitTerm - logDet
            if best == nil || lml > best!.0 {
                best = (lml, l, a)
                lengthScale = length
            }
        }
        if let best {
            chol = best.1
            alpha = best.2
        }
    }

    func kernelMatrix(_ length: Double) -> [[Double]] {
        xs.map { a in xs.map { b in Self.matern52(a, b, length: length) } }.enumerated().map { i, row in
            var r = row
            r[i] += noise
            return r
        }
    }

    /// The posterior mean and standard deviation at `x`, in the targets' units.
    public func predict(_ x: Double) -> (mean: Double, sd: Double) {
        guard !xs.isEmpty, !chol.isEmpty else { return (mean, scale) }
        let k = xs.map { Self.matern52($0, x, length: lengthScale) }
        let mu = zip(k, alpha).reduce(0) { $0 + $1.0 * $1.1 }
        let v = Self.forward(chol, k)
        let variance = max(0, 1 - v.reduce(0) { $0 + $1 * $1 })
        return (mean + scale * mu, scale * variance.squareRoot())
    }

    /// The lower Cholesky factor, or nil when `a` is not positive definite.
    static func cholesky(_ a: [[Double]]) -> [[Double]]? {
        let n = a.count
        var l = [[Double]](repeating: [Double](repeating: 0, count: n), count: n)
        for i in 0..<n {
            for j in 0...i {
                var s = a[i][j]
                for k in 0..<j { s -= l[i][k] * l[j][k] }
                if i == j {
                    guard s > 0 else { return nil }
                    l[i][i] = s.squareRoot()
                } else {
                    l[i][j] = s / l[j][j]
                }
            }
        }
        return l
    }

    static func forward(_ l: [[Double]], _ b: [Double]) -> [Double] {
        var y = [Double](repeating: 0, count: b.count)
        for i in 0..<b.count {
            var s = b[i]
            for k in 0..<i { s -= l[i][k] * y[k] }
            y[i] = s / l[i][i]
        }
        return y
    }

    /// Solves (L Lᵀ) x = b.
    static func solve(_ l: [[Double]], _ b: [Double]) -> [Double] {
        let y = forward(l, b)
        let n = b.count
        var x = [Double](repeating: 0, count: n)
        for i in stride(from: n - 1, through: 0, by: -1) {
            var s = y[i]
            for k in (i + 1)..<n { s -= l[k][i] * x[k] }
            x[i] = s / l[i][i]
        }
        return x
    }
}

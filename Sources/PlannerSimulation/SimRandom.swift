import Foundation

/// A seeded pseudo-random generator (xoshiro256**, seeded through SplitMix64), so a scenario set
/// and every run on it are the same for the same seed on every machine.
public struct SimRandom: RandomNumberGenerator, Sendable {
    private var s: (UInt64, UInt64, UInt64, UInt64)

    public init(seed: UInt64) {
        var x = seed
        func splitMix() -> UInt64 {
            x &+= 0x9E37_79B9_7F4A_7C15
            var z = x
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        s = (splitMix(), splitMix(), splitMix(), splitMix())
    }

    /// An independent stream for `label` (a scenario, a policy), derived from this seed.
    public func fork(_ label: UInt64) -> SimRandom {
        var copy = self
        return SimRandom(seed: copy.next() ^ (label &* 0xD6E8_FEB8_6659_FD93))
    }

    public mutating func next() -> UInt64 {
        let result = ((s.1 &* 5) << 7 | (s.1 &* 5) >> 57) &* 9
        let t = s.1 << 17
        s.2 ^= s.0
        s.3 ^= s.1
        s.1 ^= s.2
        s.0 ^= s.3
        s.2 ^= t
        s.3 = s.3 << 45 | s.3 >> 19
        return result
    }

    /// Uniform in the open interval (0, 1).
    public mutating func uniform() -> Double { (Double(next() >> 11) + 0.5) / 9_007_199_254_740_992 }

    /// Uniform in `[lo, hi)`.
    public mutating func uniform(_ lo: Double, _ hi: Double) -> Double { lo + (hi - lo) * uniform() }

    /// Log-uniform in `[lo, hi)`.
    public mutating func logUniform(_ lo: Double, _ hi: Double) -> Double { exp(uniform(log(lo), log(hi))) }

    /// A standard normal draw (by inversion, so one uniform per draw).
    public mutating func normal() -> Double { Self.inverseNormalCDF(uniform()) }

    /// A lognormal factor with median `exp(-σ²/2)`, so its mean is 1.
    public mutating func lognormalFactor(_ sigma: Double) -> Double { exp(sigma * normal() - sigma * sigma / 2) }

    /// One element of `choices`.
    public mutating func pick<T>(_ choices: [T]) -> T { choices[Int(uniform() * Double(choices.count))] }

    /// The standard normal quantile (Acklam's rational approximation, relative error < 1.2e-9).
    public static func inverseNormalCDF(_ p: Double) -> Double {
        let a = [
            -3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02, 1.383577518672690e+02,
            -3.066479806614716e+01, 2.506628277459239e+00,
        ]
        let b = [
            -5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02, 6.680131188771972e+01,
            -1.328068155288572e+01,
        ]
        let c = [
            -7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00, -2.549732539343734e+00,
            4.374664141464968e+00, 2.938163982698783e+00,
        ]
        let d = [7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00, 3.754408661907416e+00]
        let p = min(max(p, 1e-300), 1 - 1e-16)
        if p < 0.02425 {
            let q = (-2 * log(p)).squareRoot()
            return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5])
                / ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
        }
        if p > 1 - 0.02425 {
            let q = (-2 * log(1 - p)).squareRoot()
            return -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5])
                / ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
        }
        let q = p - 0.5
        let r = q * q
        return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q
            / (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)
    }

    /// The largest of `n` iid lognormal factors (mean 1, log-σ `sigma`), drawn exactly with one
    /// uniform: the largest of n uniforms is u^(1/n).
    public mutating func maxLognormalFactor(of n: Int, sigma: Double) -> Double {
        let u = pow(uniform(), 1 / Double(max(1, n)))
        return exp(sigma * Self.inverseNormalCDF(u) - sigma * sigma / 2)
    }

    /// The expected largest of `n` iid lognormal factors (mean 1, log-σ `sigma`), by the midpoint
    /// rule over the uniform that `maxLognormalFactor` draws.
    public static func expectedMaxLognormalFactor(of n: Int, sigma: Double, points: Int = 256) -> Double {
        guard sigma > 0 else { return 1 }
        var sum = 0.0
        for i in 0..<points {
            let u = pow((Double(i) + 0.5) / Double(points), 1 / Double(max(1, n)))
            sum += exp(sigma * inverseNormalCDF(u) - sigma * sigma / 2)
        }
        return sum / Double(points)
    }
}

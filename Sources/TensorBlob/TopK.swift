/// Top-k selection of gradient elements, deterministic to the bit: the same values and fraction
/// always select the same indices, on every machine and in every client (docs/wire-format.md,
/// "Top-k selection").
public enum TopK {
    /// How many of `n` elements a fraction keeps: `ceil(fraction × n)` (in f64), at least 1 and at
    /// most `n` (0 when `n` is 0).
    /// - Throws: `GradientEncodingError.invalidFraction` unless `0 < fraction ≤ 1`.
    public static func count(of n: Int, fraction: Double) throws(GradientEncodingError) -> Int {
        try check(fraction)
        guard n > 0 else { return 0 }
        return min(n, max(1, Int((fraction * Double(n)).rounded(.up))))
    }

    /// Refuses a fraction outside (0, 1] (NaN included), naming it.
    public static func check(_ fraction: Double) throws(GradientEncodingError) {
        guard fraction > 0, fraction <= 1 else {
            throw GradientEncodingError(
                .invalidFraction, "top-k fraction \(fraction) is outside (0, 1]: it must be above 0 and at most 1")
        }
    }

    /// The indices, in increasing order, of the `count(of: values.count, fraction:)` elements of
    /// largest magnitude; of equal magnitudes the lower index wins. Magnitude orders like the bit
    /// pattern with the sign cleared, so a NaN counts as larger than infinity.
    /// - Throws: `GradientEncodingError.invalidFraction` unless `0 < fraction ≤ 1`.
    public static func select(_ values: UnsafeBufferPointer<Float>, fraction: Double) throws(GradientEncodingError)
        -> [UInt32]
    {
        let k = try count(of: values.count, fraction: fraction)
        precondition(values.count <= Int(UInt32.max) + 1, "top-k of \(values.count) elements: indices are 32-bit")
        return select(values, k: k)
    }

    public static func select(_ values: [Float], fraction: Double) throws(GradientEncodingError) -> [UInt32] {
        let r = values.withUnsafeBufferPointer { v in
            Result { () throws(GradientEncodingError) in try select(v, fraction: fraction) }
        }
        return try r.get()
    }

    /// The `k` indices as `select(_:fraction:)` describes. The k-th largest magnitude `t` is found
    /// by two 16-bit histogram passes (linear time whatever the data); then every element above `t`
    /// is kept, and of those equal to `t` the first ones in index order.
    static func select(_ values: UnsafeBufferPointer<Float>, k: Int) -> [UInt32] {
        let n = values.count
        guard k > 0 else { return [] }
        if k == n { return (0..<n).map { UInt32($0) } }
        @inline(__always) func magnitude(_ i: Int) -> UInt32 { values[i].bitPattern & 0x7FFF_FFFF }
        // Rank of the wanted magnitude among the largest: the k-th, counting from 1.
        var high = [Int](repeating: 0, count: 1 << 16)
        for i in 0..<n { high[Int(magnitude(i) >> 16)] += 1 }
        var rank = k
        var top = (1 << 16) - 1
        while high[top] < rank {
            rank -= high[top]
            top -= 1
        }
        var low = [Int](repeating: 0, count: 1 << 16)
        for i in 0..<n where Int(magnitude(i) >> 16) == top { low[Int(magnitude(i) & 0xFFFF)] += 1 }
        var bottom = (1 << 16) - 1
        while low[bottom] < rank {
            rank -= low[bottom]
            bottom -= 1
        }
        let threshold = UInt32(top) << 16 | UInt32(bottom)
        // `rank` elements equal to the threshold are kept, the first ones by index.
        var ties = rank
        var result: [UInt32] = []
        result.reserveCapacity(k)
        for i in 0..<n {
            let m = magnitude(i)
            if m > threshold {
                result.append(UInt32(i))
            } else if m == threshold && ties > 0 {
                result.append(UInt32(i))
                ties -= 1
            }
        }
        return result
    }
}

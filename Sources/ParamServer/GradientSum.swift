import CTensorKernels

/// Element-wise gradient sums, in one fixed kernel shared by the servers and the reference run.
public enum GradientSum {
    /// `sum[i] += gradient[i]`.
    public static func add(_ gradient: [Float], into sum: inout [Float]) {
        precondition(gradient.count == sum.count)
        let n = sum.count
        sum.withUnsafeMutableBufferPointer { s in gradient.withUnsafeBufferPointer { g in add(g, into: s, count: n) } }
    }

    /// `sum[i] += gradient[i]` over two buffers of the same length.
    public static func add(_ gradient: UnsafeBufferPointer<Float>, into sum: UnsafeMutableBufferPointer<Float>) {
        precondition(gradient.count == sum.count)
        add(gradient, into: sum, count: sum.count)
    }

    /// `sum[i] += gradient[i]` (the same sums as `add`), checking in the same pass that every
    /// gradient value is finite; false when one is NaN or infinite (`sum` is changed anyway).
    public static func addCheckingFinite(
        _ gradient: UnsafeBufferPointer<Float>, into sum: UnsafeMutableBufferPointer<Float>
    ) -> Bool {
        precondition(gradient.count == sum.count)
        guard sum.count > 0 else { return true }
        return ctk_add_f32_finite(sum.baseAddress!, gradient.baseAddress!, sum.count) != 0
    }

    static func add(_ g: UnsafeBufferPointer<Float>, into s: UnsafeMutableBufferPointer<Float>, count: Int) {
        guard count > 0 else { return }
        ctk_add_f32(s.baseAddress!, g.baseAddress!, count)
    }
}

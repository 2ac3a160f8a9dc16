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

    static func add(_ g: UnsafeBufferPointer<Float>, into s: UnsafeMutableBufferPointer<Float>, count: Int) {
        guard count > 0 else { return }
        ctk_add_f32(s.baseAddress!, g.baseAddress!, count)
    }
}

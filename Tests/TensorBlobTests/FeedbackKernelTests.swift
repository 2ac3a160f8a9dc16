import Testing

@testable import TensorBlob

/// `DType.feedback` (one pass: add, round, subtract) against the three steps one by one.
@Suite struct FeedbackKernelTests {
    @Test(arguments: [DType.bf16, .f16])
    func feedbackIsTheStepsOneAfterTheOther(dtype: DType) {
        var rng = RandomBits(state: 23)
        let subnormal = Float(bitPattern: 0x0001_16C2)  // about 1e-40
        let specials: [Float] = [
            -0.0, 0, subnormal, -subnormal, 65504, 65520, 70000, -1e30, 3.4e38, .leastNonzeroMagnitude, 1, -1, 0.1,
        ]
        for count in [0, 1, 13, 2047, 2048, 2049, 5003] {
            let gradient = (0..<count).map { i in i < specials.count ? specials[i] : rng.floats(1)[0] * 1e3 }
            let stored = (0..<count).map { i in i % 3 == 0 ? -0.0 : rng.floats(1)[0] }
            for residual in [nil, stored] {
                var v = gradient
                if let residual { for i in v.indices { v[i] += residual[i] } }
                var q = [Float](repeating: 0, count: count)
                v.withUnsafeBufferPointer { vs in q.withUnsafeMutableBufferPointer { dtype.round(vs, into: $0) } }
                let remainder = zip(v, q).map { $0 - $1 }
                var sent = [Float](repeating: .nan, count: count)
                var left = [Float](repeating: .nan, count: count)
                gradient.withUnsafeBufferPointer { g in
                    sent.withUnsafeMutableBufferPointer { s in
                        left.withUnsafeMutableBufferPointer { l in
                            if let residual {
                                residual.withUnsafeBufferPointer {
                                    dtype.feedback(g, residual: $0, sent: s, remainder: l)
                                }
                            } else {
                                dtype.feedback(g, residual: nil, sent: s, remainder: l)
                            }
                        }
                    }
                }
                let label = "\(dtype) count \(count) residual \(residual == nil ? "none" : "given")"
                #expect(sent.map(\.bitPattern) == q.map(\.bitPattern), "\(label)")
                #expect(left.map(\.bitPattern) == remainder.map(\.bitPattern), "\(label)")
            }
        }
        // In place: the remainder overwrites the residual it was computed from.
        var r = (0..<3000).map { _ in rng.floats(1)[0] }
        let g = (0..<3000).map { _ in rng.floats(1)[0] * 7 }
        var sent = [Float](repeating: 0, count: 3000)
        let v = zip(g, r).map { $0 + $1 }
        var q = [Float](repeating: 0, count: 3000)
        v.withUnsafeBufferPointer { vs in q.withUnsafeMutableBufferPointer { dtype.round(vs, into: $0) } }
        g.withUnsafeBufferPointer { gs in
            sent.withUnsafeMutableBufferPointer { s in
                r.withUnsafeMutableBufferPointer { rs in
                    dtype.feedback(gs, residual: UnsafeBufferPointer(rs), sent: s, remainder: rs)
                }
            }
        }
        #expect(r.map(\.bitPattern) == zip(v, q).map { ($0 - $1).bitPattern })
    }
}

import ShardManager
import TensorBlob
import TrainingProtocol

/// Gradients whose sum over the workers is known exactly, so the benchmark can check every
/// aggregate bit for bit, and cheap enough to produce that they do not steal the CPU the
/// measurement runs on.
///
/// Each worker has a base gradient of pseudo-random values `k * 2^-24`, with `|k|` small enough
/// that the sum over all workers stays below 2^23: every partial sum is exact in f32, in any
/// order. Even steps send the base and odd steps its negation (both precomputed, so producing a
/// step's gradient costs nothing); a stale gradient from the previous step would flip the sign
/// of the sum and fail the check. Values span the exponents of a real gradient (up to about
/// 2^-3), so codecs see similar data, except that the lowest mantissa bits are more often zero.
struct KnownGradient: Sendable {
    let workers: Int
    let params: Int
    let seed: UInt64
    private let bits: Int

    init(workers: Int, params: Int, seed: UInt64 = 0x5EED) {
        self.workers = workers
        self.params = params
        self.seed = seed
        // 2^bits * workers < 2^23
        var log2 = 0
        while (1 << log2) < workers { log2 += 1 }
        bits = max(1, 22 - log2)
    }

    /// Worker `w`'s base gradient.
    func base(worker w: Int) -> [Float] { base(worker: w, range: 0..<params) }

    /// Elements `range` of worker `w`'s base gradient.
    func base(worker w: Int, range: Range<Int>) -> [Float] {
        range.map { i in
            let h = Hash64.mix(seed ^ UInt64(truncatingIfNeeded: i) &* 0x9E37_79B9_7F4A_7C15 ^ UInt64(w) << 44)
            let magnitude = Int64(truncatingIfNeeded: h >> UInt64(64 - bits))
            return Float(h & 1 == 1 ? -magnitude : magnitude) * 0x1p-24
        }
    }

    /// The exact element-wise sum of all workers' base gradients.
    func baseSum() -> [Float] {
        var sum = [Float](repeating: 0, count: params)
        for w in 0..<workers {
            let b = base(worker: w)
            for i in 0..<params { sum[i] += b[i] }
        }
        return sum
    }

    /// Elements `range` of the model's version 0 for SMLT: pseudo-random values in about ±0.05
    /// with full mantissas, as initialised weights have. From a zero model, plain SGD on gradients
    /// of alternating sign would return to exactly zero every second version, and such a model
    /// compresses to almost nothing with an LZ4 map codec, which would flatter those codecs' pulls.
    func initialModel(range: Range<Int>) -> [Float] {
        range.map { i in
            let h = Hash64.mix(seed ^ 0x1A17 ^ UInt64(truncatingIfNeeded: i) &* 0xC2B2_AE3D_27D4_EB4F)
            return (Float(h >> 40) * 0x1p-24 - 0.5) * 0.1
        }
    }

    /// The element-wise sums over `range` that the servers compute for even and odd steps when
    /// every worker pushes its gradient of that step in `encoding` without error feedback: each
    /// worker's pushed values (`ErrorFeedback.sent` from a zero residual, as the bench worker
    /// pushes them) are encoded as the worker's chunk blobs and decoded again, as a server reads
    /// them, and added in f32 in worker-id order (worker 0's values, then `+=` each next worker's),
    /// as `ShardAggregator` sums them. Lossless encodings give the exact sums of the base gradients.
    func expectedSums(range: Range<Int>, encoding: GradientEncoding, chunkElements: Int) -> [[Float]] {
        guard encoding.isLossy else {
            let sum = Array(baseSum()[range])
            return [sum, sum.map { -$0 }]
        }
        // Top-k picks within each chunk: work on whole chunks around the range.
        let lo = range.lowerBound / chunkElements * chunkElements
        let hi = min(params, (range.upperBound + chunkElements - 1) / chunkElements * chunkElements)
        return [false, true].map { negate in
            var sum: [Float] = []
            for w in 0..<workers {
                var g = base(worker: w, range: lo..<hi)
                if negate { g = g.map { -$0 } }
                let sent = ErrorFeedback(gradient: g, residual: nil, encoding: encoding, chunkElements: chunkElements)
                    .sent
                var decoded = [Float](repeating: 0, count: sent.count)
                sent.withUnsafeBufferPointer { s in
                    for start in stride(from: 0, to: s.count, by: chunkElements) {
                        let end = min(s.count, start + chunkElements)
                        let blob = TensorBlob.encode(
                            UnsafeBufferPointer(rebasing: s[start..<end]), dtype: encoding.dtype,
                            codec: encoding.codec, step: 0, producer: UInt32(w))
                        // A blob this process just encoded decodes; anything else is a bug here.
                        let values = try! TensorBlob.decode(blob).values
                        decoded.replaceSubrange(start..<end, with: values)
                    }
                }
                if w == 0 {
                    sum = decoded
                } else {
                    for i in sum.indices { sum[i] += decoded[i] }
                }
            }
            return Array(sum[(range.lowerBound - lo)..<(range.upperBound - lo)])
        }
    }

    /// Worker `w`'s gradients for even and odd steps.
    func gradients(worker w: Int) -> [[Float]] {
        let b = base(worker: w)
        return [b, b.map { -$0 }]
    }

    /// The slice of the model that worker `w` checks (each worker checks 1/N of it).
    static func checkedRange(worker w: Int, workers n: Int, params p: Int) -> Range<Int> {
        (p * w / n)..<(p * (w + 1) / n)
    }
}

import KeySchema
import RedisClient
import ShardManager
import TensorBlob

/// Error feedback for lossy gradient encodings (docs/wire-format.md, "Gradient encodings and
/// error feedback"): a worker pushes the encoding of `v = g + r`, where `g` is its gradient and
/// `r` its residual, and keeps `v − decode(encode(v))` as the residual of its next step (with
/// top-k: everything not sent, plus the rounding of what was). Every operation is one f32
/// addition or subtraction per element, so any IEEE client computes the same bits.
///
/// The residual is part of the worker's state: it is stored as the named object
/// `residual-W-P` (`P` = the step it belongs to, mod 2), a blob whose header `step` is that step,
/// written in the first phase of the push that produced it, so before anything can count the
/// push. The two slots keep the residual the current step started from intact until the progress
/// that names the new one is saved.
public struct ErrorFeedback: Sendable {
    /// The values to push, as the servers will read them (zero where top-k sent nothing).
    public let sent: [Float]
    /// The residual for the next step; nil when the encoding is lossless.
    public let residual: [Float]?

    /// Applies `encoding` to `gradient` plus `residual` (nil: zero). Top-k selects in each chunk of
    /// `chunkElements` elements on its own (`TopK.select`, as the encoding's blobs do).
    public init(gradient: [Float], residual: [Float]?, encoding: GradientEncoding, chunkElements: Int) {
        guard encoding.isLossy else {
            sent = gradient
            self.residual = nil
            return
        }
        if let residual {
            precondition(residual.count == gradient.count, "residual of \(residual.count) values for \(gradient.count)")
        }
        switch encoding {
        case .dense:
            var next = residual
            var q: [Float] = []
            Self.apply(gradient: gradient, residual: &next, sent: &q, encoding: encoding, chunkElements: chunkElements)
            sent = q
            self.residual = next
        case .topK(let fraction, let dtype):
            var v = gradient
            if let residual { for i in v.indices { v[i] += residual[i] } }
            var q = [Float](repeating: 0, count: v.count)
            v.withUnsafeBufferPointer { vs in
                for start in stride(from: 0, to: vs.count, by: max(1, chunkElements)) {
                    let chunk = UnsafeBufferPointer(rebasing: vs[start..<min(vs.count, start + chunkElements)])
                    // The fraction was checked when the encoding was parsed.
                    let picked = (try? TopK.select(chunk, fraction: fraction)) ?? []
                    var kept = picked.map { chunk[Int($0)] }
                    kept.withUnsafeMutableBufferPointer { k in dtype.round(UnsafeBufferPointer(k), into: k) }
                    for (i, x) in zip(picked, kept) { q[start + Int(i)] = x }
                }
            }
            for i in v.indices { v[i] -= q[i] }
            sent = q
            self.residual = v
        }
    }

    /// The same computation into storage the caller keeps across steps, so that a worker's push
    /// does not take fresh pages for two model-sized arrays every step (they cost more than the
    /// arithmetic; BENCHMARKS.md, "The cost of error feedback's pass"): `sent` is overwritten
    /// (resized to the gradient's count), and `residual` (nil: zero) becomes the next step's
    /// residual, in place for bf16 and f16 (nil for a lossless encoding). The same bits as `init`.
    public static func apply(
        gradient: [Float], residual: inout [Float]?, sent: inout [Float], encoding: GradientEncoding,
        chunkElements: Int
    ) {
        guard encoding.isLossy, case .dense(let dtype, _) = encoding else {
            let fresh = ErrorFeedback(
                gradient: gradient, residual: residual, encoding: encoding, chunkElements: chunkElements)
            sent = fresh.sent
            residual = fresh.residual
            return
        }
        let n = gradient.count
        if let residual { precondition(residual.count == n, "residual of \(residual.count) values for \(n)") }
        if sent.count != n { sent = [Float](repeating: 0, count: n) }
        if residual == nil {
            var next = [Float](repeating: 0, count: n)
            gradient.withUnsafeBufferPointer { g in
                sent.withUnsafeMutableBufferPointer { q in
                    next.withUnsafeMutableBufferPointer { dtype.feedback(g, residual: nil, sent: q, remainder: $0) }
                }
            }
            residual = next
            return
        }
        gradient.withUnsafeBufferPointer { g in
            sent.withUnsafeMutableBufferPointer { q in
                residual!.withUnsafeMutableBufferPointer { r in
                    dtype.feedback(g, residual: UnsafeBufferPointer(r), sent: q, remainder: r)
                }
            }
        }
    }

    /// The named object that holds worker `worker`'s residual for step `step`.
    public static func objectName(worker: Int, step: Int) -> String { "residual-\(worker)-\(step % 2)" }

    /// The residual blob's codec: the residual of a bf16 rounding has its low f32 byte zero.
    static let codec = BlobCodec.raw
}

extension WorkerSession {
    /// Reads the residual `progress` names for its `nextStep`: nil when it names none. A named
    /// residual that is missing, damaged, of another step or worker, or of another size is a
    /// `corruptChunk` error (the worker cannot resume exactly).
    public func loadResidual(_ progress: WorkerProgress?) throws(ShardError) -> [Float]? {
        guard let progress, let name = progress.residual else { return nil }
        return try loadResidual(named: name, step: progress.nextStep)
    }

    /// Reads residual object `name`, which must belong to this worker's step `step`.
    public func loadResidual(named name: String, step: Int) throws(ShardError) -> [Float] {
        guard name == ErrorFeedback.objectName(worker: worker, step: step) else {
            throw ShardError(
                .corruptChunk, "worker \(worker)'s progress names residual '\(name)' for step \(step)")
        }
        guard let bytes = try object(name) else {
            throw ShardError(
                .corruptChunk, "the error-feedback residual '\(name)' of worker \(worker) for step \(step) is missing")
        }
        let decoded: (header: BlobHeader, values: [Float])
        do { decoded = try TensorBlob.decode(bytes) } catch {
            throw ShardError(.corruptChunk, "the error-feedback residual '\(name)' is not a valid blob: \(error)")
        }
        guard decoded.header.step == UInt64(step), decoded.header.producer == UInt32(worker),
            decoded.values.count == parameterCount
        else {
            throw ShardError(
                .corruptChunk,
                "the error-feedback residual '\(name)' holds \(decoded.values.count) values of step \(decoded.header.step) from producer \(decoded.header.producer); worker \(worker) needs \(parameterCount) of step \(step)"
            )
        }
        return decoded.values
    }

    /// Pushes `sent` for `step` with `encoding` (two phases, as `push(gradient:step:)`), storing
    /// `residual` (the next step's) in the first phase. Returns the residual's object name, for
    /// the progress saved after the push; nil without a residual.
    @discardableResult
    public func push(sent: [Float], step: Int, encoding: GradientEncoding, residual: [Float]?) throws(ShardError)
        -> String?
    {
        var extra: (shard: Int, command: RedisCommand)?
        var name: String?
        if let residual {
            let objectName = ErrorFeedback.objectName(worker: worker, step: step + 1)
            let blob = TensorBlob.encode(
                residual, codec: ErrorFeedback.codec, step: UInt64(step + 1), producer: UInt32(worker))
            let key = training.object(objectName)
            extra = (
                JobObjects.shard(for: objectName, job: shards.map.job, shards: shards.map.shards),
                RedisCommand("SET", key).appending(bytes: blob)
            )
            name = objectName
        }
        let after = extra
        try sent.withUnsafeBufferPointer { (g) throws(ShardError) in
            try shards.write(
                g, as: .gradient(step: step, worker: worker), step: step, producer: UInt32(worker),
                expireSeconds: Self.gradientTTLSeconds, codec: encoding.codec, dtype: encoding.dtype,
                after: { shard in after.flatMap { $0.shard == shard ? [$0.command] : nil } ?? [] })
        }
        try markPushed(step: step) { _, _ in true }
        return name
    }
}

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

    /// The name of worker `worker`'s residual for step `step`, as its progress names it. The
    /// residual is stored in parts, one named object per chunk of the layout (`partName`).
    public static func objectName(worker: Int, step: Int) -> String { "residual-\(worker)-\(step % 2)" }

    /// The named object that holds part `part` of residual `name`: the residual's elements of
    /// the layout's chunk `part`. Parts keep every value near a chunk's size (Redis takes a
    /// 16 MiB SET at a quarter of a 1 MiB one's rate or less, BENCHMARKS.md "Error feedback's
    /// bytes") and spread a worker's residual over the shards.
    public static func partName(_ name: String, part: Int) -> String { "\(name).\(part)" }

    /// The name of the copy of worker `worker`'s residual for checkpoint version `version`
    /// (a multiple of the config's `checkpoint_every`, `every`), stored in parts like the
    /// residual: `ckpt-residual-W-Q`, `Q` = `(version / every) mod 2`. A worker writes it with the
    /// push that stores the residual of such a version, so that the servers' copy of that version
    /// (`checkpoint_every`) can be saved with the residuals it continues from.
    public static func checkpointName(worker: Int, version: Int, every: Int) -> String {
        "ckpt-residual-\(worker)-\(version / max(every, 1) % 2)"
    }

    /// The SET commands that store `residual` as parts of `names` (each part of every name, with
    /// the same blob) whose objects are on shard `shard`.
    static func storeCommands(
        _ residual: [Float], names: [String], shard: Int, map: ShardMap, codec: BlobCodec, step: Int, worker: Int
    ) -> [RedisCommand] {
        let layout = map.layout
        let keys = JobKeys(job: map.job)
        var commands: [RedisCommand] = []
        for part in 0..<layout.chunkCount {
            let owned = names.map { partName($0, part: part) }.filter {
                JobObjects.shard(for: $0, job: map.job, shards: map.shards) == shard
            }
            guard !owned.isEmpty else { continue }
            let blob = residual.withUnsafeBufferPointer { r in
                TensorBlob.encode(
                    UnsafeBufferPointer(rebasing: r[layout.range(ofChunk: part)]), codec: codec, step: UInt64(step),
                    producer: UInt32(worker))
            }
            for name in owned { commands.append(RedisCommand("SET", keys.object(name)).appending(bytes: blob)) }
        }
        return commands
    }

    /// Stores `residual` as the parts of `name` (a driver restoring a checkpoint).
    public static func store(
        _ residual: [Float], named name: String, worker: Int, step: Int, codec: BlobCodec, on m: ShardManager
    ) throws(ShardError) {
        let map = m.map
        _ = try m.onEachShard { shard, c throws(RedisError) in
            let commands = storeCommands(
                residual, names: [name], shard: shard, map: map, codec: codec, step: step, worker: worker)
            guard !commands.isEmpty else { return }
            try c.checkedPipeline(commands)
        }
    }

    /// Reads residual `name` (all its parts) of worker `worker` for step `step`; every part must
    /// be an f32 blob of its chunk's size, of that step and worker.
    public static func read(named name: String, worker: Int, step: Int, from m: ShardManager) throws(ShardError)
        -> [Float]
    {
        let layout = m.layout
        let objects = JobObjects(m)
        var residual = [Float](repeating: 0, count: layout.totalElements)
        for part in 0..<layout.chunkCount {
            let partName = partName(name, part: part)
            let range = layout.range(ofChunk: part)
            guard let bytes = try objects.get(partName) else {
                throw ShardError(
                    .corruptChunk,
                    "part '\(partName)' of the error-feedback residual of worker \(worker) for step \(step) is missing")
            }
            let header: BlobHeader
            do {
                header = try residual.withUnsafeMutableBufferPointer { r in
                    try bytes.withUnsafeBytes { b in
                        try TensorBlob.decode(b, into: UnsafeMutableBufferPointer(rebasing: r[range]))
                    }
                }
            } catch {
                throw ShardError(
                    .corruptChunk,
                    "part '\(partName)' of the error-feedback residual is not a valid blob of \(range.count) values: \(error)"
                )
            }
            guard header.step == UInt64(step), header.producer == UInt32(worker), header.dtype == .f32 else {
                throw ShardError(
                    .corruptChunk,
                    "part '\(partName)' of the error-feedback residual holds \(header.dtype) values of step \(header.step) from producer \(header.producer); worker \(worker) needs f32 of step \(step)"
                )
            }
        }
        return residual
    }

    /// The codec SMLT's writers store `encoding`'s residual with (readers take any codec; the
    /// blob is always f32, so the residual stays exact). A dense encoding (bf16 or f16, whatever
    /// its codec) stores it `bitshuffle-lz4`: the residual of a rounding to bf16 or f16 (in the
    /// dtype's normal range) has its low 8 or 11 bits of f32 significand zero and an exponent
    /// below the value's, which bit planes turn into runs (1.62x against raw on Gaussian
    /// gradients), and a residual is storage traffic that goes through the shards' links with the
    /// gradients (BENCHMARKS.md, "Error feedback's bytes"). Top-k stores it raw: its residual is
    /// the unsent gradient itself, f32 noise to LZ4.
    public static func residualCodec(for encoding: GradientEncoding) -> BlobCodec {
        guard case .dense = encoding else { return .raw }
        return .bitshuffleLZ4
    }
}

extension WorkerSession {
    /// Reads the residual `progress` names for its `nextStep`: nil when it names none. A named
    /// residual that is missing, damaged, of another step or worker, or of another size is a
    /// `corruptChunk` error (the worker cannot resume exactly).
    public func loadResidual(_ progress: WorkerProgress?) throws(ShardError) -> [Float]? {
        guard let progress, let name = progress.residual else { return nil }
        return try loadResidual(named: name, step: progress.nextStep)
    }

    /// Reads residual `name` (all its parts), which must belong to this worker's step `step`.
    public func loadResidual(named name: String, step: Int) throws(ShardError) -> [Float] {
        guard name == ErrorFeedback.objectName(worker: worker, step: step) else {
            throw ShardError(
                .corruptChunk, "worker \(worker)'s progress names residual '\(name)' for step \(step)")
        }
        return try ErrorFeedback.read(named: name, worker: worker, step: step, from: shards)
    }

    /// Pushes `sent` for `step` with `encoding` (two phases, as `push(gradient:step:)`), storing
    /// `residual` (the next step's) in the first phase, as an f32 blob of `residualCodec`
    /// (nil: `ErrorFeedback.residualCodec(for: encoding)`). Returns the residual's object name,
    /// for the progress saved after the push; nil without a residual.
    @discardableResult
    public func push(
        sent: [Float], step: Int, encoding: GradientEncoding, residual: [Float]?, residualCodec: BlobCodec? = nil
    ) throws(ShardError) -> String? {
        var name: String?
        var store: @Sendable (Int) -> [RedisCommand] = { _ in [] }
        if let residual {
            // The parts go with the gradient chunks of their shards' first phase, encoded on
            // those shards' threads; at a checkpoint version, also as that version's copy.
            let objectName = ErrorFeedback.objectName(worker: worker, step: step + 1)
            let every = config.checkpointEvery
            let names =
                [objectName]
                + (every > 0 && (step + 1) % every == 0
                    ? [ErrorFeedback.checkpointName(worker: worker, version: step + 1, every: every)] : [])
            let codec = residualCodec ?? ErrorFeedback.residualCodec(for: encoding)
            let (map, worker) = (shards.map, worker)
            store = { shard in
                ErrorFeedback.storeCommands(
                    residual, names: names, shard: shard, map: map, codec: codec, step: step + 1, worker: worker)
            }
            name = objectName
        }
        let after = store
        try sent.withUnsafeBufferPointer { (g) throws(ShardError) in
            try shards.write(
                g, as: .gradient(step: step, worker: worker), step: step, producer: UInt32(worker),
                expireSeconds: Self.gradientTTLSeconds, codec: encoding.codec, dtype: encoding.dtype,
                after: after)
        }
        try markPushed(step: step) { _, _ in true }
        return name
    }
}

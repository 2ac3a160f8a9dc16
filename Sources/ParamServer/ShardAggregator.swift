import CTensorKernels
import CoreMetrics
import Foundation
import KeySchema
import Logging
import RedisClient
import ShardManager
import TensorBlob
import TrainingProtocol

/// Aggregates one job's chunks on one shard, one BSP step at a time.
///
/// For step `v`, each worker that appears in the step's pushed set has its gradient chunks read
/// at once, while the others are still pushing, so reading overlaps the push phase. The
/// gradients are summed in worker-id order (a worker's gradient waits in memory until every lower
/// id has been added), so the sum never depends on arrival order. A sparse-lz4 (top-k) gradient
/// of a worker other than 0 is kept and added as its pairs (`SparseGradient.add`), never as a
/// dense vector, with the same bits as adding the dense vector it decodes to. Once all N are in, it applies
/// SGD with momentum and, in one MULTI/EXEC, writes parameter version `v + 1` (and its pull copy,
/// when the job keeps one) and the optimizer state, deletes the gradients and appends `v + 1` to the shard's version stream. Parameters and
/// optimizer state are cached in memory; Redis stays the source of truth when a server restarts,
/// and nothing read for an unfinished step is lost with the process: the gradients stay in Redis
/// until the step commits.
///
/// Metrics are updated per push and per commit (`JobMetrics`), never per element; the commit also
/// writes the shard's step statistics (`ShardStepStats`) for `smlt admin top`.
final class ShardAggregator {
    let map: ShardMap
    let config: TrainingConfig
    let shard: Int
    let chunks: [Int]
    /// Elements of each of `chunks`.
    let counts: [Int]
    let keys: JobKeys
    let training: JobKeys
    /// The parameter version this shard holds; nil until the driver has published version 0.
    private(set) var version: Int?
    private var params: [Int: [Float]] = [:]
    private var velocity: [Int: [Float]] = [:]
    /// The step being gathered: workers read so far, how many are summed (ids `0..<folded`),
    /// the gradients read but not yet summed, and the running sum per chunk.
    private var gathering = -1
    private var consumed = Set<Int>()
    private var folded = 0
    private var waiting: [Int: [Int: WaitingChunk]] = [:]
    private var sums: [Int: UnsafeMutableBufferPointer<Float>] = [:]
    /// Chunks whose sum may hold a −0 (it took a dense gradient). Adding a sparse gradient's pairs
    /// into such a sum first turns its −0s into +0, as adding the dense vector's +0s would.
    private var negativeZeroPossible = Set<Int>()
    /// A worker whose waiting gradient `fold` found non-finite, with why (by chunk index).
    private var spoiled: (worker: Int, failures: [Int: PushFault])?
    /// Released gradient buffers by element count, to avoid fresh pages every step.
    private let pool = FloatBufferPool()
    private let scratch = DecodeScratch()
    /// The shard's endpoint, which starts every log message.
    let endpoint: String
    private let logger: Logger
    private let series: JobSeries
    /// When this server first saw a push of the step being gathered.
    private var firstPush: (step: Int, at: ContinuousClock.Instant)?
    /// When this server committed the previous version, and the smoothed interval between commits.
    private var lastCommit: (version: Int, at: ContinuousClock.Instant)?
    private var commitInterval: Double?
    /// Gradient blob bytes read by the current `read` call, and for the step being gathered.
    private var bytesRead = 0
    private var stepGradientBytes = 0
    /// When the job finished in this server (for dropping its series later).
    private(set) var finishedAt: ContinuousClock.Instant?

    /// - Parameters:
    ///   - endpoint: the shard's endpoint, for the log and the metrics' `shard` label.
    ///   - logger: the server's logger; this adds the job and the shard as metadata.
    ///   - series: where the job's metric series are kept (none by default).
    init(
        map: ShardMap, config: TrainingConfig, shard: Int, endpoint: String, logger: Logger,
        series: JobSeries? = nil
    ) {
        self.map = map
        self.config = config
        self.shard = shard
        chunks = map.chunks(onShard: shard)
        counts = chunks.map { map.layout.range(ofChunk: $0).count }
        keys = JobKeys(job: map.job)
        training = keys
        self.endpoint = endpoint
        var logger = logger
        logger[metadataKey: "job"] = "\(map.job)"
        logger[metadataKey: "shard"] = "\(endpoint)"
        self.logger = logger
        self.series = series ?? JobSeries(endpoint: endpoint, metrics: .off)
    }

    /// Logs `message` as `ENDPOINT: job J: message` with `event` and `metadata`.
    private func log(
        _ level: Logger.Level, _ event: String, _ message: String, _ metadata: Logger.Metadata = [:]
    ) {
        var m = metadata
        m["event"] = "\(event)"
        logger.log(level: level, "\(endpoint): job \(job): \(message)", metadata: m)
    }

    /// The job's series, created on first use (again after they were retired).
    private var metrics: JobMetrics {
        let new = !series.exists(job)
        let m = series.of(job)
        if new, let version { m.version.record(version) }
        return m
    }

    var job: String { map.job }

    /// Takes over `old`'s cached parameters and optimizer state for the chunks both own, when
    /// both describe the same tensors and chunking (a reconfiguration of the same job). The
    /// version stream stays the judge: `loadVersion` drops the cache if it says otherwise.
    func inherit(from old: ShardAggregator) {
        guard let v = old.version, old.map.tensors == map.tensors, old.map.chunkElements == map.chunkElements,
            old.config.momentum == config.momentum
        else { return }
        version = v
        for chunk in chunks {
            if let p = old.params[chunk], let vel = old.velocity[chunk] {
                params[chunk] = p
                velocity[chunk] = vel
            }
        }
    }
    /// The shard's map epoch differs from this aggregator's: the job was reconfigured, and the
    /// server must reload it before reading any push (they follow the new map).
    private(set) var stale = false
    /// The version whose missing chunks `prefetch` has read.
    private var prefetched = -1
    var finished: Bool { (version ?? -1) >= config.steps }

    /// Reads the latest published version from the shard's version stream.
    func loadVersion(_ c: RedisConnection) throws(RedisError) {
        adopt(latest: try training.latestVersion(shard: shard, on: c))
    }

    /// Takes `latest`, the newest version in the shard's stream (nil: none yet), as the current
    /// version; a different one than cached drops the caches.
    func adopt(latest v: Int?) {
        guard let v, v != version else { return }
        version = v
        // A job first seen finished gets no series of its own; one that trains again does.
        if finished {
            if finishedAt == nil { finishedAt = .now }
            if series.exists(job) { series.of(job).version.record(v) }
        } else {
            finishedAt = nil
            metrics.version.record(v)
        }
        params.removeAll()
        velocity.removeAll()
        gathering = -1
    }

    /// Reads the gradients that have arrived and runs every step whose gradients are all in;
    /// returns how many steps it completed.
    func advance(_ c: RedisConnection) throws(RedisError) -> Int {
        // The stream is the truth: a job restored from a checkpoint, or a version published by
        // another server, resets what this one cached.
        try loadVersion(c)
        guard !stale else { return 0 }
        var done = 0
        while let v = version, v < config.steps {
            if gathering != v { startGathering(v) }
            let new = try arrived(c, step: v).subtracting(consumed).sorted()
            if !new.isEmpty && firstPush?.step != v { firstPush = (v, .now) }
            for w in new {
                try consume(c, worker: w, step: v)
                fold()
                // A waiting gradient that turned out non-finite while it was added: the sums
                // started over in `fold`, and its worker is rejected.
                if let (bad, failures) = spoiled {
                    spoiled = nil
                    try reject(c, worker: bad, step: v, failures)
                }
            }
            if !new.isEmpty { metrics.workersPushed.record(consumed.count) }
            if folded < config.workers {
                // While the pushes come in, read the chunks this server does not hold yet (after
                // a start, a reload or a re-shard), so the commit does not wait for them.
                if stale { break }
                try prefetch(c, step: v)
                break
            }
            guard try commit(c, step: v) else { break }
            done += 1
        }
        return done
    }

    /// Reads into the cache the parameters and optimizer state of every owned chunk that is not
    /// cached yet, at version `step`; once per version.
    private func prefetch(_ c: RedisConnection, step: Int) throws(RedisError) {
        guard prefetched != step else { return }
        prefetched = step
        for chunk in chunks where params[chunk] == nil {
            if let (p, vel) = try state(c, chunk: chunk, step: step) {
                params[chunk] = p
                velocity[chunk] = vel
            }
        }
    }

    private func arrived(_ c: RedisConnection, step: Int) throws(RedisError) -> Set<Int> {
        let replies = try c.pipeline([["SMEMBERS", training.pushed(shard: shard, step: step)], ["GET", keys.epoch]])
        if let epoch = replies[1].text, epoch != "\(map.epoch)" {
            stale = true
            return []
        }
        let members = (replies[0].array ?? []).compactMap(\.text)
        return Set(members.compactMap { Int($0) }.filter { $0 >= 0 && $0 < config.workers })
    }

    /// Drops everything cached; the next `advance` reloads the version and the state from Redis.
    private func forget() {
        version = nil
        params.removeAll()
        velocity.removeAll()
        gathering = -1
    }

    private func startGathering(_ step: Int) {
        for (_, buffers) in waiting {
            for (_, chunk) in buffers { if case .dense(let b) = chunk { release(b) } }
        }
        for (_, b) in sums { release(b) }
        waiting = [:]
        sums = [:]
        negativeZeroPossible = []
        consumed = []
        folded = 0
        if step != gathering { stepGradientBytes = 0 }
        gathering = step
    }

    private func buffer(_ count: Int) -> UnsafeMutableBufferPointer<Float> { pool.take(count) }

    private func release(_ b: UnsafeMutableBufferPointer<Float>) { pool.give(b) }

    /// Reads all of worker `w`'s gradient chunks for `step`, streaming each blob from the socket
    /// into a buffer. A missing or invalid blob rejects the push: the worker is taken out of the
    /// step's pushed set (it may push again) and the reason is logged and recorded. So does a
    /// NaN or an infinity: worker 0's gradient (which becomes the sum as it is) is checked right
    /// after decoding, while in cache; the others' when `fold` adds them. A sparse gradient's
    /// pairs (of a worker other than 0, whose gradient becomes the sum) are checked when read and
    /// wait as pairs.
    func consume(_ c: RedisConnection, worker w: Int, step v: Int) throws(RedisError) {
        if w > 0 && w == folded { return try consumeInOrder(c, worker: w, step: v) }
        let buffers = counts.map { buffer($0) }
        var failures: [Int: PushFault] = [:]
        var pairs: [Int: SparseGradient] = [:]
        do {
            failures = try read(
                c, worker: w, step: v, into: { buffers[$0] },
                decoded: { i in
                    let b = buffers[i]
                    if w == 0 && b.count > 0 && ctk_all_finite_f32(b.baseAddress!, b.count) == 0 {
                        failures[i] = nonFinite(UnsafeBufferPointer(b))
                    }
                },
                pairs: w > 0,
                sparse: { i, s in
                    if let j = s.firstNonFinite { failures[i] = nonFinite(s, j) }
                    pairs[i] = s
                }
            ).mapValues(PushFault.init).merging(failures) { read, _ in read }
        } catch {
            for b in buffers { release(b) }
            throw error
        }
        if !failures.isEmpty {
            for b in buffers { release(b) }
            return try reject(c, worker: w, step: v, failures)
        }
        consumed.insert(w)
        var read: [Int: WaitingChunk] = [:]
        for (i, chunk) in chunks.enumerated() {
            if let s = pairs[i] {
                release(buffers[i])
                read[chunk] = .sparse(s)
            } else {
                read[chunk] = .dense(buffers[i])
            }
        }
        waiting[w] = read
    }

    /// Reads the gradient of the next worker in id order straight into one chunk-sized buffer
    /// and adds each chunk to the sum while it is still in cache, checking in the same pass that
    /// its values are finite; a sparse gradient's pairs go straight into the sum instead. If the
    /// push turns out bad halfway, the sums already changed: the step's gathering starts over
    /// (everything is still in Redis) and the worker is rejected.
    private func consumeInOrder(_ c: RedisConnection, worker w: Int, step v: Int) throws(RedisError) {
        let whole = buffer(counts.max() ?? 0)
        defer { release(whole) }
        let counts = self.counts
        let chunks = self.chunks
        var added = false
        var failures: [Int: PushFault] = [:]
        failures = try read(
            c, worker: w, step: v, into: { UnsafeMutableBufferPointer(rebasing: whole[0..<counts[$0]]) },
            decoded: { i in
                let g = UnsafeBufferPointer(rebasing: whole[0..<counts[i]])
                added = true
                if !GradientSum.addCheckingFinite(g, into: sums[chunks[i]]!) { failures[i] = nonFinite(g) }
                negativeZeroPossible.insert(chunks[i])
            },
            pairs: true,
            sparse: { i, s in
                if let j = s.firstNonFinite {
                    failures[i] = nonFinite(s, j)
                    return
                }
                added = true
                addPairs(s, chunk: chunks[i])
            }
        ).mapValues(PushFault.init).merging(failures) { read, _ in read }
        if !failures.isEmpty {
            if added { startGathering(v) }
            return try reject(c, worker: w, step: v, failures)
        }
        consumed.insert(w)
        folded += 1
    }

    /// Adds a sparse gradient's pairs into a chunk's sum, with the bits of adding its dense vector.
    private func addPairs(_ s: SparseGradient, chunk: Int) {
        s.add(into: sums[chunk]!, sumMayHoldNegativeZero: negativeZeroPossible.contains(chunk))
        negativeZeroPossible.remove(chunk)
    }

    /// Why a sparse gradient chunk whose pair `j` is NaN or infinite is refused.
    private func nonFinite(_ s: SparseGradient, _ j: Int) -> PushFault {
        PushFault(reason: .nonFinite, detail: "element \(s.indices[j]) is \(s.values[j]); gradients must be finite")
    }

    /// Why a gradient chunk holding a NaN or an infinity is refused (found again only then).
    private func nonFinite(_ g: UnsafeBufferPointer<Float>) -> PushFault {
        let i = ctk_first_nonfinite_f32(g.baseAddress!, g.count)
        return PushFault(
            reason: .nonFinite,
            detail: "element \(i) is \(i < g.count ? "\(g[i])" : "not finite"); gradients must be finite")
    }

    /// GETs worker `w`'s gradient chunks of step `v`, refusing blobs whose header names another
    /// step or worker. With `pairs`, sparse-lz4 chunks go to `sparse` as pairs instead of
    /// being decoded into `destination`.
    private func read(
        _ c: RedisConnection, worker w: Int, step v: Int, into destination: (Int) -> UnsafeMutableBufferPointer<Float>,
        decoded: (Int) -> Void = { _ in }, pairs: Bool = false, sparse: (Int, SparseGradient) -> Void = { _, _ in }
    ) throws(RedisError) -> [Int: BlobReadFailure] {
        bytesRead = 0
        defer {
            metrics.gradientBytes.increment(by: bytesRead)
            stepGradientBytes += bytesRead
        }
        let failures = try c.getBlobs(
            chunks.map { keys.gradient(chunk: $0, step: v, worker: w) }, scratch: scratch, into: destination,
            check: { _, h throws(TensorBlobError) in
                guard h.step == UInt64(v), h.producer == UInt32(w) else {
                    throw TensorBlobError(.badHeader, "blob is for step \(h.step), worker \(h.producer)")
                }
            },
            decoded: { i, h in
                bytesRead += BlobHeader.size + Int(h.payloadLength)
                decoded(i)
            },
            pairs: pairs,
            sparse: { i, h, s in
                bytesRead += BlobHeader.size + Int(h.payloadLength)
                sparse(i, s)
            })
        // A GET this server's ACL user may not run is the server's problem, not a bad push.
        for case .serverError(let m) in failures.values {
            let error = c.serverError(m, command: "GET")
            if error.code == .permissionDenied { throw error }
        }
        return failures
    }

    /// Takes worker `w` out of step `v`'s pushed set (it may push again), logs why (naming the
    /// first bad chunk) and appends the rejection to the job's capped `rejected` list.
    private func reject(
        _ c: RedisConnection, worker w: Int, step v: Int, _ failures: [Int: PushFault]
    ) throws(RedisError) {
        let (i, failure) = failures.min { $0.key < $1.key }!
        metrics.rejected(failure.reason)
        log(
            .warning, "push_rejected", "step \(v): rejected worker \(w)'s push: chunk \(chunks[i]): \(failure.detail)",
            [
                "step": "\(v)", "worker": "\(w)", "chunk": "\(chunks[i])", "reason": "\(failure.reason.rawValue)",
                "detail": "\(failure.detail)",
            ])
        let record = Rejection(step: v, worker: w, chunk: chunks[i], reason: failure.detail)
        try c.checkedPipeline([
            ["SREM", training.pushed(shard: shard, step: v), "\(w)"],
            RedisCommand("RPUSH", training.rejected).appending(bytes: record.json),
            ["LTRIM", training.rejected, "\(-Rejection.kept)", "-1"],
        ])
    }

    /// Adds the waiting gradients to the sums in worker-id order, as far as the ids are contiguous,
    /// checking in the same pass that their values are finite. A gradient that is not spoils the
    /// sums: the step's gathering starts over and the worker is left in `spoiled` to be rejected.
    func fold() {
        while folded < config.workers, let buffers = waiting.removeValue(forKey: folded) {
            var failures: [Int: PushFault] = [:]
            for (chunk, waiting) in buffers {
                switch waiting {
                case .dense(let g) where folded == 0:
                    sums[chunk] = g  // checked when it was decoded
                    negativeZeroPossible.insert(chunk)
                case .dense(let g):
                    if !GradientSum.addCheckingFinite(UnsafeBufferPointer(g), into: sums[chunk]!) {
                        failures[chunks.firstIndex(of: chunk)!] = nonFinite(UnsafeBufferPointer(g))
                    }
                    negativeZeroPossible.insert(chunk)
                    release(g)
                case .sparse(let s):
                    // Never worker 0's (read dense, it becomes the sum); checked when read.
                    addPairs(s, chunk: chunk)
                }
            }
            if !failures.isEmpty {
                spoiled = (folded, failures)
                startGathering(gathering)
                return
            }
            folded += 1
        }
    }

    /// Takes the cached parameters and optimizer state of a chunk out of the cache (so they can be
    /// updated in place), or loads them from Redis when not cached. `commit` puts them back.
    private func state(_ c: RedisConnection, chunk: Int, step: Int) throws(RedisError) -> ([Float], [Float])? {
        if let p = params.removeValue(forKey: chunk), let v = velocity.removeValue(forKey: chunk) { return (p, v) }
        let n = map.layout.range(ofChunk: chunk).count
        let replies = try c.pipeline([["GET", keys.params(chunk: chunk)], ["GET", keys.optimizer(chunk: chunk)]])
        for case .error(let m) in replies {
            let error = c.serverError(m, command: "GET")
            // The ACL's problem, for the server loop to handle; anything else is this chunk's.
            if error.code == .permissionDenied { throw error }
            log(.error, "chunk_invalid", "chunk \(chunk): \(error)", ["chunk": "\(chunk)"])
            return nil
        }
        guard let pb = replies[0].bytes else {
            log(
                .warning, "chunk_waiting", "chunk \(chunk) has no parameters on this shard; waiting",
                ["chunk": "\(chunk)"])
            return nil
        }
        do {
            let (ph, p) = try TensorBlob.decode(pb)
            guard p.count == n, ph.step == UInt64(step) else {
                log(
                    .warning, "chunk_waiting",
                    "chunk \(chunk) holds version \(ph.step) with \(p.count) elements, expected \(step) and \(n)",
                    ["chunk": "\(chunk)"])
                return nil
            }
            // Plain SGD keeps no velocity; with momentum, version 0 starts from zero velocity.
            var v = [Float](repeating: 0, count: config.momentum == 0 ? 0 : n)
            if config.momentum != 0, let vb = replies[1].bytes {
                let (oh, stored) = try TensorBlob.decode(vb)
                guard stored.count == n, oh.step == UInt64(step) else {
                    log(
                        .warning, "chunk_waiting",
                        "optimizer state of chunk \(chunk) holds version \(oh.step) with \(stored.count) elements, expected \(step) and \(n)",
                        ["chunk": "\(chunk)"])
                    return nil
                }
                v = stored
            }
            return (p, v)
        } catch {
            log(.error, "chunk_invalid", "chunk \(chunk): \(error)", ["chunk": "\(chunk)"])
            return nil
        }
    }

    /// Applies the optimizer to every chunk with the complete sums and commits version `v + 1`
    /// in one MULTI/EXEC; false when it could not (logged; the sums are kept for a retry).
    func commit(_ c: RedisConnection, step v: Int) throws(RedisError) -> Bool {
        let n = config.workers
        var transaction: [BorrowedCommand] = [BorrowedCommand(["MULTI"])]
        var updated: [(Int, [Float], [Float])] = []
        for chunk in chunks {
            guard var (p, vel) = try state(c, chunk: chunk, step: v), let sum = sums[chunk] else { return false }
            p.withUnsafeMutableBufferPointer { pp in
                vel.withUnsafeMutableBufferPointer { vv in
                    SGDMomentum.apply(
                        params: pp, velocity: vv, gradientSum: UnsafeBufferPointer(sum), workers: n, config: config)
                }
            }
            updated.append((chunk, p, vel))
            transaction.append(
                BorrowedCommand(
                    RedisCommand(strings: ["UNLINK"] + (0..<n).map { keys.gradient(chunk: chunk, step: v, worker: $0) })
                ))
        }
        // The new versions go to the socket straight from the arrays (kept alive below).
        let producer = BlobHeader.serverProducer
        var blobs: [BlobParts] = []
        for (chunk, p, vel) in updated {
            // Plain SGD (momentum 0) has no optimizer state to store.
            var stored =
                config.momentum == 0
                ? [(keys.params(chunk: chunk), p)]
                : [(keys.params(chunk: chunk), p), (keys.optimizer(chunk: chunk), vel)]
            // Every checkpoint_every versions the same blobs also go to the checkpoint keys,
            // in the same transaction, so the copy is one consistent version.
            if config.checkpointEvery > 0 && (v + 1) % config.checkpointEvery == 0 {
                stored.append((keys.checkpointParams(chunk: chunk), p))
                if config.momentum != 0 { stored.append((keys.checkpointOptimizer(chunk: chunk), vel)) }
            }
            for (key, values) in stored {
                let blob = values.withUnsafeBufferPointer {
                    TensorBlob.encodeParts($0, codec: map.codec, step: UInt64(v + 1), producer: producer)
                }
                blobs.append(blob)
                transaction.append(
                    values.withUnsafeBufferPointer {
                        BorrowedCommand(["SET", key], payload: blob.segments(values: $0))
                    })
            }
            // The copy the workers pull, rounded from the same f32 values (the master stays f32).
            if let pull = map.pullEncoding {
                let copy = p.withUnsafeBufferPointer {
                    TensorBlob.encodeParts(
                        $0, dtype: pull.dtype, codec: pull.codec, step: UInt64(v + 1), producer: producer)
                }
                blobs.append(copy)
                transaction.append(
                    p.withUnsafeBufferPointer {
                        BorrowedCommand(["SET", keys.pullCopy(chunk: chunk)], payload: copy.segments(values: $0))
                    })
            }
        }
        transaction.append(BorrowedCommand(["UNLINK", training.pushed(shard: shard, step: v)]))
        transaction.append(
            BorrowedCommand(
                training.publishVersionCommand(shard: shard, version: v + 1)
            ))
        let now = ContinuousClock.now
        let stats = stepStats(version: v + 1, at: now, modelBytes: blobs.reduce(0) { $0 + $1.blobLength })
        for command in stats.commands(keys.serverStats(shard: shard)) { transaction.append(BorrowedCommand(command)) }
        transaction.append(BorrowedCommand(["EXEC"]))
        // Optimistic lock on the version stream: if another server process (a stale one, or a
        // second one started by mistake) publishes first, EXEC does nothing and this one reloads.
        // The epoch too: a reconfiguration between reading the pushes and committing makes
        // EXEC do nothing, and the server reloads the job's new map.
        let stream = training.versions(shard: shard)
        let check = try c.pipeline([
            ["WATCH", stream, keys.epoch], training.latestVersionCommand(shard: shard), ["GET", keys.epoch],
        ])
        let latest = JobKeys.version(inLatest: check[1])
        if let epoch = check[2].text, epoch != "\(map.epoch)" {
            try c.run(["UNWATCH"])
            log(
                .notice, "job_reload", "step \(v): the job was reconfigured (epoch \(epoch)); reloading",
                ["step": "\(v)", "reason": "reconfigured", "epoch": "\(epoch)"])
            stale = true
            return false
        }
        guard latest == v else {
            try c.run(["UNWATCH"])
            let at = latest.map(String.init) ?? "none"
            log(
                .notice, "job_reload", "step \(v): the shard is at version \(at); reloading",
                ["step": "\(v)", "reason": "version_moved", "shard_version": "\(at)"])
            forget()
            return false
        }
        let replies = try withExtendedLifetime((blobs, updated)) { () throws(RedisError) in
            try c.pipeline(borrowing: transaction)
        }
        if replies.last == .null {
            log(
                .notice, "job_reload", "step \(v): another server published this version first; reloading",
                ["step": "\(v)", "reason": "published_elsewhere"])
            forget()
            return false
        }
        guard case .array(let results)? = replies.last, results.count == transaction.count - 2 else {
            let reply = replies.last.map { "\($0)" } ?? "no reply"
            log(
                .error, "commit_failed", "step \(v): transaction failed: \(reply)",
                ["step": "\(v)", "reason": "\(reply)"])
            return false
        }
        if let failed = results.first(where: { if case .error = $0 { true } else { false } }) {
            log(.error, "commit_failed", "step \(v): \(failed)", ["step": "\(v)", "reason": "\(failed)"])
            return false
        }
        for (chunk, p, vel) in updated {
            params[chunk] = p
            velocity[chunk] = vel
        }
        version = v + 1
        let m = metrics
        m.stepsCommitted.increment()
        m.modelBytes.increment(by: stats.modelBytes)
        m.version.record(v + 1)
        m.workersPushed.record(0)
        if let s = stats.stepSeconds { m.stepSeconds.recordNanoseconds(Int64(s * 1e9)) }
        lastCommit = (v + 1, now)
        commitInterval = stats.intervalSeconds
        if finished { finishedAt = now }
        startGathering(v + 1)
        return true
    }

    /// The statistics of the commit of `version` at `at` (written in its transaction).
    private func stepStats(version: Int, at: ContinuousClock.Instant, modelBytes: Int) -> ShardStepStats {
        var stats = ShardStepStats(
            version: version, unixMilliseconds: Int((Date().timeIntervalSince1970 * 1000).rounded()),
            workers: config.workers, gradientBytes: 0, modelBytes: modelBytes)
        if let first = firstPush, first.step == version - 1 { stats.stepSeconds = (at - first.at).seconds }
        // The interval between commits, smoothed, when this server also committed the previous one.
        if let last = lastCommit, last.version == version - 1 {
            let interval = (at - last.at).seconds
            stats.intervalSeconds = commitInterval.map { 0.8 * $0 + 0.2 * interval } ?? interval
        }
        stats.gradientBytes = stepGradientBytes
        return stats
    }
}

/// A gradient chunk read but not yet added: its dense values (in a pooled buffer), or a sparse
/// gradient's pairs.
enum WaitingChunk {
    case dense(UnsafeMutableBufferPointer<Float>)
    case sparse(SparseGradient)
}

/// Float buffers reused by one aggregator across steps, so that gradients land in memory that
/// is already mapped instead of fresh pages every step. Owned by one aggregator (one thread).
final class FloatBufferPool {
    private var free: [Int: [UnsafeMutableBufferPointer<Float>]] = [:]
    private var owned: [UnsafeMutableBufferPointer<Float>] = []

    /// A buffer of exactly `count` elements (contents undefined).
    func take(_ count: Int) -> UnsafeMutableBufferPointer<Float> {
        if let b = free[count]?.popLast() { return b }
        let b = UnsafeMutableBufferPointer<Float>.allocate(capacity: max(count, 1))
        owned.append(b)
        return UnsafeMutableBufferPointer(rebasing: b[0..<count])
    }

    func give(_ b: UnsafeMutableBufferPointer<Float>) { free[b.count, default: []].append(b) }

    deinit { for b in owned { b.deallocate() } }
}

extension Duration {
    /// The duration in seconds.
    fileprivate var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

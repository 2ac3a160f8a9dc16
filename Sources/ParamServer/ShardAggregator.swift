import RedisClient
import ShardManager
import TensorBlob
import TrainingProtocol

/// Aggregates one job's chunks on one shard, one BSP step at a time.
///
/// For step `v` it waits until every worker id `0..<N` is in the step's pushed set, then for each
/// chunk sums the N gradients in worker-id order, applies SGD with momentum and, in one
/// MULTI/EXEC, writes parameter version `v + 1`, the optimizer state, deletes the gradients and
/// appends `v + 1` to the shard's version stream. Parameters and optimizer state are cached in
/// memory; Redis stays the source of truth when a server restarts.
final class ShardAggregator {
    let map: ShardMap
    let config: TrainingConfig
    let shard: Int
    let chunks: [Int]
    let keys: JobKeys
    let training: TrainingKeys
    /// The parameter version this shard holds; nil until the driver has published version 0.
    private(set) var version: Int?
    private var params: [Int: [Float]] = [:]
    private var velocity: [Int: [Float]] = [:]
    private let log: (String) -> Void

    init(map: ShardMap, config: TrainingConfig, shard: Int, log: @escaping (String) -> Void) {
        self.map = map
        self.config = config
        self.shard = shard
        chunks = map.chunks(onShard: shard)
        keys = JobKeys(job: map.job)
        training = TrainingKeys(job: map.job)
        self.log = log
    }

    var job: String { map.job }
    var finished: Bool { (version ?? -1) >= config.steps }

    /// Reads the latest published version from the shard's version stream.
    func loadVersion(_ c: RedisConnection) throws(RedisError) {
        let reply = try c.run(["XREVRANGE", training.versions(shard: shard), "+", "-", "COUNT", "1"])
        guard let entry = reply.array?.first?.array?.first?.text,
            let v = Int(entry.split(separator: "-").first ?? "")
        else { return }
        if v != version {
            version = v
            params.removeAll()
            velocity.removeAll()
        }
    }

    /// Runs every step whose gradients are all in; returns how many steps it completed.
    func advance(_ c: RedisConnection) throws(RedisError) -> Int {
        if version == nil { try loadVersion(c) }
        var done = 0
        while let v = version, v < config.steps, try ready(c, step: v) {
            guard try aggregate(c, step: v) else { break }
            done += 1
        }
        return done
    }

    private func ready(_ c: RedisConnection, step: Int) throws(RedisError) -> Bool {
        let members = (try c.run(["SMEMBERS", training.pushed(shard: shard, step: step)]).array ?? []).compactMap(
            \.text)
        let valid = Set(members.compactMap { Int($0) }.filter { $0 >= 0 && $0 < config.workers })
        return valid.count == config.workers
    }

    /// Loads the cached parameters and optimizer state of a chunk, from Redis when not cached.
    private func state(_ c: RedisConnection, chunk: Int, step: Int) throws(RedisError) -> ([Float], [Float])? {
        if let p = params[chunk], let v = velocity[chunk] { return (p, v) }
        let n = map.layout.range(ofChunk: chunk).count
        let replies = try c.pipeline([["GET", keys.params(chunk: chunk)], ["GET", keys.optimizer(chunk: chunk)]])
        guard let pb = replies[0].bytes else {
            log("job \(job): chunk \(chunk) has no parameters on this shard; waiting")
            return nil
        }
        do {
            let (ph, p) = try TensorBlob.decode(pb)
            guard p.count == n, ph.step == UInt64(step) else {
                log(
                    "job \(job): chunk \(chunk) holds version \(ph.step) with \(p.count) elements, expected \(step) and \(n)"
                )
                return nil
            }
            var v = [Float](repeating: 0, count: n)
            if let vb = replies[1].bytes {
                let (_, stored) = try TensorBlob.decode(vb)
                guard stored.count == n else {
                    log("job \(job): optimizer state of chunk \(chunk) has \(stored.count) elements, expected \(n)")
                    return nil
                }
                v = stored
            }
            return (p, v)
        } catch {
            log("job \(job): chunk \(chunk): \(error)")
            return nil
        }
    }

    /// One step on every chunk of the shard; false when it could not complete (logged).
    private func aggregate(_ c: RedisConnection, step v: Int) throws(RedisError) -> Bool {
        let n = config.workers
        var transaction: [RedisCommand] = [["MULTI"]]
        var updated: [(Int, [Float], [Float])] = []
        for chunk in chunks {
            guard var (p, vel) = try state(c, chunk: chunk, step: v) else { return false }
            let count = p.count
            var sum: [Float] = []
            var scratch = [Float](repeating: 0, count: count)
            let gradKeys = (0..<n).map { keys.gradient(chunk: chunk, step: v, worker: $0) }
            var bad: [(Int, String)] = []
            _ = try c.pipeline(gradKeys.map { RedisCommand("GET", $0) }) { w, reply throws(RedisError) in
                guard let bytes = reply.bytes else {
                    bad.append((w, "gradient missing"))
                    return
                }
                do throws(TensorBlobError) {
                    let h = try scratch.withUnsafeMutableBufferPointer { (s) throws(TensorBlobError) in
                        try TensorBlob.decode(bytes, into: s)
                    }
                    guard h.step == UInt64(v), h.producer == UInt32(w) else {
                        throw TensorBlobError(.badHeader, "blob is for step \(h.step), worker \(h.producer)")
                    }
                    // Summed in worker-id order, always: the result does not depend on arrival order.
                    if w == 0 { sum = scratch } else { GradientSum.add(scratch, into: &sum) }
                } catch { bad.append((w, error.description)) }
            }
            if !bad.isEmpty {
                // Reject the bad pushes: the workers are taken out of the step's set and may push again.
                for (w, why) in bad {
                    log("job \(job): step \(v), chunk \(chunk): rejected worker \(w)'s push: \(why)")
                }
                try c.run(
                    RedisCommand(strings: ["SREM", training.pushed(shard: shard, step: v)] + bad.map { String($0.0) }))
                return false
            }
            p.withUnsafeMutableBufferPointer { pp in
                vel.withUnsafeMutableBufferPointer { vv in
                    sum.withUnsafeBufferPointer { ss in
                        SGDMomentum.apply(params: pp, velocity: vv, gradientSum: ss, workers: n, config: config)
                    }
                }
            }
            let producer = BlobHeader.serverProducer
            transaction.append(
                RedisCommand("SET", keys.params(chunk: chunk))
                    .appending(bytes: TensorBlob.encode(p, codec: map.codec, step: UInt64(v + 1), producer: producer)))
            transaction.append(
                RedisCommand("SET", keys.optimizer(chunk: chunk))
                    .appending(bytes: TensorBlob.encode(vel, codec: map.codec, step: UInt64(v + 1), producer: producer))
            )
            transaction.append(RedisCommand(strings: ["UNLINK"] + gradKeys))
            updated.append((chunk, p, vel))
        }
        transaction.append(["UNLINK", training.pushed(shard: shard, step: v)])
        transaction.append(
            RedisCommand(
                "XADD", training.versions(shard: shard), "MAXLEN", "~", "1000", "\(v + 1)-1", "version", "\(v + 1)"))
        transaction.append(["EXEC"])
        let replies = try c.pipeline(transaction)
        guard case .array(let results)? = replies.last, results.count == transaction.count - 2 else {
            log("job \(job): step \(v): transaction failed: \(replies.last.map { "\($0)" } ?? "no reply")")
            return false
        }
        if let failed = results.first(where: { if case .error = $0 { true } else { false } }) {
            log("job \(job): step \(v): \(failed)")
            return false
        }
        for (chunk, p, vel) in updated {
            params[chunk] = p
            velocity[chunk] = vel
        }
        version = v + 1
        return true
    }
}

import Foundation
import KeySchema
import RedisClient
import Synchronization
import TensorBlob

/// Places a job's chunks on shards, keeps its shard map in Redis and routes every read and write.
///
/// Whole-model reads and writes talk to all shards at once, one thread per shard.
public final class ShardManager: Sendable {
    public let map: ShardMap
    public let layout: ModelLayout
    public let keys: JobKeys
    let connections: ShardConnections

    /// Largest number of blob bytes sent in one pipelined batch: megabyte values move fastest
    /// with only a few in flight per connection (see docs/design.md).
    static let batchBytes = 2 << 20

    /// Opens a job on a map held in memory (a new map not yet stored, during a re-shard).
    public init(map: ShardMap, options: RedisOptions) throws(ShardError) {
        self.map = map
        layout = map.layout
        keys = JobKeys(job: map.job)
        var endpoints: [RedisEndpoint] = []
        for s in map.shards {
            do { endpoints.append(try RedisEndpoint(parsing: s)) } catch { throw ShardError(error) }
        }
        connections = ShardConnections(endpoints, options: options)
    }

    /// Registers a job: places its chunks on `endpoints` and stores the shard map on every shard.
    /// An existing job with the same id is replaced (its keys are deleted) when `replace` is set,
    /// and otherwise reused if its spec is the same.
    public static func register(
        _ spec: JobSpec, on endpoints: [RedisEndpoint], options: RedisOptions = RedisOptions(), replace: Bool = false
    ) throws(ShardError) -> ShardManager {
        try spec.validate()
        let names = endpoints.map(\.description)
        guard !names.isEmpty, Set(names).count == names.count else {
            throw ShardError(.invalidSpec, "a job needs one or more distinct shard endpoints")
        }
        if let existing = try? load(job: spec.job, from: endpoints, options: options) {
            if replace {
                try ShardManager(map: existing, options: options).deleteJob()
            } else if existing.spec == spec {
                return try ShardManager(map: existing, options: options)
            } else {
                throw ShardError(
                    .invalidSpec, "job '\(spec.job)' already exists with a different spec (delete it or replace it)")
            }
        }
        let map = ShardMap(spec: spec, shards: names)
        let manager = try ShardManager(map: map, options: options)
        try manager.storeMap()
        return manager
    }

    /// Opens an existing job from its shard map, read from the first reachable endpoint.
    /// - Parameter allowed: with a password set, the endpoints credentials may be sent to
    ///   besides `endpoints` (see `load`).
    public static func open(
        job: String, endpoints: [RedisEndpoint], options: RedisOptions = RedisOptions(), allowed: [String] = []
    ) throws(ShardError) -> ShardManager {
        try ShardManager(map: load(job: job, from: endpoints, options: options, allowed: allowed), options: options)
    }

    /// Reads and validates a job's shard map: from the first of `endpoints` that has it, then
    /// from the map's home shard (its first), whose copy wins: a shard removed by a re-shard may
    /// still hold an older map.
    ///
    /// With a password set, a map that names an endpoint outside `endpoints` and `allowed` is
    /// refused before anything is sent to it: anyone who can write to one shard can edit the
    /// map, and the credentials must only go where the user said.
    public static func load(
        job: String, from endpoints: [RedisEndpoint], options: RedisOptions = RedisOptions(), allowed: [String] = []
    ) throws(ShardError) -> ShardMap {
        try JobSpec.validateJobName(job)
        let trusted = Set(endpoints.map(\.description) + allowed)
        // A cluster's lanes are trusted when the seed nodes they name were given.
        let givenSeeds = (endpoints + allowed.compactMap { try? RedisEndpoint(parsing: $0) }).flatMap(\.clusterSeeds)
        // ... and so are the nodes the given cluster itself names (asked only when needed).
        var trustedSeeds = Set(givenSeeds)
        var askedCluster = givenSeeds.isEmpty
        let endpoints = try ClusterLanes.expand(endpoints, options: options)
        func check(_ map: ShardMap) throws(ShardError) {
            guard options.password != nil else { return }
            let foreign = map.shards.filter { shard in
                if let lane = try? RedisEndpoint(parsing: shard), lane.laneTag != nil {
                    if !askedCluster && !lane.clusterSeeds.allSatisfy(trustedSeeds.contains) {
                        askedCluster = true
                        trustedSeeds.formUnion(ClusterLanes.nodes(seeds: givenSeeds, options: options))
                    }
                    return !lane.clusterSeeds.allSatisfy(trustedSeeds.contains)
                }
                return !trusted.contains(shard)
            }
            guard foreign.isEmpty else {
                throw ShardError(
                    .untrustedEndpoint,
                    "the shard map of job '\(job)' names \(foreign.joined(separator: ", ")), which was not given with --redis; "
                        + "refusing to send the password there (allow it with --allow-endpoints or SMLT_ALLOWED_ENDPOINTS "
                        + "if it is yours)")
            }
        }
        var lastError: RedisError?
        var missing: [String] = []
        for endpoint in endpoints {
            let found: ShardMap?
            do throws(RedisError) { found = try readMap(job: job, on: endpoint, options: options) } catch {
                lastError = error
                continue
            }
            // A shard that restarted empty (or was removed) lacks the map; another one may have it.
            guard let map = found else {
                missing.append(endpoint.description)
                continue
            }
            try check(map)
            guard let home = map.shards.first, home != endpoint.description,
                let homeEndpoint = try? RedisEndpoint(parsing: home),
                let homeMap = try? readMap(job: job, on: homeEndpoint, options: options)
            else { return map }
            try check(homeMap)
            return homeMap
        }
        if !missing.isEmpty {
            throw ShardError(.jobNotFound, "job '\(job)' is not registered on \(missing.joined(separator: ", "))")
        }
        throw ShardError(lastError ?? RedisError(.connectionFailed, endpoint: "", "no endpoint given"))
    }

    /// The map of `job` on one endpoint; nil when it has none. Throws ShardError-wrapped
    /// decoding problems as `RedisError`s are reserved for reaching the server.
    private static func readMap(job: String, on endpoint: RedisEndpoint, options: RedisOptions) throws(RedisError)
        -> ShardMap?
    {
        let c = try RedisConnection(endpoint, options: options)
        guard let json = try c.run(["GET", JobKeys(job: job).map]).bytes else { return nil }
        guard let map = try? JSONDecoder().decode(ShardMap.self, from: Data(json)), (try? map.validate()) != nil else {
            throw RedisError(.unexpectedReply, endpoint: endpoint.description, "the shard map of '\(job)' is not valid")
        }
        return map
    }

    /// The ids of all jobs registered on any of `endpoints` (unreachable endpoints are skipped).
    public static func jobs(on endpoints: [RedisEndpoint], options: RedisOptions = RedisOptions()) throws(ShardError)
        -> [String]
    {
        var all = Set<String>()
        var reached = 0
        var lastError: RedisError?
        for e in try ClusterLanes.expand(endpoints, options: options) {
            do {
                let c = try RedisConnection(e, options: options)
                for m in try c.run(["SMEMBERS", JobKeys.jobs]).array ?? [] { if let t = m.text { all.insert(t) } }
                reached += 1
            } catch { lastError = error }
        }
        if reached == 0, let lastError { throw ShardError(lastError) }
        return all.sorted()
    }

    /// Writes the shard map, its epoch and the job's entry in the job set to every shard (also to
    /// put them back on a shard that restarted empty). The home shard is written last: its epoch
    /// is what workers compare with, so a map is in force once the home shard has it.
    public func storeMap() throws(ShardError) {
        let json: [UInt8]
        do { json = Array(try JSONEncoder().encode(map)) } catch { throw ShardError(.invalidSpec, "\(error)") }
        let job = map.job
        let keys = self.keys
        let epoch = "\(map.epoch)"
        let store: @Sendable (Int, RedisConnection) throws(RedisError) -> Void = { shard, c throws(RedisError) in
            // In one transaction, so no reader sees the new epoch with the old map.
            let commands: [RedisCommand] = [
                ["MULTI"], RedisCommand("SET", keys.map).appending(bytes: json), ["SET", keys.epoch, epoch],
                ["SADD", JobKeys.jobs, job], ["EXEC"],
            ]
            try c.checkedPipeline(commands)
        }
        _ = try onEachShard { shard, c throws(RedisError) in if shard > 0 { try store(shard, c) } }
        try onShard(0) { c throws(RedisError) in try store(0, c) }
    }

    /// Deletes every key of the job on every shard and removes it from the job set.
    public func deleteJob() throws(ShardError) {
        let keys = self.keys
        _ = try onEachShard { _, c throws(RedisError) in try Self.forget(keys, on: c) }
    }

    /// Deletes every key of the job of `keys` on the shard of `c` and its entry in the job set
    /// (one shard of `deleteJob`; a re-shard uses it on the shards a job leaves).
    public static func forget(_ keys: JobKeys, on c: RedisConnection) throws(RedisError) {
        for pattern in keys.patterns { try c.deleteKeys(matching: pattern) }
        try c.run(["SREM", JobKeys.jobs, keys.job])
    }

    /// Gives every key of the job on every shard a time to live of `seconds`, after which Redis
    /// drops them (the retention of a finished job).
    public func expireJob(after seconds: Int) throws(ShardError) {
        let patterns = keys.patterns
        _ = try onEachShard { _, c throws(RedisError) in
            for pattern in patterns {
                let found = try c.scanKeys(matching: pattern)
                for batch in stride(from: 0, to: found.count, by: 500) {
                    _ = try c.pipeline(
                        found[batch..<min(found.count, batch + 500)].map { ["EXPIRE", $0, "\(seconds)"] })
                }
            }
        }
    }

    /// Runs `body` once per shard, all shards at once; throws the first shard's error.
    public func onEachShard<R: Sendable>(
        _ body: @escaping @Sendable (Int, RedisConnection) throws(RedisError) -> R
    ) throws(ShardError) -> [R] {
        do { return try connections.each(body) } catch { throw ShardError(error) }
    }

    /// Runs `body` on one shard's connection.
    public func onShard<R: Sendable>(_ index: Int, _ body: (RedisConnection) throws(RedisError) -> R) throws(ShardError)
        -> R
    {
        do { return try connections.on(index, body) } catch { throw ShardError(error) }
    }

    /// Like `onEachShard`, but returns each shard's outcome instead of throwing.
    public func onEachShardResult<R: Sendable>(
        _ body: @escaping @Sendable (Int, RedisConnection) throws(RedisError) -> R
    ) -> [Result<R, RedisError>] {
        connections.eachResult(body)
    }

    // MARK: Chunk I/O

    /// Encodes every chunk of `flat` (the whole parameter space) and stores it as `kind`,
    /// then runs `after(shard)` on each shard in the same round trip as its last batch. Writing
    /// `.params` of a job with a pull copy (`ShardMap.pullEncoding`) writes the copy too.
    /// - Parameters:
    ///   - step: stored in every blob header (the parameter version, or the gradient's step).
    ///   - expireSeconds: a TTL for the blobs (gradients), or nil to keep them.
    ///   - codec: the blobs' codec; the map's when nil.
    ///   - dtype: the blobs' element type; bf16 and f16 round the values (readers get the
    ///     rounded values back as f32).
    public func write(
        _ flat: UnsafeBufferPointer<Float>, as kind: ChunkKind, step: Int, producer: UInt32,
        expireSeconds: Int? = nil, codec: BlobCodec? = nil, dtype: DType = .f32,
        after: @escaping @Sendable (Int) -> [RedisCommand] = { _ in [] }
    ) throws(ShardError) {
        guard flat.count == layout.totalElements else {
            throw ShardError(
                .sizeMismatch, "job '\(map.job)' has \(layout.totalElements) parameters, got \(flat.count)")
        }
        let codec = codec ?? map.codec
        let map = self.map
        let layout = self.layout
        let keys = self.keys
        // Each thread reads a disjoint range of `flat`, and all threads are joined before return.
        nonisolated(unsafe) let source = flat
        _ = try onEachShard { shard, c throws(RedisError) in
            // Blob payloads go to the socket from `source` itself (raw) or from their
            // compressed buffer, with writev: no copy of the tensor is made.
            var batch: [BorrowedCommand] = []
            var parts: [BlobParts] = []
            var bytes = 0
            func flush(_ extra: [RedisCommand]) throws(RedisError) {
                _ = try withExtendedLifetime(parts) { () throws(RedisError) in
                    try c.checkedPipeline(borrowing: batch + extra.map(BorrowedCommand.init))
                }
                batch.removeAll(keepingCapacity: true)
                parts.removeAll(keepingCapacity: true)
                bytes = 0
            }
            for chunk in map.chunks(onShard: shard) {
                let values = UnsafeBufferPointer(rebasing: source[layout.range(ofChunk: chunk)])
                let blob = TensorBlob.encodeParts(
                    values, dtype: dtype, codec: codec, step: UInt64(step), producer: producer)
                parts.append(blob)
                batch.append(
                    BorrowedCommand(
                        ["SET", kind.key(keys, chunk: chunk)], payload: blob.segments(values: values),
                        trailing: expireSeconds.map { ["EX", "\($0)"] } ?? []))
                bytes += blob.blobLength
                // Every version of the parameters goes with its pull copy, in the same batch.
                if kind == .params, let pull = map.pullEncoding {
                    let copy = TensorBlob.encodeParts(
                        values, dtype: pull.dtype, codec: pull.codec, step: UInt64(step), producer: producer)
                    parts.append(copy)
                    batch.append(
                        BorrowedCommand(["SET", keys.pullCopy(chunk: chunk)], payload: copy.segments(values: values)))
                    bytes += copy.blobLength
                }
                if bytes >= Self.batchBytes { try flush([]) }
            }
            let extra = after(shard)
            if !batch.isEmpty || !extra.isEmpty { try flush(extra) }
        }
    }

    public func write(
        _ flat: [Float], as kind: ChunkKind, step: Int, producer: UInt32, expireSeconds: Int? = nil,
        after: @escaping @Sendable (Int) -> [RedisCommand] = { _ in [] }
    ) throws(ShardError) {
        try flat.withUnsafeBufferPointer { (p) throws(ShardError) in
            try write(p, as: kind, step: step, producer: producer, expireSeconds: expireSeconds, after: after)
        }
    }

    /// Reads every chunk of `kind` into `flat` (the whole parameter space) and returns each
    /// chunk's header. A missing or corrupt chunk is an error naming the chunk and the shard.
    /// `before(shard, connection)` runs on each shard's thread before its chunks are read (to
    /// wait there for a version, so one shard's chunks need not wait for the others).
    @discardableResult
    public func read(
        _ kind: ChunkKind, into flat: UnsafeMutableBufferPointer<Float>,
        before: @escaping @Sendable (Int, RedisConnection) throws(RedisError) -> Void = { _, _ in }
    ) throws(ShardError)
        -> [BlobHeader]
    {
        guard flat.count == layout.totalElements else {
            throw ShardError(
                .sizeMismatch, "job '\(map.job)' has \(layout.totalElements) parameters, buffer holds \(flat.count)")
        }
        let map = self.map
        let layout = self.layout
        let keys = self.keys
        // Each thread writes a disjoint range of `flat`, and all threads are joined before return.
        nonisolated(unsafe) let destination = flat
        let perShard = onEachShardResult { shard, c throws(RedisError) -> [(Int, Result<BlobHeader, ShardError>)] in
            try before(shard, c)
            let chunks = map.chunks(onShard: shard)
            var headers: [Int: BlobHeader] = [:]
            // Each blob streams from the socket straight into its range of `destination`.
            let failures = try c.getBlobs(
                chunks.map { kind.key(keys, chunk: $0) }, scratch: DecodeScratch(),
                into: { UnsafeMutableBufferPointer(rebasing: destination[layout.range(ofChunk: chunks[$0])]) },
                decoded: { headers[$0] = $1 })
            return chunks.enumerated().map { i, chunk in
                if let h = headers[i] { return (chunk, .success(h)) }
                let error: ShardError
                switch failures[i] {
                case .missing:
                    error = ShardError(
                        .missingChunk,
                        "chunk \(chunk) of job '\(map.job)' is missing on \(c.endpoint) (key \(kind.key(keys, chunk: chunk)))"
                    )
                case .serverError(let m): error = ShardError(c.serverError(m, command: "GET"))
                case .unexpected(let m): error = ShardError(.corruptChunk, "chunk \(chunk): unexpected reply \(m)")
                case .invalid(let e):
                    error = ShardError(.corruptChunk, "chunk \(chunk) of job '\(map.job)' on \(c.endpoint): \(e)")
                case nil:
                    error = ShardError(.corruptChunk, "chunk \(chunk) of job '\(map.job)' on \(c.endpoint): unreadable")
                }
                return (chunk, .failure(error))
            }
        }
        var headers = [BlobHeader?](repeating: nil, count: layout.chunkCount)
        for shardResult in perShard {
            switch shardResult {
            case .failure(let e): throw ShardError(e)
            case .success(let items):
                for (chunk, r) in items {
                    switch r {
                    case .success(let h): headers[chunk] = h
                    case .failure(let e): throw e
                    }
                }
            }
        }
        return headers.map { $0! }
    }

    /// Reads the whole parameter space of `kind` into a new array.
    public func read(_ kind: ChunkKind) throws(ShardError) -> (values: [Float], headers: [BlobHeader]) {
        var headers: [BlobHeader] = []
        var failure: ShardError?
        let values = [Float](unsafeUninitializedCapacity: layout.totalElements) { buf, n in
            do throws(ShardError) { headers = try read(kind, into: buf) } catch { failure = error }
            n = failure == nil ? layout.totalElements : 0
        }
        if let failure { throw failure }
        return (values, headers)
    }

    /// Reads one named tensor's parameters.
    public func readTensor(_ name: String) throws(ShardError) -> [Float] {
        guard let r = layout.range(ofTensor: name) else {
            throw ShardError(.unknownTensor, "job '\(map.job)' has no tensor '\(name)'")
        }
        return Array(try read(.params).values[r])
    }

    /// Writes one named tensor's parameters as version `step`, keeping the other tensors' values.
    /// Read-modify-write of the whole model: not for concurrent writers.
    public func writeTensor(_ name: String, _ values: [Float], step: Int) throws(ShardError) {
        guard let r = layout.range(ofTensor: name) else {
            throw ShardError(.unknownTensor, "job '\(map.job)' has no tensor '\(name)'")
        }
        guard values.count == r.count else {
            throw ShardError(.sizeMismatch, "tensor '\(name)' has \(r.count) elements, got \(values.count)")
        }
        var all = (try? read(.params).values) ?? [Float](repeating: 0, count: layout.totalElements)
        all.replaceSubrange(r, with: values)
        try write(all, as: .params, step: step, producer: BlobHeader.serverProducer)
    }
}

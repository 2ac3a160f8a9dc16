import Foundation
import KeySchema
import RedisClient
import TensorBlob

/// One shard as `smlt admin shards` reports it.
public struct ShardStatus: Codable, Sendable {
    public var endpoint: String
    public var reachable: Bool
    public var error: String?
    /// Parameter chunks stored on the shard, over all jobs.
    public var chunks: Int
    /// Bytes of parameter and optimizer blobs stored on the shard.
    public var bytes: Int
    /// Redis's `used_memory`.
    public var usedMemory: Int?
    public var jobs: [String]
    /// Lowest and highest parameter version (blob step) on the shard.
    public var minVersion: Int?
    public var maxVersion: Int?

    enum CodingKeys: String, CodingKey {
        case endpoint, reachable, error, chunks, bytes, jobs
        case usedMemory = "used_memory"
        case minVersion = "min_version"
        case maxVersion = "max_version"
    }
}

/// One chunk as `smlt admin chunks` reports it.
public struct ChunkStatus: Codable, Sendable {
    public var chunk: Int
    public var shard: String
    public var tensors: [String]
    public var elements: Int
    public var version: Int?
    public var codec: String?
    /// Stored blob bytes, header included; nil when the chunk is missing.
    public var storedBytes: Int?
    /// Raw element bytes divided by stored payload bytes.
    public var ratio: Double?
    /// The chunk's pull copy when the job keeps one (`ShardMap.pullEncoding`): its dtype and the
    /// codec it is stored with (`bf16-shuffle-lz4`, or `bf16-raw` when a blob did not shrink),
    /// its version when that differs from the parameters', or `missing`.
    public var pull: String?
    /// The pull copy's stored bytes, header included.
    public var pullStoredBytes: Int?
    public var error: String?

    enum CodingKeys: String, CodingKey {
        case chunk, shard, tensors, elements, version, codec, ratio, pull, error
        case storedBytes = "stored_bytes"
        case pullStoredBytes = "pull_stored_bytes"
    }
}

/// Read-only views of shards and chunks for operators. Reads only blob headers (GETRANGE),
/// never whole payloads.
public enum ShardInspector {
    /// The status of every endpoint, unreachable ones included.
    public static func shards(_ endpoints: [RedisEndpoint], options: RedisOptions = RedisOptions()) -> [ShardStatus] {
        Parallel.map(endpoints.count) { i in status(of: endpoints[i], options: options) }
    }

    static func status(of endpoint: RedisEndpoint, options: RedisOptions) -> ShardStatus {
        var s = ShardStatus(endpoint: endpoint.description, reachable: false, chunks: 0, bytes: 0, jobs: [])
        do {
            let c = try RedisConnection(endpoint, options: options)
            let info = try c.run(["INFO", "memory"]).text ?? ""
            for line in info.split(whereSeparator: \.isNewline) where line.hasPrefix("used_memory:") {
                s.usedMemory = Int(line.dropFirst("used_memory:".count))
            }
            s.reachable = true
            let jobs = (try c.run(["SMEMBERS", JobKeys.jobs]).array ?? []).compactMap(\.text).sorted()
            s.jobs = jobs
            for job in jobs {
                guard let json = try c.run(["GET", JobKeys(job: job).map]).bytes,
                    let map = try? JSONDecoder().decode(ShardMap.self, from: Data(json)),
                    let index = map.index(of: endpoint)
                else { continue }
                let keys = JobKeys(job: job)
                let chunks = map.chunks(onShard: index)
                for h in try headers(c, chunks.map { keys.params(chunk: $0) }) {
                    guard let h else { continue }
                    s.chunks += 1
                    s.bytes += h.stored
                    if let v = h.header?.step {
                        s.minVersion = min(s.minVersion ?? Int(v), Int(v))
                        s.maxVersion = max(s.maxVersion ?? Int(v), Int(v))
                    }
                }
                for h in try headers(c, chunks.map { keys.optimizer(chunk: $0) }) { s.bytes += h?.stored ?? 0 }
                if map.pullEncoding != nil {
                    for h in try headers(c, chunks.map { keys.pullCopy(chunk: $0) }) { s.bytes += h?.stored ?? 0 }
                }
            }
        } catch {
            s.error = "\(error)"
        }
        return s
    }

    /// Every chunk of `job` with its shard, tensors, version, codec and compression ratio. With a
    /// password, the job's map may name only `endpoints` and `allowed` (see `ShardManager.load`).
    public static func chunks(
        job: String, endpoints: [RedisEndpoint], options: RedisOptions = RedisOptions(), allowed: [String] = []
    ) throws(ShardError) -> [ChunkStatus] {
        let map = try ShardManager.load(job: job, from: endpoints, options: options, allowed: allowed)
        let layout = map.layout
        let keys = JobKeys(job: job)
        let perShard = Parallel.map(map.shards.count) { shard -> [ChunkStatus] in
            let chunks = map.chunks(onShard: shard)
            let base = chunks.map { c in
                ChunkStatus(
                    chunk: c, shard: map.shards[shard], tensors: layout.tensorNames(inChunk: c),
                    elements: layout.range(ofChunk: c).count)
            }
            do {
                let c = try RedisConnection(try RedisEndpoint(parsing: map.shards[shard]), options: options)
                let found = try headers(c, chunks.map { keys.params(chunk: $0) })
                let copies =
                    map.pullEncoding == nil
                    ? found.map { _ in nil } : try headers(c, chunks.map { keys.pullCopy(chunk: $0) })
                return zip(base, zip(found, copies)).map { b, hs in
                    var b = b
                    let (h, copy) = hs
                    if map.pullEncoding != nil {
                        b.pullStoredBytes = copy?.stored
                        if let copy, let header = copy.header {
                            b.pull =
                                "\(header.dtype)-\(header.codec)"
                                + (h?.header.map { $0.step == header.step } ?? true ? "" : " (version \(header.step))")
                        } else {
                            b.pull = copy?.error ?? "missing"
                        }
                    }
                    guard let h else {
                        b.error = "missing"
                        return b
                    }
                    b.storedBytes = h.stored
                    if let header = h.header {
                        b.version = Int(header.step)
                        b.codec = header.codec.description
                        b.ratio =
                            header.payloadLength == 0 ? 1 : Double(header.rawByteCount) / Double(header.payloadLength)
                    } else {
                        b.error = h.error
                    }
                    return b
                }
            } catch {
                return base.map {
                    var b = $0; b.error = "\(error)"; return b
                }
            }
        }
        return perShard.flatMap { $0 }.sorted { $0.chunk < $1.chunk }
    }

    struct Peek { var stored: Int; var header: BlobHeader?; var error: String? }

    /// Reads the headers of the blobs at `keys` (nil where a key is missing).
    static func headers(_ c: RedisConnection, _ keys: [String]) throws(RedisError) -> [Peek?] {
        guard !keys.isEmpty else { return [] }
        var commands: [RedisCommand] = []
        for k in keys {
            commands.append(["STRLEN", k])
            commands.append(RedisCommand("GETRANGE", k, "0", "\(BlobHeader.size - 1)"))
        }
        let replies = try c.pipeline(commands)
        return keys.indices.map { i in
            let length = Int(replies[2 * i].integer ?? 0)
            guard length > 0, let prefix = replies[2 * i + 1].bytes else { return nil }
            let parsed = prefix.withUnsafeBytes { p in
                Result { () throws(TensorBlobError) in try TensorBlob.header(prefix: p, blobLength: length) }
            }
            switch parsed {
            case .success(let h): return Peek(stored: length, header: h)
            case .failure(let e): return Peek(stored: length, header: nil, error: e.description)
            }
        }
    }
}

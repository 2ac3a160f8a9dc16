import TensorBlob

/// Where a job's chunks live: the shards, an epoch that grows whenever the map changes, and the
/// owning shard of every chunk. Stored as JSON under `smlt:{JOB}:map` on every shard of the job,
/// so a stateless client loads it with one GET.
public struct ShardMap: Codable, Sendable, Equatable {
    public var job: String
    public var epoch: Int
    /// Shard endpoints (`host:port` or `unix:/path`); their order gives the indices in `assignment`.
    public var shards: [String]
    /// `assignment[c]` is the index in `shards` of chunk `c`'s shard.
    public var assignment: [Int]
    public var tensors: [TensorSpec]
    public var chunkElements: Int
    public var codec: BlobCodec

    enum CodingKeys: String, CodingKey {
        case job, epoch, shards, assignment, tensors, codec
        case chunkElements = "chunk_elements"
    }

    public init(spec: JobSpec, shards: [String], epoch: Int = 1) {
        job = spec.job
        self.epoch = epoch
        self.shards = shards
        tensors = spec.tensors
        chunkElements = spec.chunkElements
        codec = spec.codec
        let layout = ModelLayout(tensors: spec.tensors, chunkElements: spec.chunkElements)
        assignment = Placement.balanced(chunks: layout.chunkCount, job: spec.job, shards: shards)
    }

    public var spec: JobSpec { JobSpec(job: job, tensors: tensors, chunkElements: chunkElements, codec: codec) }
    public var layout: ModelLayout { ModelLayout(tensors: tensors, chunkElements: chunkElements) }

    /// The chunks owned by shard `index`, in ascending order.
    public func chunks(onShard index: Int) -> [Int] {
        assignment.indices.filter { assignment[$0] == index }
    }

    /// Checks that a map read from Redis is internally consistent.
    public func validate() throws(ShardError) {
        try spec.validate()
        guard !shards.isEmpty, Set(shards).count == shards.count else {
            throw ShardError(.corruptChunk, "shard map of '\(job)' has no or duplicate shards")
        }
        guard assignment.count == layout.chunkCount, assignment.allSatisfy({ $0 >= 0 && $0 < shards.count }) else {
            throw ShardError(.corruptChunk, "shard map of '\(job)' does not assign every chunk to a listed shard")
        }
    }
}

/// The Redis keys of one job (see docs/wire-format.md). Every key of a chunk carries the hash tag
/// `{JOB/CHUNK}` so that a Redis Cluster keeps them on one node; job-wide keys carry `{JOB}`.
public struct JobKeys: Sendable {
    public let job: String

    public init(job: String) { self.job = job }

    /// The set of all job ids, kept on every shard.
    public static let jobs = "smlt:jobs"

    public var map: String { "smlt:{\(job)}:map" }
    /// The map's epoch as a decimal string, on every shard: servers re-read a job's map and
    /// config when it changes.
    public var epoch: String { "smlt:{\(job)}:epoch" }
    public func params(chunk: Int) -> String { "smlt:{\(job)/\(chunk)}:params" }
    public func optimizer(chunk: Int) -> String { "smlt:{\(job)/\(chunk)}:opt" }
    public func checkpointParams(chunk: Int) -> String { "smlt:{\(job)/\(chunk)}:ckpt:params" }
    public func checkpointOptimizer(chunk: Int) -> String { "smlt:{\(job)/\(chunk)}:ckpt:opt" }
    public func gradient(chunk: Int, step: Int, worker: Int) -> String {
        "smlt:{\(job)/\(chunk)}:grad:\(step):\(worker)"
    }
    /// Glob patterns that match every key of the job.
    public var patterns: [String] { ["smlt:{\(job)}:*", "smlt:{\(job)/*"] }
}

/// Which per-chunk blob an operation reads or writes.
public enum ChunkKind: Sendable, Equatable {
    case params
    case optimizer
    case gradient(step: Int, worker: Int)
    /// The parameters as of the last checkpoint version (written by the servers).
    case checkpointParams
    /// The optimizer state as of the last checkpoint version.
    case checkpointOptimizer

    func key(_ keys: JobKeys, chunk: Int) -> String {
        switch self {
        case .params: keys.params(chunk: chunk)
        case .optimizer: keys.optimizer(chunk: chunk)
        case .checkpointParams: keys.checkpointParams(chunk: chunk)
        case .checkpointOptimizer: keys.checkpointOptimizer(chunk: chunk)
        case .gradient(let step, let worker): keys.gradient(chunk: chunk, step: step, worker: worker)
        }
    }
}

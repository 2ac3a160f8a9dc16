import KeySchema
import RedisClient
import TensorBlob

/// Where a job's chunks live: the shards, an epoch that grows whenever the map changes, and the
/// owning shard of every chunk. Stored as JSON under `smlt:{JOB}:map` on every shard of the job,
/// so a stateless client loads it with one GET.
public struct ShardMap: Codable, Sendable, Equatable {
    public var job: String
    public var epoch: Int
    /// Shard endpoints (`host:port`, `unix:/path` or a cluster lane `cluster://SEEDS/TAG`); their
    /// order gives the indices in `assignment`.
    public var shards: [String]
    /// `assignment[c]` is the index in `shards` of chunk `c`'s shard.
    public var assignment: [Int]
    public var tensors: [TensorSpec]
    public var chunkElements: Int
    public var codec: BlobCodec
    /// The low-precision copy of every parameter version that workers pull instead of `params`;
    /// nil (absent from the JSON) when they pull `params`.
    public var pullEncoding: PullEncoding?

    enum CodingKeys: String, CodingKey {
        case job, epoch, shards, assignment, tensors, codec
        case chunkElements = "chunk_elements"
        case pullEncoding = "pull_encoding"
    }

    /// The index of the shard `endpoint` names: the same endpoint text, or for a cluster lane the
    /// same tag (a lane is one shard whatever seed nodes reach it).
    public func index(of endpoint: RedisEndpoint) -> Int? {
        if endpoint.laneTag != nil {
            return shards.firstIndex { (try? RedisEndpoint(parsing: $0))?.sameShard(as: endpoint) == true }
        }
        return shards.firstIndex(of: endpoint.description)
    }

    public init(spec: JobSpec, shards: [String], epoch: Int = 1) {
        job = spec.job
        self.epoch = epoch
        self.shards = shards
        tensors = spec.tensors
        chunkElements = spec.chunkElements
        codec = spec.codec
        pullEncoding = spec.pullEncoding
        let layout = ModelLayout(tensors: spec.tensors, chunkElements: spec.chunkElements)
        assignment = Placement.balanced(chunks: layout.chunkCount, job: spec.job, shards: shards)
    }

    public var spec: JobSpec {
        JobSpec(job: job, tensors: tensors, chunkElements: chunkElements, codec: codec, pullEncoding: pullEncoding)
    }

    /// What a worker pulls: the pull copy when the job keeps one, else the parameters.
    public var pulledKind: ChunkKind { pullEncoding == nil ? .params : .pullCopy }
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

/// Which per-chunk blob an operation reads or writes.
public enum ChunkKind: Sendable, Equatable {
    case params
    /// The low-precision copy of `params` that workers pull (see `ShardMap.pullEncoding`).
    case pullCopy
    case optimizer
    case gradient(step: Int, worker: Int)
    /// The parameters as of the last checkpoint version (written by the servers).
    case checkpointParams
    /// The optimizer state as of the last checkpoint version.
    case checkpointOptimizer

    func key(_ keys: JobKeys, chunk: Int) -> String {
        switch self {
        case .params: keys.params(chunk: chunk)
        case .pullCopy: keys.pullCopy(chunk: chunk)
        case .optimizer: keys.optimizer(chunk: chunk)
        case .checkpointParams: keys.checkpointParams(chunk: chunk)
        case .checkpointOptimizer: keys.checkpointOptimizer(chunk: chunk)
        case .gradient(let step, let worker): keys.gradient(chunk: chunk, step: step, worker: worker)
        }
    }
}

/// How a function platform tells an invocation what to do and what limits it runs under: the
/// environment variables of the contract between a scheduler and a worker function
/// (docs/wire-format.md, "Functions").
public enum FunctionEnvironment {
    /// The invocation's maximum duration in milliseconds (the platform kills it then).
    public static let timeLimit = "SMLT_FUNCTION_TIMEOUT_MS"
    /// `CLOCK_MONOTONIC` in nanoseconds when the platform started the invocation.
    public static let invokedAt = "SMLT_FUNCTION_INVOKED_AT_NS"
    /// A directory that survives between invocations on the same machine (warm starts).
    public static let cache = "SMLT_FUNCTION_CACHE"
    /// The invocation's event: a `WorkerEvent` as JSON.
    public static let event = "SMLT_FUNCTION_EVENT"
    /// The Redis password, when the shards need one (never put in the event or the arguments).
    public static let password = "SMLT_REDIS_PASSWORD"
}

/// What one worker invocation is asked to do: the event a scheduler sends with it, like the
/// payload of a serverless invocation. Credentials are not part of it.
public struct WorkerEvent: Codable, Sendable, Equatable {
    public var job: String
    public var worker: Int
    /// 0 for the first invocation of this worker, +1 for each relaunch or continuation.
    public var generation: Int
    /// How long the worker's lease lives without renewal.
    public var leaseMilliseconds: Int
    /// Endpoints the worker may connect to (and send credentials to): the job's shards.
    public var redis: [String]
    /// A Redis ACL user name, if any.
    public var user: String?

    public init(job: String, worker: Int, generation: Int, leaseMilliseconds: Int, redis: [String], user: String?) {
        self.job = job
        self.worker = worker
        self.generation = generation
        self.leaseMilliseconds = leaseMilliseconds
        self.redis = redis
        self.user = user
    }

    enum CodingKeys: String, CodingKey {
        case job, worker, generation, redis, user
        case leaseMilliseconds = "lease_ms"
    }
}

/// Names of the data partitions the built-in workloads stage for their workers.
public enum StagedData {
    /// Worker `w`'s features when the job has `workers` workers (f32 blob, row-major).
    public static func features(worker w: Int, of workers: Int) -> String { "data-\(workers)-\(w)-x" }
    /// Worker `w`'s labels (class indices as f32) when the job has `workers` workers.
    public static func labels(worker w: Int, of workers: Int) -> String { "data-\(workers)-\(w)-y" }
}

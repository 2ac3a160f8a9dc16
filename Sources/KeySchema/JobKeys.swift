/// Every Redis key SMLT reads or writes, in one place (docs/wire-format.md, "Keys").
///
/// Keys of one chunk carry the hash tag `{JOB/CHUNK}`; job-wide keys carry `{JOB}`. `shard` is a
/// shard's index in the job's map; per-shard keys live on that shard. Keys documented as "on the
/// home shard" live on shard 0 of the map, which a re-shard never removes.
public struct JobKeys: Sendable, Equatable {
    public let job: String

    public init(job: String) { self.job = job }

    // MARK: Global

    /// The set of all job ids, kept on every shard.
    public static let jobs = "smlt:jobs"
    /// A list servers block on (with the job inboxes) so that a new or changed job wakes them.
    public static let wakeup = "smlt:serve:wakeup"
    /// How many times a parameter server started serving this shard (an integer, never reset by
    /// SMLT); each server loop increments it once when it first reaches the shard.
    public static let serverStarts = "smlt:serve:starts"

    // MARK: Registration, on every shard

    /// The shard map (JSON).
    public var map: String { "smlt:{\(job)}:map" }
    /// The map's epoch as a decimal string, stored next to the map: a cheap change marker that
    /// servers watch when they commit and workers compare with their map before each step.
    public var epoch: String { "smlt:{\(job)}:epoch" }
    /// The training config (JSON).
    public var config: String { "smlt:{\(job)}:train" }

    // MARK: Chunks, on the chunk's shard

    public func params(chunk: Int) -> String { "smlt:{\(job)/\(chunk)}:params" }
    /// The low-precision copy of `params` (same version) that workers pull, when the map names one.
    public func pullCopy(chunk: Int) -> String { "smlt:{\(job)/\(chunk)}:pull" }
    public func optimizer(chunk: Int) -> String { "smlt:{\(job)/\(chunk)}:opt" }
    public func checkpointParams(chunk: Int) -> String { "smlt:{\(job)/\(chunk)}:ckpt:params" }
    public func checkpointOptimizer(chunk: Int) -> String { "smlt:{\(job)/\(chunk)}:ckpt:opt" }
    /// Every blob a chunk's owner keeps for it (parameters, pull copy, optimizer state and their
    /// checkpoint copies): what moves with the chunk, and what a shard that lost it deletes.
    public func chunkBlobs(chunk: Int) -> [String] {
        [
            params(chunk: chunk), pullCopy(chunk: chunk), optimizer(chunk: chunk),
            checkpointParams(chunk: chunk), checkpointOptimizer(chunk: chunk),
        ]
    }
    public func gradient(chunk: Int, step: Int, worker: Int) -> String {
        "smlt:{\(job)/\(chunk)}:grad:\(step):\(worker)"
    }

    // MARK: The step protocol, per shard

    /// Set of worker ids that have pushed all their gradient chunks of `step` to shard `shard`.
    public func pushed(shard: Int, step: Int) -> String { "smlt:{\(job)}:pushed:\(shard):\(step)" }
    /// List a worker appends to after pushing, to wake the shard's server (BLPOP).
    public func inbox(shard: Int) -> String { "smlt:{\(job)}:inbox:\(shard)" }
    /// Stream of published parameter versions of shard `shard`; entry id `VERSION-1`.
    public func versions(shard: Int) -> String { "smlt:{\(job)}:versions:\(shard)" }
    /// The newest pushes a server refused (JSON), on each shard that refused them.
    public var rejected: String { "smlt:{\(job)}:rejected" }
    /// A hash of the shard's last commit of the job (version, time, step seconds, bytes), written
    /// by the server in the commit's transaction; read by `smlt admin top`.
    public func serverStats(shard: Int) -> String { "smlt:{\(job)}:stats:\(shard)" }

    // MARK: Control, on the home shard

    /// The step before which every worker must stop and wait (a reconfiguration is pending).
    public var hold: String { "smlt:{\(job)}:hold" }
    /// Stream of per-step worker metrics (JSON), capped.
    public var metrics: String { "smlt:{\(job)}:metrics" }
    /// Worker `w`'s lease (its generation, with a TTL).
    public func lease(worker w: Int) -> String { "smlt:{\(job)}:lease:\(w)" }
    /// Capped list of invocation start reports (JSON).
    public var starts: String { "smlt:{\(job)}:starts" }
    /// Why the job was stopped for good (JSON), when a worker found it cannot go on.
    public var failure: String { "smlt:{\(job)}:failure" }
    /// The driver's run state (JSON): what `smlt train --resume` continues from.
    public var run: String { "smlt:{\(job)}:run" }
    /// The journal of a re-shard in progress (JSON), on the home shard: what a driver that died
    /// in the middle of a move left to clean up.
    public var moving: String { "smlt:{\(job)}:moving" }

    // MARK: Function-defined models

    /// The model a function described (JSON: tensor names and shapes), on the home shard.
    public var describe: String { "smlt:{\(job)}:describe" }
    /// The initial values of the described model's tensor `i` (a tensor blob).
    public func describeTensor(_ i: Int) -> String { "smlt:{\(job)}:describe:\(i)" }
    /// The final model's metrics, as the function's evaluate phase wrote them (JSON).
    public var evaluation: String { "smlt:{\(job)}:evaluation" }

    // MARK: Named objects

    /// A named object (staged data, worker state), on the shard its name hashes to.
    public func object(_ name: String) -> String { "smlt:{\(job)}:obj:\(name)" }

    /// Glob patterns that match every key of the job.
    public var patterns: [String] { ["smlt:{\(job)}:*", "smlt:{\(job)/*"] }
    /// Glob patterns of a job's pending gradients and pushed sets.
    public var pendingPatterns: [String] { ["smlt:{\(job)/*}:grad:*", "smlt:{\(job)}:pushed:*"] }
}

import Foundation
import KeySchema
import RedisClient
import ShardManager
import TensorBlob

/// What the parameter servers and workers of a job agree on. Stored as JSON under
/// `smlt:{JOB}:train` on every shard of the job.
public struct TrainingConfig: Codable, Sendable, Equatable {
    /// Number of workers; BSP waits for all of them every step.
    public var workers: Int
    /// Number of steps (parameter versions 0...steps).
    public var steps: Int
    public var learningRate: Float
    public var momentum: Float
    public var weightDecay: Float
    /// Free-form settings for the workload (model, dataset, batch size), read by workers.
    public var workload: [String: String]
    /// Every this many versions the servers also keep a copy of the parameters and optimizer
    /// state under the job's checkpoint keys, for `smlt train` to save to disk; 0 for never.
    public var checkpointEvery: Int
    /// How workers encode their gradients (a `GradientEncoding` spec such as `bf16-shuffle-lz4`);
    /// nil for f32 with the map's codec.
    public var gradientEncoding: String?

    public init(
        workers: Int, steps: Int, learningRate: Float, momentum: Float = 0.9, weightDecay: Float = 0,
        workload: [String: String] = [:], checkpointEvery: Int = 0, gradientEncoding: String? = nil
    ) {
        self.checkpointEvery = checkpointEvery
        self.gradientEncoding = gradientEncoding
        self.workers = workers
        self.steps = steps
        self.learningRate = learningRate
        self.momentum = momentum
        self.weightDecay = weightDecay
        self.workload = workload
    }

    enum CodingKeys: String, CodingKey {
        case workers, steps, momentum, workload
        case learningRate = "learning_rate"
        case weightDecay = "weight_decay"
        case checkpointEvery = "checkpoint_every"
        case gradientEncoding = "gradient_encoding"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        workers = try c.decode(Int.self, forKey: .workers)
        steps = try c.decode(Int.self, forKey: .steps)
        learningRate = try c.decode(Float.self, forKey: .learningRate)
        momentum = try c.decode(Float.self, forKey: .momentum)
        weightDecay = try c.decode(Float.self, forKey: .weightDecay)
        workload = try c.decodeIfPresent([String: String].self, forKey: .workload) ?? [:]
        checkpointEvery = try c.decodeIfPresent(Int.self, forKey: .checkpointEvery) ?? 0
        gradientEncoding = try c.decodeIfPresent(String.self, forKey: .gradientEncoding)
    }

    /// The encoding workers push gradients with: the config's `gradient_encoding`, or f32 with
    /// `codec` (the map's) when it has none.
    public func encoding(mapCodec codec: BlobCodec) throws(ShardError) -> GradientEncoding {
        guard let gradientEncoding else { return .dense(.f32, codec) }
        do { return try GradientEncoding(parsing: gradientEncoding) } catch {
            throw ShardError(.invalidSpec, "training config: \(error)")
        }
    }

    /// Stores the config on every shard of the job.
    public func store(on shards: ShardManager) throws(ShardError) {
        let json: [UInt8]
        do { json = Array(try JSONEncoder().encode(self)) } catch { throw ShardError(.invalidSpec, "\(error)") }
        let key = JobKeys(job: shards.map.job).config
        _ = try shards.onEachShard { _, c throws(RedisError) in
            try c.run(RedisCommand("SET", key).appending(bytes: json))
        }
    }

    /// Loads the config of `shards`' job from its home shard; a job without one is `jobNotFound`.
    public static func load(from shards: ShardManager) throws(ShardError) -> TrainingConfig {
        let job = shards.map.job
        let loaded = try shards.onShard(0) { c throws(RedisError) in
            Result { () throws(ShardError) in try TrainingConfig.load(job: job, from: c) }
        }.get()
        guard let loaded else {
            throw ShardError(.jobNotFound, "job '\(job)' has no training config (\(JobKeys(job: job).config))")
        }
        return loaded
    }

    /// Loads a job's config from one shard connection; nil when the job has none.
    public static func load(job: String, from c: RedisConnection) throws(ShardError) -> TrainingConfig? {
        let reply: RedisReply
        do { reply = try c.run(["GET", JobKeys(job: job).config]) } catch { throw ShardError(error) }
        guard let json = reply.bytes else { return nil }
        do { return try JSONDecoder().decode(TrainingConfig.self, from: Data(json)) } catch {
            throw ShardError(.invalidSpec, "training config of job '\(job)' on \(c.endpoint) is not valid: \(error)")
        }
    }

    /// The largest number of workers a job may have.
    public static let maxWorkers = 4096

    /// Checks the values a server or worker relies on.
    public func validate() throws(ShardError) {
        guard workers >= 1 else { throw ShardError(.invalidSpec, "workers must be at least 1, got \(workers)") }
        guard workers <= Self.maxWorkers else {
            throw ShardError(.invalidSpec, "workers must be at most \(Self.maxWorkers), got \(workers)")
        }
        guard steps >= 0 else { throw ShardError(.invalidSpec, "steps must not be negative") }
        guard checkpointEvery >= 0 else { throw ShardError(.invalidSpec, "checkpoint_every must not be negative") }
        guard learningRate.isFinite, momentum.isFinite, weightDecay.isFinite else {
            throw ShardError(.invalidSpec, "optimizer settings must be finite numbers")
        }
        _ = try encoding(mapCodec: .raw)
    }
}

/// One worker's report for one step.
public struct StepMetrics: Codable, Sendable, Equatable {
    public var worker: Int
    public var step: Int
    public var loss: Double
    public var accuracy: Double
    public var examples: Int
    /// Where the step's time went, in seconds (optional on the wire; the planner fits its
    /// step-time model to them): computing the gradient, pushing it, and pulling the model
    /// (which includes waiting for the other workers and the servers' sums).
    public var computeSeconds: Double?
    public var pushSeconds: Double?
    public var pullSeconds: Double?
    /// The whole step as this worker saw it, from reading the job's control to the end of the push.
    public var stepSeconds: Double?

    /// How many entries the metrics stream keeps (older ones are trimmed).
    public static let retained = 10_000

    public init(
        worker: Int, step: Int, loss: Double, accuracy: Double, examples: Int, computeSeconds: Double? = nil,
        pushSeconds: Double? = nil, pullSeconds: Double? = nil, stepSeconds: Double? = nil
    ) {
        self.worker = worker
        self.step = step
        self.loss = loss
        self.accuracy = accuracy
        self.examples = examples
        self.computeSeconds = computeSeconds
        self.pushSeconds = pushSeconds
        self.pullSeconds = pullSeconds
        self.stepSeconds = stepSeconds
    }

    enum CodingKeys: String, CodingKey {
        case worker, step, loss, accuracy, examples
        case computeSeconds = "compute_s"
        case pushSeconds = "push_s"
        case pullSeconds = "pull_s"
        case stepSeconds = "step_s"
    }
}

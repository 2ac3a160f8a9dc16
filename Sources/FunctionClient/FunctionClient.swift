import Foundation
import RedisClient
import ShardManager
import TensorBlob
import TrainingProtocol

/// The SDK a stateless function uses to take part in a training job.
///
/// It keeps nothing a function could not lose: everything it knows comes from Redis on creation.
/// Chunks on different shards move in parallel.
///
///     let client = try FunctionClient(job: "digits", worker: 2, endpoints: shards)
///     for step in 0..<client.config.steps {
///         let params = try client.pull(step: step)
///         let gradient = model.gradient(params, batch(step))
///         try client.push(gradient: gradient, step: step)
///     }
public final class FunctionClient: Sendable {
    public let worker: Int
    public let config: TrainingConfig
    /// The job's shard map and layout.
    public let shards: ShardManager
    let training: TrainingKeys

    /// How long a gradient waits in Redis for its aggregation before it expires.
    public static let gradientTTLSeconds = 3600

    /// Opens `job` as worker `worker`, reading the shard map and config from `endpoints`.
    public init(job: String, worker: Int, endpoints: [RedisEndpoint], options: RedisOptions = RedisOptions())
        throws(ShardError)
    {
        shards = try ShardManager.open(job: job, endpoints: endpoints, options: options)
        training = TrainingKeys(job: job)
        let key = training.config
        let loaded = try shards.onShard(0) { c throws(RedisError) in
            Result { () throws(ShardError) in try TrainingConfig.load(job: job, from: c) }
        }.get()
        guard let config = loaded else {
            throw ShardError(.jobNotFound, "job '\(job)' has no training config (\(key))")
        }
        try config.validate()
        guard worker >= 0 && worker < config.workers else {
            throw ShardError(.invalidSpec, "worker id \(worker) is outside 0..<\(config.workers)")
        }
        self.worker = worker
        self.config = config
    }

    public var parameterCount: Int { shards.layout.totalElements }

    /// Waits until every shard has published parameter version `step` or later, then reads the
    /// whole model into `into`. Returns the oldest chunk version read.
    @discardableResult
    public func pull(step: Int, into flat: UnsafeMutableBufferPointer<Float>, timeout: Duration = .seconds(600))
        throws(ShardError) -> Int
    {
        let training = self.training
        // Entry ids are VERSION-1, so "after STEP-0" means version STEP or later. Each shard's
        // chunks are read as soon as that shard has published.
        let headers = try shards.read(.params, into: flat) { shard, c throws(RedisError) in
            let deadline = ContinuousClock.now + timeout
            while true {
                let left = deadline - ContinuousClock.now
                guard left > .zero else {
                    throw RedisError(
                        .connectionLost, endpoint: c.endpoint.description, "version \(step) not published in time")
                }
                let wait = min(left, .seconds(5))
                let ms = max(
                    1, Int(wait.components.seconds * 1000 + wait.components.attoseconds / 1_000_000_000_000_000))
                let reply = try c.run(
                    ["XREAD", "COUNT", "1", "BLOCK", "\(ms)", "STREAMS", training.versions(shard: shard), "\(step)-0"],
                    blockingFor: wait)
                if reply != .null { return }
            }
        }
        return Int(headers.map(\.step).min() ?? 0)
    }

    /// Waits for version `step` and returns the whole model.
    public func pull(step: Int, timeout: Duration = .seconds(600)) throws(ShardError) -> [Float] {
        var failure: ShardError?
        let n = parameterCount
        let values = [Float](unsafeUninitializedCapacity: n) { buf, count in
            do throws(ShardError) { try pull(step: step, into: buf, timeout: timeout) } catch { failure = error }
            count = failure == nil ? n : 0
        }
        if let failure { throw failure }
        return values
    }

    /// Pushes this worker's gradient for `step`. Pushing the same step again replaces the blobs
    /// and is counted once.
    public func push(gradient: UnsafeBufferPointer<Float>, step: Int) throws(ShardError) {
        let training = self.training
        let worker = self.worker
        try shards.write(
            gradient, as: .gradient(step: step, worker: worker), step: step, producer: UInt32(worker),
            expireSeconds: Self.gradientTTLSeconds
        ) { shard in
            [
                ["SADD", training.pushed(shard: shard, step: step), "\(worker)"],
                ["EXPIRE", training.pushed(shard: shard, step: step), "\(Self.gradientTTLSeconds)"],
                ["RPUSH", training.inbox(shard: shard), "\(step):\(worker)"],
                ["LTRIM", training.inbox(shard: shard), "-1000", "-1"],
            ]
        }
    }

    public func push(gradient: [Float], step: Int) throws(ShardError) {
        try gradient.withUnsafeBufferPointer { (g) throws(ShardError) in try push(gradient: g, step: step) }
    }

    /// Reports this worker's metrics for a step (shown by `smlt train`).
    public func report(_ metrics: StepMetrics) throws(ShardError) {
        let json: [UInt8]
        do { json = Array(try JSONEncoder().encode(metrics)) } catch { throw ShardError(.invalidSpec, "\(error)") }
        let key = training.metrics
        try shards.onShard(0) { c throws(RedisError) in _ = try c.run(RedisCommand("RPUSH", key).appending(bytes: json))
        }
    }

    /// Reads a named object of the job (staged data, saved state); nil when absent.
    public func object(_ name: String) throws(ShardError) -> [UInt8]? {
        try JobObjects(shards).get(name)
    }

    /// Stores a named object of the job.
    public func setObject(_ name: String, _ bytes: [UInt8]) throws(ShardError) {
        try JobObjects(shards).set(name, bytes)
    }
}

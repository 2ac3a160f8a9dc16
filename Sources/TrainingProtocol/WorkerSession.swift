import Foundation
import KeySchema
import RedisClient
import ShardManager
import Synchronization
import TensorBlob

/// A job opened as one of its workers: the worker side of the BSP protocol, one operation per
/// method (docs/wire-format.md, "The worker" and "Functions").
///
/// It keeps nothing a function could not lose: everything it knows comes from Redis on creation.
/// Chunks on different shards move in parallel.
///
/// These are building blocks. A function that should survive time limits, crashes and
/// reconfigurations runs its steps through the FunctionClient SDK (`FunctionWorker.run`), which
/// holds the lease, saves progress, keeps the deadline and follows reconfigurations around them.
public final class WorkerSession: Sendable {
    public let worker: Int
    public let config: TrainingConfig
    /// The job's shard map and layout.
    public let shards: ShardManager
    let training: JobKeys
    let options: RedisOptions
    /// When this client last saw Redis answer (or finished a wait round): a stuck caller shows as
    /// a clock that stops.
    public let activity: ActivityClock

    /// How long a gradient waits in Redis for its aggregation before it expires.
    public static let gradientTTLSeconds = 3600

    /// Opens `job` as worker `worker`, reading the shard map and config from `endpoints`.
    /// With a password, `allowed` lists endpoints besides `endpoints` that the map may name.
    /// A worker id at or above the job's current number of workers opens (see `isMember`): the
    /// job may have shrunk since the invocation was started.
    public init(
        job: String, worker: Int, endpoints: [RedisEndpoint], options: RedisOptions = RedisOptions(),
        allowed: [String] = [], activity: ActivityClock = ActivityClock()
    ) throws(ShardError) {
        shards = try ShardManager.open(job: job, endpoints: endpoints, options: options, allowed: allowed)
        self.options = options
        self.activity = activity
        training = JobKeys(job: job)
        let config = try TrainingConfig.load(from: shards)
        try config.validate()
        guard worker >= 0 && worker < TrainingConfig.maxWorkers else {
            throw ShardError(.invalidSpec, "worker id \(worker) is outside 0..<\(TrainingConfig.maxWorkers)")
        }
        self.worker = worker
        self.config = config
    }

    public var parameterCount: Int { shards.layout.totalElements }

    /// Whether this worker takes part in the job's steps now (its id is below the job's number
    /// of workers). A worker that is not a member has nothing to do and should exit.
    public var isMember: Bool { worker < config.workers }

    /// Waits until every shard has published parameter version `step` or later, then reads the
    /// whole model into `into` (from the pull copy when the job keeps one: the parameters
    /// rounded to its dtype). Returns the oldest and newest chunk versions read: both equal
    /// `step` in a normal BSP step. A newer version means the step was already pushed by an
    /// earlier invocation of this worker (see `completePush(step:)`).
    @discardableResult
    public func pull(step: Int, into flat: UnsafeMutableBufferPointer<Float>, timeout: Duration = .seconds(600))
        throws(ShardError) -> (oldest: Int, newest: Int)
    {
        let training = self.training
        let activity = self.activity
        // Entry ids are VERSION-1, so "after STEP-0" means version STEP or later. Each shard's
        // chunks are read as soon as that shard has published.
        // One deadline for all shards: with more shards than fan-out threads, a shard whose wait
        // starts late must not get the whole timeout again.
        let deadline = ContinuousClock.now + timeout
        let headers = try shards.read(shards.map.pulledKind, into: flat) { shard, c throws(RedisError) in
            while true {
                let left = deadline - ContinuousClock.now
                guard left > .zero else {
                    throw RedisError(
                        .timedOut, endpoint: c.endpoint.description, "version \(step) not published in time")
                }
                let wait = min(left, .seconds(5))
                let reply = try c.run(
                    training.waitForVersionCommand(shard: shard, step: step, wait: wait), blockingFor: wait)
                activity.touch()
                if reply != .null { return }
            }
        }
        return (Int(headers.map(\.step).min() ?? 0), Int(headers.map(\.step).max() ?? 0))
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
    ///
    /// Two phases: first every gradient chunk is stored on every shard, then the worker is added
    /// to each shard's pushed set. A worker killed between the phases has left its whole gradient
    /// in Redis, so its next invocation can finish the push (`completePush`) even when some
    /// shards already moved on and the parameters it was computed from are gone.
    ///
    /// With `encoding` (default: f32 with the map's codec) of dtype bf16 or f16 the gradient is
    /// stored rounded to that type; the servers sum the rounded values (`ErrorFeedback` keeps what
    /// rounding took off for the next step).
    public func push(gradient: UnsafeBufferPointer<Float>, step: Int, encoding: GradientEncoding? = nil)
        throws(ShardError)
    {
        try shards.write(
            gradient, as: .gradient(step: step, worker: worker), step: step, producer: UInt32(worker),
            expireSeconds: Self.gradientTTLSeconds, codec: encoding?.codec, dtype: encoding?.dtype ?? .f32)
        try markPushed(step: step) { _, _ in true }
    }

    /// Adds this worker to the pushed set of `step` on each shard where `include(shard, connection)`.
    func markPushed(
        step: Int, where include: @escaping @Sendable (Int, RedisConnection) throws(RedisError) -> Bool
    ) throws(ShardError) {
        let training = self.training
        let worker = self.worker
        _ = try shards.onEachShard { shard, c throws(RedisError) in
            guard try include(shard, c) else { return }
            try c.checkedPipeline(
                training.markPushedCommands(
                    shard: shard, step: step, worker: worker, ttlSeconds: Self.gradientTTLSeconds))
        }
    }

    /// Finishes a push of `step` that an earlier invocation of this worker started: on every
    /// shard still at version `step` whose gradient chunks from this worker are all there, adds
    /// the worker to the pushed set. Returns false when some shard at `step` lacks chunks (the
    /// gradient must then be computed and pushed again).
    @discardableResult
    public func completePush(step: Int) throws(ShardError) -> Bool {
        let training = self.training
        let keys = shards.keys
        let map = shards.map
        let worker = self.worker
        let complete = Mutex<Bool>(true)
        try markPushed(step: step) { shard, c throws(RedisError) in
            guard try training.latestVersion(shard: shard, on: c) == step else { return false }
            let chunkKeys = map.chunks(onShard: shard).map { keys.gradient(chunk: $0, step: step, worker: worker) }
            // A shard may hold none of the job's chunks; it still counts pushes and publishes versions.
            guard !chunkKeys.isEmpty else { return true }
            let present = try c.run(RedisCommand(strings: ["EXISTS"] + chunkKeys)).integer ?? 0
            if present != Int64(chunkKeys.count) {
                complete.withLock { $0 = false }
                return false
            }
            return true
        }
        return complete.withLock { $0 }
    }

    /// Pushes `gradient` of `step` again if a shard refused this worker's push of it (the
    /// shard is still at version `step` and the worker is not in its pushed set: its server found
    /// the gradient missing or damaged in Redis); returns whether it did. Without this the step
    /// would never complete: every worker waits for the refusing shard's next version.
    public func pushAgainIfRefused(gradient: [Float], step: Int, encoding: GradientEncoding? = nil) throws(ShardError)
        -> Bool
    {
        let training = self.training
        let worker = self.worker
        let refused = Mutex<Bool>(false)
        _ = try shards.onEachShard { shard, c throws(RedisError) in
            if try training.pushRefused(shard: shard, step: step, worker: worker, on: c) {
                refused.withLock { $0 = true }
            }
        }
        guard refused.withLock({ $0 }) else { return false }
        try push(gradient: gradient, step: step, encoding: encoding)
        return true
    }

    public func push(gradient: [Float], step: Int, encoding: GradientEncoding? = nil) throws(ShardError) {
        try gradient.withUnsafeBufferPointer { (g) throws(ShardError) in
            try push(gradient: g, step: step, encoding: encoding)
        }
    }

    /// Reports this worker's metrics for a step (shown by `smlt train`): one entry of the job's
    /// metrics stream, which keeps only the newest `StepMetrics.retained` entries.
    public func report(_ metrics: StepMetrics) throws(ShardError) {
        let json: [UInt8]
        do { json = Array(try JSONEncoder().encode(metrics)) } catch { throw ShardError(.invalidSpec, "\(error)") }
        let command = training.reportMetricsCommand(json)
        try shards.onShard(0) { c throws(RedisError) in _ = try c.run(command) }
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

extension WorkerSession {
    /// The progress this worker saved in an earlier invocation, if any.
    public func loadProgress() throws(ShardError) -> WorkerProgress? {
        guard let bytes = try object(WorkerProgress.objectName(worker: worker)) else { return nil }
        do { return try JSONDecoder().decode(WorkerProgress.self, from: Data(bytes)) } catch {
            throw ShardError(.corruptChunk, "saved progress of worker \(worker) is not valid: \(error)")
        }
    }

    /// Saves this worker's progress for its next invocation.
    public func saveProgress(_ progress: WorkerProgress) throws(ShardError) {
        let json: [UInt8]
        do { json = Array(try JSONEncoder().encode(progress)) } catch { throw ShardError(.invalidSpec, "\(error)") }
        try setObject(WorkerProgress.objectName(worker: worker), json)
    }

    /// Records how long this invocation took to start (shown by `smlt train`).
    public func reportStart(_ report: StartReport) throws(ShardError) {
        let json: [UInt8]
        do { json = Array(try JSONEncoder().encode(report)) } catch { throw ShardError(.invalidSpec, "\(error)") }
        let commands = training.reportStartCommands(json)
        try shards.onShard(0) { c throws(RedisError) in _ = try c.pipeline(commands) }
    }

    /// Starts renewing this worker's lease every `ttl / 3` on its own thread and connection, so
    /// the scheduler can tell a live worker from a dead or frozen one. `stop()` ends the
    /// renewals; the lease then expires on its own.
    ///
    /// - Parameter stuckAfter: when set, renewals stop while `activity` has not moved for this
    ///   long, so a worker whose step loop hangs loses its lease and is relaunched instead of
    ///   looking alive forever.
    public func startHeartbeat(ttl: Duration, generation: Int, stuckAfter: Duration? = nil) throws(ShardError)
        -> Heartbeat
    {
        let endpoint: RedisEndpoint
        do { endpoint = try RedisEndpoint(parsing: shards.map.shards[0]) } catch { throw ShardError(error) }
        let activity = self.activity
        return try Heartbeat(
            endpoint: endpoint, options: options, key: training.lease(worker: worker), value: "\(generation)", ttl: ttl,
            alive: { stuckAfter.map { activity.idle < $0 } ?? true })
    }

    /// Reads the job's reconfiguration control on its home shard once version `step` is
    /// published there (or `wait` ran out): the step workers must hold before, if any, and the
    /// current map epoch. A worker checks this before every step (docs/wire-format.md,
    /// "Reconfiguration").
    public func control(step: Int, wait: Duration) throws(ShardError) -> JobControl? {
        let training = self.training
        let activity = self.activity
        return try shards.onShard(0) { c throws(RedisError) -> JobControl? in
            let reply = try c.run(training.waitForVersionCommand(shard: 0, step: step, wait: wait), blockingFor: wait)
            activity.touch()
            guard reply != .null else { return nil }
            return JobControl(try c.run(training.readControlCommand))
        }
    }
}

extension WorkerSession {
    /// Records on the home shard why the job cannot go on (a diverged step, unusable data), for
    /// the driver and operators to read; kept a day.
    public func reportFailure(_ reason: String) throws(ShardError) {
        let json: [UInt8]
        do {
            json = Array(try JSONEncoder().encode(["worker": "\(worker)", "reason": reason]))
        } catch { throw ShardError(.invalidSpec, "\(error)") }
        let key = training.failure
        try shards.onShard(0) { c throws(RedisError) in
            _ = try c.run(RedisCommand("SET", key).appending(bytes: json).appending("EX").appending("86400"))
        }
    }
}

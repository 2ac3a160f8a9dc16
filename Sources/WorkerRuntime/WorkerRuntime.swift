import Foundation
import FunctionClient
import RedisClient
import ShardManager
import TrainingProtocol

/// Runs one worker invocation of a BSP job around a step function: everything a stateless
/// function needs to survive time limits, crashes, freezes and reconfigurations.
///
/// - It holds a lease while it runs (renewed on its own thread; not renewed while the step loop
///   makes no progress, so a stuck worker is found and relaunched).
/// - It resumes at the step its previous invocation saved, finishes a push that one left
///   half done, and saves its progress after every step.
/// - It stops before the invocation's time limit with `.continueLater` (exit 75).
/// - Before each step it reads the job's control: at a hold it waits for the reconfiguration,
///   and when the map's epoch moved it reopens the job (new shards, new number of workers). A
///   worker the job no longer needs returns `.finished`.
/// - A step whose loss or gradient is not finite stops the job (`.stopJob`, exit 65) with a
///   message naming the step, instead of pushing poison.
///
///     let runtime = try WorkerRuntime(event: event, options: options)
///     let outcome = try runtime.run { step, params, gradient in
///         // fill `gradient` from `params` for batch `step.index`; return the metrics
///     }
///     exit(outcome.exitCode)
public final class WorkerRuntime {
    /// How an invocation ended.
    public enum Outcome: Sendable, Equatable {
        /// Every step this worker takes part in is done (or the job no longer needs it).
        case finished
        /// Progress is saved; invoke the next generation.
        case continueLater
        /// The job cannot go on; the message says why.
        case stopJob(String)

        /// The process exit code for this outcome (`WorkerExit`).
        public var exitCode: Int32 {
            switch self {
            case .finished: 0
            case .continueLater: WorkerExit.continueLater
            case .stopJob: WorkerExit.stopJob
            }
        }
    }

    /// What a step function is given besides the parameters.
    public struct Step: Sendable {
        /// The step (= the parameter version it starts from).
        public var index: Int
        public var worker: Int
        /// Workers taking part in this step.
        public var workers: Int
        public var config: TrainingConfig
        /// The job's map epoch this step runs under.
        public var epoch: Int
    }

    /// What a step function reports; it becomes the step's `StepMetrics`.
    public struct Report: Sendable {
        public var loss: Double
        public var correct: Int
        public var examples: Int

        public init(loss: Double, correct: Int, examples: Int) {
            self.loss = loss
            self.correct = correct
            self.examples = examples
        }
    }

    public let event: WorkerEvent
    let options: RedisOptions
    let environment: [String: String]
    let started = ContinuousClock.now
    /// Time kept in reserve before the deadline to save progress and exit.
    public static let reserve: Duration = .milliseconds(400)
    /// A step loop that shows no progress for this long stops renewing its lease.
    let stuckAfter: Duration
    let activity = ActivityClock()
    private var log: (String) -> Void

    /// - Parameters:
    ///   - environment: the invocation's environment (`FunctionEnvironment`): time limit and
    ///     start time.
    ///   - log: where notes about reconfigurations go (standard error by default).
    public init(
        event: WorkerEvent, options: RedisOptions, environment: [String: String] = ProcessInfo.processInfo.environment,
        log: @escaping (String) -> Void = { FileHandle.standardError.write(Data("\($0)\n".utf8)) }
    ) {
        self.event = event
        self.options = options
        self.environment = environment
        self.log = log
        stuckAfter = max(.seconds(60), .milliseconds(event.leaseMilliseconds) * 20)
    }

    /// Seconds since the platform started this invocation (exec, runtime and loading included),
    /// when the platform says when that was.
    public var secondsSinceInvoked: Double? {
        guard let text = environment[FunctionEnvironment.invokedAt], let at = Int64(text) else { return nil }
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return Double(Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec) - at) / 1e9
    }

    /// Opens the job as this worker.
    public func open() throws(ShardError) -> FunctionClient {
        var endpoints: [RedisEndpoint] = []
        for e in event.redis {
            do { endpoints.append(try RedisEndpoint(parsing: e)) } catch { throw ShardError(error) }
        }
        return try FunctionClient(
            job: event.job, worker: event.worker, endpoints: endpoints, options: options, activity: activity)
    }

    /// Runs steps until this worker's part of the job is done, its time limit nears, or the job
    /// must stop. `prepare` runs once the job is open and again after every reconfiguration
    /// (load data, check the model against the job) and returns whether its data came from the
    /// function's local cache (reported as a warm start); `step` computes one gradient into its
    /// third argument and reports the batch's metrics.
    public func run(
        prepare: (FunctionClient) throws -> Bool = { _ in false },
        step body: (Step, UnsafeBufferPointer<Float>, UnsafeMutableBufferPointer<Float>) throws -> Report
    ) throws -> Outcome {
        var client = try open()
        guard client.isMember else { return .finished }
        let heartbeat = try client.startHeartbeat(
            ttl: .milliseconds(event.leaseMilliseconds), generation: event.generation, stuckAfter: stuckAfter)
        defer { heartbeat.stop() }
        let warm = try prepare(client)
        var step = try client.loadProgress()?.nextStep ?? 0
        let sinceInvoked = secondsSinceInvoked.map { Duration.milliseconds(Int($0 * 1000)) }
        try client.reportStart(
            StartReport(
                worker: event.worker, generation: event.generation, warm: warm,
                seconds: Self.seconds(sinceInvoked ?? (ContinuousClock.now - started))))

        let limit = environment[FunctionEnvironment.timeLimit].flatMap(Int.init).map { Duration.milliseconds($0) }
        // The deadline counts from when the platform started the invocation.
        let deadline = limit.map { started - (sinceInvoked ?? .zero) + $0 }
        let reserve = limit.map { min(Self.reserve, $0 / 5) } ?? .zero
        if let deadline, deadline - ContinuousClock.now < reserve * 2 {
            throw WorkerRuntimeError(
                "the function time limit of \(limit!) leaves no time for a step after starting (\(ContinuousClock.now - started + (sinceInvoked ?? .zero)))"
            )
        }
        var params = [Float](repeating: 0, count: client.parameterCount)
        var gradient = [Float](repeating: 0, count: client.parameterCount)
        var slowest: Duration = .zero
        var done = 0
        func stopping(_ next: Int) throws -> Outcome {
            try client.saveProgress(WorkerProgress(nextStep: next, generation: event.generation))
            return .continueLater
        }
        /// How long a wait may last: until the deadline, keeping room for a step.
        func budget() -> Duration? {
            guard let deadline else { return .seconds(600) }
            let left = deadline - ContinuousClock.now - reserve
            // Another step must fit, with room for one as slow as the slowest so far.
            if left <= .zero || (done > 0 && left < slowest * 2) { return nil }
            return max(left - slowest, .milliseconds(10))
        }
        while step < client.config.steps {
            let stepStart = ContinuousClock.now
            activity.touch()
            guard let wait = budget() else { return try stopping(step) }
            // The job's control, once the home shard has published this step's version.
            guard let control = try client.control(step: step, wait: min(wait, .seconds(5))) else {
                if deadline != nil, budget() == nil { return try stopping(step) }
                continue
            }
            if control.epoch != client.shards.map.epoch {
                // The job was reconfigured: reopen it with its new map and config.
                let previous = client.shards.map.epoch
                switch Result(catching: { () throws(ShardError) in try open() }) {
                case .success(let reopened): client = reopened
                case .failure(let error) where error.code == .untrustedEndpoint:
                    // Endpoints this invocation was not given: its next one will be.
                    log("worker \(event.worker): \(error); continuing in a new invocation")
                    return try stopping(step)
                case .failure(let error): throw error
                }
                log(
                    "worker \(event.worker): job \(event.job) reconfigured at step \(step) (epoch \(previous) -> \(client.shards.map.epoch), \(client.config.workers) workers on \(client.shards.map.shards.count) shards)"
                )
                guard client.isMember else { return .finished }
                _ = try prepare(client)
                if params.count != client.parameterCount {
                    params = [Float](repeating: 0, count: client.parameterCount)
                    gradient = params
                }
                continue
            }
            if control.holds(step) {
                // A reconfiguration is pending at this step: wait for it.
                sleepBriefly()
                continue
            }
            // The control read used part of the wait: what is left of it bounds the pull.
            guard let pullWait = budget() else { return try stopping(step) }
            let versions: (oldest: Int, newest: Int)
            let pullStart = ContinuousClock.now
            do {
                versions = try params.withUnsafeMutableBufferPointer { p in
                    try client.pull(step: step, into: p, timeout: pullWait)
                }
            } catch let e as ShardError where deadline != nil && e.redisError?.code == .timedOut {
                return try stopping(step)  // the other workers were too slow for this invocation
            }
            if versions.newest > step {
                // An earlier invocation pushed this step and some shard has moved on: finish that
                // push where it is missing and go on with the next step, saved first. Not the
                // newest version: chunks at t + 2 mean step t + 1 was pushed too, perhaps only in
                // part, and the next pull finishes it the same way.
                guard try client.completePush(step: step) else {
                    throw WorkerRuntimeError("step \(step) was half pushed and its gradient is gone from Redis")
                }
                step += 1
                try client.saveProgress(WorkerProgress(nextStep: step, generation: event.generation))
                continue
            }
            let computeStart = ContinuousClock.now
            let context = Step(
                index: step, worker: event.worker, workers: client.config.workers, config: client.config,
                epoch: client.shards.map.epoch)
            let report = try params.withUnsafeBufferPointer { p in
                try gradient.withUnsafeMutableBufferPointer { g in try body(context, p, g) }
            }
            activity.touch()
            if let why = Self.divergence(report, gradient, step: step, config: client.config) {
                try? client.reportFailure(why)
                return .stopJob(why)
            }
            let pushStart = ContinuousClock.now
            try client.push(gradient: gradient, step: step)
            let pushed = ContinuousClock.now
            try client.report(
                StepMetrics(
                    worker: event.worker, step: step, loss: report.loss,
                    accuracy: Double(report.correct) / Double(max(1, report.examples)), examples: report.examples,
                    computeSeconds: Self.seconds(pushStart - computeStart),
                    pushSeconds: Self.seconds(pushed - pushStart),
                    pullSeconds: Self.seconds(computeStart - pullStart), stepSeconds: Self.seconds(pushed - stepStart)))
            step += 1
            done += 1
            try client.saveProgress(WorkerProgress(nextStep: step, generation: event.generation))
            slowest = max(slowest, ContinuousClock.now - stepStart)
        }
        return .finished
    }

    /// Why a step's result must not be pushed (a non-finite loss or gradient), or nil.
    static func divergence(_ r: Report, _ gradient: [Float], step: Int, config: TrainingConfig) -> String? {
        let finite = gradient.withUnsafeBufferPointer { g in
            var bad = false
            for x in g where !x.isFinite {
                bad = true
                break
            }
            return !bad
        }
        guard !r.loss.isFinite || !finite else { return nil }
        return
            "training diverged at step \(step): the \(r.loss.isFinite ? "gradient" : "loss") is \(r.loss.isFinite ? "not finite" : "\(r.loss)") "
            + "(learning rate \(config.learningRate), momentum \(config.momentum)); try a lower learning rate (--lr)"
    }

    static func seconds(_ d: Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }

    private func sleepBriefly() {
        var t = timespec(tv_sec: 0, tv_nsec: 1_000_000)
        nanosleep(&t, nil)
    }
}

/// Why a worker invocation could not run.
public struct WorkerRuntimeError: Error, Sendable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

internal import Foundation
internal import RedisClient
internal import ShardManager
internal import TensorBlob
internal import TrainingProtocol

/// One invocation's steps (docs/wire-format.md, "The worker" and "Functions"): the lease, the
/// saved progress, the deadline, half-finished pushes, reconfigurations and divergence, around
/// the function's `prepare` and `step`.
struct WorkerLoop {
    let invocation: Invocation
    let log: (String) -> Void
    let started = ContinuousClock.now
    let activity = ActivityClock()
    /// A step loop that shows no progress for this long stops renewing its lease.
    let stuckAfter: Duration
    let objects: StagedObjects

    /// Time kept in reserve before the deadline to save progress and exit.
    static let reserve: Duration = .milliseconds(400)

    init(invocation: Invocation, log: @escaping (String) -> Void) {
        self.invocation = invocation
        self.log = log
        stuckAfter = max(.seconds(60), .milliseconds(invocation.event.leaseMilliseconds) * 20)
        objects = StagedObjects(cacheDirectory: invocation.cacheDirectory)
    }

    var event: WorkerEvent { invocation.event }

    /// Opens the job as this worker.
    func open() throws -> WorkerSession {
        try WorkerSession(
            job: event.job, worker: event.worker, endpoints: try invocation.endpoints(), options: invocation.options,
            activity: activity)
    }

    /// Runs steps until this worker's part of the job is done, its time limit nears, or the job
    /// must stop. Throws `FunctionClientError`s and the protocol's `ShardError`s.
    mutating func run<State>(
        prepare: (FunctionWorker.Job) throws -> State,
        step body: (State, FunctionWorker.Step, Tensors) throws -> FunctionWorker.StepResult
    ) throws -> FunctionWorker.Outcome {
        var session = try open()
        guard session.isMember else { return .finished }
        let heartbeat = try session.startHeartbeat(
            ttl: .milliseconds(event.leaseMilliseconds), generation: event.generation, stuckAfter: stuckAfter)
        defer { heartbeat.stop() }
        var state = try prepared(session, prepare)
        let progress = try session.loadProgress()
        var step = progress?.nextStep ?? 0
        // Error feedback: the residual to add to `step`'s gradient, and the object holding it.
        var residual = try session.loadResidual(progress)
        var residualObject = residual == nil ? nil : progress?.residual
        let sinceInvoked = invocation.sinceInvoked
        try session.reportStart(
            StartReport(
                worker: event.worker, generation: event.generation, warm: objects.warm,
                seconds: Self.seconds(sinceInvoked ?? (ContinuousClock.now - started))))

        let limit = invocation.timeLimit
        // The deadline counts from when the platform started the invocation.
        let deadline = limit.map { started - (sinceInvoked ?? .zero) + $0 }
        let reserve = limit.map { min(Self.reserve, $0 / 5) } ?? .zero
        if let limit, let deadline, deadline - ContinuousClock.now < reserve * 2 {
            throw FunctionClientError(
                .timeLimit,
                "the function time limit of \(limit) leaves no time for a step after starting (\(ContinuousClock.now - started + (sinceInvoked ?? .zero)))"
            )
        }
        var layout = Self.layout(of: session)
        var parameters = Tensors(layout: layout, values: [Float](repeating: 0, count: layout.totalCount))
        var slowest: Duration = .zero
        var done = 0
        // This invocation's last push, kept until the next step's parameters arrive: a server
        // that refuses it (its gradient missing or damaged in Redis) waits for it again.
        var lastPush: (step: Int, sent: [Float], encoding: GradientEncoding)?
        // What each step pushes, in two buffers used in turn: `lastPush` holds the other one.
        var sentBuffers: [[Float]] = [[], []]
        var waitingSince = ContinuousClock.now
        /// After a wait with nothing published: pushes the last step again where it was refused.
        func pushAgainIfRefused() throws {
            guard let p = lastPush, p.step == step - 1 else { return }
            if try session.pushAgainIfRefused(gradient: p.sent, step: p.step, encoding: p.encoding) {
                log("worker \(event.worker): a server refused this worker's push of step \(p.step); pushed it again")
            }
        }
        func save(_ next: Int) throws {
            try session.saveProgress(
                WorkerProgress(nextStep: next, generation: event.generation, residual: residualObject))
        }
        func stopping(_ next: Int) throws -> FunctionWorker.Outcome {
            try save(next)
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
        while step < session.config.steps {
            let stepStart = ContinuousClock.now
            activity.touch()
            guard let wait = budget() else { return try stopping(step) }
            // The job's control, once the home shard has published this step's version.
            guard let control = try session.control(step: step, wait: min(wait, .seconds(5))) else {
                try pushAgainIfRefused()
                if deadline != nil, budget() == nil { return try stopping(step) }
                continue
            }
            if control.epoch != session.shards.map.epoch {
                // The job was reconfigured: reopen it with its new map and config.
                let previous = session.shards.map.epoch
                do { session = try open() } catch let error as ShardError where error.code == .untrustedEndpoint {
                    // Endpoints this invocation was not given: its next one will be.
                    log("worker \(event.worker): \(error); continuing in a new invocation")
                    return try stopping(step)
                }
                log(
                    "worker \(event.worker): job \(event.job) reconfigured at step \(step) (epoch \(previous) -> \(session.shards.map.epoch), \(session.config.workers) workers on \(session.shards.map.shards.count) shards)"
                )
                guard session.isMember else { return .finished }
                state = try prepared(session, prepare)
                let reopened = Self.layout(of: session)
                if reopened != layout {
                    layout = reopened
                    parameters = Tensors(layout: layout, values: [Float](repeating: 0, count: layout.totalCount))
                }
                continue
            }
            if control.holds(step) {
                // A reconfiguration is pending at this step: wait for it.
                Self.sleepBriefly()
                continue
            }
            // The control read used part of the wait: what is left of it bounds the pull.
            guard let pullWait = budget() else { return try stopping(step) }
            let versions: (oldest: Int, newest: Int)
            let pullStart = ContinuousClock.now
            do {
                // In rounds of at most 5 s, so a refused push is noticed while waiting.
                versions = try parameters.withUnsafeMutableBufferPointer { p in
                    try session.pull(step: step, into: p, timeout: min(pullWait, .seconds(5)))
                }
            } catch let e as ShardError where e.redisError?.code == .timedOut {
                try pushAgainIfRefused()
                // The other workers were too slow for this invocation, or for anyone.
                if deadline != nil, budget() == nil { return try stopping(step) }
                if deadline == nil, ContinuousClock.now - waitingSince > .seconds(600) { throw e }
                continue
            }
            waitingSince = ContinuousClock.now
            if versions.newest > step {
                // An earlier invocation pushed this step and some shard has moved on: finish that
                // push where it is missing and go on with the next step, saved first. Not the
                // newest version: chunks at t + 2 mean step t + 1 was pushed too, perhaps only in
                // part, and the next pull finishes it the same way.
                guard try session.completePush(step: step) else {
                    throw FunctionClientError(
                        .lostPush, "step \(step) was half pushed and its gradient is gone from Redis")
                }
                step += 1
                // That push stored the residual of step + 1 before it could count anywhere.
                if try session.config.encoding(mapCodec: session.shards.map.codec).isLossy {
                    let name = ErrorFeedback.objectName(worker: event.worker, step: step)
                    residual = try session.loadResidual(named: name, step: step)
                    residualObject = name
                }
                try save(step)
                continue
            }
            let computeStart = ContinuousClock.now
            let context = FunctionWorker.Step(index: step, worker: event.worker, workers: session.config.workers)
            let result: FunctionWorker.StepResult
            do { result = try body(state, context, parameters) } catch {
                throw Self.functionError(error, context: "step \(step): ")
            }
            activity.touch()
            let gradient = try result.gradients.values(laidOutAs: layout, what: "the gradients of step \(step)")
            if let why = Self.divergence(result, gradient, step: step, config: session.config) {
                try? session.reportFailure(why)
                return .stopJob(why)
            }
            let pushStart = ContinuousClock.now
            let encoding = try session.config.encoding(mapCodec: session.shards.map.codec)
            // The residual is updated in place: on a failure from here on the invocation ends,
            // and the next one reads the residual this step started from out of Redis.
            ErrorFeedback.apply(
                gradient: gradient, residual: &residual, sent: &sentBuffers[step % 2], encoding: encoding,
                chunkElements: session.shards.map.chunkElements)
            let sent = sentBuffers[step % 2]
            if let why = Self.unencodable(sent, encoding: encoding, step: step) {
                try? session.reportFailure(why)
                return .stopJob(why)
            }
            let stored = try session.push(sent: sent, step: step, encoding: encoding, residual: residual)
            lastPush = (step, sent, encoding)
            residualObject = stored
            let pushed = ContinuousClock.now
            try session.report(
                StepMetrics(
                    worker: event.worker, step: step, loss: result.loss, accuracy: result.accuracy,
                    examples: result.examples, computeSeconds: Self.seconds(pushStart - computeStart),
                    pushSeconds: Self.seconds(pushed - pushStart), pullSeconds: Self.seconds(computeStart - pullStart),
                    stepSeconds: Self.seconds(pushed - stepStart)))
            step += 1
            done += 1
            try save(step)
            slowest = max(slowest, ContinuousClock.now - stepStart)
        }
        return .finished
    }

    /// Runs the function's `prepare` on the job as `session` has it.
    private func prepared<State>(_ session: WorkerSession, _ prepare: (FunctionWorker.Job) throws -> State) throws
        -> State
    {
        do { return try prepare(FunctionWorker.Job(session: session, objects: objects)) } catch {
            throw Self.functionError(error, context: "")
        }
    }

    /// The function's own error, as a `FunctionClientError` saying where it happened.
    static func functionError(_ error: any Error, context: String) -> FunctionClientError {
        if let e = error as? FunctionClientError { return FunctionClientError(e.code, context + e.message) }
        return FunctionClientError(.functionFailed, context + "\(error)")
    }

    static func layout(of session: WorkerSession) -> TensorLayout {
        TensorLayout(names: session.shards.map.tensors.map(\.name), shapes: session.shards.map.tensors.map(\.shape))
    }

    /// Why a step's result must not be pushed (a non-finite loss or gradient), or nil.
    static func divergence(_ r: FunctionWorker.StepResult, _ gradient: [Float], step: Int, config: TrainingConfig)
        -> String?
    {
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

    /// Why an encoded gradient must not be pushed (a value f16 cannot hold became infinite), or nil.
    static func unencodable(_ sent: [Float], encoding: GradientEncoding, step: Int) -> String? {
        guard encoding.isLossy, let bad = sent.first(where: { !$0.isFinite }) else { return nil }
        return
            "step \(step): the gradient encoded as \(encoding) holds \(bad) (plus the error-feedback residual, a value is outside \(encoding.dtype)'s range); use another --codec or a lower learning rate (--lr)"
    }

    static func seconds(_ d: Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }

    private static func sleepBriefly() {
        var t = timespec(tv_sec: 0, tv_nsec: 1_000_000)
        nanosleep(&t, nil)
    }
}

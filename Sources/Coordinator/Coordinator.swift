import Checkpoints
import Foundation
import KeySchema
import LocalProcesses
import Planner
import RedisClient
import Scheduler
import ShardManager
import TensorBlob
import TrainingProtocol
import Workloads

/// Runs one BSP training job from start to end: it registers the job, stages the data, starts
/// (or uses) the shards and their parameter servers, keeps the function workers going through
/// time limits, crashes and freezes, saves checkpoints and rolls back to them, applies the
/// reconfigurations of the schedule (re-sharding, changing the number of workers) at step
/// boundaries, and returns the summary. It keeps the run's state in Redis, so a run whose
/// driver died can be resumed.
///
/// The driver is a library type: `smlt train` only parses flags into a `TrainingRequest` and
/// renders what this reports; a planner can drive the same type.
public final class Coordinator {
    /// How functions and servers are started: executables and arguments (the job, worker,
    /// shard and credentials reach them through the environment).
    public struct Launch: Sendable {
        /// Runs one worker invocation (such as `smlt worker`).
        public var worker: [String]
        /// Runs a parameter server for the shard in `SMLT_REDIS` (such as `smlt serve`).
        public var server: [String]
        /// With shards the run starts: the server of shard i gets `SMLT_METRICS_PORT` = this + i.
        public var metricsPort: Int?

        public init(worker: [String], server: [String], metricsPort: Int? = nil) {
            self.worker = worker
            self.server = server
            self.metricsPort = metricsPort
        }
    }

    /// What the run reports while it goes.
    public struct Events {
        /// A line worth showing: a restart, a fault, a reconfiguration.
        public var note: @Sendable (String) -> Void
        /// Metrics of steps, as workers report them.
        public var metrics: ([StepMetrics]) -> Void
        /// The plan, once the data is loaded and the job set up.
        public var started: (TrainingPlan) -> Void
        /// The job's shards and how to reach them, after the last step and before shards the run
        /// started are stopped (to show the admin tables).
        public var finished: ([RedisEndpoint], RedisOptions) -> Void
        /// Runs during a re-shard, after the copies are verified and before the switch.
        public var beforeSwitch: () -> Void

        public init(
            note: @escaping @Sendable (String) -> Void = { _ in },
            metrics: @escaping ([StepMetrics]) -> Void = { _ in },
            started: @escaping (TrainingPlan) -> Void = { _ in },
            finished: @escaping ([RedisEndpoint], RedisOptions) -> Void = { _, _ in },
            beforeSwitch: @escaping () -> Void = {}
        ) {
            self.note = note
            self.metrics = metrics
            self.started = started
            self.finished = finished
            self.beforeSwitch = beforeSwitch
        }
    }

    public var request: TrainingRequest
    public let job: String
    let endpoints: [RedisEndpoint]?
    var options: RedisOptions
    let allowed: [String]
    let launch: Launch
    let resume: Bool
    let events: Events

    /// - Parameters:
    ///   - endpoints: existing shards (their servers run elsewhere), or nil to start them.
    ///   - allowed: endpoints besides `endpoints` that the job's map may name (with a password).
    ///   - resume: continue `job` where its run state and progress in Redis say (needs
    ///     `endpoints`); otherwise the job must not exist yet.
    public init(
        request: TrainingRequest, job: String, endpoints: [RedisEndpoint]?, options: RedisOptions,
        allowed: [String] = [], launch: Launch, resume: Bool = false, events: Events = Events()
    ) {
        self.request = request
        self.job = job
        self.endpoints = endpoints
        self.options = options
        self.allowed = allowed
        self.launch = launch
        self.resume = resume
        self.events = events
    }

    // State of the run, set up by `run()`.
    private var plan: TrainingPlan!
    private var manager: ShardManager!
    private var cluster: LocalCluster?
    private var fleet: WorkerFleet!
    private var runDirectory: RunDirectory!
    private var state: RunState!
    private var checkpoints = ""
    /// The built-in model; nil when the function defines it (`--model function`).
    private var model: (any Model)?
    /// Where functions run: the workers and, for a function-defined model, its describe and
    /// evaluate invocations.
    private var platform: LocalProcessPlatform!
    /// The data's shape, given to a function that defines its own model.
    private var dataShape: WorkerEvent.DatasetShape?
    /// The describe and evaluate invocations (they cost like the workers' invocations).
    private var phaseOutcomes: [InvocationOutcome] = []
    /// Workers of the job now.
    private var workers = 0
    /// The schedule's changes still to apply.
    private var pending: [Schedule.Change] = []
    private var records: [ReconfigurationRecord] = []
    /// Shards the run started that the job does not use now: started ahead for the schedule's
    /// re-shards, or removed by one. Workers are given their endpoints from the start, so a
    /// re-shard onto them needs no relaunch (with a password, a worker only talks to the
    /// endpoints in its invocation event).
    private var standby: [RedisEndpoint] = []
    /// The last reconfiguration while its first step has not yet committed everywhere: the
    /// record's index and when training stopped for it.
    private var settling: (record: Int, held: ContinuousClock.Instant)?
    /// The slowest shard, its version and since when it has been behind the others.
    private var lagging: (shard: Int, version: Int, since: ContinuousClock.Instant, reported: Bool)?
    private var lastLagCheck = ContinuousClock.now
    private var lastControlCheck = ContinuousClock.now
    /// Where the current run of steps without a change began (for the mean step time).
    private var window: (at: ContinuousClock.Instant, version: Int)?
    /// The planner's side of a run with a deadline or a budget.
    private var session: PlanningSession?
    /// Function memory of new invocations, MiB.
    private var memoryMiB = 0
    private var lastStartsRead = ContinuousClock.now
    /// Functions the last reconfiguration started.
    private var launchedAtChange = 0
    private var reader: WorkerSession?
    private var evaluationSet: Dataset?

    /// Runs the job to its last step and returns the summary.
    public func run() throws -> TrainingSummary {
        try request.validate()
        if resume && endpoints == nil {
            throw RequestError(
                "--resume needs the job's shards (--redis): shards smlt train started itself end with it")
        }
        let start = ContinuousClock.now
        let runDirectory = try RunDirectory()
        self.runDirectory = runDirectory
        defer { runDirectory.remove() }
        let note = events.note
        ChildRegistry.installSignalHandlers { _ in
            note("interrupted: stopping workers, servers and shards")
            runDirectory.remove()
        }
        defer { cluster?.stop() }

        var data: (train: Dataset, test: Dataset)?
        if !resume {
            // Everything the data can tell is checked before any process starts.
            let loaded = try TrainingData.load(request)
            data = loaded
            if request.isPlanned {
                // The planner's numbers replace the user's before anything starts; a goal it
                // cannot meet is refused here.
                let session = try PlanningSession(
                    request: request, train: loaded.train, test: loaded.test, shards: endpoints?.count, started: start)
                self.session = session
                request = session.planned(request)
                if let warning = session.warning { events.note("warning: \(warning)") }
                events.note(
                    "plan: \(session.initial.configuration), \(session.initial.totalSteps) steps, predicted \(String(format: "%.1f", session.initial.prediction.seconds)) s and $\(String(format: "%.6f", session.initial.prediction.costUSD))"
                )
            }
            let schedule =
                try request.schedule.map { (text) throws(RequestError) in try Schedule(parsing: text) } ?? Schedule()
            if schedule.changes.contains(where: { $0.shards != nil }) && endpoints != nil {
                throw RequestError(
                    "shards= in --schedule needs the shards smlt train starts (without --redis); re-shard given shards with smlt admin reshard"
                )
            }
            if !isFunctionModel { plan = try TrainingPlan(request, train: loaded.train, test: loaded.test) }
        }
        let eps = try setUpShards()
        // A resumed run makes its platform from its saved request (in `reopen`).
        if !resume { platform = makePlatform() }
        if let data, isFunctionModel {
            // The function defines the model: ask it, on the shards, before the job exists.
            dataShape = Self.shape(data)
            let described = try describeModel(eps)
            plan = try TrainingPlan(request, train: data.train, test: data.test, described: described)
        }
        if resume { try reopen(eps) } else { try register(eps) }
        if let cluster, let most = plan.schedule.changes.compactMap(\.shards).max(), most > eps.count {
            for _ in eps.count..<most { standby.append(try cluster.addShard()) }
        }
        let faults =
            try request.faults.map { (text) throws(RequestError) in
                try FaultPlan(text, steps: plan.steps, workers: plan.workers, shards: plan.shards, seed: request.seed)
            } ?? .none
        if faults.needsOwnServers && endpoints != nil {
            throw RequestError("server-kill and shard-wipe need the shards and servers smlt train starts (no --redis)")
        }

        memoryMiB = request.memoryMiB
        events.started(plan)
        let control = try RedisConnection(try RedisEndpoint(parsing: manager.map.shards[0]), options: options)
        try startFleet(control)
        defer { fleet.stopAll() }
        try holdNext()
        window = (ContinuousClock.now, (try? manager.keys.latestVersion(shard: 0, on: control)).flatMap { $0 } ?? 0)

        var lastMetric = "0-0"
        var seenVersion = 0
        var serverRestarts = 0
        var pendingFaults = faults.events
        var injected = 0
        let every = plan.checkpointEvery
        var lastCheckpoint = resume ? (try? Checkpoint.read(from: checkpoints).step) ?? 0 : 0
        var checkpointsSaved = 0
        var rollbacks = 0
        var lastShardCheck = ContinuousClock.now
        while !fleet.finished {
            // Look more often while a reconfiguration is pending or settling: its pause is
            // measured here.
            let reconfiguring = settling != nil || pending.first.map { seenVersion >= $0.step - 1 } == true
            sleepFor(.milliseconds(reconfiguring ? 2 : 50))
            // Progress from the workers' metrics stream.
            if let fresh = try? control.run(["XRANGE", manager.keys.metrics, "(\(lastMetric)", "+", "COUNT", "10000"])
                .array, !fresh.isEmpty
            {
                lastMetric = fresh.last?.array?.first?.text ?? lastMetric
                let metrics = fresh.compactMap { entry in
                    entry.array?.last?.array?.last?.bytes.flatMap {
                        try? JSONDecoder().decode(StepMetrics.self, from: Data($0))
                    }
                }
                session?.add(metrics)
                events.metrics(metrics)
            }
            // A parameter server that died is restarted; it resumes from what is in Redis.
            if let cluster {
                for shard in try cluster.superviseServers() {
                    serverRestarts += 1
                    note("the parameter server of shard \(shard) exited; restarted it")
                }
            }
            let version = (try? manager.keys.latestVersion(shard: 0, on: control)) ?? 0
            seenVersion = version
            // Step times count from the first committed step, not from the workers' start.
            if let w = window, w.version == 0, version >= 1 { window = (ContinuousClock.now, version) }
            // Chaos: faults due at the version shard 0 has published.
            while let e = pendingFaults.first, e.step <= version {
                pendingFaults.removeFirst()
                if inject(e) { injected += 1 }
            }
            // Checkpoints: the servers copy every `every`-th version aside; save it to disk.
            if every > 0, version / every * every > lastCheckpoint,
                var c = try? Checkpoint.capture(manager, config: plan.config(at: version), snapshot: true),
                c.step > lastCheckpoint
            {
                c.config = plan.config(at: c.step)
                try c.write(to: checkpoints)
                lastCheckpoint = c.step
                checkpointsSaved += 1
            }
            // A shard that lost the job's map restarted empty: roll the job back.
            if ContinuousClock.now - lastShardCheck > .milliseconds(100) {
                lastShardCheck = ContinuousClock.now
                let mapKey = manager.keys.map
                let lost = manager.onEachShardResult { _, c throws(RedisError) in
                    try c.run(["EXISTS", mapKey]).integer == 0
                }.enumerated().filter { (try? $0.element.get()) == true }.map(\.offset)
                if !lost.isEmpty {
                    let step = try rollBack(lost: lost)
                    lastCheckpoint = min(lastCheckpoint, step)
                    rollbacks += 1
                }
            }
            try replan(version: version, control: control)
            try followReconfiguration(version: version)
            reportStuckShard()
            do { try fleet.tick() } catch {
                if let failure = try? control.run(["GET", manager.keys.failure]).bytes,
                    let why = try? JSONDecoder().decode([String: String].self, from: Data(failure))["reason"]
                {
                    throw CoordinatorError("job \(job) stopped: \(why)")
                }
                throw CoordinatorError("\(error)")
            }
        }
        // The last gradients are in; wait for the servers to publish the final version.
        let reader = try WorkerSession(
            job: job, worker: 0, endpoints: manager.map.shards.map { try RedisEndpoint(parsing: $0) },
            options: options, allowed: allowed)
        let params = try reader.pull(step: plan.steps, timeout: .seconds(60))
        // With checkpoints on, the final model is saved too: nothing commits any more, so the
        // live parameters are one consistent version.
        if every > 0, lastCheckpoint < plan.steps,
            let c = try Checkpoint.capture(manager, config: plan.config(at: plan.steps), snapshot: false),
            c.step == plan.steps
        {
            try c.write(to: checkpoints)
            checkpointsSaved += 1
        }
        let starts = ((try? control.run(["LRANGE", manager.keys.starts, "0", "-1"]).array) ?? [])
            .compactMap { $0.bytes.flatMap { try? JSONDecoder().decode(StartReport.self, from: Data($0)) } }
        let metrics: (loss: Double?, trainAccuracy: Double?, testAccuracy: Double, testLoss: Double?)
        if let model {
            let (loss, trainAcc, testAcc) = TrainingSummary.evaluate(params, plan: plan, model: model)
            metrics = (loss, trainAcc, testAcc, nil)
        } else {
            let e = try evaluateModel(control)
            metrics = (e.trainLoss, e.trainAccuracy, e.testAccuracy, e.testLoss)
        }
        let outcomes = fleet.outcomes + phaseOutcomes
        let gbs = outcomes.reduce(0) { $0 + $1.gbSeconds }
        let counts = fleet.counts
        var summary = TrainingSummary(
            mode: "BSP", job: job, model: plan.settings.model, steps: plan.steps, workers: workers,
            shards: manager.map.shards.count, parameters: params.count, finalLoss: metrics.loss,
            trainAccuracy: metrics.trainAccuracy, testAccuracy: metrics.testAccuracy,
            wallSeconds: (ContinuousClock.now - start).seconds, functionGBSeconds: gbs,
            invocations: outcomes.count, restarts: counts.continuations + counts.relaunches + serverRestarts,
            estimatedCostUSD: gbs * request.priceGBSecond + Double(outcomes.count) * request.priceRequest,
            paramDigest: TrainingSummary.digest(params))
        summary.testLoss = metrics.testLoss
        summary.continuations = counts.continuations
        summary.workerRelaunches = counts.relaunches
        summary.expiredLeases = counts.expiredLeases
        summary.serverRestarts = serverRestarts
        summary.faultsInjected = injected
        summary.rollbacks = rollbacks
        summary.checkpointsSaved = checkpointsSaved
        summary.starts = StartStatistics(starts)
        summary.reconfigurations = records
        if let session {
            let spent = session.spent(invocations: outcomes.count)
            summary.addPlanning(request: session.request, controller: session.controller, spentUSD: spent)
            summary.estimatedCostUSD = spent
        }
        events.finished(manager.map.shards.compactMap { try? RedisEndpoint(parsing: $0) }, options)
        try finish()
        return summary
    }

    // MARK: Setting up

    /// The shards: the given ones, or new local ones (with a password of their own unless the
    /// user gave one).
    ///
    /// A Redis Cluster given as a whole (`cluster://SEEDS`) gets a new job one lane per master;
    /// a resumed job finds its lanes in its map.
    private func setUpShards() throws -> [RedisEndpoint] {
        if let endpoints {
            guard endpoints.count == 1, endpoints[0].isCluster, endpoints[0].laneTag == nil else { return endpoints }
            if resume { return try ClusterLanes.expand(endpoints, options: options) }
            return try ClusterLanes.choose(on: endpoints[0], count: nil, options: options)
        }
        if options.password == nil { options.password = Self.randomSecret() }
        cluster = try LocalCluster(
            shards: request.shards, serverCommand: launch.server, password: options.password,
            logDirectory: runDirectory.path, metricsPort: launch.metricsPort)
        return cluster!.endpoints
    }

    /// A new job: registered, its data staged, version 0 published, its run state stored.
    private func register(_ eps: [RedisEndpoint]) throws {
        model = plan.builtinModel
        if endpoints != nil,
            let existing = try? ShardManager.open(job: job, endpoints: eps, options: options, allowed: allowed)
        {
            let version = (try? existing.publishedVersions().compactMap { $0 }.min()) ?? nil
            throw CoordinatorError(
                "job '\(job)' already exists\(version.map { " (at version \($0))" } ?? ""); continue it with --resume, "
                    + "or delete it with smlt admin delete --job \(job)")
        }
        let spec = plan.spec(
            job: job, codec: request.parameterCodec, chunkElements: request.chunkElements,
            pullEncoding: request.pullEncoding)
        do { manager = try ShardManager.register(spec, on: eps, options: options) } catch {
            throw CoordinatorError("cannot register job '\(job)': \(error)")
        }
        workers = plan.workers
        pending = plan.schedule.changes
        checkpoints = request.checkpointDirectory ?? runDirectory.path + "/checkpoints"
        state = RunState(request: request, checkpointDirectory: request.checkpointDirectory)
        try state.store(on: manager)
        try stageData(workers: workers)
        try plan.config(workers: workers).start(on: manager, initial: plan.initialParameters())
    }

    /// An existing job, continued from its run state and the progress in Redis.
    private func reopen(_ eps: [RedisEndpoint]) throws {
        do { manager = try ShardManager.open(job: job, endpoints: eps, options: options, allowed: allowed) } catch {
            throw CoordinatorError("cannot resume job '\(job)': \(error)")
        }
        guard let saved = try RunState.load(from: manager) else {
            throw CoordinatorError("job '\(job)' has no run state to resume (it was not started by smlt train)")
        }
        guard saved.status != "finished" else { throw CoordinatorError("job '\(job)' has already finished") }
        request = saved.request
        platform = makePlatform()
        state = saved
        records = saved.reconfigurations
        let data = try TrainingData.load(request)
        if isFunctionModel {
            // The function describes its model again (from the same seed) for a rollback to
            // version 0; it must be the model the job was registered with.
            dataShape = Self.shape(data)
            let described = try describeModel(eps)
            let registered = manager.map.tensors.map { ParameterShape(name: $0.name, shape: $0.shape) }
            guard described.tensors == registered else {
                throw CoordinatorError(
                    "job '\(job)' was registered with tensors \(registered.map { "\($0.name)\($0.shape)" }), but the function now describes \(described.tensors.map { "\($0.name)\($0.shape)" })"
                )
            }
            plan = try TrainingPlan(request, train: data.train, test: data.test, described: described)
        } else {
            plan = try TrainingPlan(request, train: data.train, test: data.test)
        }
        model = plan.builtinModel
        checkpoints = saved.checkpointDirectory ?? runDirectory.path + "/checkpoints"
        let version = try manager.publishedVersions().compactMap { $0 }.min() ?? 0
        let config = try TrainingConfig.load(from: manager)
        workers = config.workers
        // A planner may have changed the total; the stored config has the one in force.
        plan.steps = config.steps
        let applied = Set(records.map(\.step))
        pending = plan.schedule.changes.filter {
            $0.step > version || ($0.step == version && !applied.contains(version))
        }
        // The dead driver's workers must be gone before new ones start: their leases expire
        // within a lease timeout once they stopped.
        let deadline = ContinuousClock.now + .milliseconds(request.leaseTimeoutMilliseconds) * 3
        while true {
            let keys = manager.keys
            let live = try manager.onShard(0) { c throws(RedisError) in
                try c.pipeline((0..<max(self.workers, 1)).map { ["EXISTS", keys.lease(worker: $0)] })
            }.filter { $0.integer == 1 }.count
            if live == 0 { break }
            guard ContinuousClock.now < deadline else {
                throw CoordinatorError(
                    "job '\(job)' still has \(live) live worker lease(s): another driver is running it, or its workers are still alive"
                )
            }
            sleepFor(.milliseconds(100))
        }
        // A re-shard the dead driver was in the middle of leaves copies the map in force does
        // not need. The job is consistent without this, so a failure is only a warning.
        do {
            if let t = try Resharder.tidy(manager, options: options, allowed: Set(allowed + eps.map(\.description))) {
                let skipped =
                    t.skipped.isEmpty
                    ? "" : "; could not clean \(t.skipped.joined(separator: ", ")) (tried again at the next resume)"
                events.note(
                    "cleaned up after an interrupted re-shard: \(t.keysRemoved) stray keys removed, \(t.shardsForgotten.count) shards forgot the job\(skipped)"
                )
            }
        } catch { events.note("warning: \(error)") }
        events.note("resuming job \(job) at version \(version) with \(workers) workers")
    }

    private var isFunctionModel: Bool { request.model == TrainingRequest.functionModel }

    static func shape(_ data: (train: Dataset, test: Dataset)) -> WorkerEvent.DatasetShape {
        WorkerEvent.DatasetShape(
            features: data.train.dimension, classes: data.train.classes, trainExamples: data.train.count,
            testExamples: data.test.count)
    }

    /// Asks the function for its model: one describe invocation, then what it wrote, checked.
    private func describeModel(_ eps: [RedisEndpoint]) throws -> DescribedModel {
        let home = try RedisConnection(eps[0], options: options)
        let keys = JobKeys(job: job)
        try DescribedModel.clear(keys, on: home)
        try invoke(.describe, endpoints: eps.map(\.description))
        let described = try DescribedModel.read(keys, from: home, maxParameters: 1 << 28)
        try DescribedModel.clear(keys, on: home)
        events.note(
            "the function described its model: \(described.tensors.count) tensors, \(described.parameterCount) parameters"
        )
        return described
    }

    /// Asks the function to evaluate the final model on the staged test set; `home` is the home
    /// shard's connection.
    private func evaluateModel(_ home: RedisConnection) throws -> FunctionEvaluation {
        _ = try home.run(["UNLINK", manager.keys.evaluation])
        try invoke(.evaluate, endpoints: manager.map.shards)
        let evaluation = try FunctionEvaluation.read(manager.keys, from: home)
        _ = try home.run(["UNLINK", manager.keys.evaluation])
        return evaluation
    }

    /// Runs the function once for `phase` (as worker 0, generation 0) and waits for it to end;
    /// throws unless it exits 0.
    private func invoke(_ phase: WorkerEvent.Phase, endpoints: [String]) throws {
        let event = WorkerEvent(
            job: job, worker: 0, generation: 0, leaseMilliseconds: request.leaseTimeoutMilliseconds,
            redis: endpoints + allowed, user: options.username, phase: phase, seed: request.seed, dataset: dataShape)
        let invocation = try platform.invoke(
            FunctionRequest(
                name: phase.rawValue, event: String(decoding: try JSONEncoder().encode(event), as: UTF8.self),
                timeout: .milliseconds(request.functionTimeoutMilliseconds), memoryMiB: request.memoryMiB))
        while true {
            if let outcome = invocation.poll() {
                phaseOutcomes.append(outcome)
                guard outcome.status.succeeded else {
                    let how = outcome.timedOut ? "ran into its time limit" : "ended with \(outcome.status)"
                    throw CoordinatorError(
                        "the function's \(phase.rawValue) phase \(how)\(outcome.errorTail.isEmpty ? "" : ":\n" + outcome.errorTail)"
                    )
                }
                return
            }
            sleepFor(.milliseconds(10))
        }
    }

    /// The local platform the run's functions start on: the run's `--function` (kept in the run
    /// state, so a resumed run uses it too) or the built-in worker.
    private func makePlatform() -> LocalProcessPlatform {
        var environment = [FunctionEnvironment.cache: runDirectory.path + "/function-cache"]
        environment[FunctionEnvironment.password] = options.password
        // Any shell command line: the platform signals the invocation's whole process group, so
        // a time limit or a fault reaches the program the shell started.
        let command = request.function.map { ["/bin/sh", "-c", $0] } ?? launch.worker
        return LocalProcessPlatform(
            command: command, logDirectory: runDirectory.path + "/functions", environment: environment)
    }

    /// Starts the workers of the job's current membership.
    private func startFleet(_ control: RedisConnection) throws {
        let keys = manager.keys
        let (job, user, timeout) = (
            job, options.username, Duration.milliseconds(request.functionTimeoutMilliseconds)
        )
        let lease = request.leaseTimeoutMilliseconds
        let note = events.note
        fleet = WorkerFleet(
            workers: workers, platform: platform, leases: control, leaseKey: { keys.lease(worker: $0) },
            leaseTimeout: .milliseconds(lease), continueCode: WorkerExit.continueLater, stopCode: WorkerExit.stopJob,
            request: { [unowned self] w, generation in
                let event = WorkerEvent(
                    job: job, worker: w, generation: generation, leaseMilliseconds: lease,
                    redis: self.manager.map.shards + self.standby.map(\.description) + self.allowed, user: user,
                    seed: self.isFunctionModel ? self.request.seed : nil, dataset: self.dataShape)
                return FunctionRequest(
                    name: "worker-\(w)" + (generation > 0 ? ".\(generation)" : ""),
                    event: String(decoding: (try? JSONEncoder().encode(event)) ?? Data(), as: UTF8.self),
                    timeout: timeout, memoryMiB: self.memoryMiB)
            },
            log: note)
        var generations: [Int] = []
        if resume {
            let objects = JobObjects(manager)
            for w in 0..<workers {
                let progress = try objects.get(WorkerProgress.objectName(worker: w)).flatMap {
                    try? JSONDecoder().decode(WorkerProgress.self, from: Data($0))
                }
                generations.append((progress?.generation ?? 0) + 1)
            }
        }
        try fleet.start(generations: generations)
    }

    // MARK: Reconfiguration

    /// Holds the workers before the next change of the schedule.
    private func holdNext() throws {
        guard let next = pending.first else { return }
        if try !manager.setHold(at: next.step) {
            events.note("could not hold the job before step \(next.step) (it is past it or another hold is nearer)")
        }
    }

    /// Applies the next change once every shard has reached its step, and follows a
    /// reconfiguration made by someone else (`smlt admin reshard`).
    private func followReconfiguration(version: Int) throws {
        // Between reconfigurations, a look every 250 ms is enough to notice one made by someone
        // else (`smlt admin reshard`).
        let near = settling != nil || pending.first.map { version >= $0.step - 1 } == true
        guard near || ContinuousClock.now - lastControlCheck >= .milliseconds(250) else { return }
        lastControlCheck = ContinuousClock.now
        if let (i, held) = settling, version > records[i].step,
            try manager.publishedVersions().allSatisfy({ ($0 ?? 0) > records[i].step })
        {
            // The first step after the change has committed on every shard: the pause is over.
            records[i].pauseSeconds = (ContinuousClock.now - held).seconds
            session?.add(
                pauseSeconds: records[i].pauseSeconds, bytesMoved: records[i].bytesMoved, launched: launchedAtChange)
            settling = nil
            window = (ContinuousClock.now, version)
            state.reconfigurations = records
            try state.store(on: manager)
            events.note(
                "step \(records[i].step): reconfigured to \(records[i].workers) workers on \(records[i].shards) shards (\(records[i].chunksMoved) chunks, \(records[i].bytesMoved) bytes moved; paused \(String(format: "%.3f", records[i].pauseSeconds)) s)"
            )
        }
        let control = try manager.control()
        if let epoch = control.epoch, epoch != manager.map.epoch {
            manager = try ShardManager.open(
                job: job, endpoints: manager.map.shards.map { try RedisEndpoint(parsing: $0) }, options: options,
                allowed: allowed)
            events.note(
                "job \(job) was reconfigured: now on \(manager.map.shards.count) shards (epoch \(manager.map.epoch))")
            try holdNext()
        }
        guard let next = pending.first, version >= next.step else { return }
        guard control.hold == next.step else {
            events.note("step \(next.step) passed without a hold; its reconfiguration is skipped")
            pending.removeFirst()
            try holdNext()
            return
        }
        let versions = try manager.publishedVersions()
        guard versions.allSatisfy({ $0 == next.step }) else { return }
        pending.removeFirst()
        try reconfigure(next)
    }

    /// Applies `change` at its step: every shard has published it and the workers are held.
    private func reconfigure(_ change: Schedule.Change) throws {
        let s = change.step
        let held = ContinuousClock.now
        let newWorkers = change.workers ?? workers
        if let steps = change.steps { plan.steps = max(s, steps) }
        // The planner's changes join the plan's schedule, so configs by step stay right.
        if session != nil { plan.schedule.changes.append(change) }
        let config = plan.config(workers: newWorkers)
        var record = ReconfigurationRecord(
            step: s, workers: newWorkers, shards: change.shards ?? manager.map.shards.count, chunksMoved: 0,
            bytesMoved: 0, minimumChunks: 0, pauseSeconds: 0)
        if let window, s > window.version {
            record.stepSecondsBefore = (held - window.at).seconds / Double(s - window.version)
        }
        if newWorkers != workers {
            try stageData(workers: newWorkers)
            let progress = Array(try JSONEncoder().encode(WorkerProgress(nextStep: s, generation: 0)))
            let objects = JobObjects(manager)
            for w in workers..<max(workers, newWorkers) {
                try objects.set(WorkerProgress.objectName(worker: w), progress)
            }
        }
        if let shards = change.shards, shards != manager.map.shards.count, let cluster {
            var targets = try manager.map.shards.map { try RedisEndpoint(parsing: $0) }
            if shards > targets.count {
                for _ in targets.count..<shards {
                    targets.append(standby.isEmpty ? try cluster.addShard() : standby.removeFirst())
                }
            } else {
                targets = Array(targets.prefix(shards))
            }
            let outcome = try Resharder(manager, options: options).move(
                to: targets, step: s, config: config, beforeSwitch: events.beforeSwitch)
            manager = outcome.manager
            // Removed shards stay up, empty, for a later re-shard back onto them.
            standby += outcome.removed.compactMap { try? RedisEndpoint(parsing: $0) }
            record.chunksMoved = outcome.chunksMoved
            record.bytesMoved = outcome.bytesMoved
            record.minimumChunks = outcome.minimumChunks
        } else {
            try config.store(on: manager)
            var map = manager.map
            map.epoch += 1
            let next = try ShardManager(map: map, options: options)
            try next.storeMap()
            manager = next
        }
        let wake = manager.keys.wakeServersCommands
        _ = try? manager.onEachShard { _, c throws(RedisError) in try c.pipeline(wake) }
        try manager.releaseHold(s, next: pending.first?.step)
        try fleet.resize(to: newWorkers)
        launchedAtChange = max(0, newWorkers - workers)
        if let m = change.memoryMiB, m != memoryMiB {
            // A function's memory is fixed per invocation: new ones start with the new size.
            memoryMiB = m
            try fleet.relaunchAll()
            launchedAtChange = newWorkers
        }
        workers = newWorkers
        record.shards = manager.map.shards.count
        record.pauseSeconds = (ContinuousClock.now - held).seconds
        records.append(record)
        settling = (records.count - 1, held)
        state.reconfigurations = records
        try state.store(on: manager)
    }

    // MARK: Planning

    /// Feeds the planner (in a run with a deadline or a budget) and turns its decisions into a
    /// reconfiguration at a step the workers have not reached.
    private func replan(version: Int, control: RedisConnection) throws {
        guard let session else { return }
        if session.wantsEvaluation(at: version) {
            let examples = session.examples
            let began = ContinuousClock.now
            if let loss = heldOutLoss(at: version) {
                session.add(loss: loss, at: version, examples: examples, took: (ContinuousClock.now - began).seconds)
            }
        }
        if ContinuousClock.now - lastStartsRead > .seconds(2) {
            lastStartsRead = ContinuousClock.now
            let starts = ((try? control.run(["LRANGE", manager.keys.starts, "0", "-1"]).array) ?? [])
                .compactMap { $0.bytes.flatMap { try? JSONDecoder().decode(StartReport.self, from: Data($0)) } }
            session.add(starts: starts)
        }
        let now = Configuration(workers: workers, shards: manager.map.shards.count, memoryMiB: memoryMiB)
        guard
            let d = try session.tick(
                version: version, configuration: now, invocations: fleet.outcomes.count + fleet.running)
        else { return }
        func change(at step: Int) -> Schedule.Change {
            let c = d.configuration
            return Schedule.Change(
                step: step, workers: c.workers != workers ? c.workers : nil,
                shards: c.shards != now.shards ? c.shards : nil,
                memoryMiB: c.memoryMiB != memoryMiB ? c.memoryMiB : nil,
                steps: d.totalSteps != plan.steps ? max(step, d.totalSteps) : nil)
        }
        events.note(
            "step \(version): re-planned (\(d.reason)): \(d.configuration), \(d.totalSteps) steps, \(String(format: "%.1f", d.prediction.seconds)) s and $\(String(format: "%.6f", d.prediction.costUSD)) to go"
        )
        if let held = pending.first {
            // A decision not yet applied is replaced by the newer one, at its step.
            pending[0] = change(at: held.step)
            return
        }
        for _ in 0..<5 {
            let at = ((try? manager.keys.latestVersion(shard: 0, on: control)) ?? version) + 2
            let next = change(at: at)
            guard at < plan.steps,
                next.workers != nil || next.shards != nil || next.memoryMiB != nil || next.steps != nil
            else { return }
            if try manager.setHold(at: at) {
                pending = [next]
                return
            }
        }
        events.note("could not hold the job to apply the plan; the planner will decide again")
    }

    /// The held-out loss of the model at `version` (or a newer one), on up to 500 test examples.
    private func heldOutLoss(at version: Int) -> Double? {
        if reader?.shards.map.epoch != manager.map.epoch {
            reader = try? WorkerSession(
                job: job, worker: 0, endpoints: manager.map.shards.map { try RedisEndpoint(parsing: $0) },
                options: options, allowed: allowed)
        }
        guard let model, let reader, let params = try? reader.pull(step: version, timeout: .seconds(2)) else {
            return nil
        }
        if evaluationSet == nil {
            evaluationSet =
                plan.test.count > 500 ? plan.test.partition(0, of: (plan.test.count + 499) / 500) : plan.test
        }
        return model.evaluate(params: params, on: evaluationSet!).loss
    }

    /// Reports a shard that stays behind the others (its server dropped the job, or is down):
    /// once it has not moved for 10 s, a note names it and the version it is stuck at.
    private func reportStuckShard() {
        guard ContinuousClock.now - lastLagCheck >= .seconds(1) else { return }
        lastLagCheck = ContinuousClock.now
        guard let versions = try? manager.publishedVersions(), versions.count > 1 else { return }
        let known = versions.map { $0 ?? -1 }
        guard let low = known.min(), let high = known.max(), low < high, let shard = known.firstIndex(of: low) else {
            lagging = nil
            return
        }
        if let l = lagging, l.shard == shard, l.version == low {
            if !l.reported && ContinuousClock.now - l.since > .seconds(10) {
                events.note(
                    "shard \(shard) (\(manager.map.shards[shard])) has been stuck at version \(low) for 10 s while others are at \(high): is its parameter server running, and does its log say why?"
                )
                lagging?.reported = true
            }
        } else {
            lagging = (shard, low, ContinuousClock.now, false)
        }
    }

    // MARK: Faults and rollback

    /// Puts the job back on shards that lost it and resumes from the last checkpoint (or from
    /// version 0): workers stopped, map and data staged again, state restored, workers relaunched
    /// with the membership of the checkpoint's step.
    private func rollBack(lost: [Int]) throws -> Int {
        fleet.stopAll()
        try manager.storeMap()
        let checkpoint =
            (try? Checkpoint.read(from: checkpoints))
            ?? Checkpoint(
                job: job, step: 0, tensors: manager.map.tensors,
                params: plan.initialParameters(),
                optimizer: plan.momentum == 0 ? nil : [Float](repeating: 0, count: plan.parameterCount),
                config: plan.config(at: 0))
        var restored = checkpoint
        restored.config = plan.config(at: checkpoint.step)
        events.note(
            "shard\(lost.count == 1 ? "" : "s") \(lost.map(String.init).joined(separator: ",")) lost the job's data; rolling back to step \(checkpoint.step)"
        )
        workers = restored.config.workers
        try stageData(workers: workers)
        try restored.restore(to: manager)
        pending = plan.schedule.changes.filter { $0.step > checkpoint.step }
        try holdNext()
        try fleet.resize(to: workers)
        try fleet.relaunchAll()
        return checkpoint.step
    }

    /// Injects one fault; false when its target was not running.
    private func inject(_ e: FaultPlan.Event) -> Bool {
        let note = events.note
        switch e.kind {
        case .workerKill:
            guard let invocation = fleet.invocation(of: e.target) as? LocalInvocation, invocation.process.isRunning
            else { return false }
            note("fault: SIGKILL worker \(e.target) at step \(e.step)")
            invocation.process.sendToGroup(SIGKILL)
        case .workerHang:
            guard let invocation = fleet.invocation(of: e.target) as? LocalInvocation, invocation.process.isRunning
            else { return false }
            note("fault: SIGSTOP worker \(e.target) at step \(e.step)")
            invocation.process.sendToGroup(SIGSTOP)
        case .serverKill:
            guard let servers = cluster?.servers, e.target < servers.count, servers[e.target].isRunning else {
                return false
            }
            note("fault: SIGKILL the parameter server of shard \(e.target) at step \(e.step)")
            servers[e.target].send(SIGKILL)
        case .shardWipe:
            guard let cluster, e.target < cluster.redis.count else { return false }
            note("fault: restarting shard \(e.target)'s redis-server empty at step \(e.step)")
            do { try cluster.wipeShard(e.target) } catch {
                note("could not restart shard \(e.target): \(error)")
                return false
            }
        }
        return true
    }

    // MARK: Data

    /// Writes the data partitions for `workers` workers. The config that names that many workers
    /// is stored by whoever switches the job to them: `TrainingConfig.start`, a checkpoint's
    /// `restore`, or a reconfiguration (after its data is staged).
    private func stageData(workers n: Int) throws {
        let objects = JobObjects(manager)
        for w in 0..<n {
            let part = plan.partition(w, of: n)
            try objects.set(
                StagedData.features(worker: w, of: n),
                TensorBlob.encode(part.features, codec: .lz4, step: 0, producer: 0))
            try objects.set(
                StagedData.labels(worker: w, of: n),
                TensorBlob.encode(part.labels.map { Float($0) }, codec: .lz4, step: 0, producer: 0))
        }
        // A function-defined model is evaluated by the function, on the test set staged here.
        if isFunctionModel {
            try objects.set(
                StagedData.testFeatures, TensorBlob.encode(plan.test.features, codec: .lz4, step: 0, producer: 0))
            try objects.set(
                StagedData.testLabels,
                TensorBlob.encode(plan.test.labels.map { Float($0) }, codec: .lz4, step: 0, producer: 0))
        }
    }

    /// Marks the run finished and applies the retention policy: the job's keys expire after
    /// `retainSeconds` (or go at once with 0). Shards the run started itself end with it.
    private func finish() throws {
        state.status = "finished"
        try state.store(on: manager)
        guard cluster == nil else { return }
        if request.retainSeconds == 0 {
            try manager.deleteJob()
        } else {
            try manager.expireJob(after: request.retainSeconds)
        }
    }

    static func randomSecret() -> String {
        var g = SystemRandomNumberGenerator()
        return (0..<4).map { _ in String(g.next() as UInt64, radix: 16) }.joined()
    }
}

/// A run that could not go on; the message says why.
public struct CoordinatorError: Error, Sendable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

import Checkpoints
import Foundation
import FunctionClient
import LocalProcesses
import RedisClient
import Scheduler
import ShardManager
import TensorBlob
import TrainingProtocol
import Workloads

/// Runs one BSP training job: shards (its own or given), job registration, data staging,
/// function workers on the local platform, progress, and the summary.
struct TrainingDriver {
    let plan: TrainingPlan
    let shards: Int
    let endpoints: [RedisEndpoint]?
    let options: RedisOptions
    let job: String
    let codec: BlobCodec
    let chunkElements: Int
    let functionTimeout: Duration
    let memoryMiB: Int
    let prices: (gbSecond: Double, request: Double)
    let showShards: Bool
    let json: Bool
    /// How long a worker may go without renewing its lease before it is relaunched.
    var leaseTimeout: Duration = .seconds(3)
    var faults = FaultPlan.none
    /// Where checkpoints are written; nil for a temporary directory removed at the end.
    var checkpointDirectory: String?

    func run() throws -> TrainingSummary {
        let start = ContinuousClock.now
        let runDir = NSTemporaryDirectory() + "smlt-run-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: runDir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: runDir) }
        ChildRegistry.installSignalHandlers { _ in
            FileHandle.standardError.write(Data("\ninterrupted: stopping workers, servers and shards\n".utf8))
        }
        var cluster: LocalCluster?
        defer { cluster?.stop() }
        let eps: [RedisEndpoint]
        if let endpoints {
            eps = endpoints
        } else {
            cluster = try LocalCluster(shards: shards, logDirectory: runDir)
            eps = cluster!.endpoints
        }
        let model = try plan.settings.makeModel()
        let spec = try plan.settings.spec(job: job, codec: codec, chunkElements: chunkElements)
        let manager: ShardManager
        do { manager = try ShardManager.register(spec, on: eps, options: options, replace: true) } catch {
            throw TrainError("cannot register job '\(job)': \(error)")
        }
        try stage(manager, model: model)

        let platform = LocalProcessPlatform(logDirectory: runDir)
        var connection: [String] = ["--redis", eps.map(\.description).joined(separator: ",")]
        var env: [String: String] = [WorkerCommand.cacheVariable: runDir + "/function-cache"]
        if let p = options.password { env["SMLT_REDIS_PASSWORD"] = p }
        if let u = options.username { connection += ["--user", u] }
        let training = TrainingKeys(job: job)
        let leaseTTL = leaseTimeout.seconds
        let (functionTimeout, memoryMiB, job) = (self.functionTimeout, self.memoryMiB, self.job)
        let control = try RedisConnection(eps[0], options: options)
        let fleet = WorkerFleet(
            workers: plan.workers, platform: platform, leases: control, leaseKey: { training.lease(worker: $0) },
            leaseTimeout: leaseTimeout, continueCode: WorkerExit.continueLater,
            request: { w, generation in
                FunctionRequest(
                    name: "worker-\(w)" + (generation > 0 ? ".\(generation)" : ""),
                    arguments: [
                        "worker", "--job", job, "--worker", "\(w)", "--generation", "\(generation)", "--lease-ttl",
                        "\(leaseTTL)",
                    ] + connection,
                    environment: env, timeout: functionTimeout, memoryMiB: memoryMiB)
            },
            log: { line in if !json { FileHandle.standardError.write(Data("\r\(line)\n".utf8)) } })
        defer { fleet.stopAll() }
        try fleet.start()

        let progress = ProgressReporter(steps: plan.steps, workers: plan.workers)
        var seen = 0
        var serverRestarts = 0
        var pending = faults.events
        var injected = 0
        let checkpoints = checkpointDirectory ?? runDir + "/checkpoints"
        let every = plan.checkpointEvery
        var lastCheckpoint = 0
        var checkpointsSaved = 0
        var rollbacks = 0
        var lastShardCheck = ContinuousClock.now
        while !fleet.finished {
            sleepFor(.milliseconds(50))
            // Progress from the workers' metrics.
            let fresh = (try? control.run(["LRANGE", training.metrics, "\(seen)", "-1"]).array) ?? []
            seen += fresh.count
            progress.add(
                fresh.compactMap { $0.bytes.flatMap { try? JSONDecoder().decode(StepMetrics.self, from: Data($0)) } })
            // A parameter server that died is restarted; it resumes from what is in Redis.
            if let cluster {
                for shard in try cluster.superviseServers() {
                    serverRestarts += 1
                    note("the parameter server of shard \(shard) exited; restarted it")
                }
            }
            let version = (try? latestVersion(control, training)) ?? 0
            // Chaos: faults due at the version shard 0 has published.
            while let e = pending.first, e.step <= version {
                pending.removeFirst()
                if inject(e, fleet: fleet, cluster: cluster) { injected += 1 }
            }
            // Checkpoints: the servers copy every `every`-th version aside; save it to disk.
            if every > 0, version / every * every > lastCheckpoint,
                let c = try? Checkpoint.capture(manager, config: plan.config, snapshot: true), c.step > lastCheckpoint
            {
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
                    let step = try rollBack(manager, fleet: fleet, model: model, checkpoints: checkpoints, lost: lost)
                    lastCheckpoint = min(lastCheckpoint, step)
                    rollbacks += 1
                }
            }
            do { try fleet.tick() } catch {
                progress.finish()
                throw TrainError("\(error)")
            }
        }
        // The last gradients are in; wait for the servers to publish the final version.
        let reader = try FunctionClient(job: job, worker: 0, endpoints: eps, options: options)
        let params = try reader.pull(step: plan.steps, timeout: .seconds(60))
        // With checkpoints on, the final model is saved too: nothing commits any more, so the
        // live parameters are one consistent version.
        if every > 0, lastCheckpoint < plan.steps,
            let c = try Checkpoint.capture(manager, config: plan.config, snapshot: false), c.step == plan.steps
        {
            try c.write(to: checkpoints)
            checkpointsSaved += 1
        }
        progress.finish()
        if showShards { printShardTables(eps) }
        let starts = ((try? control.run(["LRANGE", training.starts, "0", "-1"]).array) ?? [])
            .compactMap { $0.bytes.flatMap { try? JSONDecoder().decode(StartReport.self, from: Data($0)) } }
        let (loss, trainAcc, testAcc, digest) = TrainingSummary.evaluate(params, plan: plan, model: model)
        let outcomes = fleet.outcomes
        let gbs = outcomes.reduce(0) { $0 + $1.gbSeconds }
        let counts = fleet.counts
        var summary = TrainingSummary(
            mode: "BSP", job: job, model: plan.settings.model, steps: plan.steps, workers: plan.workers,
            shards: eps.count, parameters: params.count, finalLoss: loss, trainAccuracy: trainAcc,
            testAccuracy: testAcc,
            wallSeconds: (ContinuousClock.now - start).seconds, functionGBSeconds: gbs, invocations: outcomes.count,
            restarts: counts.continuations + counts.relaunches + serverRestarts,
            estimatedCostUSD: gbs * prices.gbSecond + Double(outcomes.count) * prices.request,
            paramDigest: digest)
        summary.continuations = counts.continuations
        summary.workerRelaunches = counts.relaunches
        summary.expiredLeases = counts.expiredLeases
        summary.serverRestarts = serverRestarts
        summary.faultsInjected = injected
        summary.rollbacks = rollbacks
        summary.checkpointsSaved = checkpointsSaved
        summary.starts = StartStatistics(starts)
        return summary
    }

    /// Puts the job back on shards that lost it and resumes from the last checkpoint (or from
    /// version 0): workers stopped, map and data staged again, state restored, workers relaunched.
    func rollBack(
        _ manager: ShardManager, fleet: WorkerFleet, model: any Model, checkpoints: String, lost: [Int]
    ) throws -> Int {
        fleet.stopAll()
        try manager.storeMap()
        try stageData(manager)
        let checkpoint =
            (try? Checkpoint.read(from: checkpoints))
            ?? Checkpoint(
                job: job, step: 0, tensors: manager.map.tensors,
                params: model.initialParameters(seed: plan.settings.seed),
                optimizer: plan.momentum == 0 ? nil : [Float](repeating: 0, count: model.parameterCount),
                config: plan.config)
        note(
            "shard\(lost.count == 1 ? "" : "s") \(lost.map(String.init).joined(separator: ",")) lost the job's data; rolling back to step \(checkpoint.step)"
        )
        try checkpoint.restore(to: manager)
        try fleet.relaunchAll()
        return checkpoint.step
    }

    func note(_ line: String) {
        if !json { FileHandle.standardError.write(Data("\r\(line)\n".utf8)) }
    }

    /// The newest version shard 0 has published.
    func latestVersion(_ c: RedisConnection, _ training: TrainingKeys) throws -> Int {
        try training.latestVersion(shard: 0, on: c) ?? 0
    }

    /// Injects one fault; false when its target was not running.
    func inject(_ e: FaultPlan.Event, fleet: WorkerFleet, cluster: LocalCluster?) -> Bool {
        switch e.kind {
        case .workerKill:
            guard let invocation = fleet.invocation(of: e.target) as? LocalInvocation, invocation.process.isRunning
            else { return false }
            note("fault: SIGKILL worker \(e.target) at step \(e.step)")
            invocation.process.send(SIGKILL)
        case .workerHang:
            guard let invocation = fleet.invocation(of: e.target) as? LocalInvocation, invocation.process.isRunning
            else { return false }
            note("fault: SIGSTOP worker \(e.target) at step \(e.step)")
            invocation.process.send(SIGSTOP)
        case .serverKill:
            guard let server = cluster?.servers[e.target], server.isRunning else { return false }
            note("fault: SIGKILL the parameter server of shard \(e.target) at step \(e.step)")
            server.send(SIGKILL)
        case .shardWipe:
            guard let cluster else { return false }
            note("fault: restarting shard \(e.target)'s redis-server empty at step \(e.step)")
            do { try cluster.wipeShard(e.target) } catch {
                note("could not restart shard \(e.target): \(error)")
                return false
            }
        }
        return true
    }

    /// Writes the config, each worker's data partition, and parameter version 0.
    func stage(_ manager: ShardManager, model: any Model) throws {
        try stageData(manager)
        try plan.config.start(on: manager, initial: model.initialParameters(seed: plan.settings.seed))
    }

    /// Writes the config and each worker's data partition.
    func stageData(_ manager: ShardManager) throws {
        let config = plan.config
        try config.validate()
        try config.store(on: manager)
        let objects = JobObjects(manager)
        for (w, part) in plan.partitions().enumerated() {
            try objects.set(StagedData.features(w), TensorBlob.encode(part.features, codec: .lz4, step: 0, producer: 0))
            try objects.set(
                StagedData.labels(w),
                TensorBlob.encode(part.labels.map { Float($0) }, codec: .lz4, step: 0, producer: 0))
        }
    }

    func printShardTables(_ eps: [RedisEndpoint]) {
        let out = FileHandle.standardError
        out.write(Data("\n$ smlt admin shards\n\(shardsTable(ShardInspector.shards(eps, options: options)))\n".utf8))
        if let chunks = try? ShardInspector.chunks(job: job, endpoints: eps, options: options) {
            out.write(Data("\n$ smlt admin chunks --job \(job)\n\(chunksTable(chunks))\n".utf8))
        }
    }
}

struct TrainError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

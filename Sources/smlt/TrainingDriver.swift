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

    func run() throws -> TrainingSummary {
        let start = ContinuousClock.now
        let runDir = NSTemporaryDirectory() + "smlt-run-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: runDir, withIntermediateDirectories: true)
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
        var env: [String: String] = [:]
        if let p = options.password { env["SMLT_REDIS_PASSWORD"] = p }
        if let u = options.username { connection += ["--user", u] }
        var running: [any FunctionInvocation] = []
        var outcomes: [InvocationOutcome] = []
        defer { for r in running { r.kill() } }
        for w in 0..<plan.workers {
            running.append(
                try platform.invoke(
                    FunctionRequest(
                        name: "worker-\(w)", arguments: ["worker", "--job", job, "--worker", "\(w)"] + connection,
                        environment: env, timeout: functionTimeout, memoryMiB: memoryMiB)))
        }
        let progress = ProgressReporter(steps: plan.steps, workers: plan.workers)
        let metricsKey = TrainingKeys(job: job).metrics
        var seen = 0
        while !running.isEmpty {
            sleepFor(.milliseconds(100))
            // Progress from the workers' metrics.
            let fresh =
                (try? manager.onShard(0) { c throws(RedisError) in
                    try c.run(["LRANGE", metricsKey, "\(seen)", "-1"]).array ?? []
                }) ?? []
            seen += fresh.count
            progress.add(
                fresh.compactMap { $0.bytes.flatMap { try? JSONDecoder().decode(StepMetrics.self, from: Data($0)) } })
            var still: [any FunctionInvocation] = []
            for r in running {
                guard let o = r.poll() else {
                    still.append(r)
                    continue
                }
                outcomes.append(o)
                guard o.status.succeeded else {
                    progress.finish()
                    let why = o.timedOut ? "was killed at its \(functionTimeout) time limit" : "failed (\(o.status))"
                    throw TrainError("\(o.name) \(why)\(o.errorTail.isEmpty ? "" : ":\n" + o.errorTail)")
                }
            }
            running = still
        }
        // The last gradients are in; wait for the servers to publish the final version.
        let reader = try FunctionClient(job: job, worker: 0, endpoints: eps, options: options)
        let params = try reader.pull(step: plan.steps, timeout: .seconds(60))
        progress.finish()
        if showShards { printShardTables(eps) }
        let (loss, trainAcc, testAcc, digest) = TrainingSummary.evaluate(params, plan: plan, model: model)
        let gbs = outcomes.reduce(0) { $0 + $1.gbSeconds }
        return TrainingSummary(
            mode: "BSP", job: job, model: plan.settings.model, steps: plan.steps, workers: plan.workers,
            shards: eps.count, parameters: params.count, finalLoss: loss, trainAccuracy: trainAcc,
            testAccuracy: testAcc,
            wallSeconds: (ContinuousClock.now - start).seconds, functionGBSeconds: gbs, invocations: outcomes.count,
            restarts: 0, estimatedCostUSD: gbs * prices.gbSecond + Double(outcomes.count) * prices.request,
            paramDigest: digest)
    }

    /// Writes the config, each worker's data partition, and parameter version 0.
    func stage(_ manager: ShardManager, model: any Model) throws {
        let config = plan.config
        try config.validate()
        let objects = JobObjects(manager)
        for (w, part) in plan.partitions().enumerated() {
            try objects.set(StagedData.features(w), TensorBlob.encode(part.features, codec: .lz4, step: 0, producer: 0))
            try objects.set(
                StagedData.labels(w),
                TensorBlob.encode(part.labels.map { Float($0) }, codec: .lz4, step: 0, producer: 0))
        }
        try config.start(on: manager, initial: model.initialParameters(seed: plan.settings.seed))
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

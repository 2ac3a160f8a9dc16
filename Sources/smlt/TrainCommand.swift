import ArgumentParser
import Coordinator
import Foundation
import LocalProcesses
import RedisClient
import Scheduler
import ShardManager
import TensorBlob
import Workloads

struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train a model with N stateless function workers and sharded parameter servers (BSP).",
        discussion: """
            Without --redis it starts its own redis-server shards (with a random password) and one parameter \
            server per shard on free loopback ports, and stops them at the end, on error and on Ctrl-C (they die with it \
            if it is killed). With \
            --redis it uses those shards and expects `smlt serve` to run for them; such a job's state stays in \
            Redis, so `--resume --job J` continues it if this driver dies.
            Datasets: digits (bundled), synthetic, libsvm:PATH, csv:PATH (label first).
            --schedule "100:workers=8;200:shards=3" changes the number of workers and shards at those steps.
            --inject-faults kinds: \(FaultPlan.Kind.allCases.map(\.rawValue).joined(separator: ", ")).
            """)

    @OptionGroup var redis: RedisOptionGroup
    @Option(help: "digits, synthetic, libsvm:PATH or csv:PATH.") var dataset = "digits"
    @Option(help: "A held-out test file for libsvm:/csv: data (default: the last 20% of the data).") var testData:
        String?
    @Option(help: "softmax or mlp.") var model = "softmax"
    @Option(help: "Hidden units of the mlp model.") var hidden = 64
    @Option(help: "Number of function workers.") var workers = 4
    @Option(help: "Number of shards to start (without --redis).") var shards = 2
    @Option(help: "Training steps (default: 300, or as many as --epochs needs).") var steps: Int?
    @Option(help: "Passes over the training data (instead of --steps).") var epochs: Double?
    @Option(help: "Examples per worker per step.") var batchSize = 16
    @Option(name: .customLong("lr"), help: "Learning rate (default: 0.5 for softmax, 0.05 for mlp).")
    var learningRate: Float?
    @Option(help: "Momentum.") var momentum: Float = 0.9
    @Option(help: "Weight decay.") var weightDecay: Float = 0
    @Option(help: "Seed for data generation and initial parameters.") var seed: UInt64 = 1
    @Option(help: "Blob codec: raw, lz4 or shuffle-lz4.") var codec = "raw"
    @Option(help: "Parameters per chunk.") var chunkElements = JobSpec.defaultChunkElements
    @Option(help: "Job id (default: a new one per run).") var job: String?
    @Flag(help: "Continue the job given by --job on the shards given by --redis after its driver died.")
    var resume = false
    @Option(help: "Maximum duration of one function invocation, e.g. 900s or 15m.") var functionTimeout = "900s"
    @Option(help: "Memory limit of one function invocation in MiB (billed as configured).") var memory = 1024
    @Option(help: "Price per GB-second of function time, USD.") var priceGbSecond = 0.0000166667
    @Option(help: "Price per function invocation, USD.") var priceRequest = 0.0000002
    @Option(help: "Examples of the synthetic dataset.") var syntheticExamples = 20_000
    @Option(help: "Features of the synthetic dataset.") var syntheticFeatures = 100
    @Option(help: "Classes of the synthetic dataset.") var syntheticClasses = 10
    @Flag(help: "Train in this process with the same membership (no Redis), for comparison.") var reference = false
    @Option(help: "How long a worker may go without renewing its lease before it is relaunched.")
    var leaseTimeout = "3s"
    @Option(
        help: ArgumentHelp(
            "Inject faults at steps chosen by --seed, e.g. worker-kill=3,server-kill=1.", valueName: "faults"))
    var injectFaults: String?
    @Option(
        help: ArgumentHelp(
            "Reconfigure at step boundaries, e.g. \"100:workers=8;200:shards=3\".", valueName: "schedule"))
    var schedule: String?
    @Option(help: "Save a checkpoint every this many steps (0: never); a shard that restarts empty rolls back to it.")
    var checkpointEvery = 100
    @Option(help: "Where checkpoints go (default: a temporary directory removed at the end).")
    var checkpointDir: String?
    @Option(help: "How long a finished job stays in Redis (with --redis), e.g. 24h; 0 deletes it at the end.")
    var retain = "24h"
    @Flag(help: "Print the admin shard and chunk tables before stopping.") var showShards = false
    @Flag(help: "Print one JSON object at the end instead of the summary.") var json = false

    /// The flags as a request; every number is checked here, before anything starts.
    func request() throws -> TrainingRequest {
        var r = TrainingRequest()
        r.dataset = dataset
        r.testData = testData
        r.model = model
        r.hidden = hidden
        r.workers = workers
        r.shards = shards
        r.steps = steps
        r.epochs = epochs
        r.batchSize = batchSize
        r.learningRate = learningRate
        r.momentum = momentum
        r.weightDecay = weightDecay
        r.seed = seed
        r.codec = codec
        r.chunkElements = chunkElements
        r.syntheticExamples = syntheticExamples
        r.syntheticFeatures = syntheticFeatures
        r.syntheticClasses = syntheticClasses
        r.functionTimeoutMilliseconds = try TrainingRequest.milliseconds(
            functionTimeout, flag: "--function-timeout", limit: TrainingRequest.maxFunctionTimeoutMilliseconds)
        r.leaseTimeoutMilliseconds = try TrainingRequest.milliseconds(
            leaseTimeout, flag: "--lease-timeout", limit: 3_600_000)
        r.memoryMiB = memory
        r.priceGBSecond = priceGbSecond
        r.priceRequest = priceRequest
        r.checkpointEvery = checkpointEvery
        r.checkpointDirectory = checkpointDir
        r.faults = injectFaults
        r.schedule = schedule
        r.retainSeconds =
            retain == "0"
            ? 0 : try TrainingRequest.milliseconds(retain, flag: "--retain", limit: 366 * 86_400_000) / 1000
        try r.validate()
        return r
    }

    func validate() throws {
        do { _ = try request() } catch let e as RequestError { throw ValidationError(e.description) }
        if injectFaults != nil && reference { throw ValidationError("--inject-faults does not apply to --reference") }
        if resume && job == nil { throw ValidationError("--resume needs --job") }
        if let injectFaults, try redis.endpointsIfGiven() != nil,
            (try? FaultPlan(injectFaults, steps: steps ?? 300, workers: workers, shards: shards, seed: seed))?
                .needsOwnServers == true
        {
            throw ValidationError(
                "server-kill and shard-wipe need the shards and servers smlt train starts (no --redis)")
        }
        if try resume && redis.endpointsIfGiven() == nil {
            throw ValidationError("--resume needs --redis: shards smlt train started itself end with it")
        }
        if let job { try JobSpec.validateJobName(job) }
    }

    func run() throws {
        let request = try request()
        let summary: TrainingSummary
        let progress = ProgressReporter(quiet: json)
        do {
            if reference {
                let data = try TrainingData.load(request)
                summary = try ReferenceTrainer(plan: try TrainingPlan(request, train: data.train, test: data.test))
                    .run()
            } else {
                let note: @Sendable (String) -> Void = { [json] line in
                    if !json { FileHandle.standardError.write(Data("\r\(line)\u{1B}[K\n".utf8)) }
                }
                let jobID = job ?? "train-\(getpid())-\(Int(Date().timeIntervalSince1970))"
                let c = Coordinator(
                    request: request, job: jobID,
                    endpoints: try redis.endpointsIfGiven(), options: redis.options, allowed: redis.allowedEndpoints,
                    launch: Coordinator.Launch(
                        worker: [currentExecutable(), "worker"], server: [currentExecutable(), "serve"]),
                    resume: resume,
                    events: Coordinator.Events(
                        note: note, metrics: { progress.add($0) }, started: { progress.start($0) },
                        finished: { [showShards] eps, options in
                            progress.finish()
                            if showShards { printShardTables(job: jobID, eps, options: options) }
                        }))
                summary = try c.run()
            }
        } catch let e as ExitCode {
            throw e
        } catch {
            // On Ctrl-C the signal handler stops everything and exits; the failures it causes
            // here are not worth reporting.
            while ChildRegistry.isStopping { sleepFor(.seconds(1)) }
            progress.finish()
            printError("\(error)")
            throw ExitCode(1)
        }
        if json { try printJSON(summary) } else { print(summary.text) }
    }

}

/// Prints the admin shard and chunk tables of a job to standard error.
func printShardTables(job: String, _ eps: [RedisEndpoint], options: RedisOptions) {
    let out = FileHandle.standardError
    out.write(Data("\n$ smlt admin shards\n\(shardsTable(ShardInspector.shards(eps, options: options)))\n".utf8))
    if let chunks = try? ShardInspector.chunks(job: job, endpoints: eps, options: options) {
        out.write(Data("\n$ smlt admin chunks --job \(job)\n\(chunksTable(chunks))\n".utf8))
    }
}

import ArgumentParser
import Coordinator
import ShardManager

/// The flags that describe a training request, shared by `smlt train` and `smlt plan`.
struct TrainingOptionGroup: ParsableArguments {
    @Option(help: "digits, synthetic, libsvm:PATH or csv:PATH.") var dataset = "digits"
    @Option(help: "A held-out test file for libsvm:/csv: data (default: the last 20% of the data).") var testData:
        String?
    @Option(help: "softmax, mlp, or function (the --function command defines the model).") var model = "softmax"
    @Option(help: "Hidden units of the mlp model.") var hidden = 64
    @Option(help: "Number of function workers.") var workers = 4
    @Option(help: "Number of shards to start (without --redis).") var shards = 2
    @Option(help: "Training steps (default: 300, or as many as --epochs needs).") var steps: Int?
    @Option(help: "Passes over the training data (instead of --steps).") var epochs: Double?
    @Option(help: "Examples per worker per step.") var batchSize = 16
    @Option(name: .customLong("lr"), help: "Learning rate (default: 0.5 for softmax, 0.05 for mlp and function).")
    var learningRate: Float?
    @Option(help: "Momentum.") var momentum: Float = 0.9
    @Option(help: "Weight decay.") var weightDecay: Float = 0
    @Option(help: "Seed for data generation and initial parameters.") var seed: UInt64 = 1
    @Option(
        help:
            "Gradient encoding: raw, lz4, shuffle-lz4, bitshuffle-lz4 (f32); bf16, f16, bf16-bitshuffle-lz4, bf16-shuffle-lz4, f16-bitshuffle-lz4, topk:FRACTION, bf16-topk:FRACTION (with error feedback). A dense f32 codec is also the parameters' blob codec."
    ) var codec = "raw"
    @Option(
        help:
            "What workers pull each version as: f32 (the parameters), or a copy the servers write rounded to bf16 or f16 (bf16, bf16-shuffle-lz4, f16…). Default: the --codec's dtype and codec when that is bf16 or f16, else f32."
    ) var pull: String?
    @Option(help: "Parameters per chunk.") var chunkElements = JobSpec.defaultChunkElements
    @Option(help: "Maximum duration of one function invocation, e.g. 900s or 15m.") var functionTimeout = "900s"
    @Option(help: "Memory limit of one function invocation in MiB (billed as configured).") var memory = 1024
    @Option(help: "Price per GB-second of function time, USD.") var priceGbSecond = 0.0000166667
    @Option(help: "Price per function invocation, USD.") var priceRequest = 0.0000002
    @Option(help: "Examples of the synthetic dataset.") var syntheticExamples = 20_000
    @Option(help: "Features of the synthetic dataset.") var syntheticFeatures = 100
    @Option(help: "Classes of the synthetic dataset.") var syntheticClasses = 10
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

    @Option(
        help: ArgumentHelp(
            "Run this command as each worker function instead of `smlt worker` (a /bin/sh command line); it gets the same environment and computes the built-in model's gradient (e.g. \"python3 -m smlt.builtin\"), or with --model function defines the model too (e.g. \"python3 python/examples/digits_cnn.py\").",
            valueName: "command"))
    var function: String?

    @Option(
        help:
            "Finish within this time at the least cost, e.g. 90s or 10m; the planner chooses workers, shards and memory."
    )
    var deadline: String?
    @Option(
        help: "Spend at most this many USD, finishing as fast as possible (with --deadline: as cheaply as possible).")
    var budget: String?
    @Option(
        help:
            "Train until the held-out loss reaches this value (instead of --steps or --epochs; needs --deadline or --budget)."
    )
    var targetLoss: String?
    @Option(help: "Price per hour of one shard (Redis server and parameter server), USD.")
    var priceShardHour = TrainingRequest.defaultPriceShardHour

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
        r.pull = pull
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
        r.function = function
        r.deadlineSeconds = try deadline.map {
            Double(try TrainingRequest.milliseconds($0, flag: "--deadline", limit: 366 * 86_400_000)) / 1000
        }
        r.budgetUSD = try budget.map { try TrainingRequest.dollars($0, flag: "--budget") }
        r.targetLoss = try targetLoss.map { try TrainingRequest.loss($0, flag: "--target-loss") }
        r.priceShardHour = priceShardHour
        r.retainSeconds =
            retain == "0"
            ? 0 : try TrainingRequest.milliseconds(retain, flag: "--retain", limit: 366 * 86_400_000) / 1000
        try r.validate()
        return r
    }
}

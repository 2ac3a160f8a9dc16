import ShardManager
import TensorBlob
import TrainingProtocol
import Workloads

/// Everything a user asks of one training run, as `smlt train` takes it: what to train, on how
/// many workers and shards, for how long, and under which limits. A value: the CLI fills it
/// from flags, `validate()` checks every number before anything starts, and the run state in
/// Redis keeps it so `smlt train --resume` can continue the same run.
public struct TrainingRequest: Codable, Sendable, Equatable {
    /// `digits`, `synthetic`, `libsvm:PATH` or `csv:PATH`.
    public var dataset = "digits"
    /// A held-out test file for libsvm:/csv: data (default: the last 20% of the data).
    public var testData: String?
    public var model = "softmax"
    public var hidden = 64
    public var workers = 4
    /// Shards the driver starts itself when no endpoints are given.
    public var shards = 2
    /// Training steps; nil for as many as `epochs` needs, or 300.
    public var steps: Int?
    public var epochs: Double?
    /// Examples per worker per step.
    public var batchSize = 16
    /// The learning rate; nil for the model's default (`defaultLearningRate`).
    public var learningRate: Float?
    public var momentum: Float = 0.9
    public var weightDecay: Float = 0
    public var seed: UInt64 = 1
    /// `--codec`: a gradient encoding spec (`GradientEncoding`), such as `raw` or `bf16-shuffle-lz4`.
    public var codec = "raw"
    /// `--pull`: what workers pull each version as: `f32` (the parameters), a pull copy's spec
    /// (`PullEncoding`, e.g. `bf16`), or nil for the default (`pullEncoding`).
    public var pull: String?
    public var chunkElements = 262_144
    public var syntheticExamples = 20_000
    public var syntheticFeatures = 100
    public var syntheticClasses = 10
    /// Maximum duration of one function invocation.
    public var functionTimeoutMilliseconds = 900_000
    /// How long a worker may go without renewing its lease before it is relaunched.
    public var leaseTimeoutMilliseconds = 3_000
    /// Memory limit of one function invocation in MiB (billed as configured).
    public var memoryMiB = 1024
    public var priceGBSecond = 0.0000166667
    public var priceRequest = 0.0000002
    /// Save a checkpoint every this many steps (0: never).
    public var checkpointEvery = 100
    /// Where checkpoints go; nil for the run directory.
    public var checkpointDirectory: String?
    /// `--inject-faults` text, e.g. `worker-kill=3,server-kill=1`.
    public var faults: String?
    /// `--schedule` text, e.g. `100:workers=8;200:shards=3`.
    public var schedule: String?
    /// How long a finished job's keys stay in Redis (seconds; 0 deletes them at the end).
    public var retainSeconds = 86_400
    /// `--function` text: a command line that runs as each worker function instead of
    /// `smlt worker` (run as `/bin/sh -c "…"`); nil for the built-in worker. It computes
    /// the gradient of the built-in model the driver registers, or, with `--model function`,
    /// defines the model too.
    public var function: String?

    // MARK: Goals (the planner chooses workers, shards and memory when one is given)

    /// Finish within this many seconds of the start, at the least cost.
    public var deadlineSeconds: Double?
    /// Spend at most this many USD, finishing as fast as possible (or as cheaply as possible
    /// when a deadline is given too).
    public var budgetUSD: Double?
    /// Train until the held-out loss reaches this value (instead of `steps` or `epochs`).
    public var targetLoss: Double?
    /// USD per hour of one shard (a Redis server with its parameter server); nil for
    /// `defaultPriceShardHour` (optional so run states stored before it existed still load).
    public var priceShardHour: Double?
    /// About what a small managed Redis node costs per hour on demand.
    public static let defaultPriceShardHour = 0.03
    public var shardHourPrice: Double { priceShardHour ?? Self.defaultPriceShardHour }

    /// Whether the planner chooses the configuration.
    public var isPlanned: Bool { deadlineSeconds != nil || budgetUSD != nil }

    public init() {}

    // MARK: Limits

    /// Workers one machine runs as local processes.
    public static let maxLocalWorkers = 256
    public static let maxShards = 64
    public static let maxSteps = 100_000_000
    /// The smallest function memory that runs a worker: the Swift runtime, Foundation and the
    /// libraries map about 280 MB of address space before any data (VmPeak of a worker on two
    /// shards; see docs/design.md).
    public static let minMemoryMiB = 384
    /// Address space a worker maps before holding any data.
    static let baseMemoryMiB = 300
    /// The largest function memory, as on AWS Lambda.
    public static let maxMemoryMiB = 10_240
    /// The longest function time limit accepted (a week; AWS Lambda allows 15 minutes).
    public static let maxFunctionTimeoutMilliseconds = 7 * 86_400_000
    public static let maxSyntheticExamples = 10_000_000

    /// Checks every value before anything starts; the error names the flag and the bound.
    public func validate() throws(RequestError) {
        func check(_ ok: Bool, _ message: @autoclosure () -> String) throws(RequestError) {
            if !ok { throw RequestError(message()) }
        }
        try check(
            (1...Self.maxLocalWorkers).contains(workers),
            "--workers must be from 1 to \(Self.maxLocalWorkers) on one machine, got \(workers)")
        try check((1...Self.maxShards).contains(shards), "--shards must be from 1 to \(Self.maxShards), got \(shards)")
        try check(
            Self.models.contains(model),
            "unknown model '\(model)' (choose one of: \(Self.models.joined(separator: ", ")))")
        if model == Self.functionModel {
            try check(
                function != nil,
                "--model function needs --function: the command that defines the model and computes its gradients")
            try check(
                !isPlanned,
                "--deadline and --budget need a built-in model (the planner times its gradient before anything starts); with --model function give --workers and --steps or --epochs"
            )
        }
        do { _ = try GradientEncoding(parsing: codec) } catch { throw RequestError("--codec: \(error)") }
        do { _ = try PullEncoding.chosen(by: pull, for: gradientEncoding) } catch {
            throw RequestError("--pull: \(error)")
        }
        try check(
            (1...WorkloadSettings.maxBatch).contains(batchSize),
            "--batch-size must be from 1 to \(WorkloadSettings.maxBatch), got \(batchSize)")
        try check(
            (1...WorkloadSettings.maxWidth).contains(hidden),
            "--hidden must be from 1 to \(WorkloadSettings.maxWidth), got \(hidden)")
        try check(
            (Self.minMemoryMiB...Self.maxMemoryMiB).contains(memoryMiB),
            "--memory must be from \(Self.minMemoryMiB) to \(Self.maxMemoryMiB) MiB, got \(memoryMiB)")
        try check(
            (0...Self.maxSteps).contains(checkpointEvery),
            "--checkpoint-every must be from 0 (never) to \(Self.maxSteps), got \(checkpointEvery)")
        if let steps {
            try check((1...Self.maxSteps).contains(steps), "--steps must be from 1 to \(Self.maxSteps), got \(steps)")
        }
        if let epochs {
            try check(
                epochs.isFinite && epochs > 0 && epochs <= 1e6, "--epochs must be from 0 to 1000000, got \(epochs)")
        }
        let lr = effectiveLearningRate
        try check(lr.isFinite && lr > 0 && lr <= 1e6, "--lr must be a positive number, got \(lr)")
        try check(
            momentum.isFinite && momentum >= 0 && momentum < 1, "--momentum must be from 0 to below 1, got \(momentum)")
        try check(weightDecay.isFinite && weightDecay >= 0, "--weight-decay must not be negative, got \(weightDecay)")
        try check(
            (1...(1 << 26)).contains(chunkElements),
            "--chunk-elements must be from 1 to \(1 << 26), got \(chunkElements)")
        try check(
            (1...Self.maxSyntheticExamples).contains(syntheticExamples),
            "--synthetic-examples must be from 1 to \(Self.maxSyntheticExamples), got \(syntheticExamples)")
        try check(
            (1...WorkloadSettings.maxWidth).contains(syntheticFeatures),
            "--synthetic-features must be from 1 to \(WorkloadSettings.maxWidth), got \(syntheticFeatures)")
        try check(
            (2...WorkloadSettings.maxWidth).contains(syntheticClasses),
            "--synthetic-classes must be from 2 to \(WorkloadSettings.maxWidth), got \(syntheticClasses)")
        try check(
            (1...Self.maxFunctionTimeoutMilliseconds).contains(functionTimeoutMilliseconds),
            "--function-timeout must be from 1 ms to 7 days")
        try check(
            (100...3_600_000).contains(leaseTimeoutMilliseconds), "--lease-timeout must be from 100 ms to 1 hour")
        try check(
            priceGBSecond.isFinite && priceGBSecond >= 0,
            "--price-gb-second must be a non-negative number of USD, got \(priceGBSecond)")
        try check(
            priceRequest.isFinite && priceRequest >= 0,
            "--price-request must be a non-negative number of USD, got \(priceRequest)")
        try check(retainSeconds >= 0, "--retain must not be negative")
        try check(
            shardHourPrice.isFinite && shardHourPrice >= 0,
            "--price-shard-hour must be a non-negative number of USD, got \(shardHourPrice)")
        if let d = deadlineSeconds {
            try check(d.isFinite && d > 0, "--deadline must be a positive duration, got \(d) s")
        }
        if let b = budgetUSD {
            try check(b.isFinite && b > 0, "--budget must be a positive number of USD, got \(b)")
        }
        if let l = targetLoss {
            try check(l.isFinite && l > 0, "--target-loss must be a positive number, got \(l)")
            try check(steps == nil && epochs == nil, "--target-loss replaces --steps and --epochs; give one of them")
        }
        if targetLoss != nil && !isPlanned {
            throw RequestError("--target-loss needs a goal for the planner: --deadline, --budget or both")
        }
        if isPlanned {
            try check(
                schedule == nil, "--schedule and --deadline/--budget do not go together: the planner makes the schedule"
            )
            try check(
                priceGBSecond > 0 || priceRequest > 0 || shardHourPrice > 0,
                "--budget and --deadline need prices: --price-gb-second, --price-request and --price-shard-hour are all zero"
            )
        }
        if let function {
            try check(
                !function.allSatisfy(\.isWhitespace), "--function must be a command, got an empty one")
        }
        _ = try datasetSource()
        if let schedule { _ = try Schedule(parsing: schedule) }
        if let faults { _ = try FaultPlan(faults, steps: steps ?? 300, workers: workers, shards: shards, seed: seed) }
    }

    /// The learning rate of the run: the one given, or the model's default. The MLP's default is
    /// lower: at 0.5 with momentum 0.9 it diverges on the synthetic data (loss NaN at step ~270
    /// with 64 features and 128 hidden units); at 0.05 it reaches 0.97-1.0 test accuracy on the
    /// bundled data sets.
    public var effectiveLearningRate: Float { learningRate ?? (model == "softmax" ? 0.5 : 0.05) }

    /// `--model` values: the built-in models, and `function` for a model the function defines.
    public static let models = WorkloadSettings.models + [functionModel]
    /// The model of a job whose `--function` defines it (docs/wire-format.md, "Function-defined
    /// models").
    public static let functionModel = "function"

    /// Where the data comes from.
    public enum DatasetSource: Sendable, Equatable {
        case digits, synthetic
        case libsvm(String)
        case csv(String)
    }

    public func datasetSource() throws(RequestError) -> DatasetSource {
        switch dataset {
        case "digits": return .digits
        case "synthetic": return .synthetic
        default:
            if dataset.hasPrefix("libsvm:") { return .libsvm(String(dataset.dropFirst(7))) }
            if dataset.hasPrefix("csv:") { return .csv(String(dataset.dropFirst(4))) }
            throw RequestError("unknown dataset '\(dataset)' (choose digits, synthetic, libsvm:PATH or csv:PATH)")
        }
    }

    /// Parses "900s", "15m", "1.5h", "250ms" or a plain number of seconds into milliseconds;
    /// refuses anything not positive, not finite, or above `limit` milliseconds.
    public static func milliseconds(_ text: String, flag: String, limit: Int) throws(RequestError) -> Int {
        let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)]
        var value: Double?
        for (suffix, scale) in units where text.hasSuffix(suffix) {
            if let v = Double(text.dropLast(suffix.count)) {
                value = v * scale
                break
            }
        }
        if value == nil { value = Double(text) }
        guard let seconds = value, seconds.isFinite, seconds > 0 else {
            throw RequestError("invalid duration '\(text)' for \(flag) (use e.g. 900s, 15m, 250ms)")
        }
        guard seconds * 1000 <= Double(limit) else {
            throw RequestError("\(flag) \(text) is too long (at most \(limit / 1000) s)")
        }
        return max(1, Int((seconds * 1000).rounded()))
    }

    /// Parses a USD amount such as `0.05` or `$0.05`; refuses anything not positive and finite.
    public static func dollars(_ text: String, flag: String) throws(RequestError) -> Double {
        let t = text.hasPrefix("$") ? String(text.dropFirst()) : text
        guard let v = Double(t), v.isFinite, v > 0 else {
            throw RequestError("invalid amount '\(text)' for \(flag) (use a positive number of USD, e.g. 0.05)")
        }
        return v
    }

    /// Parses a loss value; refuses anything not positive and finite.
    public static func loss(_ text: String, flag: String) throws(RequestError) -> Double {
        guard let v = Double(text), v.isFinite, v > 0 else {
            throw RequestError("invalid loss '\(text)' for \(flag) (use a positive number, e.g. 0.3)")
        }
        return v
    }

    enum CodingKeys: String, CodingKey {
        case dataset, model, hidden, workers, shards, steps, epochs, seed, codec, pull, momentum, faults, schedule
        case function
        case testData = "test_data"
        case batchSize = "batch_size"
        case learningRate = "learning_rate"
        case weightDecay = "weight_decay"
        case chunkElements = "chunk_elements"
        case syntheticExamples = "synthetic_examples"
        case syntheticFeatures = "synthetic_features"
        case syntheticClasses = "synthetic_classes"
        case functionTimeoutMilliseconds = "function_timeout_ms"
        case leaseTimeoutMilliseconds = "lease_timeout_ms"
        case memoryMiB = "memory_mib"
        case priceGBSecond = "price_gb_second"
        case priceRequest = "price_request"
        case checkpointEvery = "checkpoint_every"
        case checkpointDirectory = "checkpoint_dir"
        case retainSeconds = "retain_seconds"
        case deadlineSeconds = "deadline_seconds"
        case budgetUSD = "budget_usd"
        case targetLoss = "target_loss"
        case priceShardHour = "price_shard_hour"
    }
}

/// A request that cannot run, with a message naming the flag or value.
extension TrainingRequest {
    /// The gradient encoding `codec` names; f32 raw when it names none (`validate()` refuses that).
    public var gradientEncoding: GradientEncoding {
        (try? GradientEncoding(parsing: codec)) ?? .dense(.f32, .raw)
    }

    /// The codec of the job's parameter and optimizer blobs (`JobSpec.parameterCodec(for:)`).
    public var parameterCodec: BlobCodec { JobSpec.parameterCodec(for: gradientEncoding) }

    /// Bytes per parameter a worker moves, on average over its push and its pull, before any LZ4:
    /// the gradient's dtype (for top-k, its pairs: a u32 index and a value per kept element) and
    /// the pull copy's dtype, or 4 for f32 pulls. What the planner's step-time prior assumes.
    public var wireBytesPerParameter: Double {
        let push: Double =
            switch gradientEncoding {
            case .dense(let d, _): Double(d.byteWidth)
            case .topK(let f, let d): min(4, f * Double(4 + d.byteWidth))
            }
        let pull = Double(pullEncoding?.dtype.byteWidth ?? 4)
        return (push + pull) / 2
    }

    /// The pull copy the job keeps (`--pull`): by default `PullEncoding.matching` the gradient
    /// encoding; none with `--pull f32`.
    public var pullEncoding: PullEncoding? { try? PullEncoding.chosen(by: pull, for: gradientEncoding) }
}

public struct RequestError: Error, Sendable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

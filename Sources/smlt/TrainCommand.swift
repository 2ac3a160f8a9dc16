import ArgumentParser
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
            Without --redis it starts its own redis-server shards and one parameter server per shard on \
            free loopback ports, and stops them at the end, on error and on Ctrl-C. With --redis it uses \
            those shards and expects `smlt serve` to run for them.
            Datasets: digits (bundled), synthetic, libsvm:PATH, csv:PATH (label first).
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
    @Option(name: .customLong("lr"), help: "Learning rate.") var learningRate: Float = 0.5
    @Option(help: "Momentum.") var momentum: Float = 0.9
    @Option(help: "Weight decay.") var weightDecay: Float = 0
    @Option(help: "Seed for data generation and initial parameters.") var seed: UInt64 = 1
    @Option(help: "Blob codec: raw, lz4 or shuffle-lz4.") var codec = "raw"
    @Option(help: "Parameters per chunk.") var chunkElements = JobSpec.defaultChunkElements
    @Option(help: "Job id (default: a new one per run).") var job: String?
    @Option(help: "Maximum duration of one function invocation, e.g. 900s or 15m.") var functionTimeout = "900s"
    @Option(help: "Memory limit of one function invocation in MiB (billed as configured).") var memory = 1024
    @Option(help: "Price per GB-second of function time, USD.") var priceGbSecond = 0.0000166667
    @Option(help: "Price per function invocation, USD.") var priceRequest = 0.0000002
    @Option(help: "Examples of the synthetic dataset.") var syntheticExamples = 20_000
    @Option(help: "Features of the synthetic dataset.") var syntheticFeatures = 100
    @Option(help: "Classes of the synthetic dataset.") var syntheticClasses = 10
    @Flag(help: "Train in this process with global batch = workers × batch (no Redis), for comparison.") var reference =
        false
    @Option(help: "How long a worker may go without renewing its lease before it is relaunched.")
    var leaseTimeout = "3s"
    @Option(
        help: ArgumentHelp(
            "Inject faults at steps chosen by --seed: worker-kill=K,server-kill=M,worker-hang=H,shard-wipe=S.",
            valueName: "faults"))
    var injectFaults: String?
    @Option(help: "Save a checkpoint every this many steps (0: never); a shard that restarts empty rolls back to it.")
    var checkpointEvery = 100
    @Option(help: "Where checkpoints go (default: a temporary directory removed at the end).")
    var checkpointDir: String?
    @Flag(help: "Print the admin shard and chunk tables before stopping.") var showShards = false
    @Flag(help: "Print one JSON object at the end instead of the summary.") var json = false

    func validate() throws {
        guard workers >= 1 else { throw ValidationError("--workers must be at least 1, got \(workers)") }
        guard workers <= 256 else {
            throw ValidationError("--workers must be at most 256 on one machine, got \(workers)")
        }
        guard shards >= 1 && shards <= 64 else { throw ValidationError("--shards must be from 1 to 64, got \(shards)") }
        guard WorkloadSettings.models.contains(model) else {
            throw ValidationError(
                "unknown model '\(model)' (choose one of: \(WorkloadSettings.models.joined(separator: ", ")))")
        }
        guard BlobCodec(name: codec) != nil else {
            throw ValidationError("unknown codec '\(codec)' (raw, lz4, shuffle-lz4)")
        }
        guard batchSize >= 1 else { throw ValidationError("--batch-size must be at least 1") }
        guard hidden >= 1 else { throw ValidationError("--hidden must be at least 1") }
        guard memory >= 64 else { throw ValidationError("--memory must be at least 64 MiB") }
        guard checkpointEvery >= 0 else { throw ValidationError("--checkpoint-every must not be negative") }
        if let steps, steps < 1 { throw ValidationError("--steps must be at least 1") }
        if let epochs, !(epochs > 0) { throw ValidationError("--epochs must be positive") }
        _ = try parseDuration(functionTimeout)
        _ = try parseDuration(leaseTimeout)
        if let injectFaults {
            guard !reference else { throw ValidationError("--inject-faults does not apply to --reference") }
            let plan = try FaultPlan(injectFaults, steps: steps ?? 300, workers: workers, shards: shards, seed: seed)
            if plan.needsOwnServers && redis.redis != nil {
                throw ValidationError(
                    "server-kill and shard-wipe need the shards and servers smlt train starts (no --redis)")
            }
        }
        _ = try datasetSource()
        if let job { try JobSpec.validateJobName(job) }
    }

    func run() throws {
        let data: (train: Dataset, test: Dataset)
        do { data = try loadData() } catch {
            printError("\(error)")
            throw ExitCode(1)
        }
        let perWorker = (data.train.count + workers - 1) / workers
        let totalSteps =
            steps ?? epochs.map { max(1, Int(($0 * Double(perWorker) / Double(batchSize)).rounded(.up))) } ?? 300
        let settings = WorkloadSettings(
            model: model, hidden: hidden, inputs: data.train.dimension, classes: data.train.classes,
            batchSize: batchSize, seed: seed)
        let plan = TrainingPlan(
            settings: settings, workers: workers, steps: totalSteps, learningRate: learningRate, momentum: momentum,
            weightDecay: weightDecay, train: data.train, test: data.test, checkpointEvery: checkpointEvery)
        let summary: TrainingSummary
        do {
            if reference {
                summary = try ReferenceTrainer(plan: plan).run()
            } else {
                var driver = TrainingDriver(
                    plan: plan, shards: shards, endpoints: try redis.endpointsIfGiven(), options: redis.options,
                    job: job ?? "train-\(getpid())-\(Int(Date().timeIntervalSince1970))",
                    codec: BlobCodec(name: codec)!,
                    chunkElements: chunkElements, functionTimeout: try parseDuration(functionTimeout),
                    memoryMiB: memory,
                    prices: (priceGbSecond, priceRequest), showShards: showShards, json: json)
                driver.leaseTimeout = try parseDuration(leaseTimeout)
                driver.checkpointDirectory = checkpointDir
                if let injectFaults {
                    driver.faults = try FaultPlan(
                        injectFaults, steps: totalSteps, workers: workers, shards: shards, seed: seed)
                }
                summary = try driver.run()
            }
        } catch let e as ExitCode {
            throw e
        } catch {
            // On Ctrl-C the signal handler stops everything and exits; the failures it causes
            // here are not worth reporting.
            while ChildRegistry.isStopping { sleepFor(.seconds(1)) }
            printError("\(error)")
            throw ExitCode(1)
        }
        if json { try printJSON(summary) } else { print(summary.text) }
    }

    enum Source {
        case digits, synthetic
        case libsvm(String)
        case csv(String)
    }

    func datasetSource() throws -> Source {
        switch dataset {
        case "digits": return .digits
        case "synthetic": return .synthetic
        default:
            if dataset.hasPrefix("libsvm:") { return .libsvm(String(dataset.dropFirst(7))) }
            if dataset.hasPrefix("csv:") { return .csv(String(dataset.dropFirst(4))) }
            throw ValidationError("unknown dataset '\(dataset)' (choose digits, synthetic, libsvm:PATH or csv:PATH)")
        }
    }

    func loadData() throws -> (train: Dataset, test: Dataset) {
        switch try datasetSource() {
        case .digits:
            return try DatasetLoader.digits(directory: try dataDirectory() + "/digits")
        case .synthetic:
            let all = DatasetLoader.synthetic(
                examples: syntheticExamples * 5 / 4, dimension: syntheticFeatures, classes: syntheticClasses, seed: seed
            )
            return split(all)
        case .libsvm(let path):
            let train = try DatasetLoader.libsvm(path: path)
            guard let t = testData else { return split(train) }
            let test = try DatasetLoader.libsvm(path: t, dimension: train.dimension, classes: train.classes)
            return (train, test)
        case .csv(let path):
            let train = try DatasetLoader.csv(path: path)
            guard let t = testData else { return split(train) }
            let test = try DatasetLoader.csv(path: t, classes: train.classes)
            guard test.dimension == train.dimension else {
                throw DatasetError("\(t) has \(test.dimension) features, \(path) has \(train.dimension)")
            }
            return (train, test)
        }
    }

    /// The first 80% for training, the rest for testing.
    func split(_ d: Dataset) -> (Dataset, Dataset) {
        let cut = d.count * 4 / 5
        let k = d.dimension
        return (
            Dataset(
                features: Array(d.features[..<(cut * k)]), labels: Array(d.labels[..<cut]), dimension: k,
                classes: d.classes),
            Dataset(
                features: Array(d.features[(cut * k)...]), labels: Array(d.labels[cut...]), dimension: k,
                classes: d.classes)
        )
    }
}

/// The `data/` directory: $SMLT_DATA_DIR, ./data, or next to the checkout the binary was built in.
func dataDirectory() throws -> String {
    let fm = FileManager.default
    if let d = ProcessInfo.processInfo.environment["SMLT_DATA_DIR"] { return d }
    if fm.fileExists(atPath: "data/digits/train.libsvm") { return "data" }
    var dir = URL(fileURLWithPath: currentExecutable()).deletingLastPathComponent()
    for _ in 0..<6 {
        if fm.fileExists(atPath: dir.appendingPathComponent("data/digits/train.libsvm").path) {
            return dir.appendingPathComponent("data").path
        }
        dir = dir.deletingLastPathComponent()
    }
    throw DatasetError("cannot find the data directory (run from the SMLT checkout or set SMLT_DATA_DIR)")
}

/// Parses "900s", "15m", "1.5h", "250ms" or a plain number of seconds.
func parseDuration(_ text: String) throws -> Duration {
    let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)]
    for (suffix, scale) in units where text.hasSuffix(suffix) {
        if let v = Double(text.dropLast(suffix.count)), v > 0 { return .milliseconds(Int(v * scale * 1000)) }
    }
    if let v = Double(text), v > 0 { return .milliseconds(Int(v * 1000)) }
    throw ValidationError("invalid duration '\(text)' (use e.g. 900s, 15m, 250ms)")
}

import ArgumentParser
import Foundation
import FunctionClient
import LocalProcesses
import RedisClient
import Scheduler
import ShardManager
import TensorBlob
import TrainingProtocol
import Workloads

struct WorkerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "The function entry point: train one worker's share of a job, step by step (BSP).",
        discussion: "Reads the job's config and its data partition from Redis, so it needs no shared disk.")

    @OptionGroup var redis: RedisOptionGroup
    @Option(help: "The job id.") var job: String
    @Option(help: "This worker's id, 0..<workers.") var worker: Int
    @Option(help: "This invocation's generation: 0 first, +1 for each relaunch.") var generation = 0
    @Option(help: "Seconds the worker's lease lives without renewal.") var leaseTtl = 3.0

    /// The environment variable a platform sets to the invocation's maximum duration, in ms.
    static let timeLimitVariable = LocalProcessPlatform.timeLimitVariable
    /// The environment variable naming the function's local disk cache (data partitions).
    static let cacheVariable = "SMLT_FUNCTION_CACHE"
    /// Time kept in reserve before the deadline to save progress and exit.
    static let reserve: Duration = .milliseconds(400)

    /// Seconds since the platform started this invocation (exec, runtime and loading included),
    /// when the platform says when that was.
    static func secondsSinceInvoked(_ env: [String: String]) -> Double? {
        guard let text = env[LocalProcessPlatform.invokedAtVariable], let at = Int64(text) else { return nil }
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return Double(Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec) - at) / 1e9
    }

    func run() throws {
        let code: Int32
        do {
            code = try train()
        } catch {
            printError("worker \(worker) of job \(job): \(error)")
            throw ExitCode(1)
        }
        if code != 0 { throw ExitCode(code) }
    }

    /// Trains until the job's last step (exit 0) or until the next step might not fit before the
    /// invocation's time limit: then it saves its progress and exits with `WorkerExit.continueLater`.
    func train() throws -> Int32 {
        let started = ContinuousClock.now
        let env = ProcessInfo.processInfo.environment
        let limit = env[Self.timeLimitVariable].flatMap(Int.init).map { Duration.milliseconds($0) }
        let client = try FunctionClient(
            job: job, worker: worker, endpoints: try redis.endpoints(), options: redis.options)
        let heartbeat = try client.startHeartbeat(ttl: .milliseconds(Int(leaseTtl * 1000)), generation: generation)
        defer { heartbeat.stop() }
        let settings = try WorkloadSettings(client.config.workload)
        let model = try settings.makeModel()
        guard model.parameterCount == client.parameterCount else {
            throw WorkerError(
                "the job's tensors hold \(client.parameterCount) parameters but the \(settings.model) model needs \(model.parameterCount)"
            )
        }
        let expected = model.parameters.map { TensorSpec(name: $0.name, shape: $0.shape) }
        guard expected == client.shards.map.tensors else {
            throw WorkerError(
                "the job's tensor shapes \(client.shards.map.tensors.map(\.shape)) do not match the model's \(expected.map(\.shape))"
            )
        }
        let (partition, warm) = try loadPartition(
            client, inputs: settings.inputs, classes: settings.classes, cache: env[Self.cacheVariable])
        var step = try client.loadProgress()?.nextStep ?? 0
        try client.reportStart(
            StartReport(
                worker: worker, generation: generation, warm: warm,
                seconds: Self.secondsSinceInvoked(env) ?? (ContinuousClock.now - started).seconds))

        var params = [Float](repeating: 0, count: model.parameterCount)
        var gradient = [Float](repeating: 0, count: model.parameterCount)
        var slowest: Duration = .zero
        func stopping(_ next: Int) throws -> Int32 {
            try client.saveProgress(WorkerProgress(nextStep: next, generation: generation))
            return WorkerExit.continueLater
        }
        // The deadline counts from when the platform started the invocation.
        let sinceInvoked = Self.secondsSinceInvoked(env).map { Duration.milliseconds(Int($0 * 1000)) } ?? .zero
        let deadline = limit.map { started - sinceInvoked + $0 }
        let reserve = limit.map { min(Self.reserve, $0 / 5) } ?? .zero
        if let deadline, deadline - ContinuousClock.now < reserve * 2 {
            throw WorkerError(
                "the function time limit of \(limit!) leaves no time for a step after starting (\(sinceInvoked + (ContinuousClock.now - started)))"
            )
        }
        var done = 0
        while step < client.config.steps {
            let stepStart = ContinuousClock.now
            var wait = Duration.seconds(600)
            if let deadline {
                let left = deadline - stepStart - reserve
                // Another step must fit, with room for one as slow as the slowest so far.
                if left <= .zero || (done > 0 && left < slowest * 2) { return try stopping(step) }
                wait = max(left - slowest, .milliseconds(10))
            }
            let versions: (oldest: Int, newest: Int)
            do {
                versions = try params.withUnsafeMutableBufferPointer { p in
                    try client.pull(step: step, into: p, timeout: wait)
                }
            } catch let e as ShardError where deadline != nil && e.redisError?.code == .timedOut {
                return try stopping(step)  // the other workers were too slow for this invocation
            }
            if versions.newest > step {
                // An earlier invocation pushed this step and some shard has moved on: finish that
                // push where it is missing, then continue from the newest version.
                guard try client.completePush(step: step) else {
                    throw WorkerError("step \(step) was half pushed and its gradient is gone from Redis")
                }
                step = versions.newest
                continue
            }
            let (x, y) = partition.batch(step: step, size: settings.batchSize)
            let r = params.withUnsafeBufferPointer { p in
                x.withUnsafeBufferPointer { xs in
                    gradient.withUnsafeMutableBufferPointer {
                        model.lossAndGradient(params: p, features: xs, labels: y, gradient: $0)
                    }
                }
            }
            try client.push(gradient: gradient, step: step)
            try client.report(
                StepMetrics(
                    worker: worker, step: step, loss: r.loss, accuracy: Double(r.correct) / Double(max(1, y.count)),
                    examples: y.count))
            step += 1
            done += 1
            try client.saveProgress(WorkerProgress(nextStep: step, generation: generation))
            slowest = max(slowest, ContinuousClock.now - stepStart)
        }
        return 0
    }

    /// The worker's data partition: from the function's local cache when an earlier invocation
    /// on this machine left it there (a warm start), otherwise from Redis (and then cached).
    func loadPartition(_ client: FunctionClient, inputs: Int, classes: Int, cache: String?) throws -> (Dataset, Bool) {
        let files = cache.map { dir in
            ["x", "y"].map { "\(dir)/\(job)-\(worker)-\($0).blob" }
        }
        var warm = false
        var blobs: [[UInt8]]?
        if let files, let x = FileManager.default.contents(atPath: files[0]),
            let y = FileManager.default.contents(atPath: files[1])
        {
            blobs = [Array(x), Array(y)]
            warm = true
        }
        if blobs == nil {
            guard let xb = try client.object(StagedData.features(worker)),
                let yb = try client.object(StagedData.labels(worker))
            else { throw WorkerError("no data partition staged for worker \(worker)") }
            blobs = [xb, yb]
            if let files, let dir = cache {
                try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
                for (file, bytes) in zip(files, [xb, yb]) {
                    // Written under a temporary name and renamed, so a killed worker leaves no torn file.
                    let tmp = file + ".\(getpid()).tmp"
                    if FileManager.default.createFile(atPath: tmp, contents: Data(bytes)) { rename(tmp, file) }
                }
            }
        }
        // Cached or not, the blobs are checked (checksum, sizes) before use.
        let x = try TensorBlob.decode(blobs![0]).values
        let y = try TensorBlob.decode(blobs![1]).values
        guard inputs > 0, x.count == y.count * inputs else {
            throw WorkerError("staged partition has \(x.count) features for \(y.count) labels of dimension \(inputs)")
        }
        let labels = y.map { Int32($0) }
        guard labels.allSatisfy({ $0 >= 0 && Int($0) < classes }) else {
            throw WorkerError("staged partition has labels outside 0..<\(classes)")
        }
        return (Dataset(features: x, labels: labels, dimension: inputs, classes: classes), warm)
    }
}

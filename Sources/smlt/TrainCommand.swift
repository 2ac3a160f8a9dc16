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
    @OptionGroup var training: TrainingOptionGroup
    @Option(help: "Job id (default: a new one per run).") var job: String?
    @Flag(help: "Continue the job given by --job on the shards given by --redis after its driver died.")
    var resume = false
    @Flag(help: "Train in this process with the same membership (no Redis), for comparison.") var reference = false
    @Flag(help: "Print the admin shard and chunk tables before stopping.") var showShards = false
    @Flag(help: "Print one JSON object at the end instead of the summary.") var json = false
    @Option(
        help: ArgumentHelp(
            "Without --redis: serve each parameter server's Prometheus metrics on loopback, shard i's at PORT+i.",
            valueName: "port"))
    var metricsPort: Int?

    func validate() throws {
        do { _ = try training.request() } catch let e as RequestError { throw ValidationError(e.description) }
        if training.injectFaults != nil && reference {
            throw ValidationError("--inject-faults does not apply to --reference")
        }
        if training.function != nil && reference {
            throw ValidationError("--function does not apply to --reference (it trains in this process)")
        }
        if resume && job == nil { throw ValidationError("--resume needs --job") }
        if reference && (training.deadline != nil || training.budget != nil) {
            throw ValidationError("--deadline and --budget do not apply to --reference")
        }
        if let injectFaults = training.injectFaults, try redis.endpointsIfGiven() != nil,
            (try? FaultPlan(
                injectFaults, steps: training.steps ?? 300, workers: training.workers, shards: training.shards,
                seed: training.seed))?
                .needsOwnServers == true
        {
            throw ValidationError(
                "server-kill and shard-wipe need the shards and servers smlt train starts (no --redis)")
        }
        if try resume && redis.endpointsIfGiven() == nil {
            throw ValidationError("--resume needs --redis: shards smlt train started itself end with it")
        }
        if let job { try JobSpec.validateJobName(job) }
        if let metricsPort {
            guard (1...65535).contains(metricsPort) else {
                throw ValidationError("--metrics-port must be from 1 to 65535, got \(metricsPort)")
            }
            if try redis.endpointsIfGiven() != nil {
                throw ValidationError(
                    "--metrics-port applies to the servers smlt train starts (no --redis); give it to smlt serve")
            }
        }
    }

    func run() throws {
        let request = try training.request()
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
                if let metricsPort {
                    note("parameter servers' metrics: shard i's at http://127.0.0.1:\(metricsPort)+i/metrics")
                }
                let c = Coordinator(
                    request: request, job: jobID,
                    endpoints: try redis.endpointsIfGiven(), options: redis.options, allowed: redis.allowedEndpoints,
                    launch: Coordinator.Launch(
                        worker: [currentExecutable(), "worker"],
                        server: [currentExecutable(), "serve"], metricsPort: metricsPort),
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

import ArgumentParser
import Foundation
import RedisClient
import TrainingProtocol
import WorkerRuntime

struct WorkerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "The function entry point: train one worker's share of a job, step by step (BSP).",
        discussion: """
            Reads its event from SMLT_FUNCTION_EVENT (JSON: job, worker, generation, lease_ms, redis, user), as \
            a scheduler invokes it, or from --job/--worker. Reads the job's config and its data partition from \
            Redis, so it needs no shared disk. Exits 0 when done, 75 to be continued by a new invocation, 65 \
            when the job cannot go on.
            """)

    @OptionGroup var redis: RedisOptionGroup
    @Option(help: "The job id (default: from the event).") var job: String?
    @Option(help: "This worker's id, 0..<workers (default: from the event).") var worker: Int?
    @Option(help: "This invocation's generation: 0 first, +1 for each relaunch.") var generation = 0
    @Option(help: "Seconds the worker's lease lives without renewal.") var leaseTtl = 3.0

    func event() throws -> WorkerEvent {
        let environment = ProcessInfo.processInfo.environment
        if let text = environment[FunctionEnvironment.event] {
            do { return try JSONDecoder().decode(WorkerEvent.self, from: Data(text.utf8)) } catch {
                throw ValidationError("\(FunctionEnvironment.event) is not a valid worker event: \(error)")
            }
        }
        guard let job, let worker else {
            throw ValidationError("give --job and --worker, or the event in \(FunctionEnvironment.event)")
        }
        guard leaseTtl.isFinite, leaseTtl >= 0.1, leaseTtl <= 3600 else {
            throw ValidationError("--lease-ttl must be from 0.1 to 3600 seconds")
        }
        return WorkerEvent(
            job: job, worker: worker, generation: generation, leaseMilliseconds: Int(leaseTtl * 1000),
            redis: try redis.endpoints().map(\.description), user: redis.options.username)
    }

    func run() throws {
        let event = try event()
        var options = redis.options
        if let user = event.user { options.username = user }
        let runtime = WorkerRuntime(event: event, options: options)
        let training = BuiltinTraining(cacheDirectory: ProcessInfo.processInfo.environment[FunctionEnvironment.cache])
        let outcome: WorkerRuntime.Outcome
        do {
            outcome = try runtime.run(prepare: training.prepare, step: training.step)
        } catch {
            printError("worker \(event.worker) of job \(event.job): \(error)")
            throw ExitCode(1)
        }
        if case .stopJob(let why) = outcome { printError("worker \(event.worker) of job \(event.job): \(why)") }
        if outcome.exitCode != 0 { throw ExitCode(outcome.exitCode) }
    }
}

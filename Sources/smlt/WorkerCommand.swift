import ArgumentParser
import BuiltinWorker
import Foundation
import FunctionClient
import RedisClient
import TrainingProtocol

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

    /// Runs the built-in workloads on the FunctionClient SDK, as any Swift worker function does:
    /// flags given by hand become the invocation's environment.
    func run() throws {
        var event = try event()
        if event.user == nil { event.user = redis.options.username }
        var environment = ProcessInfo.processInfo.environment
        environment[FunctionEnvironment.event] = String(decoding: try JSONEncoder().encode(event), as: UTF8.self)
        environment[FunctionEnvironment.password] = redis.options.password
        let outcome: FunctionWorker.Outcome
        do {
            outcome = try FunctionWorker.run(
                environment: environment, prepare: BuiltinWorker.prepare, step: BuiltinWorker.step)
        } catch {
            printError("worker \(event.worker) of job \(event.job): \(error)")
            throw ExitCode(1)
        }
        if case .stopJob(let why) = outcome { printError("worker \(event.worker) of job \(event.job): \(why)") }
        if outcome.exitCode != 0 { throw ExitCode(outcome.exitCode) }
    }
}

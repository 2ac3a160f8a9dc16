import Foundation
import LocalProcesses
public import Planner
import Synchronization
import TrainingProtocol

/// Runs each invocation as a local OS process of a function command (such as `smlt worker`),
/// in its own process group, with an address-space limit (prlimit) and a hard timeout (the
/// timeout's and `kill()`'s SIGKILL go to the whole group, so a function's own child processes
/// end with it, as a serverless platform ends its sandbox). The
/// invocation's event, time limit and start time reach it in its environment
/// (`FunctionEnvironment`), as a serverless runtime hands them to a handler.
public final class LocalProcessPlatform: FunctionPlatform {
    /// The executable and arguments every invocation runs.
    public let command: [String]
    /// Where each invocation's standard error is written (`NAME.log`).
    public let logDirectory: String
    /// Variables every invocation gets besides its event (a password, the local cache).
    public let environment: [String: String]
    public let offer: PlatformOffer

    public init(
        command: [String], logDirectory: String, environment: [String: String] = [:],
        offer: PlatformOffer = LocalProcessPlatform.offer()
    ) {
        precondition(!command.isEmpty, "a function command is needed")
        self.command = command
        self.logDirectory = logDirectory
        self.environment = environment
        self.offer = offer
        try? FileManager.default.createDirectory(
            atPath: logDirectory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    }

    /// What local processes offer: every function shares this machine's cores whatever its
    /// memory (the memory is an address-space limit and the billed size); prices are the
    /// user's, as local processes cost nothing. Start times are priors measured here (a cold
    /// start of `smlt worker` took 0.19–0.27 s); runs measure their own.
    public static func offer(
        cores: Int = ProcessInfo.processInfo.activeProcessorCount, memoryMiB: ClosedRange<Int> = 384...10_240,
        priceGBSecond: Double = 0.0000166667, priceRequest: Double = 0.0000002, timeLimitSeconds: Double = 900
    ) -> PlatformOffer {
        PlatformOffer(
            name: "local", memoryMiB: memoryMiB,
            memoryChoices: [512, 768, 1024, 1769, 2048, 3008, 4096, 6144, 8192, 10_240],
            processors: .shared(cores: max(1, cores)), priceGBSecond: priceGBSecond, priceRequest: priceRequest,
            coldStartSeconds: 0.25, warmStartSeconds: 0.2, timeLimitSeconds: timeLimitSeconds,
            // More processes than this on few cores only wait for each other.
            maxWorkers: max(4, 8 * cores), maxShards: max(1, 2 * cores))
    }

    public func invoke(_ request: FunctionRequest) throws -> any FunctionInvocation {
        let log = "\(logDirectory)/\(request.name).log"
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        env[FunctionEnvironment.event] = request.event
        // Like a serverless context object: the function learns its maximum duration.
        let (seconds, atto) = request.timeout.components
        env[FunctionEnvironment.timeLimit] = "\(seconds * 1000 + atto / 1_000_000_000_000_000)"
        // When the platform started the invocation, so the function can report its start time.
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        env[FunctionEnvironment.invokedAt] = "\(Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec))"
        let (bytes, overflow) = request.memoryMiB.multipliedReportingOverflow(by: 1 << 20)
        guard request.memoryMiB > 0, !overflow else {
            throw PlatformError("\(request.name): a memory limit of \(request.memoryMiB) MiB is out of range")
        }
        let process = try ChildProcess(
            "prlimit", arguments: ["--as=\(bytes)", "--"] + command, environment: env, stdout: .discard,
            stderr: .file(log))
        return LocalInvocation(request: request, process: process, log: log)
    }
}

/// An invocation running as a local process.
public final class LocalInvocation: FunctionInvocation {
    let request: FunctionRequest
    /// The process, for fault injection (SIGKILL, SIGSTOP; send them to its group).
    public let process: ChildProcess
    let log: String
    let started = ContinuousClock.now
    private let outcome = Mutex<InvocationOutcome?>(nil)
    private let killedForTimeout = Atomic<Bool>(false)

    init(request: FunctionRequest, process: ChildProcess, log: String) {
        self.request = request
        self.process = process
        self.log = log
    }

    public var name: String { request.name }

    public func poll() -> InvocationOutcome? {
        if let o = outcome.withLock({ $0 }) { return o }
        let elapsed = ContinuousClock.now - started
        if process.poll() == nil && elapsed > request.timeout {
            killedForTimeout.store(true, ordering: .relaxed)
            process.sendToGroup(SIGKILL)
        }
        guard let status = process.poll() else { return nil }
        let duration = min(ContinuousClock.now - started, max(elapsed, .zero) + .milliseconds(50))
        let seconds = Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
        let tail =
            (try? String(contentsOfFile: log, encoding: .utf8))
            .map { $0.split(separator: "\n").suffix(5).joined(separator: "\n") } ?? ""
        let o = InvocationOutcome(
            name: name, status: status, duration: duration, timedOut: killedForTimeout.load(ordering: .relaxed),
            gbSeconds: Double(request.memoryMiB) / 1024 * seconds, errorTail: tail)
        outcome.withLock { $0 = o }
        return o
    }

    /// Kills the process and its group at once, as a platform ends a function (SIGKILL also
    /// ends a stopped one).
    public func kill() {
        process.sendToGroup(SIGKILL)
        _ = process.wait(timeout: .seconds(5))
    }
}

/// The path of the running executable.
public func currentExecutable() -> String {
    (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
}

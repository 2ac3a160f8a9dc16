import Foundation
import LocalProcesses
import Synchronization
import TrainingProtocol

/// Runs each invocation as a local OS process of a function command (such as `smlt worker`),
/// in its own process group, with an address-space limit (prlimit) and a hard timeout. The
/// invocation's event, time limit and start time reach it in its environment
/// (`FunctionEnvironment`), as a serverless runtime hands them to a handler.
public final class LocalProcessPlatform: FunctionPlatform {
    /// The executable and arguments every invocation runs.
    public let command: [String]
    /// Where each invocation's standard error is written (`NAME.log`).
    public let logDirectory: String
    /// Variables every invocation gets besides its event (a password, the local cache).
    public let environment: [String: String]

    public init(command: [String], logDirectory: String, environment: [String: String] = [:]) {
        precondition(!command.isEmpty, "a function command is needed")
        self.command = command
        self.logDirectory = logDirectory
        self.environment = environment
        try? FileManager.default.createDirectory(
            atPath: logDirectory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
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
    /// The process, for fault injection (SIGKILL, SIGSTOP).
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
            process.send(SIGKILL)
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

    /// Kills the process at once, as a platform ends a function (SIGKILL also ends a stopped one).
    public func kill() {
        process.send(SIGKILL)
        _ = process.wait(timeout: .seconds(5))
    }
}

/// The path of the running executable.
public func currentExecutable() -> String {
    (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
}

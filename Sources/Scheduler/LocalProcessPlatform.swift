import Foundation
import LocalProcesses
import Synchronization

/// Runs each invocation as a local OS process of an executable (the `smlt` binary by default),
/// in its own process group, with an address-space limit (prlimit) and a hard timeout.
public final class LocalProcessPlatform: FunctionPlatform {
    public let executable: String
    /// Where each invocation's standard error is written (`NAME.log`).
    public let logDirectory: String

    public init(executable: String = currentExecutable(), logDirectory: String) {
        self.executable = executable
        self.logDirectory = logDirectory
        try? FileManager.default.createDirectory(atPath: logDirectory, withIntermediateDirectories: true)
    }

    public func invoke(_ request: FunctionRequest) throws -> any FunctionInvocation {
        let log = "\(logDirectory)/\(request.name).log"
        var env = ProcessInfo.processInfo.environment
        for (k, v) in request.environment { env[k] = v }
        let bytes = request.memoryMiB * 1024 * 1024
        let process = try ChildProcess(
            "prlimit", arguments: ["--as=\(bytes)", "--", executable] + request.arguments, environment: env,
            stdout: .discard, stderr: .file(log))
        return LocalInvocation(request: request, process: process, log: log)
    }
}

final class LocalInvocation: FunctionInvocation {
    let request: FunctionRequest
    let process: ChildProcess
    let log: String
    let started = ContinuousClock.now
    private let outcome = Mutex<InvocationOutcome?>(nil)
    private let killedForTimeout = Atomic<Bool>(false)

    init(request: FunctionRequest, process: ChildProcess, log: String) {
        self.request = request
        self.process = process
        self.log = log
    }

    var name: String { request.name }

    func poll() -> InvocationOutcome? {
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

    func kill() {
        process.terminate(grace: .seconds(2))
    }
}

/// The path of the running executable.
public func currentExecutable() -> String {
    (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
}

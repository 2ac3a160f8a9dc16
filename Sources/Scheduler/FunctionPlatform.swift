import LocalProcesses
public import Planner

/// One function invocation to start: what to run and its limits.
public struct FunctionRequest: Sendable {
    /// A name for logs and errors, such as `worker-3`.
    public var name: String
    /// The invocation's event (JSON), as a serverless platform passes its payload.
    public var event: String
    /// The platform kills the invocation after this long, like a serverless timeout.
    public var timeout: Duration
    /// The memory limit in MiB; billing uses it as configured memory.
    public var memoryMiB: Int

    public init(name: String, event: String, timeout: Duration, memoryMiB: Int) {
        self.name = name
        self.event = event
        self.timeout = timeout
        self.memoryMiB = memoryMiB
    }
}

/// How an invocation ended, and what it costs.
public struct InvocationOutcome: Sendable {
    public var name: String
    public var status: ExitStatus
    public var duration: Duration
    /// Killed by the platform at its timeout.
    public var timedOut: Bool
    /// Configured memory (GB) × duration (s), as serverless platforms bill.
    public var gbSeconds: Double
    /// The last lines the function wrote to standard error.
    public var errorTail: String
}

/// A running invocation.
public protocol FunctionInvocation: Sendable {
    var name: String { get }
    /// The outcome once the invocation has ended (enforcing the timeout), without blocking.
    func poll() -> InvocationOutcome?
    /// Stops the invocation.
    func kill()
}

/// Somewhere functions run: local processes today, a serverless platform later.
public protocol FunctionPlatform: Sendable {
    /// What the platform offers (memory, CPU, prices, start times, time limit), for the planner.
    var offer: PlatformOffer { get }
    func invoke(_ request: FunctionRequest) throws -> any FunctionInvocation
}

/// A platform could not start an invocation.
public struct PlatformError: Error, Sendable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

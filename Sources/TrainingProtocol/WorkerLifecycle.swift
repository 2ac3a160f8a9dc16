/// What a worker saves before its invocation ends, so that its next generation resumes exactly
/// where it stopped. Stored as JSON in the job object `state-W`.
public struct WorkerProgress: Codable, Sendable, Equatable {
    /// The first step the next generation runs (it pulls this version).
    public var nextStep: Int
    /// The generation that saved this (0 for the first invocation).
    public var generation: Int
    /// The named object that holds the error-feedback residual to add to step `nextStep`'s
    /// gradient (`ErrorFeedback.objectName`); nil for none (a zero residual).
    public var residual: String?

    public init(nextStep: Int, generation: Int, residual: String? = nil) {
        self.nextStep = nextStep
        self.generation = generation
        self.residual = residual
    }

    enum CodingKeys: String, CodingKey {
        case generation, residual
        case nextStep = "next_step"
    }

    /// The job object that holds worker `w`'s progress.
    public static func objectName(worker w: Int) -> String { "state-\(w)" }
}

/// How long one invocation took to become ready for its first step.
public struct StartReport: Codable, Sendable, Equatable {
    public var worker: Int
    public var generation: Int
    /// Whether the data partition came from the function's local cache instead of Redis.
    public var warm: Bool
    public var seconds: Double

    /// How many start reports the job keeps (older ones are trimmed).
    public static let retained = 10_000

    public init(worker: Int, generation: Int, warm: Bool, seconds: Double) {
        self.worker = worker
        self.generation = generation
        self.warm = warm
        self.seconds = seconds
    }
}

/// Exit codes a worker invocation uses to tell the scheduler what to do next.
public enum WorkerExit {
    /// The invocation stopped before its time limit and saved its progress: invoke the next
    /// generation. (75 is `EX_TEMPFAIL`.)
    public static let continueLater: Int32 = 75
    /// The job cannot go on (its training diverged, or its data is unusable): do not relaunch;
    /// stop the run and show the worker's message. (65 is `EX_DATAERR`.)
    public static let stopJob: Int32 = 65
}

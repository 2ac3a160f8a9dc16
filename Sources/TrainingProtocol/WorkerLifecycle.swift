/// What a worker saves before its invocation ends, so that its next generation resumes exactly
/// where it stopped. Stored as JSON in the job object `state-W`.
public struct WorkerProgress: Codable, Sendable, Equatable {
    /// The first step the next generation runs (it pulls this version).
    public var nextStep: Int
    /// The generation that saved this (0 for the first invocation).
    public var generation: Int

    public init(nextStep: Int, generation: Int) {
        self.nextStep = nextStep
        self.generation = generation
    }

    enum CodingKeys: String, CodingKey {
        case generation
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
}

extension TrainingKeys {
    /// Worker `w`'s lease: set with a TTL by the worker's heartbeat, on shard 0. While it exists
    /// the worker is alive; the scheduler relaunches a worker whose lease expired.
    public func lease(worker w: Int) -> String { "smlt:{\(job)}:lease:\(w)" }
    /// List of `StartReport` JSON, one per invocation, on shard 0.
    public var starts: String { "smlt:{\(job)}:starts" }
}

import Planner

/// A reasonable configuration chosen once by hand and never changed: 8 workers, 2 shards and
/// one vCPU's memory (1,769 MB, or the least size that holds a worker). Ignores the goal.
public struct FixedPolicy: SchedulingPolicy {
    public let name = "fixed"
    public let configuration: Configuration
    var amount: AmountTracker

    public init(_ context: PolicyContext) {
        configuration = Self.configuration(for: context.job, offer: context.offer)
        amount = AmountTracker(job: context.job, amount: context.goal.amount)
    }

    /// The fixed configuration for `job`: 8 workers, 2 shards, 1,769 MB or the least memory
    /// above it that holds a worker.
    public static func configuration(for job: JobShape, offer: PlatformOffer) -> Configuration {
        let memory =
            offer.memoryCandidates(minimum: max(1769, job.minimumMemoryMiB)).first ?? offer.memoryMiB.upperBound
        return Configuration(workers: 8, shards: 2, memoryMiB: memory)
    }

    public mutating func start() -> PolicyStart {
        .run(configuration, totalSteps: amount.totalSteps(at: configuration, step: 0, examples: 0))
    }

    public mutating func observe(_ event: SimulationEvent) { amount.observe(event) }

    public mutating func decide(_ progress: AdaptiveController.Progress) -> PolicyAction? {
        amount.reached ? PolicyAction(configuration: configuration, totalSteps: progress.step) : nil
    }
}

import Planner

/// MLLess's scale-in: start with the fixed configuration and, once the loss curve's knee is
/// passed (the held-out loss improved by less than `threshold` of itself over the last `window`
/// evaluations), remove one worker, at most once per window, while the loss keeps improving that
/// little. Ignores deadlines and budgets; saves money late in training.
public struct ScaleInPolicy: SchedulingPolicy {
    public let name = "scale-in"
    let context: PolicyContext
    public var window = 5
    public var threshold = 0.01
    var amount: AmountTracker
    var current: Configuration
    var losses: [Double] = []
    var lastRemoval = 0

    public init(_ context: PolicyContext) {
        self.context = context
        current = FixedPolicy.configuration(for: context.job, offer: context.offer)
        amount = AmountTracker(job: context.job, amount: context.goal.amount)
    }

    public mutating func start() -> PolicyStart {
        .run(current, totalSteps: amount.totalSteps(at: current, step: 0, examples: 0))
    }

    public mutating func observe(_ event: SimulationEvent) {
        amount.observe(event)
        if case .loss(let l, _) = event { losses.append(l) }
    }

    public mutating func decide(_ progress: AdaptiveController.Progress) -> PolicyAction? {
        if amount.reached { return PolicyAction(configuration: current, totalSteps: progress.step) }
        guard losses.count >= 2 * window, losses.count - lastRemoval >= window, current.workers > 1 else { return nil }
        let then = losses[losses.count - 1 - window]
        let now = losses[losses.count - 1]
        guard (then - now) / now < threshold else { return nil }
        lastRemoval = losses.count
        let w = current.workers - 1
        current = Configuration(workers: w, shards: min(current.shards, w), memoryMiB: current.memoryMiB)
        return PolicyAction(
            configuration: current,
            totalSteps: amount.totalSteps(at: current, step: progress.step, examples: progress.examples))
    }
}

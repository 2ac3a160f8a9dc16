import Planner

/// λDNN's approach: profile the job once (a few steps at the fixed configuration), fit the
/// step-time model to them, enumerate the configurations once with `Planner.choose` for the
/// rest of the job, and never re-plan. A target loss is planned for the planner's prior guess
/// of epochs (it cannot learn the curve), and the run goes on until the loss is reached.
public struct OneShotPolicy: SchedulingPolicy {
    public let name = "one-shot"
    let context: PolicyContext
    var planner: Planner
    let profileConfiguration: Configuration
    /// Steps of the profile.
    public var profileSteps = 5
    var samples: [StepSample] = []
    var planned = false
    var amount: AmountTracker
    var current: Configuration

    public init(_ context: PolicyContext) {
        self.context = context
        planner = Planner(job: context.job, offer: context.offer, shardPrice: context.shardPrice, goal: context.goal)
        profileConfiguration = FixedPolicy.configuration(for: context.job, offer: context.offer)
        current = profileConfiguration
        amount = AmountTracker(job: context.job, amount: context.goal.amount)
    }

    public mutating func start() -> PolicyStart {
        .run(profileConfiguration, totalSteps: amount.totalSteps(at: profileConfiguration, step: 0, examples: 0))
    }

    public mutating func observe(_ event: SimulationEvent) {
        amount.observe(event)
        if case .step(let s) = event, !planned { samples.append(s) }
    }

    public mutating func decide(_ progress: AdaptiveController.Progress) -> PolicyAction? {
        if amount.reached { return PolicyAction(configuration: current, totalSteps: progress.step) }
        guard !planned, progress.step >= profileSteps else { return nil }
        planned = true
        let model = StepTimeModel.fit(samples, prior: context.prior, job: context.job, offer: context.offer)
        let work: Planner.Work
        switch context.goal.amount {
        case .steps(let n): work = .steps(n - progress.step)
        case .epochs(let e): work = .examples(max(0, e * Double(context.job.trainingExamples) - progress.examples))
        case .targetLoss:
            work = .examples(max(0, amount.guessEpochs * Double(context.job.trainingExamples) - progress.examples))
        }
        guard
            let choice = planner.choose(
                work: work, elapsed: progress.elapsedSeconds, spent: progress.spentUSD, current: current, model: model)
        else { return nil }
        current = choice.best.configuration
        return PolicyAction(
            configuration: current,
            totalSteps: amount.totalSteps(at: current, step: progress.step, examples: progress.examples))
    }
}

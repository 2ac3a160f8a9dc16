import Planner

/// The offline optimum: knows the scenario's true constants and loss curve in advance, runs the
/// best static configuration under the noise-free truth (`Simulator.optimalPlan`), and refuses
/// when none meets the goal. Its noise-free cost is the denominator of the cost ratios.
public struct OptimalPolicy: SchedulingPolicy {
    public let name = "optimal"
    public let plan: Simulator.StaticPlan?
    var amount: AmountTracker

    public init(_ scenario: Scenario) {
        plan = Simulator(scenario: scenario, noiseFree: true).optimalPlan()
        amount = AmountTracker(job: scenario.job, amount: scenario.goal.amount)
    }

    public mutating func start() -> PolicyStart {
        guard let plan else { return .refuse("no static configuration meets the goal under the true constants") }
        return .run(plan.configuration, totalSteps: amount.totalSteps(at: plan.configuration, step: 0, examples: 0))
    }

    public mutating func observe(_ event: SimulationEvent) { amount.observe(event) }

    public mutating func decide(_ progress: AdaptiveController.Progress) -> PolicyAction? {
        guard amount.reached, let plan else { return nil }
        return PolicyAction(configuration: plan.configuration, totalSteps: progress.step)
    }
}

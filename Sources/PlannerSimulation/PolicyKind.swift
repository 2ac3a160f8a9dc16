import Planner

/// The six policies of the evaluation, and how each is made for a scenario. Only `optimal` is
/// given the scenario's truth; the others get what a real run's planner gets.
public enum PolicyKind: String, CaseIterable, Sendable, Codable {
    case smlt
    case fixed
    case oneShot = "one-shot"
    case bayesOpt = "bo-1d"
    case scaleIn = "scale-in"
    case optimal

    /// What a policy is told about `scenario`: its job and goal, Lambda's published offer, the
    /// shard price and the prior step-time model from the nominal constants.
    public static func context(for scenario: Scenario) -> PolicyContext {
        PolicyContext(
            job: scenario.job, goal: scenario.goal, offer: scenario.offer, shardPrice: scenario.shardPrice,
            prior: Calibration.priorModel(for: scenario.offer))
    }

    /// This policy, new, for `scenario`.
    public func make(for scenario: Scenario) -> any SchedulingPolicy {
        let context = Self.context(for: scenario)
        switch self {
        case .smlt: return SMLTPolicy(context)
        case .fixed: return FixedPolicy(context)
        case .oneShot: return OneShotPolicy(context)
        case .bayesOpt: return BayesOptPolicy(context, seed: scenario.seed ^ 0xB0)
        case .scaleIn: return ScaleInPolicy(context)
        case .optimal: return OptimalPolicy(scenario)
        }
    }

    /// Runs this policy on `scenario`.
    public func run(on scenario: Scenario, noiseFree: Bool = false) -> Simulator.Outcome {
        var policy = make(for: scenario)
        return Simulator(scenario: scenario, noiseFree: noiseFree).run(&policy)
    }
}

/// One policy's results over a scenario set, as `smlt-bench schedule` reports them.
public struct PolicyRow: Sendable, Codable, Equatable {
    public var policy: String
    /// Scenarios where `optimal` finds a static configuration meeting the goal.
    public var feasible: Int
    /// Among feasible scenarios with a deadline: the share the policy finished in time (a
    /// refusal or an unfinished run is a miss).
    public var deadlineHitRate: Double
    /// Among scenarios with a budget that the policy ran: how many spent more than the budget.
    public var budgetViolations: Int
    /// The policy's simulated cost over optimal's noise-free cost, over the feasible scenarios
    /// the policy ran to the end: median and 90th percentile.
    public var costVsOptimalMedian: Double
    public var costVsOptimalP90: Double
    /// Configuration changes after the launch, per scenario the policy ran (mean).
    public var reconfigurations: Double
    /// Scenarios the policy refused.
    public var refused: Int

    enum CodingKeys: String, CodingKey {
        case policy, feasible, refused, reconfigurations
        case deadlineHitRate = "deadline_hit_rate"
        case budgetViolations = "budget_violations"
        case costVsOptimalMedian = "cost_vs_optimal_median"
        case costVsOptimalP90 = "cost_vs_optimal_p90"
    }
}

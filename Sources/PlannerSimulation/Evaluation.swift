import Foundation
import Planner

/// Runs every policy on every scenario and summarises each policy in a `PolicyRow`.
public struct Evaluation: Sendable {
    public var scenarios: [Scenario]
    public var policies: [PolicyKind]

    public init(scenarios: [Scenario], policies: [PolicyKind] = PolicyKind.allCases) {
        self.scenarios = scenarios
        self.policies = policies
    }

    /// One scenario's results: optimal's noise-free plan (nil when infeasible) and each policy's
    /// simulated outcome.
    public struct ScenarioResult: Sendable {
        public var scenario: Scenario
        public var optimal: Simulator.StaticPlan?
        public var outcomes: [PolicyKind: Simulator.Outcome]
    }

    /// Runs everything (one scenario after another).
    public func results() -> [ScenarioResult] {
        scenarios.map { s in
            var outcomes: [PolicyKind: Simulator.Outcome] = [:]
            for p in policies { outcomes[p] = p.run(on: s) }
            return ScenarioResult(
                scenario: s, optimal: Simulator(scenario: s, noiseFree: true).optimalPlan(), outcomes: outcomes)
        }
    }

    /// The summary rows, one per policy, in `policies` order.
    public static func rows(_ results: [ScenarioResult], policies: [PolicyKind] = PolicyKind.allCases) -> [PolicyRow] {
        let feasible = results.filter { $0.optimal != nil }
        return policies.map { p in
            var hits = 0
            var deadlines = 0
            var violations = 0
            var ratios: [Double] = []
            var reconfigurations = 0
            var ran = 0
            var refused = 0
            for r in results {
                guard let o = r.outcomes[p] else { continue }
                if o.ran {
                    ran += 1
                    reconfigurations += o.reconfigurations
                    if let b = r.scenario.goal.budgetUSD, o.costUSD > b { violations += 1 }
                } else {
                    refused += 1
                }
            }
            for r in feasible {
                guard let o = r.outcomes[p], let best = r.optimal else { continue }
                if let d = r.scenario.goal.deadlineSeconds {
                    deadlines += 1
                    if o.ran && o.completed && o.seconds <= d { hits += 1 }
                }
                if o.ran && o.completed { ratios.append(o.costUSD / best.costUSD) }
            }
            return PolicyRow(
                policy: p.rawValue, feasible: feasible.count,
                deadlineHitRate: deadlines > 0 ? Double(hits) / Double(deadlines) : 0, budgetViolations: violations,
                costVsOptimalMedian: quantile(ratios, 0.5), costVsOptimalP90: quantile(ratios, 0.9),
                reconfigurations: ran > 0 ? Double(reconfigurations) / Double(ran) : 0, refused: refused)
        }
    }

    /// The `q` quantile of `values` (linear between order statistics; 0 when empty).
    public static func quantile(_ values: [Double], _ q: Double) -> Double {
        guard !values.isEmpty else { return 0 }
        let v = values.sorted()
        let pos = q * Double(v.count - 1)
        let lo = Int(pos.rounded(.down))
        let hi = min(v.count - 1, lo + 1)
        return v[lo] + (v[hi] - v[lo]) * (pos - Double(lo))
    }
}

import Planner
import PlannerSimulation
import Testing

/// The simulator, the policies and the evaluation.
struct SimulatorTests {
    let generator = ScenarioGenerator(seed: 7)

    @Test func runsAreDeterministicForASeed() {
        let a = generator.scenarios(6)
        let b = ScenarioGenerator(seed: 7).scenarios(6)
        for (x, y) in zip(a, b) {
            #expect(x.job == y.job && x.goal == y.goal && x.truth == y.truth && x.seed == y.seed)
            for p in [PolicyKind.smlt, .bayesOpt, .scaleIn] {
                #expect(p.run(on: x) == p.run(on: y))
            }
        }
        let other = ScenarioGenerator(seed: 8).scenarios(6)
        #expect(zip(a, other).contains { $0.job != $1.job || $0.truth != $1.truth })
    }

    @Test func noiseFreeLoopMatchesTheClosedForm() throws {
        for s in generator.scenarios(12) {
            let sim = Simulator(scenario: s, noiseFree: true)
            let context = PolicyKind.context(for: s)
            var fixed = FixedPolicy(context)
            let outcome = sim.run(&fixed)
            let plan = try #require(sim.staticPlan(fixed.configuration))
            #expect(outcome.completed)
            #expect(outcome.steps == plan.steps)
            #expect(abs(outcome.seconds / plan.seconds - 1) < 1e-6, "\(s.summary)")
            #expect(abs(outcome.costUSD / plan.costUSD - 1) < 1e-6, "\(s.summary)")
        }
    }

    @Test func optimalIsNeverBeatenWhenItRunsNoiseFree() {
        for s in generator.scenarios(12) {
            let sim = Simulator(scenario: s, noiseFree: true)
            guard let best = sim.optimalPlan() else { continue }
            var optimal = OptimalPolicy(s)
            let run = sim.run(&optimal)
            #expect(run.completed)
            #expect(abs(run.costUSD / best.costUSD - 1) < 1e-6)
            // No static configuration that meets the goal noise-free is cheaper (deadline) or
            // faster (budget only).
            for p in [PolicyKind.fixed, .oneShot] {
                let o = p.run(on: s, noiseFree: true)
                guard o.completed, o.reconfigurations == 0 else { continue }
                let meets =
                    (s.goal.deadlineSeconds.map { o.seconds <= $0 } ?? true)
                    && (s.goal.budgetUSD.map { o.costUSD <= $0 } ?? true)
                guard meets else { continue }
                if s.goal.deadlineSeconds != nil {
                    #expect(o.costUSD >= best.costUSD * (1 - 1e-9), "\(p.rawValue) on \(s.summary)")
                } else {
                    #expect(o.seconds >= best.seconds * (1 - 1e-9), "\(p.rawValue) on \(s.summary)")
                }
            }
        }
    }

    @Test func smallEvaluationHasSixRows() {
        let evaluation = Evaluation(scenarios: generator.scenarios(20))
        let rows = Evaluation.rows(evaluation.results())
        #expect(rows.map(\.policy) == ["smlt", "fixed", "one-shot", "bo-1d", "scale-in", "optimal"])
        for r in rows {
            #expect(r.feasible > 0 && r.feasible <= 20)
            #expect((0...1).contains(r.deadlineHitRate))
            #expect(r.costVsOptimalMedian > 0)
        }
        #expect(rows.first { $0.policy == "fixed" }!.reconfigurations == 0)
    }

    @Test func gaussianProcessInterpolatesItsPoints() {
        var gp = GaussianProcess()
        let xs = [0.0, 0.3, 0.6, 1.0]
        let ys = [1.0, 3.0, 2.0, 0.5]
        gp.fit(xs: xs, ys: ys)
        for (x, y) in zip(xs, ys) {
            let p = gp.predict(x)
            #expect(abs(p.mean - y) < 0.1)
            #expect(p.sd < 0.2)
        }
        #expect(gp.predict(0.45).sd > gp.predict(0.3).sd)
    }

    @Test func maxOfLognormalsMatchesItsExpectation() {
        var rng = SimRandom(seed: 3)
        let n = 20_000
        let mean = (0..<n).reduce(0.0) { s, _ in s + rng.maxLognormalFactor(of: 16, sigma: 0.2) } / Double(n)
        let expected = SimRandom.expectedMaxLognormalFactor(of: 16, sigma: 0.2)
        #expect(abs(mean / expected - 1) < 0.01)
        #expect(expected > 1.2)
    }
}

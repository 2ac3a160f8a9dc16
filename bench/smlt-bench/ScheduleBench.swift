import ArgumentParser
import Foundation
import LocalProcesses
import Planner
import PlannerSimulation
import Workloads

/// `smlt-bench schedule`: the planner against the published approaches on simulated scenarios.
struct ScheduleBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "schedule",
        abstract:
            "Runs SMLT's planner and five baselines (fixed, one-shot, bo-1d, scale-in, optimal) on simulated serverless scenarios.",
        discussion: "The simulator and its calibration are described in docs/scheduling.md.")

    @Option(help: "Number of scenarios.") var scenarios = 200
    @Option(help: "Seed of the scenario set and of the runs' noise.") var seed: UInt64 = 1
    @Option(help: "USD per shard-hour.") var shardPrice = 0.03
    @Option(
        help:
            "Least seconds of a scenario's reference run (the fixed configuration, noise-free); shorter amounts are doubled. 0 keeps them as drawn."
    )
    var minReferenceSeconds = 60.0
    @Flag(help: "Print one JSON array, one object per policy.") var json = false
    @Option(help: "Write the rows as CSV to this path.") var csv: String?
    @Option(help: "Write an SVG bar chart (deadline hit rate and median cost ratio per policy) to this path.")
    var chart: String?
    @Option(help: "Write one line per scenario and policy to this path (for inspection).") var details: String?
    @Option(help: "Print SMLT's decisions on this scenario (its id) and exit.") var trace: Int?
    @Option(
        help:
            "Print the simulator's step seconds on this machine (the local calibration) for these WxK configurations, e.g. 1x1,2x1,4x2, and exit."
    ) var predictLocal: String?
    @Option(help: "Parameters for --predict-local.") var localParameters = 7114
    @Option(help: "Examples per worker per step for --predict-local.") var localBatch = 16
    @Flag(help: "Measure the compute constant of the bundled models on this machine and exit.") var calibrate = false

    func validate() throws {
        guard scenarios >= 1 else { throw ValidationError("--scenarios must be at least 1, got \(scenarios)") }
        guard shardPrice >= 0 else { throw ValidationError("--shard-price must not be negative") }
    }

    func run() throws {
        if calibrate { return measureCompute() }
        if let predictLocal { return try self.predictLocal(predictLocal) }
        let generator = ScenarioGenerator(
            seed: seed, shardPrice: ShardPrice(perHourUSD: shardPrice), minimumReferenceSeconds: minReferenceSeconds)
        if let trace { return self.trace(generator.scenario(trace)) }
        let evaluation = Evaluation(scenarios: generator.scenarios(scenarios))
        let results = evaluation.results()
        let rows = Evaluation.rows(results)
        if let details { try write(details: results, to: details) }
        if let csv { try write(csv: rows, to: csv) }
        if let chart {
            try ScheduleChart(rows: rows, scenarios: scenarios, seed: seed).svg().write(
                toFile: chart, atomically: true, encoding: .utf8)
        }
        if json {
            let e = JSONEncoder()
            e.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try e.encode(rows), as: UTF8.self))
            return
        }
        print("\(scenarios) scenarios (seed \(seed)), \(rows.first?.feasible ?? 0) feasible:")
        print(
            "  policy      hit rate  budget violations  cost/optimal median  p90   reconfigurations/run  refused")
        for r in rows {
            print(
                "  " + r.policy.padding(toLength: 10, withPad: " ", startingAt: 0)
                    + String(
                        format: "  %8.3f  %17d  %19.3f  %5.2f  %20.2f  %7d", r.deadlineHitRate, r.budgetViolations,
                        r.costVsOptimalMedian, r.costVsOptimalP90, r.reconfigurations, r.refused))
        }
    }

    func write(csv rows: [PolicyRow], to path: String) throws {
        var out =
            "policy,feasible,deadline_hit_rate,budget_violations,cost_vs_optimal_median,cost_vs_optimal_p90,reconfigurations,refused\n"
        for r in rows {
            out +=
                [
                    r.policy, "\(r.feasible)", fmt(r.deadlineHitRate, 4), "\(r.budgetViolations)",
                    fmt(r.costVsOptimalMedian, 4), fmt(r.costVsOptimalP90, 4), fmt(r.reconfigurations, 3),
                    "\(r.refused)",
                ].joined(separator: ",") + "\n"
        }
        try out.write(toFile: path, atomically: true, encoding: .utf8)
    }

    func write(details results: [Evaluation.ScenarioResult], to path: String) throws {
        var out = ""
        for r in results {
            let best =
                r.optimal.map {
                    String(format: "optimal %@ %.1f s $%.6f", $0.configuration.description, $0.seconds, $0.costUSD)
                } ?? "infeasible"
            let fastest =
                Simulator(scenario: r.scenario, noiseFree: true).fastestPlan().map {
                    String(format: " | fastest %.1f s", $0.seconds)
                } ?? ""
            out += "\(r.scenario.summary) | \(best)\(fastest)\n"
            for p in PolicyKind.allCases {
                guard let o = r.outcomes[p] else { continue }
                if let refusal = o.refusal {
                    out += "  \(p.rawValue): refused: \(refusal)\n"
                    continue
                }
                out += String(
                    format: "  %@: %.1f s $%.6f%@ %d steps, %d reconfigurations, ends at %@\n", p.rawValue, o.seconds,
                    o.costUSD, o.completed ? "" : " (unfinished)", o.steps, o.reconfigurations,
                    o.finalConfiguration?.description ?? "-")
            }
        }
        try out.write(toFile: path, atomically: true, encoding: .utf8)
    }

    /// The noise-free step seconds the local calibration predicts for `smlt train` runs.
    func predictLocal(_ list: String) throws {
        let truth = Calibration.local
        let job = JobShape(
            parameters: localParameters, batchPerWorker: localBatch, trainingExamples: 20_000, minimumMemoryMiB: 128)
        for item in list.split(separator: ",") {
            let parts = item.split(separator: "x").compactMap { Int($0) }
            guard parts.count == 2, parts[0] >= 1, parts[1] >= 1 else {
                throw ValidationError("--predict-local takes WxK items such as 4x2, got '\(item)'")
            }
            let c = Configuration(workers: parts[0], shards: parts[1], memoryMiB: 1024)
            let compute = truth.meanCompute(c, job: job) * truth.expectedSlowestFactor(workers: c.workers)
            let comm = truth.communication(c, job: job)
            print(
                String(
                    format:
                        "%d workers, %d shards, %d parameters, batch %d: step %.2f ms (compute %.2f ms, the rest %.2f ms)",
                    c.workers, c.shards, localParameters, localBatch, (compute + comm) * 1000, compute * 1000,
                    comm * 1000))
        }
    }

    /// SMLT's decisions on one scenario, against optimal's plan.
    func trace(_ scenario: Scenario) {
        print(scenario.summary)
        let sim = Simulator(scenario: scenario)
        if let best = Simulator(scenario: scenario, noiseFree: true).optimalPlan() {
            print(
                String(
                    format: "optimal: %@, %d steps, %.1f s, $%.6f", best.configuration.description, best.steps,
                    best.seconds, best.costUSD))
        } else {
            print("optimal: infeasible")
        }
        var policy = SMLTPolicy(PolicyKind.context(for: scenario))
        let outcome = sim.run(&policy)
        if let d = policy.controller.initial {
            print(
                String(
                    format: "initial: %@, %d steps, predicted %.1f s, $%.6f", d.configuration.description, d.totalSteps,
                    d.prediction.seconds, d.prediction.costUSD))
        }
        for r in policy.controller.replans {
            print(
                String(
                    format: "step %d: %@ -> %@, total %d steps, predicted total %.1f s, $%.6f", r.step,
                    r.decision.reason,
                    r.decision.configuration.description, r.decision.totalSteps, r.predictedTotalSeconds,
                    r.predictedTotalCostUSD))
        }
        print(
            String(
                format: "outcome: %.1f s, $%.6f, %d steps%@%@", outcome.seconds, outcome.costUSD, outcome.steps,
                outcome.completed ? "" : " (unfinished)", outcome.refusal.map { " refused: " + $0 } ?? ""))
        print("model: \(policy.controller.model)")
        print(
            "learned cold start \(policy.controller.planner.offer.coldStartSeconds) s (truth mean \(scenario.truth.coldStartSeconds) s)"
        )
        if let c = policy.controller.convergence { print("convergence: \(c)") }
    }

    /// Times the bundled models' gradient on one core: seconds per example × parameter.
    func measureCompute() {
        let data = DatasetLoader.synthetic(examples: 4096, dimension: 100, classes: 10, seed: 1)
        let models: [(String, any Model)] = [
            ("softmax", SoftmaxRegression(inputs: 100, classes: 10)),
            ("mlp", MLP(inputs: 100, hidden: 64, classes: 10)),
            ("mlp-256", MLP(inputs: 100, hidden: 256, classes: 10)),
        ]
        for (name, model) in models {
            let params = model.initialParameters(seed: 1)
            for batch in [16, 64] {
                var best = Double.infinity
                for _ in 0..<5 {
                    let start = ContinuousClock.now
                    var sink = 0.0
                    for step in 0..<200 {
                        let b = data.batch(step: step, size: batch)
                        sink += model.lossAndGradient(params: params, features: b.features, labels: b.labels).loss
                    }
                    let seconds = (ContinuousClock.now - start).seconds / 200
                    if sink.isFinite { best = min(best, seconds) }
                }
                let perUnit = best / Double(batch * model.parameterCount)
                print(
                    "\(name): \(model.parameterCount) parameters, batch \(batch): \(String(format: "%.3f", best * 1000)) ms per gradient, \(String(format: "%.3g", perUnit)) s per example x parameter"
                )
            }
        }
    }
}

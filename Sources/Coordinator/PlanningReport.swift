import Foundation
import Planner

/// A re-plan as a run reports it: the controller's record, and the run's actual totals to set
/// against its prediction.
public struct ReplanRecord: Codable, Sendable {
    public var step: Int
    public var decision: AdaptiveController.Decision
    public var predictedTotalSeconds: Double
    public var predictedTotalCostUSD: Double
    public var actualTotalSeconds: Double
    public var actualTotalCostUSD: Double

    enum CodingKeys: String, CodingKey {
        case step, decision
        case predictedTotalSeconds = "predicted_total_seconds"
        case predictedTotalCostUSD = "predicted_total_cost_usd"
        case actualTotalSeconds = "actual_total_seconds"
        case actualTotalCostUSD = "actual_total_cost_usd"
    }
}

extension TrainingSummary {
    /// Fills the planning fields of a run with a deadline or a budget.
    mutating func addPlanning(request: TrainingRequest, controller: AdaptiveController, spentUSD: Double) {
        deadlineSeconds = request.deadlineSeconds
        budgetUSD = request.budgetUSD
        targetLoss = request.targetLoss
        plan = controller.initial
        replans = controller.replans.map {
            ReplanRecord(
                step: $0.step, decision: $0.decision, predictedTotalSeconds: $0.predictedTotalSeconds,
                predictedTotalCostUSD: $0.predictedTotalCostUSD, actualTotalSeconds: wallSeconds,
                actualTotalCostUSD: spentUSD)
        }
        deadlineMet = request.deadlineSeconds.map { wallSeconds <= $0 }
        budgetUsedUSD = spentUSD
        stepTimeModel = controller.model
    }

    /// The planning lines of the text summary.
    var planningText: String {
        guard let plan else { return "" }
        let goal = [
            deadlineSeconds.map { "deadline \(String(format: "%.1f", $0)) s" },
            budgetUSD.map { "budget $\(String(format: "%.6f", $0))" },
            targetLoss.map { "target loss \($0)" },
        ].compactMap { $0 }.joined(separator: ", ")
        var lines = [
            "goal             \(goal)",
            "plan             \(plan.configuration), \(plan.totalSteps) steps; predicted \(String(format: "%.1f", plan.prediction.seconds)) s, $\(String(format: "%.6f", plan.prediction.costUSD))",
        ]
        let kept = (replans ?? []).filter { $0.decision.reason == "keep" }
        if let last = kept.last {
            lines.append(
                "re-plans kept    \(kept.count), the last at step \(last.step) predicting \(String(format: "%.1f", last.predictedTotalSeconds)) s, $\(String(format: "%.6f", last.predictedTotalCostUSD)) in all"
            )
        }
        for r in replans ?? [] where r.decision.reason != "keep" {
            lines.append(
                "re-plan          step \(r.step) (\(r.decision.reason)): \(r.decision.configuration), \(r.decision.totalSteps) steps; predicted total \(String(format: "%.1f", r.predictedTotalSeconds)) s, $\(String(format: "%.6f", r.predictedTotalCostUSD))"
            )
        }
        if let deadlineMet { lines.append("deadline met     \(deadlineMet ? "yes" : "no")") }
        if let budgetUsedUSD { lines.append("budget used      $\(String(format: "%.6f", budgetUsedUSD))") }
        return "\n" + lines.map { "  " + $0 }.joined(separator: "\n")
    }
}

/// What `smlt plan` shows: the plan a run with this request would start with, without running.
public struct PlanPreview: Codable, Sendable {
    public var deadlineSeconds: Double?
    public var budgetUSD: Double?
    public var plan: AdaptiveController.Decision
    /// The platform the plan is for.
    public var platform: PlatformOffer
    /// The step-time model before any step (compute timed in this process, communication from
    /// priors).
    public var stepTimeModel: StepTimeModel
    /// Predicted seconds of one step at the plan.
    public var stepSeconds: Double
    /// Set when the plan is predicted to miss the goal but close enough to start (the priors
    /// may be that far off; a run re-plans from measurements).
    public var warning: String?

    public var text: String {
        """
        plan             \(plan.configuration), \(plan.totalSteps) steps
        predicted        \(String(format: "%.1f", plan.prediction.seconds)) s of training, $\(String(format: "%.6f", plan.prediction.costUSD)) (\(String(format: "%.2f", stepSeconds * 1000)) ms per step)
        goal             \([deadlineSeconds.map { "deadline \(String(format: "%.1f", $0)) s" }, budgetUSD.map { "budget $\(String(format: "%.6f", $0))" }].compactMap { $0 }.joined(separator: ", "))
        platform         \(platform.name), \(platform.maxWorkers) workers and \(platform.maxShards) shards at most
        """ + (warning.map { "\nwarning          \($0)" } ?? "")
    }

    enum CodingKeys: String, CodingKey {
        case plan, platform
        case deadlineSeconds = "deadline_seconds"
        case budgetUSD = "budget_usd"
        case stepTimeModel = "step_time_model"
        case stepSeconds = "step_seconds"
        case warning
    }
}

extension Coordinator {
    /// The plan `run()` would start `request` with (it needs `--deadline` or `--budget`), or the
    /// `PlanError` it would refuse it with; `shards` fixes the number of shards (given ones).
    public static func preview(_ request: TrainingRequest, shards: Int? = nil) throws -> PlanPreview {
        try request.validate()
        guard request.isPlanned else { throw RequestError("smlt plan needs a goal: --deadline, --budget or both") }
        let start = ContinuousClock.now
        let data = try TrainingData.load(request)
        let session = try PlanningSession(
            request: request, train: data.train, test: data.test, shards: shards, started: start)
        let c = session.controller
        return PlanPreview(
            deadlineSeconds: request.deadlineSeconds, budgetUSD: request.budgetUSD, plan: session.initial,
            platform: session.offer, stepTimeModel: c.model,
            stepSeconds: c.model.step(session.initial.configuration, job: c.planner.job, offer: c.planner.offer),
            warning: session.warning)
    }
}

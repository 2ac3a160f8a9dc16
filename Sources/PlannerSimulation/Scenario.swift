import Foundation
import Planner

/// One job to schedule: what the planner is told (the job's shape, the goal, the platform's
/// offer and prices) and what only the simulator knows (the platform's and the loss curve's
/// true constants).
public struct Scenario: Sendable {
    public var id: Int
    public var job: JobShape
    public var goal: Goal
    public var shardPrice: ShardPrice
    /// The platform as the planner is told it (Lambda's published offer).
    public var offer: PlatformOffer
    public var truth: PlatformTruth
    public var convergence: ConvergenceTruth
    /// The seed of this scenario's run-time noise.
    public var seed: UInt64

    public init(
        id: Int, job: JobShape, goal: Goal, shardPrice: ShardPrice, offer: PlatformOffer, truth: PlatformTruth,
        convergence: ConvergenceTruth, seed: UInt64
    ) {
        self.id = id
        self.job = job
        self.goal = goal
        self.shardPrice = shardPrice
        self.offer = offer
        self.truth = truth
        self.convergence = convergence
        self.seed = seed
    }

    /// A short description for logs: amount, goal and size.
    public var summary: String {
        let amount: String
        switch goal.amount {
        case .steps(let n): amount = "\(n) steps"
        case .epochs(let e): amount = String(format: "%.2f epochs", e)
        case .targetLoss(let l): amount = String(format: "loss %.4f", l)
        }
        var parts = ["#\(id)", "P=\(job.parameters)", "b=\(job.batchPerWorker)", "N=\(job.trainingExamples)", amount]
        if let d = goal.deadlineSeconds { parts.append(String(format: "deadline %.1f s", d)) }
        if let b = goal.budgetUSD { parts.append(String(format: "budget $%.4f", b)) }
        return parts.joined(separator: " ")
    }
}

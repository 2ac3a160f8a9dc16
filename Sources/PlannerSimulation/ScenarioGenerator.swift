import Foundation
import Planner

/// Draws evaluation scenarios from a seed: model sizes log-uniform from 10^4 to 10^8 parameters,
/// several data sizes and per-worker batches, an amount in steps, epochs or a target loss, and
/// a deadline, a budget or both between 0.5× and 1.5× the fixed configuration's noise-free time
/// and cost (so some scenarios are infeasible).
public struct ScenarioGenerator: Sendable {
    public var seed: UInt64
    public var shardPrice: ShardPrice
    public var nominal: PlatformTruth
    public var offer: PlatformOffer

    public init(
        seed: UInt64, shardPrice: ShardPrice = ShardPrice(perHourUSD: 0.03),
        nominal: PlatformTruth = Calibration.lambda,
        offer: PlatformOffer = .awsLambda()
    ) {
        self.seed = seed
        self.shardPrice = shardPrice
        self.nominal = nominal
        self.offer = offer
    }

    /// The first `count` scenarios of this seed (scenario i is the same whatever the count).
    public func scenarios(_ count: Int) -> [Scenario] {
        (0..<count).map { scenario($0) }
    }

    /// Scenario `id` of this seed.
    public func scenario(_ id: Int) -> Scenario {
        var rng = SimRandom(seed: seed).fork(UInt64(id) &+ 1)
        let parameters = Int(rng.logUniform(1e4, 1e8))
        let examples = rng.pick([10_000, 50_000, 200_000, 1_000_000])
        let batch = rng.pick([16, 32, 64, 128])
        // Parameters, gradient, momentum and a pulled copy in float32, plus the runtime.
        let minimumMemory = 160 + Int(Double(parameters) * 16 / 1_048_576)
        let job = JobShape(
            parameters: parameters, batchPerWorker: batch, trainingExamples: examples, minimumMemoryMiB: minimumMemory)
        let truth = PlatformTruth.drawn(around: nominal, using: &rng)
        let initial = log(Double(rng.pick([2, 10, 100])))
        var convergence = ConvergenceTruth(
            initialLoss: initial, floorLoss: initial * rng.uniform(0.02, 0.3),
            halfExamples: Double(examples) * rng.logUniform(0.03, 1), noiseBatch: rng.logUniform(64, 8192),
            evaluationNoise: rng.uniform(0.003, 0.015), evaluationInterval: 1)
        let fixed = FixedPolicy.configuration(for: job, offer: offer)
        let fixedBatch = fixed.workers * batch
        let amount: TrainingAmount
        let referenceSteps: Int
        switch rng.uniform() {
        case ..<0.33:
            referenceSteps = Int(rng.logUniform(100, 4000))
            amount = .steps(referenceSteps)
        case ..<0.67:
            let epochs = rng.logUniform(0.3, 4)
            amount = .epochs(epochs)
            referenceSteps = Int((epochs * Double(examples) / Double(fixedBatch)).rounded(.up))
        default:
            let epochs = rng.logUniform(0.3, 3)
            referenceSteps = max(20, Int((epochs * Double(examples) / Double(fixedBatch)).rounded(.up)))
            let effective = Double(referenceSteps) * convergence.effectiveExamples(perStepOf: fixedBatch)
            amount = .targetLoss(convergence.loss(effective: effective))
        }
        convergence.evaluationInterval = max(2, referenceSteps / 60)
        var scenario = Scenario(
            id: id, job: job, goal: Goal(amount: amount), shardPrice: shardPrice, offer: offer, truth: truth,
            convergence: convergence, seed: rng.next())
        let reference = Simulator(scenario: scenario, noiseFree: true).staticPlan(fixed)!
        switch rng.uniform() {
        case ..<0.4: scenario.goal.deadlineSeconds = reference.seconds * rng.uniform(0.5, 1.5)
        case ..<0.7: scenario.goal.budgetUSD = reference.costUSD * rng.uniform(0.5, 1.5)
        default:
            scenario.goal.deadlineSeconds = reference.seconds * rng.uniform(0.5, 1.5)
            scenario.goal.budgetUSD = reference.costUSD * rng.uniform(0.5, 1.5)
        }
        return scenario
    }
}

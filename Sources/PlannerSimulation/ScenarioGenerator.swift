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
    /// The least seconds the fixed configuration's noise-free run of a scenario takes: shorter
    /// amounts are doubled until it does. A training job of a few seconds is a draw of its cold
    /// starts, not a scheduling problem; 0 keeps every amount as drawn.
    public var minimumReferenceSeconds: Double

    public init(
        seed: UInt64, shardPrice: ShardPrice = ShardPrice(perHourUSD: 0.03),
        nominal: PlatformTruth = Calibration.lambda,
        offer: PlatformOffer = .awsLambda(), minimumReferenceSeconds: Double = 60
    ) {
        self.seed = seed
        self.minimumReferenceSeconds = minimumReferenceSeconds
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
        // The amount, as steps of the fixed configuration: scaled up (by doubling) until that
        // reference run takes `minimumReferenceSeconds`.
        let kind = rng.uniform()
        var referenceSteps =
            kind < 0.33
            ? Int(rng.logUniform(100, 4000))
            : max(
                20, Int((rng.logUniform(0.3, kind < 0.67 ? 4 : 3) * Double(examples) / Double(fixedBatch)).rounded(.up))
            )
        let seed = rng.next()
        var scenario: Scenario
        var reference: Simulator.StaticPlan
        repeat {
            let amount: TrainingAmount
            switch kind {
            case ..<0.33: amount = .steps(referenceSteps)
            case ..<0.67: amount = .epochs(Double(referenceSteps * fixedBatch) / Double(examples))
            default:
                // A target within a tenth of the floor is decided by the evaluations' noise, not
                // by training: such a target is raised to 10% above the floor.
                let effective = Double(referenceSteps) * convergence.effectiveExamples(perStepOf: fixedBatch)
                amount = .targetLoss(max(convergence.loss(effective: effective), convergence.floorLoss / 0.9))
            }
            convergence.evaluationInterval = max(2, referenceSteps / 60)
            scenario = Scenario(
                id: id, job: job, goal: Goal(amount: amount), shardPrice: shardPrice, offer: offer, truth: truth,
                convergence: convergence, seed: seed)
            reference = Simulator(scenario: scenario, noiseFree: true).staticPlan(fixed)!
            referenceSteps *= 2
        } while reference.seconds < minimumReferenceSeconds && referenceSteps < 1 << 24
            && reference.steps * 2 >= referenceSteps
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

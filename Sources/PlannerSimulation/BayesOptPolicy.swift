import Foundation
import Planner

/// What the SMLT paper's released code does: Bayesian optimisation of the worker count alone
/// (shards = workers, memory fixed), with a Gaussian process (Matérn 2.5) and UCB with κ = 5:
/// 2 random probes and 3 guided ones, each a few training steps measuring throughput, then the
/// best; re-planned at every epoch from the throughput measured over it. It has no notion of a
/// deadline or a budget.
public struct BayesOptPolicy: SchedulingPolicy {
    public let name = "bo-1d"
    let context: PolicyContext
    let memoryMiB: Int
    /// The worker counts searched: 1 to this.
    public let maxWorkers: Int
    public var randomProbes = 2
    public var guidedProbes = 3
    public var probeSteps = 5
    public var kappa = 5.0
    var rng: SimRandom
    var gp = GaussianProcess()
    var observations: [(workers: Int, throughput: Double)] = []
    var amount: AmountTracker
    var current: Configuration
    var probesDone = 0
    var stepsHere: [Double] = []
    var epoch = 0
    var epochStart: (seconds: Double, progress: Double)?

    public init(_ context: PolicyContext, seed: UInt64) {
        self.context = context
        memoryMiB = FixedPolicy.configuration(for: context.job, offer: context.offer).memoryMiB
        maxWorkers = min(64, context.offer.maxWorkers)
        rng = SimRandom(seed: seed)
        amount = AmountTracker(job: context.job, amount: context.goal.amount)
        current = Configuration(workers: 1, shards: 1, memoryMiB: memoryMiB)
    }

    func configuration(workers: Int) -> Configuration {
        let w = min(max(1, workers), maxWorkers)
        return Configuration(workers: w, shards: min(w, context.offer.maxShards), memoryMiB: memoryMiB)
    }

    func x(_ workers: Int) -> Double { Double(workers - 1) / Double(max(1, maxWorkers - 1)) }

    /// Progress per second at `workers` for a step of `seconds`: steps for a step count,
    /// examples otherwise.
    func throughput(workers: Int, seconds: Double) -> Double {
        if case .steps = context.goal.amount { return 1 / seconds }
        return Double(workers * context.job.batchPerWorker) / seconds
    }

    public mutating func start() -> PolicyStart {
        current = configuration(workers: 1 + Int(rng.uniform() * Double(maxWorkers)))
        return .run(current, totalSteps: amount.totalSteps(at: current, step: 0, examples: 0))
    }

    public mutating func observe(_ event: SimulationEvent) {
        amount.observe(event)
        if case .step(let s) = event { stepsHere.append(s.stepSeconds) }
    }

    mutating func refit() {
        gp.fit(xs: observations.map { x($0.workers) }, ys: observations.map(\.throughput))
    }

    /// The worker count maximising `score` over 1…maxWorkers.
    func argmax(_ score: (Int) -> Double) -> Int {
        (1...maxWorkers).max { score($0) < score($1) } ?? 1
    }

    mutating func move(to workers: Int, _ progress: AdaptiveController.Progress) -> PolicyAction {
        let next = configuration(workers: workers)
        if next != current { stepsHere = [] }
        current = next
        return PolicyAction(
            configuration: next,
            totalSteps: amount.totalSteps(at: next, step: progress.step, examples: progress.examples))
    }

    public mutating func decide(_ progress: AdaptiveController.Progress) -> PolicyAction? {
        if amount.reached { return PolicyAction(configuration: current, totalSteps: progress.step) }
        let probes = randomProbes + guidedProbes
        if probesDone < probes {
            guard stepsHere.count >= probeSteps else { return nil }
            let mean = stepsHere.reduce(0, +) / Double(stepsHere.count)
            observations.append((current.workers, throughput(workers: current.workers, seconds: mean)))
            stepsHere = []
            probesDone += 1
            if probesDone < randomProbes {
                return move(to: 1 + Int(rng.uniform() * Double(maxWorkers)), progress)
            }
            refit()
            if probesDone < probes {
                let gp = gp
                let kappa = kappa
                return move(
                    to: argmax { w in
                        let p = gp.predict(x(w)); return p.mean + kappa * p.sd
                    }, progress)
            }
            // Done probing: run the best measured.
            epochStart = (progress.elapsedSeconds, progress.examples)
            epoch = Int(progress.examples / Double(context.job.trainingExamples))
            let best = observations.max { $0.throughput < $1.throughput }!.workers
            return move(to: best, progress)
        }
        // Re-plan at every epoch from the throughput measured over it.
        let nowEpoch = Int(progress.examples / Double(context.job.trainingExamples))
        guard nowEpoch > epoch, !stepsHere.isEmpty else { return nil }
        epoch = nowEpoch
        let mean = stepsHere.reduce(0, +) / Double(stepsHere.count)
        observations.append((current.workers, throughput(workers: current.workers, seconds: mean)))
        if observations.count > 20 { observations.removeFirst(observations.count - 20) }
        stepsHere = []
        refit()
        let gp = gp
        let best = argmax { w in gp.predict(x(w)).mean }
        guard best != current.workers else { return nil }
        return move(to: best, progress)
    }
}

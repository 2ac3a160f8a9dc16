import Foundation
import Planner

/// Runs a BSP job step by step on a simulated serverless platform: functions with
/// memory-proportional CPU and bandwidth, cold and warm starts, the invocation time limit,
/// Redis shards with a saturating rate, the wait for the slowest worker, reconfiguration pauses,
/// and noise. It replaces the platform and the clock; the policy decides as it would in a real
/// run. `noiseFree` replaces every random draw by its expectation (what `optimal` plans with).
public struct Simulator: Sendable {
    public var scenario: Scenario
    public var noiseFree: Bool

    public init(scenario: Scenario, noiseFree: Bool = false) {
        self.scenario = scenario
        self.noiseFree = noiseFree
    }

    /// A run's end: how long it took, what it cost, whether it did the training asked.
    public struct Outcome: Sendable, Equatable {
        public var policy: String
        /// The refusal's message, when the policy refused the goal.
        public var refusal: String?
        /// Whether the run did all the training (steps, epochs, or reached the target loss).
        public var completed: Bool
        public var seconds: Double
        public var costUSD: Double
        public var steps: Int
        /// Configuration changes after the launch.
        public var reconfigurations: Int
        public var finalConfiguration: Configuration?

        public var ran: Bool { refusal == nil }
    }

    /// A static configuration's noise-free run from launch to the end.
    public struct StaticPlan: Sendable, Equatable {
        public var configuration: Configuration
        public var steps: Int
        public var seconds: Double
        public var costUSD: Double
    }

    var truth: PlatformTruth { scenario.truth }
    var job: JobShape { scenario.job }

    /// Steps the goal's amount takes at `c` without noise (nil for an unreachable target loss).
    public func requiredSteps(_ c: Configuration) -> Int? {
        switch scenario.goal.amount {
        case .steps(let n): return n
        case .epochs(let e):
            return Int((e * Double(job.trainingExamples) / Double(c.workers * job.batchPerWorker)).rounded(.up))
        case .targetLoss(let target):
            guard let need = scenario.convergence.effectiveExamples(toReach: target) else { return nil }
            let per = scenario.convergence.effectiveExamples(perStepOf: c.workers * job.batchPerWorker)
            // A relative 1e-9 below: the step loop sums what this divides, and may land on it.
            let n = max(1, Int((need / per * (1 - 1e-9)).rounded(.up)))
            let every = scenario.convergence.evaluationInterval
            return (n + every - 1) / every * every
        }
    }

    /// The noise-free run of `c` from launch to the end, in closed form (the same numbers the
    /// step loop gives with `noiseFree`).
    public func staticPlan(_ c: Configuration) -> StaticPlan? {
        staticPlan(c, factors: factors(workers: c.workers))
    }

    /// The expected slowest-compute and slowest-start factors of `workers` (for `staticPlan`).
    public func factors(workers: Int) -> (slowest: Double, start: Double) {
        (
            truth.expectedSlowestFactor(workers: workers),
            SimRandom.expectedMaxLognormalFactor(of: workers, sigma: truth.startSigma)
        )
    }

    func staticPlan(_ c: Configuration, factors: (slowest: Double, start: Double)) -> StaticPlan? {
        guard let steps = requiredSteps(c) else { return nil }
        let s = truth.meanCompute(c, job: job) * factors.slowest + truth.communication(c, job: job)
        let startFactor = factors.start
        let launch = truth.coldStartSeconds * startFactor
        let perInvocation = max(1, Int((truth.timeLimitSeconds / s - 1.25).rounded(.down)) + 1)
        let restarts = (steps - 1) / perInvocation
        let run = Double(steps) * s + Double(restarts) * truth.warmStartSeconds * startFactor
        let seconds = launch + run
        let w = Double(c.workers)
        let cost =
            w * Double(c.memoryMiB) / 1024 * seconds * scenario.offer.priceGBSecond
            + w * Double(1 + restarts) * scenario.offer.priceRequest
            + Double(c.shards) * seconds / 3600 * scenario.shardPrice.perHourUSD
        return StaticPlan(configuration: c, steps: steps, seconds: seconds, costUSD: cost)
    }

    /// Runs `policy` on the scenario to the end (or to the caps: 4× the deadline, or
    /// `stepCap` steps).
    public func run<P: SchedulingPolicy>(_ policy: inout P, stepCap: Int = 2_000_000) -> Outcome {
        var rng = SimRandom(seed: scenario.seed)
        var outcome = Outcome(
            policy: policy.name, refusal: nil, completed: false, seconds: 0, costUSD: 0, steps: 0, reconfigurations: 0,
            finalConfiguration: nil)
        let first = policy.start()
        guard case .run(var c, var total) = first else {
            if case .refuse(let message) = first { outcome.refusal = message }
            return outcome
        }
        let offer = scenario.offer
        var clock = 0.0
        var cost = 0.0
        func bill(workers: Int, memoryMiB: Int, shards: Int, seconds: Double) {
            clock += seconds
            cost +=
                Double(workers) * Double(memoryMiB) / 1024 * seconds * offer.priceGBSecond
                + Double(shards) * seconds / 3600 * scenario.shardPrice.perHourUSD
        }
        var slowestCache: [Int: Double] = [:]
        var startCache: [Int: Double] = [:]
        /// `n` functions starting together: the seconds until the last has started, and each
        /// one's start as the workers report them.
        func starts(_ n: Int, cold: Bool) -> (seconds: Double, each: [Double]) {
            let mean = cold ? truth.coldStartSeconds : truth.warmStartSeconds
            if noiseFree {
                if startCache[n] == nil {
                    startCache[n] = SimRandom.expectedMaxLognormalFactor(of: n, sigma: truth.startSigma)
                }
                return (mean * startCache[n]!, [mean])
            }
            let each = (0..<n).map { _ in mean * rng.lognormalFactor(truth.startSigma) }
            return (each.max() ?? 0, each)
        }

        let launch = starts(c.workers, cold: true)
        bill(workers: c.workers, memoryMiB: c.memoryMiB, shards: c.shards, seconds: launch.seconds)
        cost += Double(c.workers) * offer.priceRequest
        for s in launch.each { policy.observe(.start(seconds: s, cold: true)) }

        var step = 0
        var examples = 0.0
        var effective = 0.0
        var age = 0.0
        var lastStep = 0.0
        var lastLoss: Double?
        let deadlineCap = scenario.goal.deadlineSeconds.map { 4 * $0 } ?? .infinity
        let convergence = scenario.convergence
        while step < total && step < stepCap && clock < deadlineCap {
            // The time limit: every worker continues in a new invocation; BSP waits for all.
            if age > 0 && age + 1.25 * lastStep > truth.timeLimitSeconds {
                let pause = starts(c.workers, cold: false)
                bill(workers: c.workers, memoryMiB: c.memoryMiB, shards: c.shards, seconds: pause.seconds)
                cost += Double(c.workers) * offer.priceRequest
                age = 0
                for s in pause.each { policy.observe(.start(seconds: s, cold: false)) }
            }
            let (sample, seconds) = drawStep(c, rng: &rng, cache: &slowestCache)
            bill(workers: c.workers, memoryMiB: c.memoryMiB, shards: c.shards, seconds: seconds)
            age += seconds
            lastStep = seconds
            step += 1
            let globalBatch = c.workers * job.batchPerWorker
            examples += Double(globalBatch)
            effective += convergence.effectiveExamples(perStepOf: globalBatch)
            policy.observe(.step(sample))
            if step % convergence.evaluationInterval == 0 {
                let truthLoss = convergence.loss(effective: effective)
                let observed = noiseFree ? truthLoss : truthLoss * (1 + convergence.evaluationNoise * rng.normal())
                lastLoss = observed
                policy.observe(.loss(observed, afterExamples: examples))
            }
            let progress = AdaptiveController.Progress(
                step: step, examples: examples, elapsedSeconds: clock, spentUSD: cost)
            guard let action = policy.decide(progress) else { continue }
            total = action.totalSteps
            guard action.configuration != c, step < total else { continue }
            let next = action.configuration
            var pause = truth.reconfigurationSeconds * (noiseFree ? 1 : rng.lognormalFactor(0.3))
            var moved = 0.0
            if next.shards != c.shards {
                moved = job.modelBytes * Double(abs(next.shards - c.shards)) / Double(max(next.shards, c.shards))
                pause += moved * truth.moveSecondsPerByte * (noiseFree ? 1 : rng.lognormalFactor(0.2))
            }
            let launched = next.memoryMiB != c.memoryMiB ? next.workers : max(0, next.workers - c.workers)
            let cold = launched > 0 ? starts(launched, cold: true) : (seconds: 0, each: [])
            bill(
                workers: max(c.workers, next.workers), memoryMiB: next.memoryMiB, shards: max(c.shards, next.shards),
                seconds: pause + cold.seconds)
            cost += Double(launched) * offer.priceRequest
            if next.memoryMiB != c.memoryMiB { age = 0 }
            policy.observe(.pause(seconds: pause, bytesMoved: moved))
            for s in cold.each { policy.observe(.start(seconds: s, cold: true)) }
            c = next
            outcome.reconfigurations += 1
        }
        outcome.seconds = clock
        outcome.costUSD = cost
        outcome.steps = step
        outcome.finalConfiguration = c
        switch scenario.goal.amount {
        case .steps(let n): outcome.completed = step >= n
        case .epochs(let e): outcome.completed = examples >= e * Double(job.trainingExamples) - 0.5
        case .targetLoss(let target): outcome.completed = (lastLoss ?? .infinity) <= target
        }
        return outcome
    }

    /// One step at `c`: what the workers report and the step's wall seconds.
    func drawStep(_ c: Configuration, rng: inout SimRandom, cache: inout [Int: Double]) -> (StepSample, Double) {
        let base = truth.meanCompute(c, job: job)
        let comm = truth.communication(c, job: job)
        let sd = (exp(truth.computeSigma * truth.computeSigma) - 1).squareRoot()
        if noiseFree {
            if cache[c.workers] == nil { cache[c.workers] = truth.expectedSlowestFactor(workers: c.workers) }
            let seconds = base * cache[c.workers]! + comm
            let sample = StepSample(
                configuration: c, computeSeconds: base, computeSpread: c.workers > 1 ? sd : 0, stepSeconds: seconds)
            return (sample, seconds)
        }
        let w = Double(c.workers)
        let mean = base * max(0.05, 1 + sd / w.squareRoot() * rng.normal())
        var slowest = base * rng.maxLognormalFactor(of: c.workers, sigma: truth.computeSigma)
        if rng.uniform() < 1 - pow(1 - truth.hardStragglerChance, w) {
            slowest = max(slowest, base * rng.uniform(2, 4))
        }
        slowest = max(slowest, mean)
        let spread = c.workers > 1 ? sd * max(0, 1 + 0.15 * rng.normal()) : 0
        let seconds = slowest + comm * rng.lognormalFactor(truth.communicationSigma)
        return (
            StepSample(configuration: c, computeSeconds: mean, computeSpread: spread, stepSeconds: seconds), seconds
        )
    }
}

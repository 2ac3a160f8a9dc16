import Foundation

/// Plans a job and re-plans it while it runs: it starts from a plan made with prior constants,
/// profiles the first steps, fits the step-time model (and, for a target loss, the convergence
/// model) to what the job reports, and every few steps, or as soon as its predictions drift,
/// chooses again for the rest of the job. It switches only when the new choice meets a goal the
/// current one would miss, or beats it by more than the switch costs.
///
/// It is driven from outside and never reads a clock: the Coordinator feeds it a real run's
/// reports, the simulator of `smlt-bench schedule` a simulated one's.
public struct AdaptiveController: Sendable {
    /// A configuration to run the rest of the job with.
    public struct Decision: Sendable, Codable, Equatable {
        public var configuration: Configuration
        /// The job's total number of steps under this decision (changes with the workers under
        /// `--epochs`, and ends a `--target-loss` run once the loss is reached).
        public var totalSteps: Int
        /// The rest of the run, as predicted when deciding.
        public var prediction: Prediction
        /// Why: `initial`, `keep` (a re-plan that changed nothing), `goal at risk`, `cheaper`,
        /// `faster`, `more steps`, `target loss reached`.
        public var reason: String

        enum CodingKeys: String, CodingKey {
            case configuration, prediction, reason
            case totalSteps = "total_steps"
        }
    }

    /// Where the run is when the controller is asked.
    public struct Progress: Sendable {
        /// Steps completed (the next step's index).
        public var step: Int
        /// Examples trained on so far.
        public var examples: Double
        public var elapsedSeconds: Double
        public var spentUSD: Double

        public init(step: Int, examples: Double, elapsedSeconds: Double, spentUSD: Double) {
            self.step = step
            self.examples = examples
            self.elapsedSeconds = elapsedSeconds
            self.spentUSD = spentUSD
        }
    }

    /// A re-plan (kept or changed): when, what it decided, and its prediction for the whole run
    /// (elapsed + predicted rest) to set against what happened.
    public struct Replan: Sendable, Codable, Equatable {
        public var step: Int
        public var decision: Decision
        public var predictedTotalSeconds: Double
        public var predictedTotalCostUSD: Double

        enum CodingKeys: String, CodingKey {
            case step, decision
            case predictedTotalSeconds = "predicted_total_seconds"
            case predictedTotalCostUSD = "predicted_total_cost_usd"
        }
    }

    public var planner: Planner
    public private(set) var model: StepTimeModel
    public private(set) var convergence: ConvergenceModel?
    public private(set) var current: Configuration?
    public private(set) var totalSteps = 0
    public private(set) var replans: [Replan] = []
    public private(set) var initial: Decision?
    /// Steps the first configuration runs before the first re-plan.
    public var profileSteps = 5
    /// Re-plans at most this often in steps (after the profile); set by `start` from the plan.
    public var interval = 10
    /// A re-plan happens at once when observed step times drift this far from the model's.
    public var drift = 0.2
    /// A switch must beat staying by this share of the objective.
    public var hysteresis = 0.05
    /// Before any loss is measured, a target loss is assumed to need this many epochs.
    public var priorEpochs = 2.0
    /// Under a target loss, the gradient noise scale assumed (examples; see
    /// `Planner.noiseBatch`): the loss curve is fitted against effective examples, so a switch to
    /// a bigger global batch is not expected to reach the loss in as few examples. Nil counts
    /// every example alike. Set before `start`.
    public var noiseBatch: Double? = 1024
    /// `start` refuses a goal only when no plan meets it with the deadline and the budget
    /// stretched by this share: before any step the prediction is the prior's, often off by
    /// more than that, and a run re-plans from measurements.
    public var refusalSlack = 0.5
    /// The share of the deadline or budget the first plan keeps in reserve, instead of the
    /// planner's margin: before the launch everything is a prior (the cold start of every
    /// function included), so the first plan keeps more.
    public var startMargin = 0.25
    /// Under a target loss, the fitted curve's examples to go are taken this much larger: the
    /// curve is an extrapolation, and stopping short of the loss misses the deadline.
    public var targetMargin = 0.1
    /// Under a target loss, evaluations the curve needs before it may plan for less than the
    /// prior's epochs.
    public var trustedEvaluations = 8
    /// The share of the time or money left a switch made only to save (`cheaper`, `faster`)
    /// keeps in reserve: wider than the planner's margin, against flapping.
    public var switchMargin = 0.25

    let prior: StepTimeModel
    private var samples: [StepSample] = []
    private var losses: [(examples: Double, loss: Double)] = []
    /// Every evaluation with the examples then and the global batch it ran at (for fitting the
    /// noise scale once the run has used two batches).
    private var evaluations: [(examples: Double, batch: Double, loss: Double)] = []
    /// The curves' effective examples to the target, one per evaluation (infinite where the
    /// curve levels off above it).
    private var needed: [Double] = []
    private var lastDecisionStep = 0
    private var sinceFit = 0
    private var ratio = 1.0
    /// Effective examples (see `noiseBatch`) at the last evaluation, and the examples then.
    private var effective = 0.0
    private var effectiveAt = 0.0

    public init(planner: Planner, prior: StepTimeModel) {
        self.planner = planner
        self.model = prior
        self.prior = prior
    }

    /// The work left after `progress` (nil once a target loss is reached).
    func work(after progress: Progress) -> Planner.Work? {
        switch planner.goal.amount {
        case .steps(let n): return .steps(n - progress.step)
        case .epochs(let e): return .examples(max(0, e * Double(planner.job.trainingExamples) - progress.examples))
        case .targetLoss(let target):
            if let last = losses.last, last.loss <= target { return nil }
            let done = effectiveExamples(progress.examples)
            // A curve that levels off above the target (a fit from few evaluations) is no
            // reason to stop: assume at least the prior, and at least as much again as so far.
            let fallback = max(priorEpochs * Double(planner.job.trainingExamples), 2 * done)
            let fitted = neededExamples().map { done + max(0, $0 - done) * (1 + targetMargin) }
            // A curve from a few evaluations is no reason to plan for less than the prior.
            let trusted = (convergence?.points ?? 0) >= trustedEvaluations
            let needed = trusted ? fitted ?? fallback : max(fitted ?? 0, fallback)
            return .examples(max(Double(planner.job.batchPerWorker), needed - done))
        }
    }

    /// Effective examples to the target loss: the median of the last five curves' answers (a
    /// curve fitted near its floor swings from one evaluation to the next), nil while the
    /// latest curve does not reach the target.
    func neededExamples() -> Double? {
        guard case .targetLoss(let target) = planner.goal.amount, let c = convergence,
            c.examples(toReach: target) != nil
        else { return nil }
        let recent = needed.suffix(10).filter(\.isFinite).sorted()
        guard !recent.isEmpty else { return c.examples(toReach: target) }
        return recent.last!
    }

    /// `examples` as effective examples: each since the last evaluation at the current global
    /// batch's efficiency (the examples themselves without `planner.noiseBatch`).
    func effectiveExamples(_ examples: Double) -> Double {
        guard let bn = planner.noiseBatch, let c = current else { return examples }
        let batch = Double(c.workers * planner.job.batchPerWorker)
        return effective + (examples - effectiveAt) / (1 + batch / bn)
    }

    /// The first plan, before anything runs (`elapsedSeconds` already gone, such as loading the
    /// data); throws when no configuration can meet the goal, with the numbers of the closest
    /// plan.
    public mutating func start(elapsedSeconds: Double = 0) throws(PlanError) -> Decision {
        let progress = Progress(step: 0, examples: 0, elapsedSeconds: elapsedSeconds, spentUSD: 0)
        if case .targetLoss = planner.goal.amount { planner.noiseBatch = noiseBatch }
        let work = work(after: progress) ?? .steps(0)
        let margin = planner.margin
        planner.margin = max(margin, startMargin)
        defer { planner.margin = margin }
        guard
            var choice = planner.choose(
                work: work, elapsed: elapsedSeconds, spent: 0, current: nil, model: model)
        else {
            throw PlanError(
                "no function memory holds a worker: it needs about \(planner.job.minimumMemoryMiB) MB, the platform offers at most \(planner.offer.memoryMiB.upperBound) MB"
            )
        }
        if !choice.meetsGoal, case .targetLoss = planner.goal.amount, case .examples(let guess) = work {
            // The amount is a guess until the loss is measured, and the goal the user's: start
            // with the plan for the most of the guess that meets the goal (re-planned from the
            // fitted curve), or the best for the whole guess when even a 64th does not.
            var part = guess / 2
            while part >= guess / 64 {
                if let c = planner.choose(
                    work: .examples(part), elapsed: elapsedSeconds, spent: 0, current: nil, model: model),
                    c.meetsGoal
                {
                    choice = c
                    break
                }
                part /= 2
            }
        } else if choice.meetsGoal, case .targetLoss = planner.goal.amount, planner.goal.deadlineSeconds != nil,
            case .examples(let guess) = work
        {
            // The guess may be far short: plan for as much more as still meets the goal, so the
            // run starts fast enough to learn the curve and still finish (bigger steps cost about
            // the same per example); the first re-plans move to the cheapest once it is known.
            var more = guess * 2
            while more <= guess * 16 {
                guard
                    let c = planner.choose(
                        work: .examples(more), elapsed: elapsedSeconds, spent: 0, current: nil, model: model),
                    c.meetsGoal
                else { break }
                choice = c
                more *= 2
            }
        } else if !choice.meetsGoal {
            var stretched = planner
            stretched.goal.deadlineSeconds = planner.goal.deadlineSeconds.map { $0 * (1 + refusalSlack) }
            stretched.goal.budgetUSD = planner.goal.budgetUSD.map { $0 * (1 + refusalSlack) }
            guard
                let near = stretched.choose(work: work, elapsed: elapsedSeconds, spent: 0, current: nil, model: model),
                near.meetsGoal
            else { throw refusal(choice, work: work, elapsed: elapsedSeconds) }
            // Within reach of the prior's error: run the plan closest to the goal, re-planned
            // from the first measured steps.
            choice = near
        }
        let decision = Decision(
            configuration: choice.best.configuration, totalSteps: totalSteps(choice.best, progress: progress),
            prediction: choice.best, reason: "initial")
        current = decision.configuration
        totalSteps = decision.totalSteps
        initial = decision
        let planned = max(1, choice.best.steps)
        profileSteps = min(max(3, planned / 20), 20)
        interval = min(max(3, planned / 15), 100)
        return decision
    }

    private func totalSteps(_ p: Prediction, progress: Progress) -> Int {
        switch planner.goal.amount {
        case .steps(let n): return n
        case .epochs: return progress.step + p.steps
        case .targetLoss: return progress.step + max(1, p.steps) * 3  // a cap; the run ends when the loss is reached
        }
    }

    func refusal(_ c: Planner.Choice, work: Planner.Work, elapsed: Double) -> PlanError {
        func amount(_ p: Prediction) -> String {
            switch work {
            case .steps(let n): return "\(n) steps"
            case .examples(let e):
                let epochs = e / Double(planner.job.trainingExamples)
                return String(format: "%.3g epochs", epochs)
                    + " (\(p.steps) steps at \(p.configuration.workers) workers)"
            }
        }
        let goal = planner.goal
        let overhead = elapsed + goal.finishSeconds
        if let d = goal.deadlineSeconds, c.fastest.seconds + overhead > d {
            let parts =
                overhead > 0
                ? " (\(String(format: "%.1f", c.fastest.seconds)) s to start and train, \(String(format: "%.1f", overhead)) s to prepare and finish)"
                : ""
            return PlanError(
                "--deadline: \(amount(c.fastest)) need at least \(String(format: "%.1f", c.fastest.seconds + overhead)) s with the fastest plan (\(c.fastest.configuration))\(parts); the deadline is \(String(format: "%.1f", d)) s"
            )
        }
        if let b = goal.budgetUSD, c.cheapest.costUSD > b {
            return PlanError(
                "--budget: \(amount(c.cheapest)) cost at least $\(String(format: "%.6f", c.cheapest.costUSD)) with the cheapest plan (\(c.cheapest.configuration)); the budget is $\(String(format: "%.6f", b))"
            )
        }
        return PlanError(
            "--deadline and --budget: no plan meets both; the fastest takes \(String(format: "%.1f", c.fastest.seconds)) s for $\(String(format: "%.6f", c.fastest.costUSD)) and the cheapest \(String(format: "%.1f", c.cheapest.seconds)) s for $\(String(format: "%.6f", c.cheapest.costUSD))"
        )
    }

    /// One measured step.
    public mutating func observe(_ sample: StepSample) {
        if let c = current, sample.configuration == c {
            let predicted = model.step(c, job: planner.job, offer: planner.offer)
            if predicted > 0 { ratio = 0.8 * ratio + 0.2 * (sample.stepSeconds / predicted) }
        }
        samples.append(sample)
        // Keep the last 40 samples of each configuration: enough to average the noise, bounded.
        if samples.count > 400 {
            var kept: [StepSample] = []
            var seen: [Configuration: Int] = [:]
            for s in samples.reversed() where seen[s.configuration, default: 0] < 40 {
                seen[s.configuration, default: 0] += 1
                kept.append(s)
            }
            samples = kept.reversed()
        }
        sinceFit += 1
    }

    /// One held-out evaluation.
    public mutating func observe(loss: Double, afterExamples examples: Double) {
        guard loss.isFinite else { return }
        effective = effectiveExamples(examples)
        effectiveAt = examples
        losses.append((effective, loss))
        if losses.count > 200 { losses.removeFirst(losses.count - 200) }
        convergence = ConvergenceModel.fit(losses)
        if let c = current {
            evaluations.append((examples, Double(c.workers * planner.job.batchPerWorker), loss))
            if evaluations.count > 200 { evaluations.removeFirst(evaluations.count - 200) }
            fitNoiseBatch()
        }
        if case .targetLoss(let target) = planner.goal.amount, let c = convergence {
            needed.append(c.examples(toReach: target) ?? .infinity)
            if needed.count > 20 { needed.removeFirst(needed.count - 20) }
        }
    }

    /// Once the run has trained at two global batches, the noise scale B_noise whose effective
    /// examples make the evaluations fall on one curve best (a grid from 32 to 32,768, pulled
    /// slightly toward the prior); the curve and the effective examples follow it.
    mutating func fitNoiseBatch() {
        guard let prior = noiseBatch, planner.noiseBatch != nil, evaluations.count >= 6,
            let first = evaluations.first, evaluations.contains(where: { abs($0.batch / first.batch - 1) > 0.1 })
        else { return }
        var best: (score: Double, noise: Double, curve: ConvergenceModel, points: [(examples: Double, loss: Double)])?
        var noise = 32.0
        while noise <= 32_768 {
            var e = 0.0
            var last = 0.0
            var points: [(examples: Double, loss: Double)] = []
            for v in evaluations {
                e += (v.examples - last) / (1 + v.batch / noise)
                last = v.examples
                points.append((e, v.loss))
            }
            if let curve = ConvergenceModel.fit(points) {
                let sse = points.reduce(0.0) { $0 + pow(curve.loss(afterExamples: $1.examples) - $1.loss, 2) }
                let score = sse * (1 + 0.05 * abs(log(noise / prior)))
                if best == nil || score < best!.score { best = (score, noise, curve, points) }
            }
            noise *= 2.0.squareRoot()
        }
        guard let best else { return }
        planner.noiseBatch = best.noise
        convergence = best.curve
        losses = best.points
        effective = best.points.last!.examples
        effectiveAt = evaluations.last!.examples
    }

    /// A reconfiguration's measured pause, to price the next ones.
    public mutating func observe(pauseSeconds: Double, bytesMoved: Double) {
        guard pauseSeconds.isFinite, pauseSeconds >= 0 else { return }
        let fixed = max(0.01, pauseSeconds - bytesMoved * planner.moveSecondsPerByte)
        planner.reconfigurationSeconds = 0.5 * planner.reconfigurationSeconds + 0.5 * fixed
    }

    /// A measured start of a function (seconds from invocation to its first step).
    public mutating func observe(startSeconds: Double, cold: Bool) {
        guard startSeconds.isFinite, startSeconds >= 0 else { return }
        if cold {
            planner.offer.coldStartSeconds = 0.7 * planner.offer.coldStartSeconds + 0.3 * startSeconds
        } else {
            planner.offer.warmStartSeconds = 0.7 * planner.offer.warmStartSeconds + 0.3 * startSeconds
        }
    }

    /// Whether a target loss is out of reach by the fitted curve (with at least 8 evaluations):
    /// the error names the flag and the level the curve flattens at.
    public func unreachableTarget() -> PlanError? {
        guard case .targetLoss(let target) = planner.goal.amount, let c = convergence, c.points >= 8,
            c.examples(toReach: target) == nil
                || c.examples(toReach: target)! > 1e3 * Double(planner.job.trainingExamples)
        else { return nil }
        return PlanError(
            "--target-loss \(target) is out of reach: the held-out loss levels off at \(String(format: "%.4f", c.floor)) (fitted from \(c.points) evaluations)"
        )
    }

    /// A new decision when it is time to re-plan and a switch pays, or nil to keep going.
    public mutating func decide(_ progress: Progress) -> Decision? {
        guard let current else { return nil }
        guard let work = work(after: progress) else {
            // The target loss is reached: end the job at this step.
            guard totalSteps != progress.step else { return nil }
            totalSteps = progress.step
            let d = Decision(
                configuration: current, totalSteps: progress.step,
                prediction: Prediction(configuration: current, steps: 0, seconds: 0, costUSD: 0),
                reason: "target loss reached")
            record(d, progress)
            return d
        }
        guard progress.step >= profileSteps else { return nil }
        let drifted = abs(ratio - 1) > drift && sinceFit >= max(3, interval / 3)
        var atCap = false
        if case .targetLoss = planner.goal.amount { atCap = progress.step + 1 >= totalSteps }
        guard progress.step - lastDecisionStep >= interval || drifted || atCap else { return nil }
        lastDecisionStep = progress.step
        model = StepTimeModel.fit(samples, prior: prior, job: planner.job, offer: planner.offer)
        sinceFit = 0
        ratio = 1
        guard
            var choice = planner.choose(
                work: work, elapsed: progress.elapsedSeconds, spent: progress.spentUSD, current: current, model: model)
        else { return nil }
        let stay = planner.predict(current, work: work, from: current, model: model)
        let stayMeets = planner.meets(
            stay, elapsed: progress.elapsedSeconds, spent: progress.spentUSD, margin: planner.margin)
        var untrusted = false
        if case .targetLoss = planner.goal.amount { untrusted = (convergence?.points ?? 0) < trustedEvaluations }
        if stayMeets, untrusted {
            // The amount is still the prior's guess: no switch only to save on it.
            choice = Planner.Choice(best: stay, meetsGoal: true, fastest: choice.fastest, cheapest: choice.cheapest)
        } else if stayMeets, switchMargin > planner.margin {
            // A switch that only saves keeps a wider margin than staying needs, so the next
            // re-plan, from noisier numbers, does not find the goal at risk and switch back.
            var cautious = planner
            cautious.margin = switchMargin
            guard
                let c = cautious.choose(
                    work: work, elapsed: progress.elapsedSeconds, spent: progress.spentUSD, current: current,
                    model: model)
            else { return nil }
            let keeps = cautious.meets(
                c.best, elapsed: progress.elapsedSeconds, spent: progress.spentUSD, margin: switchMargin)
            choice = keeps ? c : Planner.Choice(best: stay, meetsGoal: true, fastest: c.fastest, cheapest: c.cheapest)
        }
        var reason: String?
        if choice.best.configuration != current {
            let newMeets = planner.meets(
                choice.best, elapsed: progress.elapsedSeconds, spent: progress.spentUSD, margin: 0)
            if !stayMeets && (newMeets || betterForGoal(choice.best, stay)) {
                reason = "goal at risk"
            } else if stayMeets
                && planner.meets(
                    choice.best, elapsed: progress.elapsedSeconds, spent: progress.spentUSD, margin: planner.margin)
            {
                // Only for a plan that keeps the margin, as staying does (`choice.meetsGoal` also
                // holds for one that meets the goal without it).
                let byTime = planner.goal.deadlineSeconds == nil
                if byTime, choice.best.seconds < stay.seconds * (1 - hysteresis) { reason = "faster" }
                if !byTime, choice.best.costUSD < stay.costUSD * (1 - hysteresis) { reason = "cheaper" }
            }
        }
        let steps = totalSteps(reason != nil ? choice.best : stay, progress: progress)
        guard let reason else {
            // Same configuration; the total may still move (a re-fitted loss curve).
            if case .targetLoss = planner.goal.amount, steps > totalSteps {
                totalSteps = steps
                let d = Decision(configuration: current, totalSteps: steps, prediction: stay, reason: "more steps")
                record(d, progress)
                return d
            }
            // Kept: recorded too, so a run shows how its prediction moved.
            record(Decision(configuration: current, totalSteps: totalSteps, prediction: stay, reason: "keep"), progress)
            return nil
        }
        let d = Decision(
            configuration: choice.best.configuration, totalSteps: steps, prediction: choice.best, reason: reason)
        self.current = d.configuration
        totalSteps = steps
        record(d, progress)
        return d
    }

    private func betterForGoal(_ a: Prediction, _ b: Prediction) -> Bool {
        planner.goal.deadlineSeconds != nil ? a.seconds < b.seconds : a.costUSD < b.costUSD
    }

    private mutating func record(_ d: Decision, _ p: Progress) {
        // Bounded: the first plans and the latest ones are what a report needs.
        if replans.count >= 1_000 { replans.remove(at: 500) }
        replans.append(
            Replan(
                step: p.step, decision: d, predictedTotalSeconds: p.elapsedSeconds + d.prediction.seconds,
                predictedTotalCostUSD: p.spentUSD + d.prediction.costUSD))
    }
}

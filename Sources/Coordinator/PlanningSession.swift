import Foundation
import LocalProcesses
import Planner
import Scheduler
import TrainingProtocol
import Workloads

/// Connects the planner's `AdaptiveController` to a real run: it makes the first plan before
/// anything starts (from an in-process profile of the model and priors measured on this
/// machine), then turns the workers' step reports into step samples, keeps the account of time
/// and money, asks for held-out evaluations under `--target-loss`, and hands the Coordinator
/// the controller's decisions as reconfigurations.
final class PlanningSession {
    private(set) var controller: AdaptiveController
    let started: ContinuousClock.Instant
    let offer: PlatformOffer
    let request: TrainingRequest
    /// Seconds the run reserves after its last step besides evaluating the model (the final
    /// pull, the checkpoint, stopping).
    static let finishSeconds = 1.0

    /// Examples trained on, from the workers' reports.
    private(set) var examples = 0.0
    /// USD spent: configured memory × time of every worker, invocations, shard-hours.
    private(set) var spentUSD = 0.0
    private var lastAccount: ContinuousClock.Instant
    private var byStep: [Int: [StepMetrics]] = [:]
    private var lastEvaluated = -1
    private var nextEvaluation = ContinuousClock.now
    private var seenStarts = 0
    /// Set when the first plan is predicted to miss the goal but is within the refusal's slack.
    private(set) var warning: String?
    /// The configuration being sampled, and its first step that counts.
    private var sampled: Configuration?
    private var firstSteady = 1

    /// The first plan for `request` on its loaded data: throws `PlanError` (naming the flag and
    /// the least time or cost) when the goal cannot be met. `fixed` is the number of shards the
    /// user gave (kept), `started` when the run began (loading the data counts against the goal).
    init(
        request: TrainingRequest, train: Dataset, test: Dataset, shards fixed: Int?,
        started: ContinuousClock.Instant
    ) throws {
        self.request = request
        self.started = started
        self.lastAccount = started
        // The request resolved at one worker and the most memory: the model and the data,
        // before the planner has chosen the numbers the real plan checks.
        var probe = request
        probe.memoryMiB = TrainingRequest.maxMemoryMiB
        probe.workers = 1
        let plan = try TrainingPlan(probe, train: train, test: test)
        var offer = LocalProcessPlatformOffer.make(request: request)
        if let fixed {
            // Shards given with --redis: the planner chooses workers and memory only.
            offer.maxShards = fixed
        }
        self.offer = offer
        let model = plan.settings.makeModel()
        let need = TrainingPlan.memoryNeeded(
            request, train: plan.train, parameters: model.parameterCount, workers: 1)
        let job = JobShape(
            parameters: model.parameterCount, bytesPerParameter: request.wireBytesPerParameter,
            batchPerWorker: request.batchSize,
            trainingExamples: plan.train.count, minimumMemoryMiB: Int(need.rounded(.up)))
        let amount: TrainingAmount =
            if let l = request.targetLoss { .targetLoss(l) } else if let e = request.epochs { .epochs(e) } else {
                .steps(request.steps ?? 300)
            }
        let prior = Self.prior(model: model, data: plan.train, batch: request.batchSize)
        // The summary evaluates the final model on every training and test example.
        let evaluation = Self.evaluationSeconds(
            model: model, data: plan.train, examples: plan.train.count + plan.test.count)
        let goal = Goal(
            amount: amount, deadlineSeconds: request.deadlineSeconds, budgetUSD: request.budgetUSD,
            finishSeconds: Self.finishSeconds + evaluation)
        var planner = Planner(
            job: job, offer: offer, shardPrice: ShardPrice(perHourUSD: request.shardHourPrice), goal: goal)
        planner.fixedShards = fixed
        controller = AdaptiveController(planner: planner, prior: prior)
        let elapsed = (ContinuousClock.now - started).seconds
        let first = try controller.start(elapsedSeconds: elapsed)
        if !controller.planner.meets(first.prediction, elapsed: elapsed, spent: 0, margin: 0) {
            // Within the refusal's slack: the priors may be that far off, so the run starts and
            // re-plans from measurements; the user should know.
            let total = elapsed + first.prediction.seconds + goal.finishSeconds
            warning =
                "the plan is predicted to miss the goal (\(String(format: "%.1f", total)) s and $\(String(format: "%.6f", first.prediction.costUSD))"
                + [
                    request.deadlineSeconds.map { " against a deadline of \(String(format: "%.1f", $0)) s" },
                    request.budgetUSD.map { " against a budget of $\(String(format: "%.6f", $0))" },
                ].compactMap { $0 }.joined(separator: " and")
                + "); it starts from priors and re-plans from measured steps"
        }
    }

    /// The initial decision.
    var initial: AdaptiveController.Decision { controller.initial! }

    /// The request with the plan's numbers in place of the user's.
    func planned(_ request: TrainingRequest) -> TrainingRequest {
        var r = request
        let d = initial
        r.workers = d.configuration.workers
        r.shards = d.configuration.shards
        r.memoryMiB = d.configuration.memoryMiB
        r.steps = d.totalSteps
        r.epochs = nil
        r.targetLoss = nil
        return r
    }

    /// The step-time model before any step: compute from timing the model's gradient on one
    /// batch in this process, communication from constants measured on this machine (see
    /// docs/scheduling.md).
    static func prior(model: any Model, data: Dataset, batch: Int) -> StepTimeModel {
        let params = model.initialParameters(seed: 1)
        let n = min(batch, data.count)
        let features = Array(data.features[0..<(n * data.dimension)])
        let labels = Array(data.labels[0..<n])
        var times: [Double] = []
        let until = ContinuousClock.now + .milliseconds(100)
        while times.count < 3 || (times.count < 50 && ContinuousClock.now < until) {
            let t = ContinuousClock.now
            _ = model.lossAndGradient(params: params, features: features, labels: labels)
            times.append((ContinuousClock.now - t).seconds)
        }
        let median = times.sorted()[times.count / 2]
        return StepTimeModel(
            computePerExampleParameter: median / Double(max(1, n) * model.parameterCount), spread: 0.1,
            latency: 0.004, shardSecondsPerByte: 2.3e-9, functionSecondsPerByte: 1e-9, perWorkerSeconds: 0.002)
    }

    /// Seconds to evaluate `model` on `examples` examples, from timing it on up to 64 of `data`
    /// (for a 1M-parameter MLP on 20,000 examples the summary's evaluation takes ~9 s).
    static func evaluationSeconds(model: any Model, data: Dataset, examples: Int) -> Double {
        let n = min(64, data.count)
        guard n > 0 else { return 0 }
        let sample = Dataset(
            features: Array(data.features[0..<(n * data.dimension)]), labels: Array(data.labels[0..<n]),
            dimension: data.dimension, classes: data.classes)
        let params = model.initialParameters(seed: 1)
        // The faster of two timings: the first also pays for touching the memory.
        var best = Double.infinity
        for _ in 0..<2 {
            let t = ContinuousClock.now
            _ = model.evaluate(params: params, on: sample)
            best = min(best, (ContinuousClock.now - t).seconds)
        }
        return best * Double(examples) / Double(n)
    }

    /// Adds the workers' step reports.
    func add(_ metrics: [StepMetrics]) {
        for m in metrics {
            examples += Double(m.examples)
            guard m.computeSeconds != nil, m.stepSeconds != nil else { continue }
            byStep[m.step, default: []].append(m)
        }
    }

    /// Adds measured function starts.
    func add(starts: [StartReport]) {
        guard starts.count > seenStarts else { return }
        for s in starts[seenStarts...] { controller.observe(startSeconds: s.seconds, cold: !s.warm) }
        seenStarts = starts.count
    }

    /// A reconfiguration's measured pause.
    /// A reconfiguration's measured pause; `launched` functions started during it (their start
    /// is priced apart, so it is taken out).
    func add(pauseSeconds: Double, bytesMoved: Int, launched: Int) {
        let starts = launched > 0 ? controller.planner.startSeconds(launched, cold: true) : 0
        controller.observe(pauseSeconds: max(0, pauseSeconds - starts), bytesMoved: Double(bytesMoved))
    }

    /// Whether the held-out loss should be measured at `version`: under `--target-loss`, every
    /// few steps, and spending at most a tenth of the run's time on it.
    func wantsEvaluation(at version: Int) -> Bool {
        guard request.targetLoss != nil, version > 0 else { return false }
        let every = max(1, controller.interval / 3)
        return version >= lastEvaluated + every && ContinuousClock.now >= nextEvaluation
    }

    /// A held-out loss measured at `version`, after `examples` examples; it took `took` seconds.
    func add(loss: Double, at version: Int, examples: Double, took: Double) {
        lastEvaluated = version
        nextEvaluation = ContinuousClock.now + .milliseconds(Int(took * 9_000))
        controller.observe(loss: loss, afterExamples: examples)
    }

    /// Charges the time since the last call at `configuration` and turns complete steps into
    /// samples; returns the controller's decision, if it makes one.
    func tick(version: Int, configuration: Configuration, invocations: Int) throws -> AdaptiveController.Decision? {
        let now = ContinuousClock.now
        let dt = (now - lastAccount).seconds
        lastAccount = now
        let gb = Double(configuration.memoryMiB) / 1024
        spentUSD +=
            Double(configuration.workers) * gb * dt * offer.priceGBSecond
            + Double(configuration.shards) * dt / 3600 * request.shardHourPrice
        // The first step after a start or a change waits for new workers to start and for the
        // switch: not a sample of the configuration's steady state.
        if configuration != sampled {
            sampled = configuration
            firstSteady = version + 1
        }
        // Steps every worker has reported become samples (older partial ones are dropped).
        for step in byStep.keys.sorted() {
            guard let reports = byStep[step] else { continue }
            if reports.count >= configuration.workers || step < version - 2 {
                byStep[step] = nil
                if reports.count >= configuration.workers && step >= firstSteady { sample(reports, configuration) }
            }
        }
        if let error = controller.unreachableTarget() { throw error }
        let progress = AdaptiveController.Progress(
            step: version, examples: examples, elapsedSeconds: (now - started).seconds,
            spentUSD: spentUSD + Double(invocations) * offer.priceRequest)
        return controller.decide(progress)
    }

    private func sample(_ reports: [StepMetrics], _ c: Configuration) {
        let compute = reports.compactMap(\.computeSeconds)
        let steps = reports.compactMap(\.stepSeconds)
        guard !compute.isEmpty, !steps.isEmpty else { return }
        let mean = compute.reduce(0, +) / Double(compute.count)
        let variance = compute.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(compute.count)
        controller.observe(
            StepSample(
                configuration: c, computeSeconds: mean, computeSpread: mean > 0 ? variance.squareRoot() / mean : 0,
                stepSeconds: steps.reduce(0, +) / Double(steps.count)))
    }

    /// The spend so far, with `invocations` requests.
    func spent(invocations: Int) -> Double { spentUSD + Double(invocations) * offer.priceRequest }
}

/// The local platform's offer at the request's prices and time limit.
enum LocalProcessPlatformOffer {
    static func make(request: TrainingRequest) -> PlatformOffer {
        LocalProcessPlatform.offer(
            memoryMiB: TrainingRequest.minMemoryMiB...TrainingRequest.maxMemoryMiB,
            priceGBSecond: request.priceGBSecond, priceRequest: request.priceRequest,
            timeLimitSeconds: Double(request.functionTimeoutMilliseconds) / 1000)
    }
}

import Foundation

/// Chooses workers × shards × memory for the rest of a job: the cheapest configuration that
/// meets the deadline (and the budget), or the fastest within the budget. Pure: it predicts
/// from a step-time model, the platform's offer and prices, and does no I/O, so the same code
/// plans real runs and simulated ones.
public struct Planner: Sendable {
    public var job: JobShape
    public var offer: PlatformOffer
    public var shardPrice: ShardPrice
    public var goal: Goal
    /// The share of the time or money left that a plan keeps in reserve for prediction errors.
    public var margin = 0.15
    /// Seconds a reconfiguration stops training besides moving chunks and starting functions
    /// (a prior; runs measure it).
    public var reconfigurationSeconds = 0.3
    /// Seconds per byte a re-shard takes to copy chunks (a prior; runs measure it).
    public var moveSecondsPerByte = 5e-9
    /// Shards the user gave: every candidate keeps their number (the planner then chooses
    /// workers and memory only).
    public var fixedShards: Int?
    /// The gradient noise scale B_noise in examples (McCandlish et al.'s critical batch): a step
    /// of global batch B does the work of B / (1 + B / B_noise) small-batch examples. When set,
    /// `Work.examples` counts such effective examples (`AdaptiveController` sets it under a
    /// target loss); nil counts every example alike at every batch.
    public var noiseBatch: Double?
    /// When no configuration meets a deadline, the choice is the cheapest within this share of
    /// the fastest one's time (not the fastest at any price).
    public var fastestSlack = 0.03
    /// The spread of function start times (standard deviation over mean). A launch of n
    /// functions waits for the slowest, about 1 + spread·√(2 ln n) times the mean start (the
    /// offer's cold and warm start seconds are means of single starts).
    public var startSpread = 0.3

    /// Seconds until the slowest of `functions` started together has started.
    public func startSeconds(_ functions: Int, cold: Bool) -> Double {
        (cold ? offer.coldStartSeconds : offer.warmStartSeconds)
            * StepTimeModel.straggling(workers: functions, spread: startSpread)
    }

    public init(job: JobShape, offer: PlatformOffer, shardPrice: ShardPrice, goal: Goal) {
        self.job = job
        self.offer = offer
        self.shardPrice = shardPrice
        self.goal = goal
    }

    /// What is left of the training.
    public enum Work: Sendable, Equatable {
        /// This many steps, at any number of workers.
        case steps(Int)
        /// This many examples: the steps follow from the global batch.
        case examples(Double)
    }

    /// The configurations considered: worker counts up to the offer's limit (every count up to
    /// 8, then about 25% apart), shards up to the workers and the offer's limit, and the memory
    /// sizes that hold a worker.
    public func candidates() -> [Configuration] {
        var workers: [Int] = []
        var w = 1
        while w <= min(offer.maxWorkers, job.trainingExamples) {
            workers.append(w)
            w = w < 8 ? w + 1 : Int((Double(w) * 1.25).rounded())
        }
        let memories = offer.memoryCandidates(minimum: job.minimumMemoryMiB)
        var out: [Configuration] = []
        for w in workers {
            var shards: [Int] = []
            if let fixedShards {
                shards = [fixedShards]
            } else {
                var k = 1
                while k <= min(w, offer.maxShards) {
                    shards.append(k)
                    k = k < 4 ? k + 1 : k * 2
                }
            }
            for k in shards {
                for m in memories { out.append(Configuration(workers: w, shards: k, memoryMiB: m)) }
            }
        }
        return out
    }

    /// Steps `work` takes at `c`.
    public func steps(_ work: Work, at c: Configuration) -> Int {
        switch work {
        case .steps(let n): return max(0, n)
        case .examples(let e):
            let batch = Double(c.workers * job.batchPerWorker)
            let perStep = noiseBatch.map { batch / (1 + batch / $0) } ?? batch
            return max(0, Int(min(1e12, (e / perStep).rounded(.up))))
        }
    }

    /// The pause of switching from `current` to `c` (or of launching `c` when nothing runs).
    public func pause(from current: Configuration?, to c: Configuration) -> Double {
        guard let current else { return startSeconds(c.workers, cold: true) }
        guard current != c else { return 0 }
        var seconds = reconfigurationSeconds
        if c.shards != current.shards {
            // A balanced placement moves about |k − k0| / max(k, k0) of the model.
            let moved = job.modelBytes * Double(abs(c.shards - current.shards)) / Double(max(c.shards, current.shards))
            seconds += moved * moveSecondsPerByte
        }
        let launched = c.memoryMiB != current.memoryMiB ? c.workers : c.workers - current.workers
        if launched > 0 { seconds += startSeconds(launched, cold: true) }
        return seconds
    }

    /// The time and cost of running `work` at `c` after switching from `current`.
    public func predict(_ c: Configuration, work: Work, from current: Configuration?, model: StepTimeModel)
        -> Prediction
    {
        let n = steps(work, at: c)
        var run = Double(n) * model.step(c, job: job, offer: offer)
        // A worker continues in a new invocation at each time limit; the others wait for it.
        let invocations = max(1, (run / offer.timeLimitSeconds).rounded(.up))
        run += (invocations - 1) * startSeconds(c.workers, cold: false)
        let pause = pause(from: current, to: c)
        let seconds = run + pause
        let launched =
            current == nil || c.memoryMiB != current!.memoryMiB ? c.workers : max(0, c.workers - current!.workers)
        let gb = Double(c.memoryMiB) / 1024
        let billedWorkers = Double(max(c.workers, current?.workers ?? 0))
        let cost =
            Double(c.workers) * gb * run * offer.priceGBSecond + billedWorkers * gb * pause * offer.priceGBSecond
            + (Double(c.workers) * (invocations - 1) + Double(launched)) * offer.priceRequest
            + Double(c.shards) * seconds / 3600 * shardPrice.perHourUSD
        return Prediction(configuration: c, steps: n, seconds: seconds, costUSD: cost)
    }

    /// The planner's answer: the chosen prediction, whether it meets the goal, and the fastest
    /// and cheapest ones (for messages).
    public struct Choice: Sendable {
        public var best: Prediction
        public var meetsGoal: Bool
        public var fastest: Prediction
        public var cheapest: Prediction
    }

    /// Whether `p` meets the goal with `elapsed` seconds and `spent` USD gone, keeping `margin`
    /// of what is left in reserve.
    public func meets(_ p: Prediction, elapsed: Double, spent: Double, margin: Double) -> Bool {
        if let d = goal.deadlineSeconds, p.seconds > (d - elapsed - goal.finishSeconds) * (1 - margin) { return false }
        if let b = goal.budgetUSD, p.costUSD > (b - spent) * (1 - margin) { return false }
        return true
    }

    /// The best configuration for `work`: with a deadline, the cheapest that meets it (and the
    /// budget); with only a budget, the fastest within it. When no configuration meets the goal
    /// with the margin, the one that meets it without; when none does, the fastest (with a
    /// deadline) or the cheapest.
    public func choose(
        work: Work, elapsed: Double, spent: Double, current: Configuration?, model: StepTimeModel,
        among: [Configuration]? = nil
    ) -> Choice? {
        let all = (among ?? candidates()).map { predict($0, work: work, from: current, model: model) }
        guard let first = all.first else { return nil }
        let fastest = all.reduce(first) { better($1, than: $0, byTime: true) ? $1 : $0 }
        let cheapest = all.reduce(first) { better($1, than: $0, byTime: false) ? $1 : $0 }
        let byTime = goal.deadlineSeconds == nil
        for margin in [margin, 0] {
            let ok = all.filter { meets($0, elapsed: elapsed, spent: spent, margin: margin) }
            if let pick = ok.dropFirst().reduce(ok.first, { better($1, than: $0!, byTime: byTime) ? $1 : $0 }) {
                return Choice(best: pick, meetsGoal: true, fastest: fastest, cheapest: cheapest)
            }
        }
        guard goal.deadlineSeconds != nil else {
            return Choice(best: cheapest, meetsGoal: false, fastest: fastest, cheapest: cheapest)
        }
        // As soon as possible within the budget (a budget is money; a deadline missed is late),
        // and not at any price: the cheapest plan nearly as fast as the fastest.
        var pool = all
        if let b = goal.budgetUSD {
            pool = all.filter { $0.costUSD <= b - spent }
            if pool.isEmpty { return Choice(best: cheapest, meetsGoal: false, fastest: fastest, cheapest: cheapest) }
        }
        let quickest = pool.reduce(pool[0]) { better($1, than: $0, byTime: true) ? $1 : $0 }
        let near = pool.filter { $0.seconds <= quickest.seconds * (1 + fastestSlack) }
        let best = near.reduce(quickest) { better($1, than: $0, byTime: false) ? $1 : $0 }
        return Choice(best: best, meetsGoal: false, fastest: fastest, cheapest: cheapest)
    }

    private func better(_ a: Prediction, than b: Prediction, byTime: Bool) -> Bool {
        if byTime {
            return a.seconds < b.seconds * (1 - 1e-9) || (a.seconds <= b.seconds * (1 + 1e-9) && a.costUSD < b.costUSD)
        }
        return a.costUSD < b.costUSD * (1 - 1e-9) || (a.costUSD <= b.costUSD * (1 + 1e-9) && a.seconds < b.seconds)
    }
}

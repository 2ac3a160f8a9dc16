import Planner

extension Simulator {
    /// Worker counts `optimal` searches: every count to 32, then about 6% apart, to the offer's
    /// limit.
    public func optimalWorkerCounts() -> [Int] {
        var out: [Int] = []
        var w = 1
        while w <= scenario.offer.maxWorkers {
            out.append(w)
            w = w < 32 ? w + 1 : max(w + 1, Int((Double(w) * 1.06).rounded()))
        }
        return out
    }

    /// The best static configuration under the noise-free truth: with a deadline, the cheapest
    /// that meets it (and the budget); with only a budget, the fastest within it. Nil when none
    /// meets the goal (the scenario is infeasible). Exhaustive over workers (`optimalWorkerCounts`),
    /// every shard count up to the workers and the offer's limit, and every memory that holds a
    /// worker.
    public func optimalPlan() -> StaticPlan? {
        let goal = scenario.goal
        var best: StaticPlan?
        forEachStaticPlan { p in
            if let d = goal.deadlineSeconds, p.seconds > d { return }
            if let b = goal.budgetUSD, p.costUSD > b { return }
            guard let current = best else {
                best = p
                return
            }
            let better =
                goal.deadlineSeconds != nil
                ? (p.costUSD, p.seconds) < (current.costUSD, current.seconds)
                : (p.seconds, p.costUSD) < (current.seconds, current.costUSD)
            if better { best = p }
        }
        return best
    }

    /// The fastest static configuration under the noise-free truth, whatever it costs (how much
    /// room a deadline leaves).
    public func fastestPlan() -> StaticPlan? {
        var best: StaticPlan?
        forEachStaticPlan { p in
            if best == nil || p.seconds < best!.seconds { best = p }
        }
        return best
    }

    /// Every static plan the exhaustive search considers, in search order: worker counts
    /// (`optimalWorkerCounts`), every shard count up to the workers and the offer's limit, every
    /// memory that holds a worker.
    private func forEachStaticPlan(_ body: (StaticPlan) -> Void) {
        let memories = scenario.offer.memoryCandidates(minimum: job.minimumMemoryMiB)
        for w in optimalWorkerCounts() {
            let f = factors(workers: w)
            for k in 1...min(w, scenario.offer.maxShards) {
                for m in memories {
                    if let p = staticPlan(Configuration(workers: w, shards: k, memoryMiB: m), factors: f) { body(p) }
                }
            }
        }
    }
}

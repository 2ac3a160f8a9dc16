import Foundation
import KeySchema
import RedisClient
import ShardManager

/// What a job is doing now, as `smlt admin top` shows it: read from the shards alone (version
/// streams, pushed sets, the servers' `ShardStepStats`, the start reports).
public struct JobActivity: Codable, Sendable, Equatable {
    public var job: String
    public var shards: [String]
    public var workers: Int?
    public var steps: Int?
    /// The lowest version over the job's shards (the step the job is in).
    public var version: Int?
    public var finished: Bool
    /// From the servers' smoothed intervals between commits (the slowest shard's).
    public var stepsPerSecond: Double?
    /// The shard that holds the job back: the one at the lowest version, or among shards at the
    /// same version, the one whose last step took longest (first push to commit).
    public var slowestShard: String?
    /// That shard's last step, first push to commit.
    public var slowestStepSeconds: Double?
    /// Workers that have not pushed the current step on every shard still at it (training jobs).
    public var stragglers: [Int]
    /// Gradient bytes the servers read plus model bytes they wrote for their last step, over all
    /// shards.
    public var bytesPerStep: Int?
    /// From the first push the servers recorded to now (to the last commit once finished).
    public var elapsedSeconds: Double?
    /// Invocations of the job's workers that reported a start (the list keeps the last 10,000).
    public var invocations: Int?
    /// Filled in by the caller, from prices it knows (`smlt admin top` takes the run state's).
    public var estimatedCostUSD: Double?
    public var error: String?

    public init(job: String) {
        self.job = job
        shards = []
        finished = false
        stragglers = []
    }

    enum CodingKeys: String, CodingKey {
        case job, shards, workers, steps, version, finished, stragglers, invocations, error
        case stepsPerSecond = "steps_per_second"
        case slowestShard = "slowest_shard"
        case slowestStepSeconds = "slowest_step_seconds"
        case bytesPerStep = "bytes_per_step"
        case elapsedSeconds = "elapsed_seconds"
        case estimatedCostUSD = "estimated_cost_usd"
    }

    /// Every job registered on `endpoints`, in job order; a job that cannot be read is listed
    /// with its `error`.
    /// - Parameters:
    ///   - annotate: runs for each job read, to add what the caller knows (such as the cost).
    public static func snapshot(
        _ endpoints: [RedisEndpoint], options: RedisOptions = RedisOptions(), allowed: [String] = [],
        now: Date = Date(), annotate: (ShardManager, inout JobActivity) -> Void = { _, _ in }
    ) throws(ShardError) -> [JobActivity] {
        let jobs = try ShardManager.jobs(on: endpoints, options: options)
        return jobs.sorted().map { job in
            do throws(ShardError) {
                let m = try ShardManager.open(job: job, endpoints: endpoints, options: options, allowed: allowed)
                var a = try read(m, now: now)
                annotate(m, &a)
                return a
            } catch {
                var a = JobActivity(job: job)
                a.error = error.description
                return a
            }
        }
    }

    /// One shard's part of the picture.
    private struct ShardView: Sendable {
        var version: Int?
        var stats: ShardStepStats?
        var pushed: Set<Int>
    }

    static func read(_ m: ShardManager, now: Date) throws(ShardError) -> JobActivity {
        var a = JobActivity(job: m.map.job)
        a.shards = m.map.shards
        let config = try TrainingConfig.load(from: m)
        a.workers = config.workers
        a.steps = config.steps
        let keys = m.keys
        let views = try m.onEachShard { shard, c throws(RedisError) -> ShardView in
            let replies = try c.pipeline([
                keys.latestVersionCommand(shard: shard), ["HGETALL", keys.serverStats(shard: shard)],
            ])
            let version = JobKeys.version(inLatest: replies[0])
            var fields: [String: String] = [:]
            let flat = (replies[1].array ?? []).compactMap(\.text)
            for i in stride(from: 0, to: flat.count - 1, by: 2) { fields[flat[i]] = flat[i + 1] }
            var pushed = Set<Int>()
            if let version {
                let members = try c.run(["SMEMBERS", keys.pushed(shard: shard, step: version)]).array ?? []
                pushed = Set(members.compactMap { $0.text.flatMap { Int($0) } })
            }
            return ShardView(version: version, stats: ShardStepStats(fields: fields), pushed: pushed)
        }
        let versions = views.compactMap(\.version)
        a.version = versions.count == views.count ? versions.min() : nil
        a.finished = (a.version ?? -1) >= config.steps
        if let v = a.version, !a.finished {
            var missing = Set<Int>()
            for view in views where view.version == v {
                missing.formUnion(Set(0..<config.workers).subtracting(view.pushed))
            }
            a.stragglers = missing.sorted()
        }
        // The slowest: lowest version first, then the longest last step.
        let ranked = views.indices.sorted { i, j in
            let (vi, vj) = (views[i].version ?? -1, views[j].version ?? -1)
            if vi != vj { return vi < vj }
            return (views[i].stats?.stepSeconds ?? 0) > (views[j].stats?.stepSeconds ?? 0)
        }
        if let s = ranked.first, views.count > 0 {
            a.slowestShard = m.map.shards[s]
            a.slowestStepSeconds = views[s].stats?.stepSeconds
        }
        let stats = views.compactMap(\.stats)
        if !a.finished, stats.count == views.count, let slowest = stats.compactMap(\.intervalSeconds).max(),
            slowest > 0
        {
            a.stepsPerSecond = 1 / slowest
        } else if a.finished {
            a.stepsPerSecond = 0
        }
        if !stats.isEmpty { a.bytesPerStep = stats.reduce(0) { $0 + $1.gradientBytes + $1.modelBytes } }
        if let first = stats.compactMap(\.firstMilliseconds).min() {
            let end =
                a.finished ? Double(stats.map(\.unixMilliseconds).max() ?? first) / 1000 : now.timeIntervalSince1970
            a.elapsedSeconds = max(0, end - Double(first) / 1000)
        }
        let starts = keys.starts
        a.invocations = try m.onShard(0) { c throws(RedisError) in try c.run(["LLEN", starts]).integer.map { Int($0) } }
        return a
    }
}

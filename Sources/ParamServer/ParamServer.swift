import Foundation
import KeySchema
import RedisClient
import ShardManager
import Synchronization
import TrainingProtocol

/// A long-running aggregator for the shards it owns: for every job that has chunks on them and a
/// TrainingConfig, it runs BSP steps as the workers' gradients arrive.
///
/// One thread per owned shard. Waiting is event-driven: the thread blocks in BLPOP on the
/// inboxes workers append to after pushing, with a one-second timeout to notice new jobs.
public final class ParamServer: Sendable {
    public let endpoints: [RedisEndpoint]
    public let options: RedisOptions
    private let stopping = Atomic<Bool>(false)
    private let log: @Sendable (String) -> Void

    public init(
        endpoints: [RedisEndpoint], options: RedisOptions = RedisOptions(),
        log: @escaping @Sendable (String) -> Void = { FileHandle.standardError.write(Data("[serve] \($0)\n".utf8)) }
    ) {
        self.endpoints = endpoints
        self.options = options
        self.log = log
    }

    /// Asks every shard loop to return after its current wait.
    public func stop() { stopping.store(true, ordering: .relaxed) }

    /// Serves until `stop()`; returns when every shard loop has ended.
    public func run() {
        let group = DispatchGroup()
        for endpoint in endpoints {
            group.enter()
            Thread {
                self.serve(endpoint)
                group.leave()
            }.start()
        }
        group.wait()
    }

    private func serve(_ endpoint: RedisEndpoint) {
        let name = endpoint.description
        var aggregators: [String: ShardAggregator] = [:]
        var connection: RedisConnection?
        var lastRefresh = ContinuousClock.now - .seconds(10)
        var reportedDown = false
        while !stopping.load(ordering: .relaxed) {
            do {
                if connection == nil { connection = try RedisConnection(endpoint, options: options) }
                let c = connection!
                if reportedDown {
                    log("\(name): reachable again")
                    reportedDown = false
                }
                if ContinuousClock.now - lastRefresh > .seconds(1) {
                    aggregators = try refresh(c, endpoint: name, current: aggregators)
                    lastRefresh = ContinuousClock.now
                }
                for a in aggregators.values where !a.finished {
                    let n = try a.advance(c)
                    if n > 0 && a.finished { log("\(name): job \(a.job) finished at version \(a.version ?? 0)") }
                    // A reconfigured job is reloaded at once (its pushes follow the new map).
                    if a.stale { lastRefresh = ContinuousClock.now - .seconds(10) }
                }
                var wait = RedisCommand("BLPOP", JobKeys.wakeup)
                for a in aggregators.values.sorted(by: { $0.job < $1.job }) {
                    wait.append(a.training.inbox(shard: a.shard))
                }
                wait.append("1")
                let woke = try c.run(wait, blockingFor: .seconds(1))
                if woke.array?.first?.text == JobKeys.wakeup { lastRefresh = ContinuousClock.now - .seconds(10) }
            } catch {
                if !reportedDown { log("\(name): \(error); retrying") }
                reportedDown = true
                connection = nil
                aggregators = [:]
                sleepFor(.milliseconds(200))
            }
        }
    }

    /// Finds the jobs with chunks on this shard; keeps existing aggregators (and their caches).
    private func refresh(
        _ c: RedisConnection, endpoint: String, current: [String: ShardAggregator]
    ) throws(RedisError) -> [String: ShardAggregator] {
        var next: [String: ShardAggregator] = [:]
        for job in (try c.run(["SMEMBERS", JobKeys.jobs]).array ?? []).compactMap(\.text) {
            guard let json = try c.run(["GET", JobKeys(job: job).map]).bytes,
                let map = try? JSONDecoder().decode(ShardMap.self, from: Data(json)),
                (try? map.validate()) != nil,
                let shard = map.shards.firstIndex(of: endpoint),
                let config = try? TrainingConfig.load(job: job, from: c),
                (try? config.validate()) != nil
            else { continue }
            if let a = current[job], !a.stale, a.map == map, a.config == config {
                next[job] = a
            } else {
                if current[job] == nil {
                    log("\(endpoint): serving job \(job) (\(map.chunks(onShard: shard).count) chunks)")
                }
                next[job] = ShardAggregator(
                    map: map, config: config, shard: shard, log: { [log] in log("\(endpoint): \($0)") })
            }
        }
        return next
    }
}

private func sleepFor(_ d: Duration) {
    let (s, atto) = d.components
    Thread.sleep(forTimeInterval: Double(s) + Double(atto) / 1e18)
}

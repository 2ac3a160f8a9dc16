import CoreMetrics
import Foundation
import KeySchema
import Logging
import RedisClient
import ShardManager
import Synchronization
import TrainingProtocol

/// A long-running aggregator for the shards it owns: for every job that has chunks on them and a
/// TrainingConfig, it runs BSP steps as the workers' gradients arrive.
///
/// One thread per owned shard. Waiting is event-driven: the thread blocks in BLPOP on the
/// inboxes of the jobs still training (workers append to them after pushing) and on the wake-up
/// list drivers push to, with a one-second timeout to notice new jobs. Jobs are refreshed
/// cheaply (`ShardJobs`); finished jobs cost nothing between refreshes.
///
/// When Redis fails (unreachable, a permission the ACL user lacks), the thread retries with an
/// exponential backoff capped at `maxBackoff`, and logs each distinct error once and the
/// recovery once.
///
/// It logs through swift-log: every line names the shard in its message and carries `event`,
/// `shard` and, where they apply, `job`, `step`, `worker`, `chunk` and `reason` as metadata. It
/// never logs a password (only endpoints, user names and Redis's own error text). Metrics go
/// to `metrics` (see `ServerMetrics`).
public final class ParamServer: Sendable {
    public let endpoints: [RedisEndpoint]
    public let options: RedisOptions
    private let stopping = Atomic<Bool>(false)
    /// Set when a shard's thread could not start (the server then stopped).
    private let failed = Atomic<Bool>(false)
    private let logger: Logger
    private let metrics: ServerMetrics

    /// The first pause after an error; it doubles after each further failure.
    static let firstBackoff: Duration = .milliseconds(200)
    /// The longest pause between two attempts.
    static let maxBackoff: Duration = .seconds(5)

    /// - Parameters:
    ///   - logger: where the server logs (swift-log's default handler unless given).
    ///   - metrics: where it reports its metrics (none unless given).
    public init(
        endpoints: [RedisEndpoint], options: RedisOptions = RedisOptions(),
        logger: Logger = Logger(label: "smlt.serve"), metrics: ServerMetrics = .off
    ) {
        self.endpoints = endpoints
        self.options = options
        self.logger = logger
        self.metrics = metrics
    }

    /// Logs `message` with `event` and the shard's endpoint as metadata.
    private func log(_ level: Logger.Level, _ event: String, _ endpoint: String, _ message: String) {
        logger.log(level: level, "\(message)", metadata: ["event": "\(event)", "shard": "\(endpoint)"])
    }

    /// Asks every shard loop to return after its current wait.
    public func stop() { stopping.store(true, ordering: .relaxed) }

    /// Serves until `stop()`; returns when every shard loop has ended: true, or false if a shard's
    /// thread could not be started (logged; the other loops were stopped), so that a command
    /// serving it can exit with an error.
    ///
    /// A whole cluster (`cluster://SEEDS` without a lane) is served lane by lane: the server reads
    /// the cluster's recorded lanes (`ClusterLanes`) every second and serves each new one.
    @discardableResult
    public func run() -> Bool {
        let group = DispatchGroup()
        for endpoint in endpoints {
            let isWholeCluster = endpoint.isCluster && endpoint.laneTag == nil
            guard
                start(
                    group, name: isWholeCluster ? "smlt-lanes" : "smlt-serve", endpoint,
                    {
                        isWholeCluster ? self.discoverLanes(endpoint, group) : self.serve(endpoint)
                    })
            else { break }
        }
        group.wait()
        return !failed.load(ordering: .relaxed)
    }

    /// Runs `body` on a thread of its own inside `group`; false (and the server stops) when the
    /// thread cannot start.
    private func start(
        _ group: DispatchGroup, name: String, _ endpoint: RedisEndpoint, _ body: @escaping @Sendable () -> Void
    ) -> Bool {
        group.enter()
        do throws(ThreadStartError) {
            try DedicatedThread.start(name: name) {
                body()
                group.leave()
            }
            return true
        } catch {
            group.leave()
            log(.critical, "server_stop", endpoint.description, "\(endpoint): \(error); stopping the server")
            failed.store(true, ordering: .relaxed)
            stop()
            return false
        }
    }

    /// Serves every lane recorded on `cluster`, starting a loop for each new one, until stopped.
    private func discoverLanes(_ cluster: RedisEndpoint, _ group: DispatchGroup) {
        var served = Set<String>()
        var failing: String?
        var client: ClusterClient?
        while !stopping.load(ordering: .relaxed) {
            do throws(ShardError) {
                if client == nil { client = try ClusterLanes.client(for: cluster, options: options) }
                for lane in try ClusterLanes.registered(on: cluster, using: client!) {
                    guard let tag = lane.laneTag, served.insert(tag).inserted else { continue }
                    log(.info, "lane_found", lane.description, "\(lane): serving this cluster lane")
                    guard start(group, name: "smlt-serve", lane, { self.serve(lane) }) else { return }
                }
                failing = nil
            } catch {
                client = nil
                let message = "\(error)"
                if message != failing {
                    logger.error(
                        "\(cluster): cannot read the cluster's lanes: \(message); retrying every second",
                        metadata: ["event": "redis_error", "shard": "\(cluster)"])
                    failing = message
                }
            }
            pause(.seconds(1))
        }
    }

    private func serve(_ endpoint: RedisEndpoint) {
        let name = endpoint.description
        let jobs = ShardJobs(endpoint: name, logger: logger, metrics: metrics)
        let shardMetrics = metrics.shard(name)
        /// Whether this loop has recorded its start on the shard (or given up trying).
        var startRecorded = false
        var connection: RedisConnection?
        var lastRefresh = ContinuousClock.now - .seconds(10)
        /// The error last logged, while failing; nil while working.
        var failing: String?
        var backoff = Self.firstBackoff
        while !stopping.load(ordering: .relaxed) {
            do throws(RedisError) {
                if connection == nil { connection = try RedisConnection(endpoint, options: options) }
                let c = connection!
                if !startRecorded {
                    startRecorded = true
                    recordStart(c, name, shardMetrics)
                }
                if ContinuousClock.now - lastRefresh > .seconds(1) {
                    try jobs.refresh(c)
                    lastRefresh = ContinuousClock.now
                }
                for a in jobs.active {
                    let n: Int
                    do throws(RedisError) {
                        n = try a.advance(c)
                    } catch {
                        // A job whose keys the ACL user may not touch must not stop the others.
                        guard error.code == .permissionDenied else { throw error }
                        jobs.deny(a.job, error)
                        continue
                    }
                    if n > 0 { jobs.confirm(a.job) }
                    if n > 0 && a.finished {
                        logger.info(
                            "\(name): job \(a.job) finished at version \(a.version ?? 0)",
                            metadata: [
                                "event": "job_finished", "shard": "\(name)", "job": "\(a.job)",
                                "version": "\(a.version ?? 0)",
                            ])
                    }
                    // A reconfigured job is reloaded at once (its pushes follow the new map).
                    if a.stale { lastRefresh = ContinuousClock.now - .seconds(10) }
                }
                // Finished jobs are not waited on: their workers have nothing left to push.
                var wait = RedisCommand("BLPOP", JobKeys.wakeup)
                for a in jobs.active { wait.append(a.training.inbox(shard: a.shard)) }
                wait.append("1")
                let woke: RedisReply
                do throws(RedisError) {
                    woke = try c.run(wait, blockingFor: .seconds(1))
                } catch {
                    guard error.code == .permissionDenied, try denyJobsWithClosedInboxes(c, jobs) else { throw error }
                    continue
                }
                if let parts = woke.array, parts.first?.text == JobKeys.wakeup {
                    if let job = parts.dropFirst().first?.text { jobs.wake(job) }
                    lastRefresh = ContinuousClock.now - .seconds(10)
                }
                // A whole round worked: only now is the shard usable again.
                if failing != nil {
                    log(.notice, "redis_recovered", name, "\(name): reachable again; serving \(jobs.servedCount) jobs")
                    failing = nil
                }
                backoff = Self.firstBackoff
            } catch {
                shardMetrics.redisErrors.increment()
                let message = "\(error)"
                if message != failing {
                    let hint = error.code == .permissionDenied ? " (an operator must change the ACL)" : ""
                    logger.error(
                        "\(name): \(message)\(hint); retrying, at most every \(Self.maxBackoff)",
                        metadata: ["event": "redis_error", "shard": "\(name)", "reason": "\(error.code)"])
                    failing = message
                }
                connection = nil
                // Caches may be stale (a half-read step): the next round reads everything again.
                jobs.reset()
                pause(backoff)
                backoff = min(backoff * 2, Self.maxBackoff)
            }
        }
    }

    /// After a `NOPERM` for the BLPOP on the wake-up key and the active jobs' inboxes: pops
    /// nothing (`LPOP key 0`) from each inbox, and stops serving each job whose inbox the ACL user
    /// may not touch, so that one job's keys do not stop the shard's others. Returns whether any
    /// job was the cause (if none was, the command or the wake-up key is, and the whole loop must
    /// wait for the ACL).
    private func denyJobsWithClosedInboxes(_ c: RedisConnection, _ jobs: ShardJobs) throws(RedisError) -> Bool {
        let active = jobs.active
        let probes = try c.pipeline(active.map { ["LPOP", $0.training.inbox(shard: $0.shard), "0"] })
        var denied = false
        for (a, reply) in zip(active, probes) {
            guard case .error(let m) = reply, m.contains("keys") else { continue }
            let error = c.serverError(m, command: "BLPOP")
            guard error.code == .permissionDenied else { continue }
            jobs.deny(a.job, error)
            denied = true
        }
        return denied
    }

    /// Counts this server's start on the shard (`smlt:serve:starts`, kept in Redis so that it
    /// outlives the process): every start after the first is a restart. A failure (an ACL without
    /// INCR on that key) is logged and does not stop serving.
    private func recordStart(_ c: RedisConnection, _ name: String, _ shardMetrics: ShardMetrics) {
        do throws(RedisError) {
            let reply = try c.run(["INCR", JobKeys.serverStarts])
            if case .error(let m) = reply { throw c.serverError(m, command: "INCR") }
            guard let starts = reply.integer, starts >= 1 else {
                throw c.serverError("unexpected reply \(reply)", command: "INCR")
            }
            shardMetrics.serverRestarts.increment(by: Int(starts) - 1)
            logger.info(
                "\(name): server start \(starts) recorded on this shard (\(starts - 1) restarts)",
                metadata: ["event": "server_start", "shard": "\(name)", "starts": "\(starts)"])
        } catch {
            logger.warning(
                "\(name): cannot count this start in \(JobKeys.serverStarts): \(error); smlt_server_restarts_total stays 0",
                metadata: ["event": "server_start", "shard": "\(name)", "reason": "\(error.code)"])
        }
    }

    /// Sleeps for `d`, waking early when the server stops.
    private func pause(_ d: Duration) {
        let end = ContinuousClock.now + d
        while !stopping.load(ordering: .relaxed) {
            let left = end - ContinuousClock.now
            if left <= .zero { return }
            sleepFor(min(left, .milliseconds(100)))
        }
    }
}

private func sleepFor(_ d: Duration) {
    let (s, atto) = d.components
    Thread.sleep(forTimeInterval: Double(s) + Double(atto) / 1e18)
}

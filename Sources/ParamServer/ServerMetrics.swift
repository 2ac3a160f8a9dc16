import CoreMetrics

/// Where a parameter server reports its metrics: a swift-metrics factory (Prometheus in `smlt
/// serve --metrics-port`, none otherwise), passed in rather than bootstrapped globally.
///
/// Every series carries the `shard` label (the shard's endpoint) and, per job, the `job` label;
/// rejected pushes add `reason` (one of `RejectionReason`'s few values). There is no per-worker
/// label, so a job's series do not grow with its workers. A job's series are removed when the
/// job is no longer registered on the shard, and `finishedRetention` after it finished.
public struct ServerMetrics: Sendable {
    public let factory: any MetricsFactory

    /// How long a finished job's series stay (long enough for several scrapes).
    public static let finishedRetention: Duration = .seconds(300)

    /// Reports to `factory`.
    public init(factory: any MetricsFactory) { self.factory = factory }

    /// Reports nothing: every update is a call into a no-op handler.
    public static let off = ServerMetrics(factory: NOOPMetricsHandler.instance)

    /// The metric families, by name.
    public enum Name {
        public static let stepsCommitted = "smlt_steps_committed_total"
        public static let stepSeconds = "smlt_step_seconds"
        public static let gradientBytes = "smlt_gradient_bytes_total"
        public static let modelBytes = "smlt_model_bytes_total"
        public static let pushRejected = "smlt_push_rejected_total"
        public static let version = "smlt_version"
        public static let workersPushed = "smlt_workers_pushed"
        public static let redisErrors = "smlt_redis_errors_total"
        public static let serverRestarts = "smlt_server_restarts_total"
    }

    /// The buckets of `smlt_step_seconds`, from a round trip on loopback to a slow step.
    public static let stepSecondsBuckets: [Duration] = [
        .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25),
        .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
        .milliseconds(2500), .seconds(5), .seconds(10), .seconds(30), .seconds(60),
    ]

    /// The series of one shard that are not about a job.
    func shard(_ endpoint: String) -> ShardMetrics { ShardMetrics(endpoint: endpoint, factory: factory) }

    /// The series of `job` on the shard at `endpoint`.
    func job(_ job: String, shard endpoint: String) -> JobMetrics {
        JobMetrics(job: job, shard: endpoint, factory: factory)
    }
}

/// A shard's own series: Redis errors of its loop and the restarts recorded on the shard.
final class ShardMetrics {
    let redisErrors: Counter
    let serverRestarts: Counter

    init(endpoint: String, factory: any MetricsFactory) {
        let labels = [("shard", endpoint)]
        redisErrors = Counter(label: ServerMetrics.Name.redisErrors, dimensions: labels, factory: factory)
        serverRestarts = Counter(label: ServerMetrics.Name.serverRestarts, dimensions: labels, factory: factory)
    }
}

extension ServerMetrics {
    /// Makes, `steps` times, the metric updates an aggregator makes for one step of a job with
    /// `workers` workers (per push: the bytes read and the workers pushed; per commit: the step
    /// counter, the step time, the bytes written, the version, the workers pushed), through the
    /// same per-job lookup, and returns how long they took; the series are removed afterwards.
    /// For `smlt-bench aggregate --metrics`, which reports it next to the step time.
    public func timeStepUpdates(workers: Int, steps: Int) -> Duration {
        let series = JobSeries(endpoint: "127.0.0.1:0", metrics: self)
        let job = "metrics-cost-\(UInt32.random(in: 0...UInt32.max))"
        let clock = ContinuousClock()
        let elapsed = clock.measure {
            for step in 0..<steps {
                for w in 0..<workers {
                    series.of(job).gradientBytes.increment(by: 1 << 20)
                    series.of(job).workersPushed.record(w + 1)
                }
                let m = series.of(job)
                m.stepsCommitted.increment()
                m.modelBytes.increment(by: 1 << 20)
                m.version.record(step + 1)
                m.workersPushed.record(0)
                m.stepSeconds.recordNanoseconds(Int64(1_000_000 + step))
            }
        }
        series.retire(job)
        return elapsed
    }
}

import CoreMetrics

/// One job's series on one shard, updated by its aggregator: per commit and per push, never per
/// element. Owned by one aggregator (one thread); the handlers themselves are thread safe.
final class JobMetrics {
    let job: String
    let shard: String
    private let labels: [(String, String)]
    let stepsCommitted: Counter
    let stepSeconds: CoreMetrics.Timer
    let gradientBytes: Counter
    let modelBytes: Counter
    let version: Gauge
    let workersPushed: Gauge
    /// One series per reason, all from the start (at 0), so that a rate sees the first one.
    private let rejected: [RejectionReason: Counter]

    init(job: String, shard: String, factory: any MetricsFactory) {
        self.job = job
        self.shard = shard
        labels = [("job", job), ("shard", shard)]
        typealias N = ServerMetrics.Name
        stepsCommitted = Counter(label: N.stepsCommitted, dimensions: labels, factory: factory)
        stepSeconds = CoreMetrics.Timer(label: N.stepSeconds, dimensions: labels, factory: factory)
        gradientBytes = Counter(label: N.gradientBytes, dimensions: labels, factory: factory)
        modelBytes = Counter(label: N.modelBytes, dimensions: labels, factory: factory)
        version = Gauge(label: N.version, dimensions: labels, factory: factory)
        workersPushed = Gauge(label: N.workersPushed, dimensions: labels, factory: factory)
        var rejected: [RejectionReason: Counter] = [:]
        for reason in RejectionReason.allCases {
            rejected[reason] = Counter(
                label: N.pushRejected, dimensions: labels + [("reason", reason.rawValue)], factory: factory)
        }
        self.rejected = rejected
    }

    func rejected(_ reason: RejectionReason) { rejected[reason]?.increment() }

    /// Removes the job's series from the backend.
    func destroy() {
        stepsCommitted.destroy()
        stepSeconds.destroy()
        gradientBytes.destroy()
        modelBytes.destroy()
        version.destroy()
        workersPushed.destroy()
        for c in rejected.values { c.destroy() }
    }
}

/// The job series of one shard's loop, by job: they outlive an aggregator (a reconfiguration
/// replaces it, a Redis error drops them all), so counters do not start again at 0; they go
/// only when `retire` is called (the job was dropped, or finished a while ago).
final class JobSeries {
    let endpoint: String
    private let metrics: ServerMetrics
    private var byJob: [String: JobMetrics] = [:]

    init(endpoint: String, metrics: ServerMetrics) {
        self.endpoint = endpoint
        self.metrics = metrics
    }

    /// The job's series, created on first use.
    func of(_ job: String) -> JobMetrics {
        if let m = byJob[job] { return m }
        let m = metrics.job(job, shard: endpoint)
        byJob[job] = m
        return m
    }

    func exists(_ job: String) -> Bool { byJob[job] != nil }

    /// Removes the job's series from the backend.
    func retire(_ job: String) { byJob.removeValue(forKey: job)?.destroy() }
}

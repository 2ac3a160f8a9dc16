import KeySchema
import RedisClient

/// A shard's last commit of a job, as its parameter server records it in
/// `smlt:{JOB}:stats:SHARD` (a hash, written in the commit's transaction) for `smlt admin top`.
/// Informational: nothing in the protocol depends on it.
public struct ShardStepStats: Sendable, Equatable {
    /// The version the commit published.
    public var version: Int
    /// When it committed, in milliseconds since 1970 (the server's clock).
    public var unixMilliseconds: Int
    /// Workers of the step.
    public var workers: Int
    /// Gradient blob bytes the server read for the step (headers included).
    public var gradientBytes: Int
    /// Model (and optimizer and checkpoint) blob bytes it wrote.
    public var modelBytes: Int
    /// From the first push the server saw of the step to the commit; nil when it did not see one
    /// (it started while the pushes were in).
    public var stepSeconds: Double?
    /// The interval between this server's commits, smoothed; nil until it committed two in a row.
    public var intervalSeconds: Double?

    public init(
        version: Int, unixMilliseconds: Int, workers: Int, gradientBytes: Int, modelBytes: Int,
        stepSeconds: Double? = nil, intervalSeconds: Double? = nil
    ) {
        self.version = version
        self.unixMilliseconds = unixMilliseconds
        self.workers = workers
        self.gradientBytes = gradientBytes
        self.modelBytes = modelBytes
        self.stepSeconds = stepSeconds
        self.intervalSeconds = intervalSeconds
    }

    /// The commands that store these statistics at `key` (`HSET`; fields that are nil are
    /// deleted), and `HSETNX first_ms`: the first commit the hash has seen, minus its step time.
    public func commands(_ key: String) -> [RedisCommand] {
        var set = RedisCommand(
            "HSET", key, "version", "\(version)", "at_ms", "\(unixMilliseconds)", "workers", "\(workers)",
            "gradient_bytes", "\(gradientBytes)", "model_bytes", "\(modelBytes)")
        var unset = RedisCommand("HDEL", key)
        for (field, value) in [("step_s", stepSeconds), ("interval_s", intervalSeconds)] {
            if let value {
                set.append(field)
                set.append("\(value)")
            } else {
                unset.append(field)
            }
        }
        let first = unixMilliseconds - Int(((stepSeconds ?? 0) * 1000).rounded())
        var commands = [set, ["HSETNX", key, "first_ms", "\(first)"]]
        if unset.arguments.count > 2 { commands.append(unset) }
        return commands
    }

    /// Reads the hash's fields (`HGETALL` as field, value pairs); nil when a required one is
    /// missing or not a number.
    public init?(fields: [String: String]) {
        guard let v = fields["version"].flatMap({ Int($0) }), let at = fields["at_ms"].flatMap({ Int($0) }),
            let w = fields["workers"].flatMap({ Int($0) }), let g = fields["gradient_bytes"].flatMap({ Int($0) }),
            let m = fields["model_bytes"].flatMap({ Int($0) })
        else { return nil }
        self.init(
            version: v, unixMilliseconds: at, workers: w, gradientBytes: g, modelBytes: m,
            stepSeconds: fields["step_s"].flatMap { Double($0) }.filter(\.isFinite),
            intervalSeconds: fields["interval_s"].flatMap { Double($0) }.filter(\.isFinite))
        firstMilliseconds = fields["first_ms"].flatMap { Int($0) }
    }

    /// `first_ms` as read (see `commands`); not written from here.
    public var firstMilliseconds: Int?
}

extension Optional where Wrapped == Double {
    fileprivate func filter(_ keep: (Double) -> Bool) -> Double? { flatMap { keep($0) ? $0 : nil } }
}

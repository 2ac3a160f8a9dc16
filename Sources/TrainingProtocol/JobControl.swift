import Foundation
import KeySchema
import RedisClient
import ShardManager

/// A job's reconfiguration control, read by workers before every step from the home shard
/// (shard 0): the step before which workers must wait, and the map epoch.
///
/// A reconfiguration (re-sharding, a new number of workers) happens at a step boundary `s`: the
/// driver sets the hold to `s` before the home shard publishes version `s`, waits until every
/// shard has published `s`, changes the job, bumps the epoch and lifts the hold. A worker about to
/// run step `t >= hold` waits; a worker whose map has another epoch reloads map and config.
public struct JobControl: Sendable, Equatable {
    /// Workers must not start this step or a later one yet.
    public var hold: Int?
    /// The epoch of the job's current map; nil when the job is gone from the home shard.
    public var epoch: Int?

    public init(hold: Int?, epoch: Int?) {
        self.hold = hold
        self.epoch = epoch
    }

    /// Parses the reply to `JobKeys.readControlCommand`.
    public init(_ reply: RedisReply) {
        let values = reply.array ?? []
        hold = values.first?.text.flatMap { Int($0) }
        epoch = values.count > 1 ? values[1].text.flatMap { Int($0) } : nil
    }

    /// Whether a worker about to run `step` must wait.
    public func holds(_ step: Int) -> Bool { hold.map { step >= $0 } ?? false }
}

extension JobKeys {
    /// Reads the hold and the epoch (on the home shard).
    public var readControlCommand: RedisCommand { ["MGET", hold, epoch] }

    /// Appends one step's metrics (JSON) to the capped metrics stream.
    public func reportMetricsCommand(_ json: [UInt8]) -> RedisCommand {
        RedisCommand("XADD", metrics, "MAXLEN", "~", "\(StepMetrics.retained)", "*", "m").appending(bytes: json)
    }

    /// Appends a start report (JSON) to the capped list of starts.
    public func reportStartCommands(_ json: [UInt8]) -> [RedisCommand] {
        [RedisCommand("RPUSH", starts).appending(bytes: json), ["LTRIM", starts, "-\(StartReport.retained)", "-1"]]
    }
}

extension ShardManager {
    /// Sets the job's hold to `step`, but only while the home shard has not yet published
    /// version `step` (so no worker can have started it) and no nearer hold is set. Returns
    /// whether the hold is now at `step`.
    public func setHold(at step: Int) throws(ShardError) -> Bool {
        let keys = self.keys
        return try onShard(0) { c throws(RedisError) -> Bool in
            _ = try c.pipeline([["WATCH", keys.versions(shard: 0), keys.hold]])
            let current = try c.pipeline([keys.latestVersionCommand(shard: 0), ["GET", keys.hold]])
            let latest = JobKeys.version(inLatest: current[0]) ?? -1
            if let existing = current[1].text.flatMap({ Int($0) }), existing <= step {
                try c.run(["UNWATCH"])
                return existing == step
            }
            guard latest < step else {
                try c.run(["UNWATCH"])
                return false
            }
            let replies = try c.pipeline([["MULTI"], ["SET", keys.hold, "\(step)"], ["EXEC"]])
            return replies.last != .null
        }
    }

    /// Lifts the hold at `step` (if it is still the hold), or moves it to `next`.
    public func releaseHold(_ step: Int, next: Int? = nil) throws(ShardError) {
        let keys = self.keys
        try onShard(0) { c throws(RedisError) in
            guard try c.run(["GET", keys.hold]).text.flatMap({ Int($0) }) == step else { return }
            if let next { try c.run(["SET", keys.hold, "\(next)"]) } else { try c.run(["DEL", keys.hold]) }
        }
    }

    /// The job's control as the home shard has it now.
    public func control() throws(ShardError) -> JobControl {
        let command = keys.readControlCommand
        return try onShard(0) { c throws(RedisError) in JobControl(try c.run(command)) }
    }
}

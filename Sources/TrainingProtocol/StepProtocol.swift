import KeySchema
import RedisClient
import ShardManager

/// The named operations of the BSP step protocol (docs/wire-format.md, "The BSP step protocol"),
/// as the commands each one sends. Workers, servers, the driver and the admin tools all go
/// through these, so every step of the protocol is written once.
extension JobKeys {
    /// Reads the newest entry of shard `shard`'s version stream.
    public func latestVersionCommand(shard: Int) -> RedisCommand {
        ["XREVRANGE", versions(shard: shard), "+", "-", "COUNT", "1"]
    }

    /// The version in a reply to `latestVersionCommand`; nil when the stream is empty or absent.
    public static func version(inLatest reply: RedisReply) -> Int? {
        reply.array?.first?.array?.first?.text.flatMap { Int($0.split(separator: "-").first ?? "") }
    }

    /// The newest version shard `shard` has published, read on `c` (that shard's connection).
    public func latestVersion(shard: Int, on c: RedisConnection) throws(RedisError) -> Int? {
        Self.version(inLatest: try c.run(latestVersionCommand(shard: shard)))
    }

    /// Waits on shard `shard` until it has published version `step` or later (entry ids are
    /// `VERSION-1`, so "after `STEP-0`"), at most `wait`: the reply is null when it ran out.
    public func waitForVersionCommand(shard: Int, step: Int, wait: Duration) -> RedisCommand {
        let ms = max(1, Int(wait.components.seconds * 1000 + wait.components.attoseconds / 1_000_000_000_000_000))
        return ["XREAD", "COUNT", "1", "BLOCK", "\(ms)", "STREAMS", versions(shard: shard), "\(step)-0"]
    }

    /// Publishes parameter version `version` on shard `shard`: the stream entry `VERSION-1`.
    /// Servers send it inside their commit transaction; the driver sends it for version 0 and
    /// after a restore.
    public func publishVersionCommand(shard: Int, version: Int) -> RedisCommand {
        ["XADD", versions(shard: shard), "MAXLEN", "~", "1000", "\(version)-1", "version", "\(version)"]
    }

    /// Wakes the servers of a shard so they look at this job again (new, restored or changed).
    public var wakeServersCommands: [RedisCommand] {
        [["RPUSH", Self.wakeup, job], ["EXPIRE", Self.wakeup, "60"]]
    }

    /// Whether shard `shard` refused worker `worker`'s push of `step`: the shard is still at version
    /// `step` and the worker is not in its pushed set (a server takes a worker out of the set
    /// when its gradient is missing or fails a check). One transaction, so a commit between the
    /// two reads cannot make a push look refused. Send it on that shard's connection.
    public func pushRefused(shard: Int, step: Int, worker: Int, on c: RedisConnection) throws(RedisError) -> Bool {
        let replies = try c.pipeline([
            ["MULTI"], latestVersionCommand(shard: shard),
            ["SISMEMBER", pushed(shard: shard, step: step), "\(worker)"],
            ["EXEC"],
        ])
        guard let results = replies.last?.array, results.count == 2 else {
            throw RedisError(
                .unexpectedReply, endpoint: c.endpoint.description, "EXEC replied \(replies.last ?? .null)")
        }
        return Self.version(inLatest: results[0]) == step && results[1].integer == 0
    }

    /// Marks worker `worker`'s push of `step` complete on shard `shard` (phase two of a push) and
    /// wakes the shard's server.
    public func markPushedCommands(shard: Int, step: Int, worker: Int, ttlSeconds: Int) -> [RedisCommand] {
        [
            ["SADD", pushed(shard: shard, step: step), "\(worker)"],
            ["EXPIRE", pushed(shard: shard, step: step), "\(ttlSeconds)"],
            ["RPUSH", inbox(shard: shard), "\(step):\(worker)"],
            ["LTRIM", inbox(shard: shard), "-1000", "-1"],
        ]
    }
}

extension ShardManager {
    /// Publishes parameter version `version` on every shard of the job and wakes its servers.
    /// The chunks must already hold that version.
    public func publish(version: Int) throws(ShardError) {
        let keys = self.keys
        _ = try onEachShard { shard, c throws(RedisError) in
            try c.checkedPipeline(
                [keys.publishVersionCommand(shard: shard, version: version)] + keys.wakeServersCommands)
        }
    }

    /// Drops the job's step state on every shard: pending gradients, pushed sets, inboxes and
    /// version streams (before a restore publishes a version again).
    public func dropStepState() throws(ShardError) {
        let keys = self.keys
        _ = try onEachShard { shard, c throws(RedisError) in
            for pattern in keys.pendingPatterns { try c.deleteKeys(matching: pattern) }
            try c.run(["DEL", keys.versions(shard: shard), keys.inbox(shard: shard)])
        }
    }

    /// The newest version each shard has published (nil for a shard with none).
    public func publishedVersions() throws(ShardError) -> [Int?] {
        let keys = self.keys
        return try onEachShard { shard, c throws(RedisError) in try keys.latestVersion(shard: shard, on: c) }
    }
}

import RedisClient
import ShardManager

/// Named byte objects of a job (staged data partitions, saved worker state), each on the shard
/// its name hashes to.
public struct JobObjects: Sendable {
    let shards: ShardManager
    let keys: TrainingKeys

    public init(_ shards: ShardManager) {
        self.shards = shards
        keys = TrainingKeys(job: shards.map.job)
    }

    func shard(for name: String) -> Int {
        Placement.shard(
            forChunk: Int(truncatingIfNeeded: Hash64.fnv1a(name.utf8)), job: shards.map.job, shards: shards.map.shards)
    }

    public func get(_ name: String) throws(ShardError) -> [UInt8]? {
        let target = shard(for: name)
        let key = keys.object(name)
        return try shards.onShard(target) { c throws(RedisError) in try c.run(["GET", key]).bytes }
    }

    public func set(_ name: String, _ bytes: [UInt8]) throws(ShardError) {
        let target = shard(for: name)
        let key = keys.object(name)
        try shards.onShard(target) { c throws(RedisError) in
            _ = try c.run(RedisCommand("SET", key).appending(bytes: bytes))
        }
    }
}

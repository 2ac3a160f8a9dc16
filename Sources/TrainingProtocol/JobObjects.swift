import KeySchema
import RedisClient
import ShardManager

/// Named byte objects of a job (staged data partitions, saved worker state), each on the shard
/// its name hashes to.
public struct JobObjects: Sendable {
    let shards: ShardManager
    let keys: JobKeys

    public init(_ shards: ShardManager) {
        self.shards = shards
        keys = JobKeys(job: shards.map.job)
    }

    func shard(for name: String) -> Int { Self.shard(for: name, job: shards.map.job, shards: shards.map.shards) }

    /// The index in `shards` of the shard that holds object `name` of `job`: plain rendezvous
    /// hashing of chunk number `FNV-1a-64(name)`.
    public static func shard(for name: String, job: String, shards: [String]) -> Int {
        Placement.shard(forChunk: Int(truncatingIfNeeded: Hash64.fnv1a(name.utf8)), job: job, shards: shards)
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

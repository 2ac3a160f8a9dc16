import RedisClient
import ShardManager
import TensorBlob

extension TrainingConfig {
    /// Starts BSP training of a registered job: stores this config, writes `initial` as parameter
    /// version 0, publishes version 0 on every shard's version stream and wakes the servers.
    /// Workers can pull version 0 as soon as this returns.
    public func start(on shards: ShardManager, initial: [Float]) throws(ShardError) {
        try validate()
        try store(on: shards)
        try shards.write(initial, as: .params, step: 0, producer: BlobHeader.serverProducer)
        let training = TrainingKeys(job: shards.map.job)
        let job = shards.map.job
        _ = try shards.onEachShard { shard, c throws(RedisError) in
            _ = try c.pipeline([
                ["XADD", training.versions(shard: shard), "0-1", "version", "0"],
                ["RPUSH", TrainingKeys.wakeup, job],
                ["EXPIRE", TrainingKeys.wakeup, "60"],
            ]).map { r throws(RedisError) in
                if case .error(let m) = r { throw c.serverError(m, command: "XADD") }
            }
        }
    }
}

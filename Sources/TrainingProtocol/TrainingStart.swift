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
        try shards.publish(version: 0)
    }
}

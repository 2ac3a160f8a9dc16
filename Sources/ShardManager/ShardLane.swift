import RedisClient
import Synchronization

/// One shard's endpoint and its connection, used by one thread at a time.
final class ShardLane: Sendable {
    let endpoint: RedisEndpoint
    let options: RedisOptions
    private let connection = Mutex<RedisConnection?>(nil)

    init(endpoint: RedisEndpoint, options: RedisOptions) {
        self.endpoint = endpoint
        self.options = options
    }

    /// Runs `body` with the lane's connection, connecting first if needed.
    func with<R: Sendable>(_ body: (RedisConnection) throws(RedisError) -> R) throws(RedisError) -> R {
        try connection.withLock { (c: inout RedisConnection?) throws(RedisError) -> R in
            if c == nil { c = try RedisConnection(endpoint, options: options) }
            return try body(c!)
        }
    }
}

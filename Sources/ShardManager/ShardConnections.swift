import RedisClient
import Synchronization

/// One connection per shard, each used by one thread at a time and opened on first use; work
/// over all shards runs at once on the process's bounded pool of threads (see `Parallel`). The
/// ShardManager routes through it, and tools that talk to the same servers without a job's map
/// (the benchmark's baselines) use it directly.
public final class ShardConnections: Sendable {
    public let endpoints: [RedisEndpoint]
    public let options: RedisOptions
    private let lanes: [Lane]

    private final class Lane: Sendable {
        let connection = Mutex<RedisConnection?>(nil)
    }

    public init(_ endpoints: [RedisEndpoint], options: RedisOptions = RedisOptions()) {
        self.endpoints = endpoints
        self.options = options
        lanes = endpoints.map { _ in Lane() }
    }

    public var count: Int { endpoints.count }

    /// Runs `body` with shard `i`'s connection, connecting first if needed.
    public func on<R: Sendable>(_ i: Int, _ body: (RedisConnection) throws(RedisError) -> R) throws(RedisError) -> R {
        let (endpoint, options) = (endpoints[i], self.options)
        return try lanes[i].connection.withLock { (c: inout RedisConnection?) throws(RedisError) -> R in
            if c == nil { c = try RedisConnection(endpoint, options: options) }
            return try body(c!)
        }
    }

    /// Runs `body` on every shard at once (up to the pool's size; beyond it, in rounds) and
    /// returns each outcome.
    public func eachResult<R: Sendable>(
        _ body: @escaping @Sendable (Int, RedisConnection) throws(RedisError) -> R
    ) -> [Result<R, RedisError>] {
        Parallel.map(count) { i in
            Result { () throws(RedisError) -> R in try self.on(i) { c throws(RedisError) in try body(i, c) } }
        }
    }

    /// Runs `body` on every shard at once; throws the first shard's error.
    public func each<R: Sendable>(
        _ body: @escaping @Sendable (Int, RedisConnection) throws(RedisError) -> R
    ) throws(RedisError) -> [R] {
        try eachResult(body).map { r throws(RedisError) in try r.get() }
    }
}

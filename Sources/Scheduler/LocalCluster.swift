import Foundation
import LocalProcesses
import RedisClient

/// Throw-away shards for one run: K redis-server processes on free loopback ports and one
/// `smlt serve` parameter server per shard. `stop()` ends them all, servers first.
public final class LocalCluster: Sendable {
    public let redis: [RedisServerProcess]
    public let servers: [ChildProcess]

    public var endpoints: [RedisEndpoint] { redis.map(\.endpoint) }

    /// Starts the shards and their parameter servers.
    /// - Parameters:
    ///   - executable: the `smlt` binary that runs `serve`.
    ///   - logDirectory: where each server's log goes (`serve-N.log`).
    public init(shards: Int, executable: String = currentExecutable(), logDirectory: String) throws {
        var redis: [RedisServerProcess] = []
        var servers: [ChildProcess] = []
        do {
            for _ in 0..<shards { redis.append(try RedisServerProcess()) }
            for (i, r) in redis.enumerated() {
                servers.append(
                    try ChildProcess(
                        executable, arguments: ["serve", "--redis", r.endpoint.description], stdout: .discard,
                        stderr: .file("\(logDirectory)/serve-\(i).log")))
            }
        } catch {
            for s in servers { s.terminate() }
            for r in redis { r.stop() }
            throw error
        }
        self.redis = redis
        self.servers = servers
    }

    deinit { stop() }

    public func stop() {
        for s in servers { s.terminate(grace: .seconds(3)) }
        for r in redis { r.stop() }
    }
}

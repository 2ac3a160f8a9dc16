import Foundation
import LocalProcesses
import RedisClient
import Synchronization

/// Throw-away shards for one run: K redis-server processes on free loopback ports and one
/// `smlt serve` parameter server per shard, supervised: `superviseServers()` restarts a server
/// that died. `stop()` ends them all, servers first.
public final class LocalCluster: Sendable {
    private let redisProcesses: Mutex<[RedisServerProcess]>
    private let serverProcesses: Mutex<[ChildProcess]>
    let executable: String
    let logDirectory: String

    /// The parameter-server processes, one per shard (a restarted one replaces the dead one).
    public var servers: [ChildProcess] { serverProcesses.withLock { $0 } }

    public var redis: [RedisServerProcess] { redisProcesses.withLock { $0 } }
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
            for i in redis.indices {
                servers.append(try Self.startServer(i, redis[i], executable: executable, logDirectory: logDirectory))
            }
        } catch {
            for s in servers { s.terminate() }
            for r in redis { r.stop() }
            throw error
        }
        redisProcesses = Mutex(redis)
        self.executable = executable
        self.logDirectory = logDirectory
        serverProcesses = Mutex(servers)
    }

    private static func startServer(
        _ i: Int, _ r: RedisServerProcess, executable: String, logDirectory: String
    ) throws -> ChildProcess {
        try ChildProcess(
            executable, arguments: ["serve", "--redis", r.endpoint.description], stdout: .discard,
            stderr: .file("\(logDirectory)/serve-\(i).log"))
    }

    deinit { stop() }

    /// Restarts every parameter server that has exited; returns the shards restarted.
    public func superviseServers() throws -> [Int] {
        var restarted: [Int] = []
        let redis = self.redis
        try serverProcesses.withLock { servers in
            for i in servers.indices where !servers[i].isRunning {
                servers[i] = try Self.startServer(i, redis[i], executable: executable, logDirectory: logDirectory)
                restarted.append(i)
            }
        }
        return restarted
    }

    /// Restarts shard `i`'s redis-server on the same port with no data, as after a crash of a
    /// shard without persistence. Its parameter server reconnects by itself.
    public func wipeShard(_ i: Int) throws {
        let old = redis[i]
        old.kill()
        let fresh = try RedisServerProcess(port: old.port)
        redisProcesses.withLock { $0[i] = fresh }
    }

    public func stop() {
        for s in servers { s.terminate(grace: .seconds(3)) }
        for r in redis { r.stop() }
    }
}

import Foundation
import LocalProcesses
import RedisClient
import Synchronization
import TrainingProtocol

/// Throw-away shards for one run: redis-server processes on free loopback ports, each with one
/// parameter server, supervised: `superviseServers()` restarts a server that died. Shards can be
/// added and removed while the run goes on. `stop()` ends them all, servers first.
///
/// The servers are started as `serverCommand` with the shard's endpoint in `SMLT_REDIS` and the
/// password in `SMLT_REDIS_PASSWORD`, so this type knows nothing of any command-line syntax.
public final class LocalCluster: Sendable {
    private struct Shard {
        var redis: RedisServerProcess
        var server: ChildProcess
        /// A number for the server's log file, unique within the run.
        var id: Int
    }

    private let shards: Mutex<[Shard]>
    private let nextID = Atomic<Int>(0)
    let serverCommand: [String]
    let logDirectory: String
    /// The shards' `requirepass`, also given to their servers.
    public let password: String?
    /// The first server's metrics port: shard `i` (in the order started) gets this + i.
    public let metricsPort: Int?

    /// The parameter-server processes, one per shard (a restarted one replaces the dead one).
    public var servers: [ChildProcess] { shards.withLock { $0.map(\.server) } }
    public var redis: [RedisServerProcess] { shards.withLock { $0.map(\.redis) } }
    public var endpoints: [RedisEndpoint] { redis.map(\.endpoint) }

    /// Starts the shards and their parameter servers.
    /// - Parameters:
    ///   - serverCommand: the executable and arguments that run a parameter server.
    ///   - password: set as every shard's `requirepass` when given.
    ///   - logDirectory: where each server's log goes (`serve-N.log`).
    ///   - metricsPort: when given, shard `i`'s server (`i` counts every shard started, also after
    ///     removals) gets `SMLT_METRICS_PORT` = `metricsPort + i`, and a restarted one the same.
    public init(
        shards count: Int, serverCommand: [String], password: String?, logDirectory: String, metricsPort: Int? = nil
    ) throws {
        precondition(!serverCommand.isEmpty, "a server command is needed")
        self.serverCommand = serverCommand
        self.logDirectory = logDirectory
        self.password = password
        self.metricsPort = metricsPort
        shards = Mutex([])
        do {
            for _ in 0..<count { _ = try addShard() }
        } catch {
            stop()
            throw error
        }
    }

    /// Starts one more shard and its server; returns its endpoint.
    @discardableResult
    public func addShard() throws -> RedisEndpoint {
        let redis = try RedisServerProcess(password: password)
        let id = nextID.wrappingAdd(1, ordering: .relaxed).oldValue
        let server: ChildProcess
        do { server = try startServer(redis, id: id) } catch {
            redis.stop()
            throw error
        }
        shards.withLock { $0.append(Shard(redis: redis, server: server, id: id)) }
        return redis.endpoint
    }

    /// Stops the shard at `endpoint` (its server first, then its redis-server).
    public func removeShard(_ endpoint: RedisEndpoint) {
        let removed = shards.withLock { list -> Shard? in
            guard let i = list.firstIndex(where: { $0.redis.endpoint == endpoint }) else { return nil }
            return list.remove(at: i)
        }
        guard let removed else { return }
        removed.server.terminate(grace: .seconds(3))
        removed.redis.stop()
    }

    private func startServer(_ r: RedisServerProcess, id: Int) throws -> ChildProcess {
        var environment = ProcessInfo.processInfo.environment
        environment["SMLT_REDIS"] = r.endpoint.description
        environment[FunctionEnvironment.password] = password
        environment["SMLT_METRICS_PORT"] = metricsPort.map { "\($0 + id)" }
        return try ChildProcess(
            serverCommand[0], arguments: Array(serverCommand.dropFirst()), environment: environment, stdout: .discard,
            stderr: .file("\(logDirectory)/serve-\(id).log"))
    }

    deinit { stop() }

    /// Restarts every parameter server that has exited; returns the indices of the shards
    /// restarted. Restarts nothing once the process is shutting down.
    public func superviseServers() throws -> [Int] {
        guard !ChildRegistry.isStopping else { return [] }
        var restarted: [Int] = []
        try shards.withLock { list in
            for i in list.indices where !list[i].server.isRunning {
                guard !ChildRegistry.isStopping else { return }
                list[i].server = try startServer(list[i].redis, id: list[i].id)
                restarted.append(i)
            }
        }
        return restarted
    }

    /// Restarts shard `i`'s redis-server on the same port with no data, as after a crash of a
    /// shard without persistence. Its parameter server reconnects by itself.
    public func wipeShard(_ i: Int) throws {
        let old = shards.withLock { $0[i].redis }
        old.kill()
        let fresh = try RedisServerProcess(password: password, port: old.port)
        shards.withLock { $0[i].redis = fresh }
    }

    public func stop() {
        let all = shards.withLock { list in
            defer { list.removeAll() }
            return list
        }
        for s in all { s.server.terminate(grace: .seconds(3)) }
        for s in all { s.redis.stop() }
    }
}

import Foundation
import RedisClient
import ShardManager
import Synchronization

/// A worker's lease, renewed on its own thread: `SET key value PX ttl` every `ttl / 3`.
/// If the process dies or freezes, the key expires within `ttl` and the scheduler relaunches it.
public final class Heartbeat: Sendable {
    private let state = HeartbeatState()
    let key: String

    /// - Parameter alive: checked before each renewal; while it returns false the lease is not
    ///   renewed (the worker is stuck) and expires.
    init(
        endpoint: RedisEndpoint, options: RedisOptions, key: String, value: String, ttl: Duration,
        alive: @escaping @Sendable () -> Bool = { true }
    ) throws(ShardError) {
        self.key = key
        let ms = max(100, Int(ttl.components.seconds * 1000 + ttl.components.attoseconds / 1_000_000_000_000_000))
        let command: RedisCommand = ["SET", key, value, "PX", "\(ms)"]
        // The first renewal happens before init returns, so the lease exists once the worker runs.
        let connection: RedisConnection
        do {
            connection = try RedisConnection(endpoint, options: options)
            try connection.run(command)
        } catch { throw ShardError(error) }
        let box = ConnectionBox(connection)
        let state = self.state
        // A thread that cannot start is an error here, not a lease that silently never renews
        // (and a `stop()` that would wait for it forever).
        do {
            try DedicatedThread.start(name: "heartbeat of \(key)") {
                while !state.stopping.load(ordering: .relaxed) {
                    // Sleeps a third of the TTL, or until stop() wakes it.
                    if state.wake.wait(timeout: .now() + .milliseconds(ms / 3)) == .success { break }
                    guard alive() else { continue }
                    // A failed renewal is retried on the next beat; the connection reconnects itself.
                    _ = try? box.connection.withLock { try $0.run(command) }
                }
                // The lease is left to expire rather than deleted: a missing lease then always means
                // a worker that stopped renewing, never one that is merely exiting.
                state.done.signal()
            }
        } catch {
            state.stopping.store(true, ordering: .relaxed)
            throw ShardError(.redis, "cannot start the lease heartbeat: \(error)")
        }
    }

    /// Stops renewing; the lease expires on its own.
    public func stop() {
        guard !state.stopping.exchange(true, ordering: .relaxed) else { return }
        state.wake.signal()
        state.done.wait()
    }

    deinit { stop() }
}

private final class HeartbeatState: Sendable {
    let stopping = Atomic<Bool>(false)
    let done = DispatchSemaphore(value: 0)
    let wake = DispatchSemaphore(value: 0)
}

/// The heartbeat thread's connection, owned by that thread (the Mutex makes the hand-over explicit).
private final class ConnectionBox: Sendable {
    let connection: Mutex<RedisConnection>
    init(_ c: sending RedisConnection) { connection = Mutex(c) }
}

import Foundation
import LocalProcesses
import RedisClient
import Workloads

/// Starts `count` throw-away redis-server processes on free loopback ports for one test and stops
/// them when `body` returns or throws. When `SMLT_TEST_PIDDIR` is set (make test sets it), each
/// server also writes a pid file there, so a crashed test run leaves nothing behind.
public func withRedisServers<R>(
    _ count: Int, password: String? = nil, _ body: ([RedisServerProcess]) throws -> R
) throws -> R {
    var servers: [RedisServerProcess] = []
    defer { for s in servers { s.stop() } }
    for _ in 0..<count { servers.append(try startTestRedis(password: password)) }
    return try body(servers)
}

/// One throw-away redis-server for a test; stop it (or let it deinit) when done.
public func startTestRedis(password: String? = nil) throws -> RedisServerProcess {
    var extra: [String] = []
    if let dir = ProcessInfo.processInfo.environment["SMLT_TEST_PIDDIR"] {
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        extra = ["--pidfile", "\(dir)/redis-\(UUID().uuidString).pid"]
    }
    return try RedisServerProcess(password: password, extraArguments: extra)
}

/// Deterministic pseudo-random test data.
public struct TestRandom {
    var rng: SplitMix
    public init(seed: UInt64) { rng = SplitMix(seed: seed) }

    public mutating func next() -> UInt64 { rng.next() }

    /// Roughly normal values (sum of uniforms), like a dense gradient.
    public mutating func gaussian(_ n: Int) -> [Float] {
        (0..<n).map { _ in
            var s: Float = 0
            for _ in 0..<4 { s += rng.uniform() }
            return (s - 2) * 0.01
        }
    }
}

import Foundation
import LocalProcesses
import RedisClient

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

/// Deterministic pseudo-random floats (splitmix64), for test data.
public struct TestRandom {
    var state: UInt64
    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Roughly normal values (sum of uniforms), like a dense gradient.
    public mutating func gaussian(_ n: Int) -> [Float] {
        (0..<n).map { _ in
            var s: Float = 0
            for _ in 0..<4 { s += Float(next() >> 40) / Float(1 << 24) }
            return (s - 2) * 0.01
        }
    }
}

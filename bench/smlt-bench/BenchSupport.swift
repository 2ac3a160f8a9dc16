import Foundation
import RedisClient

/// Seconds on the system-wide monotonic clock: comparable between processes on one machine.
func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// The keys of one benchmark run, all under `bench:{RUN}:`.
struct BenchKeys: Sendable {
    let run: String
    func key(_ suffix: String) -> String { "bench:{\(run)}:\(suffix)" }
    var ready: String { key("ready") }
    var go: String { key("go") }
    var pattern: String { "bench:{\(run)}:*" }
}

/// Waits until all `parties` workers reached the barrier named `name` (on one connection).
func barrier(_ c: RedisConnection, keys: BenchKeys, name: String, parties: Int) throws(RedisError) {
    let count = keys.key("barrier:\(name)")
    let release = keys.key("release:\(name)")
    let n = try c.run(["INCR", count]).integer ?? 0
    if n == Int64(parties) {
        _ = try c.pipeline([
            RedisCommand(strings: ["RPUSH", release] + [String](repeating: "1", count: parties)), ["DEL", count],
        ])
    }
    try blockingPop(c, release, what: "barrier \(name)")
}

/// BLPOP with a generous timeout; the benchmark fails rather than hanging forever.
func blockingPop(_ c: RedisConnection, _ key: String, what: String) throws(RedisError) {
    let reply = try c.run(["BLPOP", key, "120"], blockingFor: .seconds(120))
    if reply == .null {
        throw RedisError(.connectionLost, endpoint: c.endpoint.description, "\(what): nothing arrived within 120 s")
    }
}

/// The smallest 1, 2, 2.5 or 5 × 10^n at or above `v`: the top of a chart's axis.
func niceCeiling(_ v: Double) -> Double {
    guard v > 0 else { return 1 }
    let magnitude = pow(10, floor(log10(v)))
    for step in [1.0, 2.0, 2.5, 5.0, 10.0] where step * magnitude >= v { return step * magnitude }
    return 10 * magnitude
}

import Foundation
import KeySchema
import LocalProcesses
import Logging
import ParamServer
import RedisClient
import ShardManager
import TensorBlob
import TestSupport
import Testing
import TrainingProtocol

/// A ParamServer running on a background thread for one test.
final class RunningServer: Sendable {
    let server: ParamServer
    let done = DispatchSemaphore(value: 0)

    init(_ endpoints: [RedisEndpoint]) {
        server = ParamServer(endpoints: endpoints, logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() })
        let s = server
        let d = done
        Thread {
            s.run()
            d.signal()
        }.start()
    }

    func stop() {
        server.stop()
        done.wait()
    }
}

/// Registers a 2-tensor job on `servers` (77 parameters in chunks of 16 unless told otherwise),
/// stores its config and publishes version 0 (all ones).
func makeJob(
    _ job: String, _ servers: [RedisServerProcess], workers: Int, steps: Int = 5,
    tensors: [TensorSpec] = [TensorSpec(name: "w", shape: [10, 7]), TensorSpec(name: "b", shape: [7])],
    chunkElements: Int = 16, options: RedisOptions = RedisOptions()
) throws -> ShardManager {
    let spec = JobSpec(job: job, tensors: tensors, chunkElements: chunkElements)
    let m = try ShardManager.register(spec, on: servers.map(\.endpoint), options: options)
    let config = TrainingConfig(workers: workers, steps: steps, learningRate: 0.5, momentum: 0.9, weightDecay: 0.01)
    try config.store(on: m)
    try m.write([Float](repeating: 1, count: m.layout.totalElements), as: .params, step: 0, producer: 0)
    let keys = JobKeys(job: job)
    _ = try m.onEachShard { shard, c throws(RedisError) in
        try c.run(["XADD", keys.versions(shard: shard), "0-1", "version", "0"])
        try c.run(["RPUSH", JobKeys.wakeup, job])
    }
    return m
}

/// The parameters a BSP run must reach from version-0 parameters of all ones: each step sums
/// the workers' gradients in worker order and applies the servers' optimizer code.
struct ExpectedModel {
    let config: TrainingConfig
    var params: [Float]
    var velocity: [Float]

    init(count: Int, config: TrainingConfig) {
        self.config = config
        params = [Float](repeating: 1, count: count)
        velocity = [Float](repeating: 0, count: count)
    }

    mutating func step(_ grads: [[Float]]) {
        var sum = grads[0]
        for g in grads.dropFirst() { GradientSum.add(g, into: &sum) }
        let (config, workers) = (config, grads.count)
        params.withUnsafeMutableBufferPointer { p in
            velocity.withUnsafeMutableBufferPointer { v in
                sum.withUnsafeBufferPointer {
                    SGDMomentum.apply(params: p, velocity: v, gradientSum: $0, workers: workers, config: config)
                }
            }
        }
    }
}

/// What the server must compute for one step from version-0 parameters of all ones.
func expectedStep(_ grads: [[Float]], config: TrainingConfig) -> [Float] {
    var model = ExpectedModel(count: grads[0].count, config: config)
    model.step(grads)
    return model.params
}

func gradient(_ seed: UInt64, _ n: Int) -> [Float] {
    var r = TestRandom(seed: seed)
    return r.gaussian(n)
}

@Suite struct AggregationTests {
    @Test func pushIsIdempotentAndStepIsExact() throws {
        try withRedisServers(2) { servers in
            let m = try makeJob("idem", servers, workers: 2)
            let server = RunningServer(servers.map(\.endpoint))
            defer { server.stop() }
            let eps = servers.map(\.endpoint)
            let w0 = try WorkerSession(job: "idem", worker: 0, endpoints: eps)
            let w1 = try WorkerSession(job: "idem", worker: 1, endpoints: eps)
            let n = m.layout.totalElements
            let g0 = gradient(1, n)
            let g1 = gradient(2, n)
            try w0.push(gradient: g0, step: 0)
            try w0.push(gradient: g0, step: 0)  // a retry: must count once
            try w1.push(gradient: g1, step: 0)
            let p1 = try w0.pull(step: 1, timeout: .seconds(20))
            #expect(p1.map(\.bitPattern) == expectedStep([g0, g1], config: w0.config).map(\.bitPattern))
            // Pushing step 0 again after it was applied changes nothing.
            try w1.push(gradient: g0, step: 0)
            sleepFor(.milliseconds(300))
            #expect(try m.read(.params).values.map(\.bitPattern) == p1.map(\.bitPattern))
        }
    }

    /// A gradient pushed as bf16 or f16 is summed as the f32 values it decodes to: the step equals
    /// the f32 computation on the rounded gradient, bit for bit (and not the unrounded one).
    @Test(arguments: [DType.bf16, .f16])
    func lowPrecisionGradientCountsAsItsF32Values(dtype: DType) throws {
        try withRedisServers(2) { servers in
            let job = "narrow-\(dtype)"
            let m = try makeJob(job, servers, workers: 2)
            let server = RunningServer(servers.map(\.endpoint))
            defer { server.stop() }
            let eps = servers.map(\.endpoint)
            let w0 = try WorkerSession(job: job, worker: 0, endpoints: eps)
            let w1 = try WorkerSession(job: job, worker: 1, endpoints: eps)
            let n = m.layout.totalElements
            let g0 = gradient(1, n)
            let g1 = gradient(2, n)
            var rounded = [Float](repeating: 0, count: n)
            g1.withUnsafeBufferPointer { g in rounded.withUnsafeMutableBufferPointer { dtype.round(g, into: $0) } }
            #expect(rounded != g1)
            try w0.push(gradient: g0, step: 0)
            try w1.push(gradient: g1, step: 0, encoding: .dense(dtype, m.map.codec))
            let stored = try RedisConnection(servers[0].endpoint).run(
                ["GET", JobKeys(job: job).gradient(chunk: m.map.chunks(onShard: 0)[0], step: 0, worker: 1)])
            #expect(stored.bytes?[5] == dtype.rawValue)
            let p1 = try w0.pull(step: 1, timeout: .seconds(20))
            #expect(p1.map(\.bitPattern) == expectedStep([g0, rounded], config: w0.config).map(\.bitPattern))
        }
    }

    @Test func earlyPushIsHeldNotMixed() throws {
        try withRedisServers(1) { servers in
            _ = try makeJob("early", servers, workers: 2)
            let server = RunningServer(servers.map(\.endpoint))
            defer { server.stop() }
            let eps = servers.map(\.endpoint)
            let w0 = try WorkerSession(job: "early", worker: 0, endpoints: eps)
            let w1 = try WorkerSession(job: "early", worker: 1, endpoints: eps)
            let n = w0.parameterCount
            let (a0, a1, b0, b1) = (gradient(1, n), gradient(2, n), gradient(3, n), gradient(4, n))
            try w0.push(gradient: a0, step: 0)
            try w0.push(gradient: b0, step: 1)  // early: step 1 before step 0 is done
            sleepFor(.milliseconds(300))
            let stuck = try w0.shards.read(.params).headers
            #expect(stuck.allSatisfy { $0.step == 0 })
            try w1.push(gradient: a1, step: 0)
            let p1 = try w1.pull(step: 1, timeout: .seconds(20))
            #expect(p1.map(\.bitPattern) == expectedStep([a0, a1], config: w0.config).map(\.bitPattern))
            try w1.push(gradient: b1, step: 1)
            let (_, h2) = try w1.shards.read(.params)
            _ = try w1.pull(step: 2, timeout: .seconds(20))
            #expect(h2.allSatisfy { $0.step >= 1 })
            #expect(try w1.shards.read(.params).headers.allSatisfy { $0.step == 2 })
        }
    }

    @Test func resultDoesNotDependOnArrivalOrder() throws {
        try withRedisServers(2) { servers in
            let eps = servers.map(\.endpoint)
            let server = RunningServer(eps)
            defer { server.stop() }
            var results: [[UInt32]] = []
            for (job, order) in [("order-a", [0, 1, 2]), ("order-b", [2, 0, 1])] {
                _ = try makeJob(job, servers, workers: 3)
                let clients = try (0..<3).map { try WorkerSession(job: job, worker: $0, endpoints: eps) }
                let n = clients[0].parameterCount
                for step in 0..<3 {
                    for w in order { try clients[w].push(gradient: gradient(UInt64(10 * step + w), n), step: step) }
                    _ = try clients[0].pull(step: step + 1, timeout: .seconds(20))
                }
                results.append(try clients[0].pull(step: 3).map(\.bitPattern))
            }
            #expect(results[0] == results[1])
        }
    }

    @Test func corruptGradientIsRejectedAndCanBePushedAgain() throws {
        try withRedisServers(1) { servers in
            let m = try makeJob("bad", servers, workers: 2)
            let server = RunningServer(servers.map(\.endpoint))
            defer { server.stop() }
            let eps = servers.map(\.endpoint)
            let w0 = try WorkerSession(job: "bad", worker: 0, endpoints: eps)
            let w1 = try WorkerSession(job: "bad", worker: 1, endpoints: eps)
            let n = m.layout.totalElements
            let (g0, g1) = (gradient(7, n), gradient(8, n))
            try w0.push(gradient: g0, step: 0)
            // Worker 1's gradient for chunk 2 is garbage in Redis.
            let c = try RedisConnection(servers[0].endpoint)
            try c.run(["SET", m.keys.gradient(chunk: 2, step: 0, worker: 1), "not a blob"])
            try c.run(["SADD", JobKeys(job: "bad").pushed(shard: 0, step: 0), "1"])
            try c.run(["RPUSH", JobKeys(job: "bad").inbox(shard: 0), "0:1"])
            sleepFor(.milliseconds(500))
            #expect(try m.read(.params).headers.allSatisfy { $0.step == 0 })
            #expect(try c.run(["SISMEMBER", JobKeys(job: "bad").pushed(shard: 0, step: 0), "1"]) == .integer(0))
            try w1.push(gradient: g1, step: 0)
            let p1 = try w1.pull(step: 1, timeout: .seconds(20))
            #expect(p1.map(\.bitPattern) == expectedStep([g0, g1], config: w0.config).map(\.bitPattern))
        }
    }

    /// Waiting is BLPOP, not polling: an idle server runs about one command per second.
    @Test func idleServerBlocksInsteadOfPolling() throws {
        try withRedisServers(1) { servers in
            _ = try makeJob("idle", servers, workers: 2)
            let server = RunningServer(servers.map(\.endpoint))
            defer { server.stop() }
            let c = try RedisConnection(servers[0].endpoint)
            sleepFor(.milliseconds(1500))
            func processed() throws -> Int {
                let info = try c.run(["INFO", "stats"]).text ?? ""
                let line = info.split(whereSeparator: \.isNewline).first { $0.hasPrefix("total_commands_processed:") }
                return Int(line?.split(separator: ":")[1] ?? "0") ?? 0
            }
            let before = try processed()
            sleepFor(.seconds(2))
            let after = try processed()
            // 2 s idle: a few BLPOP timeouts and job refreshes, not thousands of polls.
            #expect(after - before < 60, "\(after - before) commands in 2 s")
            let blpop = try c.run(["INFO", "commandstats"]).text ?? ""
            #expect(blpop.contains("cmdstat_blpop"))
        }
    }
}

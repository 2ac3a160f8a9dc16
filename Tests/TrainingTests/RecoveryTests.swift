import Foundation
import KeySchema
import LocalProcesses
import Logging
import RedisClient
import ShardManager
import TensorBlob
import TestSupport
import Testing
import TrainingProtocol

@testable import ParamServer

/// Recovery at the protocol level: half-finished pushes, duplicate servers, restarted servers.
@Suite struct RecoveryTests {
    @Test func halfPushedStepIsCompletedByTheNextInvocation() throws {
        try withRedisServers(2) { servers in
            let eps = servers.map(\.endpoint)
            let m = try makeJob("half", servers, workers: 2)
            let server = RunningServer(eps)
            defer { server.stop() }
            let n = m.layout.totalElements
            let g0 = gradient(1, n)
            let g1 = gradient(2, n)
            try WorkerSession(job: "half", worker: 0, endpoints: eps).push(gradient: g0, step: 0)
            // Worker 1 stores its whole gradient, then dies after marking only shard 0 as pushed.
            try m.write(g1, as: .gradient(step: 0, worker: 1), step: 0, producer: 1, expireSeconds: 3600)
            let keys = JobKeys(job: "half")
            try m.onShard(0) { c throws(RedisError) in
                _ = try c.pipeline([
                    ["SADD", keys.pushed(shard: 0, step: 0), "1"], ["RPUSH", keys.inbox(shard: 0), "0:1"],
                ])
            }
            // Shard 0 moves to version 1; shard 1 waits for worker 1.
            let relaunched = try WorkerSession(job: "half", worker: 1, endpoints: eps)
            var params = [Float](repeating: 0, count: n)
            var versions = (oldest: 0, newest: 0)
            for _ in 0..<100 where versions.newest == 0 {
                versions = try params.withUnsafeMutableBufferPointer { try relaunched.pull(step: 0, into: $0) }
                sleepFor(.milliseconds(20))
            }
            #expect(versions == (0, 1))
            #expect(try relaunched.completePush(step: 0))
            let p1 = try relaunched.pull(step: 1, timeout: .seconds(20))
            let config = try #require(
                try m.onShard(0) { c throws(RedisError) in
                    Result { () throws(ShardError) in try TrainingConfig.load(job: "half", from: c) }
                }.get())
            #expect(p1.map(\.bitPattern) == expectedStep([g0, g1], config: config).map(\.bitPattern))
        }
    }

    @Test func halfPushedStepIsCompletedOnAShardWithoutChunks() throws {
        try withRedisServers(2) { servers in
            let eps = servers.map(\.endpoint)
            // One chunk: one of the two shards holds none, but still counts pushes and versions.
            let spec = JobSpec(job: "tiny", tensors: [TensorSpec(name: "w", shape: [4])], chunkElements: 16)
            let m = try ShardManager.register(spec, on: eps)
            try TrainingConfig(workers: 1, steps: 3, learningRate: 0.5, momentum: 0).start(
                on: m, initial: [1, 1, 1, 1])
            let server = RunningServer(eps)
            defer { server.stop() }
            let full = m.map.assignment[0]
            let empty = 1 - full
            #expect(m.map.chunks(onShard: empty).isEmpty)
            // The worker stored its gradient and marked only the shard with the chunk, then died.
            try m.write([1, 2, 3, 4], as: .gradient(step: 0, worker: 0), step: 0, producer: 0, expireSeconds: 3600)
            let keys = JobKeys(job: "tiny")
            try m.onShard(full) { c throws(RedisError) in
                _ = try c.pipeline([
                    ["SADD", keys.pushed(shard: full, step: 0), "0"], ["RPUSH", keys.inbox(shard: full), "0:0"],
                ])
            }
            let relaunched = try WorkerSession(job: "tiny", worker: 0, endpoints: eps)
            var params = [Float](repeating: 0, count: 4)
            var versions = (oldest: 0, newest: 0)
            for _ in 0..<100 where versions.newest == 0 {
                versions = try params.withUnsafeMutableBufferPointer { try relaunched.pull(step: 0, into: $0) }
                sleepFor(.milliseconds(20))
            }
            #expect(versions.newest == 1)
            #expect(try relaunched.completePush(step: 0))
            // Both shards at version 1 now: p = 1 - 0.5 * g.
            #expect(try relaunched.pull(step: 1, timeout: .seconds(20)) == [0.5, 0, -0.5, -1])
        }
    }

    @Test func halfPushedStepWithoutItsGradientIsReported() throws {
        try withRedisServers(2) { servers in
            let eps = servers.map(\.endpoint)
            let m = try makeJob("gone", servers, workers: 2)
            let keys = JobKeys(job: "gone")
            // Shard 0 is at version 1, shard 1 at 0, and worker 1's chunks on shard 1 are gone.
            try m.onShard(0) { c throws(RedisError) in
                _ = try c.run(["XADD", keys.versions(shard: 0), "1-1", "version", "1"])
            }
            let w1 = try WorkerSession(job: "gone", worker: 1, endpoints: eps)
            #expect(try w1.completePush(step: 0) == false)
        }
    }

    @Test func twoServersOnOneShardApplyEachStepOnce() throws {
        try withRedisServers(2) { servers in
            let eps = servers.map(\.endpoint)
            let m = try makeJob("twice", servers, workers: 2, steps: 6)
            // Two parameter servers race for the same shards: the version check lets one win each step.
            let a = RunningServer(eps)
            let b = RunningServer(eps)
            defer {
                a.stop()
                b.stop()
            }
            let n = m.layout.totalElements
            let w = try (0..<2).map { try WorkerSession(job: "twice", worker: $0, endpoints: eps) }
            var expected = ExpectedModel(count: n, config: w[0].config)
            for step in 0..<6 {
                let grads = (0..<2).map { gradient(UInt64(10 * step + $0), n) }
                for i in 0..<2 { try w[i].push(gradient: grads[i], step: step) }
                expected.step(grads)
                let got = try w[0].pull(step: step + 1, timeout: .seconds(20))
                #expect(got.map(\.bitPattern) == expected.params.map(\.bitPattern), "step \(step)")
            }
        }
    }

    @Test func staleServerCannotOverwriteANewerVersion() throws {
        try withRedisServers(1) { servers in
            let eps = servers.map(\.endpoint)
            let m = try makeJob("stale", servers, workers: 1, steps: 4)
            let n = m.layout.totalElements
            let w = try WorkerSession(job: "stale", worker: 0, endpoints: eps)
            let c1 = try RedisConnection(eps[0])
            let c2 = try RedisConnection(eps[0])
            let config = w.config
            let fast = ShardAggregator(
                map: m.map, config: config, shard: 0, endpoint: eps[0].description,
                logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() })
            let stale = ShardAggregator(
                map: m.map, config: config, shard: 0, endpoint: eps[0].description,
                logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() })
            // The stale server runs step 0, so it caches the parameters of version 1.
            try w.push(gradient: gradient(7, n), step: 0)
            #expect(try stale.advance(c2) == 1)
            // It reads step 1's gradient, then stalls before committing...
            try w.push(gradient: gradient(8, n), step: 1)
            try stale.consume(c2, worker: 0, step: 1)
            stale.fold()
            // ...while another server runs steps 1 and 2.
            #expect(try fast.advance(c1) == 1)
            try w.push(gradient: gradient(9, n), step: 2)
            #expect(try fast.advance(c1) == 1)
            let v3 = try w.pull(step: 3, timeout: .seconds(5))
            // Waking up, the stale server must not publish its version 2 over version 3.
            #expect(try stale.commit(c2, step: 1) == false)
            let after = try m.read(.params)
            #expect(after.headers.allSatisfy { $0.step == 3 })
            #expect(after.values.map(\.bitPattern) == v3.map(\.bitPattern))
        }
    }

    @Test func restartedServerResumesFromRedis() throws {
        try withRedisServers(2) { servers in
            let eps = servers.map(\.endpoint)
            let m = try makeJob("restart", servers, workers: 2, steps: 4)
            let n = m.layout.totalElements
            let w = try (0..<2).map { try WorkerSession(job: "restart", worker: $0, endpoints: eps) }
            var expected = ExpectedModel(count: n, config: w[0].config)
            for step in 0..<4 {
                // A fresh server for every step: all it knows comes from Redis (params, momentum,
                // the version stream, the pushes waiting), as after a crash.
                let grads = (0..<2).map { gradient(UInt64(100 + 10 * step + $0), n) }
                try w[0].push(gradient: grads[0], step: step)
                let server = RunningServer(eps)
                try w[1].push(gradient: grads[1], step: step)
                expected.step(grads)
                let got = try w[0].pull(step: step + 1, timeout: .seconds(20))
                server.stop()
                #expect(got.map(\.bitPattern) == expected.params.map(\.bitPattern), "step \(step)")
            }
        }
    }
}

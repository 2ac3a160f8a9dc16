import Foundation
import KeySchema
import LocalProcesses
import ParamServer
import RedisClient
import ShardManager
import TensorBlob
import TestSupport
import Testing
import TrainingProtocol

/// A gradient with a NaN or an infinity, behind a valid checksum, must not reach the parameters.
@Suite struct NonFiniteGradientTests {
    /// Waits (bounded) until `condition` holds; false if it never did.
    func eventually(_ condition: () throws -> Bool) rethrows -> Bool {
        for _ in 0..<200 {
            if try condition() { return true }
            usleep(25_000)
        }
        return false
    }

    func rejections(_ c: RedisConnection, _ job: String) throws -> [Rejection] {
        try (c.run(["LRANGE", JobKeys(job: job).rejected, "0", "-1"]).array ?? []).compactMap { r in
            try r.bytes.map { try JSONDecoder().decode(Rejection.self, from: Data($0)) }
        }
    }

    /// Each way a gradient reaches the sum: worker 0's (checked when decoded), the next worker in
    /// id order (checked while added as it arrives) and one that waits for a lower id (checked
    /// while added later).
    @Test(arguments: [(Float.nan, 0, [0, 1, 2]), (Float.infinity, 1, [0, 1, 2]), (-Float.infinity, 2, [0, 2, 1])])
    func nonFiniteGradientIsRejectedAndTheWorkerCanPushAgain(bad: Float, badWorker: Int, order: [Int]) throws {
        try withRedisServers(1) { servers in
            let job = "nonfinite-\(badWorker)"
            let m = try makeJob(job, servers, workers: 3)
            let server = RunningServer(servers.map(\.endpoint))
            defer { server.stop() }
            let eps = servers.map(\.endpoint)
            let clients = try (0..<3).map { try WorkerSession(job: job, worker: $0, endpoints: eps) }
            let n = m.layout.totalElements
            let good = (0..<3).map { gradient(UInt64(20 + $0), n) }
            // One value in chunk 2 (elements 32..<48) is not finite; the blob's checksum is valid.
            var poisoned = good[badWorker]
            poisoned[37] = bad
            for w in order {
                try clients[w].push(gradient: w == badWorker ? poisoned : good[w], step: 0)
                usleep(200_000)  // lets the server take each push on its own (not required for the result)
            }

            let c = try RedisConnection(servers[0].endpoint)
            let keys = JobKeys(job: job)
            #expect(try eventually { try !rejections(c, job).isEmpty })
            let listed = try rejections(c, job)
            #expect(listed.count == 1)
            #expect(listed.first?.step == 0)
            #expect(listed.first?.worker == badWorker)
            #expect(listed.first?.chunk == 2)
            #expect(listed.first?.reason.contains("element 5") == true, "\(listed)")
            // The step did not commit with it, and the worker is out of the pushed set.
            #expect(try m.read(.params).headers.allSatisfy { $0.step == 0 })
            #expect(try c.run(["SISMEMBER", keys.pushed(shard: 0, step: 0), "\(badWorker)"]) == .integer(0))
            #expect(try c.run(["SCARD", keys.pushed(shard: 0, step: 0)]) == .integer(2))

            // The worker pushes a finite gradient: the step is exactly the finite one.
            try clients[badWorker].push(gradient: good[badWorker], step: 0)
            let p1 = try clients[0].pull(step: 1, timeout: .seconds(20))
            #expect(p1.map(\.bitPattern) == expectedStep(good, config: clients[0].config).map(\.bitPattern))
            #expect(p1.allSatisfy { $0.isFinite })
            #expect(try rejections(c, job).count == 1)
        }
    }

    /// The list of rejections keeps the newest 100.
    @Test func rejectionListIsCapped() throws {
        try withRedisServers(1) { servers in
            let job = "capped"
            let m = try makeJob(job, servers, workers: 2)
            let server = RunningServer(servers.map(\.endpoint))
            defer { server.stop() }
            let c = try RedisConnection(servers[0].endpoint)
            let keys = JobKeys(job: job)
            let filler = Rejection(step: 0, worker: 0, chunk: 0, reason: "old")
            for _ in 0..<120 { try c.run(RedisCommand("RPUSH", keys.rejected).appending(bytes: filler.json)) }
            var g = gradient(5, m.layout.totalElements)
            g[0] = .nan
            let eps = servers.map(\.endpoint)
            try WorkerSession(job: job, worker: 0, endpoints: eps).push(gradient: gradient(6, g.count), step: 0)
            try WorkerSession(job: job, worker: 1, endpoints: eps).push(gradient: g, step: 0)
            #expect(try eventually { try rejections(c, job).last?.worker == 1 })
            #expect(try c.run(["LLEN", keys.rejected]) == .integer(100))
        }
    }
}

import Foundation
import KeySchema
import LocalProcesses
import RedisClient
import ShardManager
import TensorBlob
import TestSupport
import Testing

@Suite struct ShardManagerTests {
    static func spec(_ job: String, codec: BlobCodec = .raw) -> JobSpec {
        JobSpec(
            job: job,
            tensors: [
                TensorSpec(name: "w1", shape: [300, 70]), TensorSpec(name: "b1", shape: [70]),
                TensorSpec(name: "w2", shape: [70, 10]),
            ],
            chunkElements: 1000, codec: codec)
    }

    @Test(arguments: BlobCodec.allCases)
    func multiShardWriteAndRead(codec: BlobCodec) throws {
        try withRedisServers(3) { servers in
            let eps = servers.map(\.endpoint)
            let m = try ShardManager.register(Self.spec("mnist-\(codec)", codec: codec), on: eps)
            var rng = TestRandom(seed: 3)
            let values = rng.gaussian(m.layout.totalElements)
            try m.write(values, as: .params, step: 5, producer: BlobHeader.serverProducer)

            // A second, stateless client finds the job through its map and reads it back.
            let other = try ShardManager.open(job: "mnist-\(codec)", endpoints: [eps[2]])
            #expect(other.map == m.map)
            let (back, headers) = try other.read(.params)
            #expect(back.map(\.bitPattern) == values.map(\.bitPattern))
            #expect(headers.allSatisfy { $0.step == 5 })

            // The chunks really are spread over all three servers.
            for s in servers {
                let c = try RedisConnection(s.endpoint)
                let n = try c.run(["KEYS", "smlt:{mnist-\(codec)/*}:params"]).array?.count ?? 0
                #expect(n > 0)
                #expect(try c.run(["SISMEMBER", "smlt:jobs", "mnist-\(codec)"]) == .integer(1))
            }
            let total = m.layout.chunkCount
            #expect(total == 22)
        }
    }

    @Test func tensorReadWriteKeepsNeighbours() throws {
        try withRedisServers(2) { servers in
            let m = try ShardManager.register(Self.spec("t"), on: servers.map(\.endpoint))
            let zeros = [Float](repeating: 0, count: m.layout.totalElements)
            try m.write(zeros, as: .params, step: 0, producer: 0)
            let b1 = (0..<70).map { Float($0) }
            try m.writeTensor("b1", b1, step: 1)
            #expect(try m.readTensor("b1") == b1)
            #expect(try m.readTensor("w2") == [Float](repeating: 0, count: 700))
            #expect { try m.readTensor("nope") } throws: { ($0 as? ShardError)?.code == .unknownTensor }
            #expect { try m.writeTensor("b1", [1], step: 2) } throws: { ($0 as? ShardError)?.code == .sizeMismatch }
        }
    }

    @Test func registerIsIdempotentAndListsJobs() throws {
        try withRedisServers(2) { servers in
            let eps = servers.map(\.endpoint)
            let a = try ShardManager.register(Self.spec("a"), on: eps)
            let again = try ShardManager.register(Self.spec("a"), on: eps)
            #expect(a.map == again.map)
            _ = try ShardManager.register(Self.spec("b"), on: eps)
            #expect(try ShardManager.jobs(on: eps) == ["a", "b"])
            var changed = Self.spec("a")
            changed.chunkElements = 500
            #expect { try ShardManager.register(changed, on: eps) } throws: {
                ($0 as? ShardError)?.code == .invalidSpec
            }
            let replaced = try ShardManager.register(changed, on: eps, replace: true)
            #expect(replaced.layout.chunkCount == 44)
            try replaced.deleteJob()
            #expect(try ShardManager.jobs(on: eps) == ["b"])
            #expect { try ShardManager.open(job: "a", endpoints: eps) } throws: {
                ($0 as? ShardError)?.code == .jobNotFound
            }
        }
    }

    @Test func corruptAndMissingChunksAreNamed() throws {
        try withRedisServers(2) { servers in
            let m = try ShardManager.register(Self.spec("c"), on: servers.map(\.endpoint))
            try m.write([Float](repeating: 1, count: m.layout.totalElements), as: .params, step: 0, producer: 0)
            let victim = m.map.assignment[3]
            let c = try RedisConnection(servers[victim].endpoint)
            try c.run(["SETRANGE", m.keys.params(chunk: 3), "60", "garbage"])
            do {
                _ = try m.read(.params)
                Issue.record("read a corrupt chunk")
            } catch let error as ShardError {
                #expect(error.code == .corruptChunk)
                #expect(error.message.contains("chunk 3"))
            }
            try c.run(["DEL", m.keys.params(chunk: 3)])
            #expect { try m.read(.params) } throws: { ($0 as? ShardError)?.code == .missingChunk }
        }
    }

    @Test func unreachableShardIsAnErrorNamingIt() throws {
        try withRedisServers(2) { servers in
            let m = try ShardManager.register(Self.spec("u"), on: servers.map(\.endpoint))
            try m.write([Float](repeating: 1, count: m.layout.totalElements), as: .params, step: 0, producer: 0)
            let gone = servers[1].endpoint.description
            servers[1].stop()
            let fresh = try ShardManager.open(job: "u", endpoints: [servers[0].endpoint])
            do {
                _ = try fresh.read(.params)
                Issue.record("read from a stopped shard")
            } catch let error as ShardError {
                #expect(error.code == .redis)
                #expect(error.message.contains("cannot connect to \(gone)"))
            }
        }
    }

    @Test func passwordProtectedShards() throws {
        try withRedisServers(2, password: "pw") { servers in
            let eps = servers.map(\.endpoint)
            #expect { try ShardManager.register(Self.spec("p"), on: eps) } throws: {
                ($0 as? ShardError)?.redisError?.code == .authenticationFailed
            }
            let m = try ShardManager.register(Self.spec("p"), on: eps, options: RedisOptions(password: "pw"))
            try m.write([Float](repeating: 2, count: m.layout.totalElements), as: .params, step: 0, producer: 0)
            #expect(try m.readTensor("b1").allSatisfy { $0 == 2 })
        }
    }
}

import Coordinator
import Foundation
import KeySchema
import LocalProcesses
import RedisClient
import ShardManager
import TensorBlob
import TestSupport
import Testing
import TrainingProtocol

/// The pull copy (`ShardMap.pullEncoding`): servers keep f32 parameters and also publish every
/// version rounded to bf16 or f16, which the workers pull instead.
@Suite struct PullCopyTests {
    /// Registers the 2-tensor job of `makeJob` with a pull copy and non-trivial version-0 values.
    func makePullJob(_ job: String, _ servers: [RedisServerProcess], pull: PullEncoding, workers: Int) throws
        -> (ShardManager, [Float])
    {
        let spec = JobSpec(
            job: job, tensors: [TensorSpec(name: "w", shape: [10, 7]), TensorSpec(name: "b", shape: [7])],
            chunkElements: 16, pullEncoding: pull)
        let m = try ShardManager.register(spec, on: servers.map(\.endpoint))
        let initial = gradient(7, m.layout.totalElements)
        try TrainingConfig(workers: workers, steps: 5, learningRate: 0.5, momentum: 0.9, weightDecay: 0.01)
            .start(on: m, initial: initial)
        return (m, initial)
    }

    func rounded(_ values: [Float], _ dtype: DType) -> [Float] {
        var out = [Float](repeating: 0, count: values.count)
        values.withUnsafeBufferPointer { v in out.withUnsafeMutableBufferPointer { dtype.round(v, into: $0) } }
        return out
    }

    @Test(arguments: ["bf16", "bf16-shuffle-lz4", "f16-lz4"])
    func workersPullTheRoundedCopyWhileTheServersKeepF32(spec: String) throws {
        let pull = try PullEncoding(parsing: spec)
        try withRedisServers(2) { servers in
            let job = "pull-\(pull.dtype)-\(pull.codec)"
            let (m, initial) = try makePullJob(job, servers, pull: pull, workers: 2)
            let eps = servers.map(\.endpoint)
            let w0 = try WorkerSession(job: job, worker: 0, endpoints: eps)
            let w1 = try WorkerSession(job: job, worker: 1, endpoints: eps)
            #expect(w0.shards.map.pullEncoding == pull)
            // Version 0: the driver wrote both copies.
            let v0 = try w0.pull(step: 0)
            #expect(v0.map(\.bitPattern) == rounded(initial, pull.dtype).map(\.bitPattern))
            #expect(v0 != initial, "the pull copy holds the f32 values themselves")
            #expect(try m.read(.params).values.map(\.bitPattern) == initial.map(\.bitPattern))

            let server = RunningServer(eps)
            defer { server.stop() }
            let n = m.layout.totalElements
            let (g0, g1) = (gradient(1, n), gradient(2, n))
            try w0.push(gradient: g0, step: 0)
            try w1.push(gradient: g1, step: 0)
            let p1 = try w0.pull(step: 1, timeout: .seconds(20))
            // The servers stepped from the f32 master, not from the rounded copy.
            var model = ExpectedModel(count: n, config: w0.config)
            model.params = initial
            model.step([g0, g1])
            #expect(try m.read(.params).values.map(\.bitPattern) == model.params.map(\.bitPattern))
            #expect(p1.map(\.bitPattern) == rounded(model.params, pull.dtype).map(\.bitPattern))
            // Every chunk's copy is a blob of the pull dtype at version 1, written by a server.
            let (values, headers) = try m.read(.pullCopy)
            #expect(values.map(\.bitPattern) == p1.map(\.bitPattern))
            for h in headers {
                #expect(h.dtype == pull.dtype && h.step == 1 && h.producer == BlobHeader.serverProducer)
                #expect(h.codec == pull.codec || h.codec == .raw)
            }
            // `smlt admin chunks` shows each chunk's copy, as stored.
            let statuses = try ShardInspector.chunks(job: job, endpoints: eps)
            #expect(statuses.count == m.layout.chunkCount)
            for (st, h) in zip(statuses, headers) {
                #expect(st.version == 1 && st.pull == "\(pull.dtype)-\(h.codec)")
                #expect((st.pullStoredBytes ?? 0) > BlobHeader.size)
            }
        }
    }

    @Test func aJobWithoutAPullCopyPullsItsParameters() throws {
        try withRedisServers(1) { servers in
            let m = try makeJob("no-pull", servers, workers: 1)
            #expect(m.map.pullEncoding == nil && m.map.pulledKind == .params)
            let json = String(decoding: try JSONEncoder().encode(m.map), as: UTF8.self)
            #expect(!json.contains("pull_encoding"), "a map without a pull copy is written as before: \(json)")
            let keys = JobKeys(job: "no-pull")
            let c = try RedisConnection(servers[0].endpoint)
            #expect(try c.run(["EXISTS", keys.pullCopy(chunk: 0)]) == .integer(0))
            let statuses = try ShardInspector.chunks(job: "no-pull", endpoints: servers.map(\.endpoint))
            #expect(statuses.allSatisfy { $0.pull == nil && $0.pullStoredBytes == nil && $0.version == 0 })
        }
    }

    @Test func mapsNameTheirPullEncodingAndRefuseBadOnes() throws {
        let spec = JobSpec(
            job: "j", tensors: [TensorSpec(name: "w", shape: [4])], pullEncoding: try PullEncoding(parsing: "bf16"))
        let map = ShardMap(spec: spec, shards: ["127.0.0.1:7000"])
        let text = String(decoding: try JSONEncoder().encode(map), as: UTF8.self)
        #expect(text.contains(#""pull_encoding":"bf16-raw""#), "\(text)")
        #expect(try JSONDecoder().decode(ShardMap.self, from: Data(text.utf8)) == map)
        for bad in ["f32", "shuffle-lz4", "topk:0.1", "bf16-sparse-lz4", "bf16-zstd"] {
            let broken = text.replacingOccurrences(of: "bf16-raw", with: bad)
            #expect(throws: DecodingError.self, "\(bad)") {
                try JSONDecoder().decode(ShardMap.self, from: Data(broken.utf8))
            }
            #expect {
                try PullEncoding(parsing: bad)
            } throws: { e in
                (e as? ShardError)?.code == .invalidSpec && "\(e)".contains(bad)
            }
        }
        let notAString = text.replacingOccurrences(of: #""bf16-raw""#, with: "2")
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(ShardMap.self, from: Data(notAString.utf8)) }
    }

    /// What `smlt train` registers for each `--codec` and `--pull`, and what the planner assumes
    /// a parameter costs on the wire.
    @Test func trainPicksThePullCopyAndThePlannerCountsItsBytes() throws {
        func request(_ codec: String, pull: String? = nil) -> TrainingRequest {
            var r = TrainingRequest()
            r.codec = codec
            r.pull = pull
            return r
        }
        let cases: [(String, String?, BlobCodec, String?, Double)] = [
            ("raw", nil, .raw, nil, 4), ("shuffle-lz4", nil, .shuffleLZ4, nil, 4),
            ("bf16", nil, .raw, "bf16-raw", 2), ("bf16-bitshuffle-lz4", nil, .raw, "bf16-bitshuffle-lz4", 2),
            ("bf16", "f32", .raw, nil, 3), ("raw", "bf16", .raw, "bf16-raw", 3), ("f16-lz4", nil, .raw, "f16-lz4", 2),
            ("topk:0.01", nil, .raw, nil, (0.08 + 4) / 2),
        ]
        for (codec, pull, parameters, copy, bytes) in cases {
            let r = request(codec, pull: pull)
            #expect(r.parameterCodec == parameters, "\(codec) \(pull ?? "-")")
            #expect(r.pullEncoding?.description == copy, "\(codec) \(pull ?? "-")")
            #expect(abs(r.wireBytesPerParameter - bytes) < 1e-9, "\(codec) \(pull ?? "-")")
        }
    }

    /// A worker refuses a pull copy that is not what the map says: missing, or of another count.
    @Test func aMissingOrCorruptPullCopyIsAnErrorNamingTheChunk() throws {
        try withRedisServers(1) { servers in
            let job = "pull-bad"
            let (m, _) = try makePullJob(job, servers, pull: try PullEncoding(parsing: "bf16"), workers: 1)
            let w = try WorkerSession(job: job, worker: 0, endpoints: servers.map(\.endpoint))
            let keys = JobKeys(job: job)
            let c = try RedisConnection(servers[0].endpoint)
            _ = try c.run(["DEL", keys.pullCopy(chunk: 2)])
            let statuses = try ShardInspector.chunks(job: job, endpoints: servers.map(\.endpoint))
            #expect(statuses[2].pull == "missing" && statuses[2].pullStoredBytes == nil)
            #expect(statuses[1].pull?.hasPrefix("bf16-") == true)
            #expect {
                _ = try w.pull(step: 0, timeout: .seconds(2))
            } throws: { e in
                (e as? ShardError)?.code == .missingChunk && "\(e)".contains(keys.pullCopy(chunk: 2))
            }
            // A blob of another chunk's size under chunk 2's key.
            let other = try c.run(["GET", keys.pullCopy(chunk: m.layout.chunkCount - 1)])
            _ = try c.run(RedisCommand("SET", keys.pullCopy(chunk: 2)).appending(bytes: try #require(other.bytes)))
            #expect {
                _ = try w.pull(step: 0, timeout: .seconds(2))
            } throws: { e in
                (e as? ShardError)?.code == .corruptChunk && "\(e)".contains("chunk 2")
            }
        }
    }
}

extension EndToEnd {
    /// `smlt train` with a pull copy, through a re-shard: the pull copies move with their chunks.
    @Suite(.serialized) struct PullCopyTrainingTests {
        static let base = [
            "train", "--dataset", "digits", "--model", "mlp", "--workers", "4", "--shards", "2", "--json",
            "--steps", "200", "--chunk-elements", "256", "--codec", "bf16",
        ]

        func digest(_ r: RunResult) -> String? { json(r.stdout)["param_digest"] as? String }

        @Test func reshardingAJobWithAPullCopyLeavesTheDigestUnchanged() throws {
            let plain = try smlt(Self.base)
            #expect(plain.status.succeeded, "\(plain.stderr.suffix(2000))")
            let resharded = try smlt(Self.base + ["--schedule", "70:shards=3;140:shards=1"])
            #expect(resharded.status.succeeded, "\(resharded.stderr.suffix(2000))")
            #expect(digest(plain) != nil)
            #expect(digest(resharded) == digest(plain))
            // With f32 pulls the same job computes other gradients, so another digest.
            let f32Pulls = try smlt(Self.base + ["--pull", "f32"])
            #expect(f32Pulls.status.succeeded, "\(f32Pulls.stderr.suffix(2000))")
            #expect(digest(f32Pulls) != nil && digest(f32Pulls) != digest(plain))
        }

        @Test func aBadPullSpecIsRefusedNamingTheFlag() throws {
            for bad in ["topk:0.1", "f32-lz4", "bf16-zstd"] {
                let r = try smlt(["train", "--pull", bad, "--steps", "3"])
                #expect(!r.status.succeeded)
                #expect(r.stderr.contains("--pull") && r.stderr.contains(bad), "\(r.stderr)")
            }
        }
    }
}

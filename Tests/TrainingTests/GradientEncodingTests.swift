import Checkpoints
import Foundation
import FunctionClient
import KeySchema
import LocalProcesses
import RedisClient
import ShardManager
import TensorBlob
import TestSupport
import Testing
import TrainingProtocol

/// Gradient encodings (`--codec`, the config's `gradient_encoding`) and error feedback: the specs,
/// the residual's arithmetic, and the residual as worker state in Redis.
@Suite struct GradientEncodingTests {
    @Test func specsParseToTheirDtypeAndCodec() throws {
        let cases: [(String, DType, BlobCodec, String)] = [
            ("raw", .f32, .raw, "raw"), ("lz4", .f32, .lz4, "lz4"), ("shuffle-lz4", .f32, .shuffleLZ4, "shuffle-lz4"),
            ("f32", .f32, .raw, "raw"), ("bf16", .bf16, .raw, "bf16-raw"), ("f16", .f16, .raw, "f16-raw"),
            ("bf16-shuffle-lz4", .bf16, .shuffleLZ4, "bf16-shuffle-lz4"), ("f16-lz4", .f16, .lz4, "f16-lz4"),
            ("f32-shuffle-lz4", .f32, .shuffleLZ4, "shuffle-lz4"),
        ]
        for (spec, dtype, codec, canonical) in cases {
            let e = try GradientEncoding(parsing: spec)
            #expect(e.dtype == dtype && e.codec == codec, "\(spec)")
            #expect(e.description == canonical)
            #expect(e.isLossy == (dtype != .f32))
            #expect(try GradientEncoding(parsing: canonical) == e)
        }
    }

    @Test func badSpecsNameTheSpecAndTheProblem() {
        for (spec, problem) in [
            ("", "not an encoding"), ("bf17", "not an encoding"), ("bf16-zstd", "unknown codec 'zstd'"),
            ("BF16", "not an encoding"), ("bf16-", "unknown codec ''"), ("lz4-bf16", "not an encoding"),
            ("top:0.1", "not an encoding"),
        ] {
            _ = problem
            #expect {
                try GradientEncoding(parsing: spec)
            } throws: { error in
                let e = error as? GradientEncodingError
                return e?.code == .unknownEncoding && "\(error)".contains("'\(spec)'")
            }
        }
    }

    @Test func aConfigWithAnUnknownEncodingIsInvalid() throws {
        var config = TrainingConfig(workers: 1, steps: 1, learningRate: 0.1, gradientEncoding: "bf16-shuffle-lz4")
        try config.validate()
        let json = try JSONEncoder().encode(config)
        #expect(String(decoding: json, as: UTF8.self).contains("\"gradient_encoding\":\"bf16-shuffle-lz4\""))
        #expect(try JSONDecoder().decode(TrainingConfig.self, from: json) == config)
        config.gradientEncoding = "bf16-gzip"
        #expect(throws: ShardError.self) { try config.validate() }
        // Without the field: f32 with the map's codec, and the field is not written.
        config.gradientEncoding = nil
        #expect(try config.encoding(mapCodec: .lz4) == .dense(.f32, .lz4))
        #expect(!String(decoding: try JSONEncoder().encode(config), as: UTF8.self).contains("gradient_encoding"))
    }

    /// q + r' is exactly g + r, q is what the blob holds, and the residual carries into the next
    /// step: over many steps the pushed values sum to the gradients' sum minus the last residual.
    @Test func errorFeedbackKeepsWhatRoundingTookOff() throws {
        for dtype in [DType.bf16, .f16] {
            let encoding = GradientEncoding.dense(dtype, .shuffleLZ4)
            var rng = SystemRandomNumberGenerator()
            var residual: [Float]?
            var pushedSum = [Double](repeating: 0, count: 257)
            var gradientSum = [Double](repeating: 0, count: 257)
            for _ in 0..<20 {
                let g = (0..<257).map { _ in Float.random(in: -0.01...0.01, using: &rng) }
                let fb = ErrorFeedback(gradient: g, residual: residual, encoding: encoding, chunkElements: 16)
                let r = try #require(fb.residual)
                for i in g.indices {
                    let v = g[i] + (residual?[i] ?? 0)
                    #expect(fb.sent[i] + r[i] == v)
                    #expect(abs(r[i]) <= max(abs(v) / (dtype == .bf16 ? 255 : 2047), dtype == .f16 ? 0x1p-25 : 0))
                    pushedSum[i] += Double(fb.sent[i])
                    gradientSum[i] += Double(g[i])
                }
                let decoded = try TensorBlob.decode(
                    TensorBlob.encode(
                        g.indices.map { g[$0] + (residual?[$0] ?? 0) }, dtype: dtype, codec: .raw,
                        step: 0, producer: 0))
                #expect(decoded.values.map(\.bitPattern) == fb.sent.map(\.bitPattern))
                residual = r
            }
            // The gradients' sum is what was pushed plus what is still held back.
            for i in pushedSum.indices {
                #expect(abs(gradientSum[i] - pushedSum[i] - Double(residual![i])) < 1e-6)
            }
        }
        let lossless = ErrorFeedback(gradient: [1.5, 2], residual: nil, encoding: .dense(.f32, .lz4), chunkElements: 2)
        #expect(lossless.sent == [1.5, 2] && lossless.residual == nil)
    }

    /// Top-k sends the k largest magnitudes of each chunk of `v = g + r` (rounded to the dtype)
    /// and keeps everything else: nothing is lost, only delayed.
    @Test(arguments: ["topk:0.1", "bf16-topk:0.3", "topk:1"])
    func topKKeepsEverythingItDidNotSend(spec: String) throws {
        let encoding = try GradientEncoding(parsing: spec)
        guard case .topK(let fraction, let dtype) = encoding else {
            throw GradientEncodingError(.unknownEncoding, spec)
        }
        let chunk = 37
        var residual: [Float]?
        for t in 0..<5 {
            let g = gradient(UInt64(t + 1), 100)
            let fb = ErrorFeedback(gradient: g, residual: residual, encoding: encoding, chunkElements: chunk)
            let v = g.indices.map { g[$0] + (residual?[$0] ?? 0) }
            for start in stride(from: 0, to: 100, by: chunk) {
                let part = Array(v[start..<min(100, start + chunk)])
                let picked = Set(try TopK.select(part, fraction: fraction).map(Int.init))
                for i in part.indices {
                    let sent = fb.sent[start + i]
                    if picked.contains(i) {
                        var rounded = [Float](repeating: 0, count: 1)
                        [part[i]].withUnsafeBufferPointer { p in
                            rounded.withUnsafeMutableBufferPointer { dtype.round(p, into: $0) }
                        }
                        #expect(sent == rounded[0])
                    } else {
                        #expect(sent == 0)
                    }
                }
            }
            if spec == "topk:1" {
                #expect(fb.residual == nil && fb.sent == g)
            } else {
                let r = try #require(fb.residual)
                for i in v.indices { #expect(fb.sent[i] + r[i] == v[i]) }
            }
            residual = fb.residual
        }
    }

    /// The residual is stored with the push's first phase, under the slot of the step it belongs
    /// to, and read back only as exactly that step's, this worker's, of the model's size.
    @Test func theResidualIsStoredWithThePushAndCheckedOnLoad() throws {
        try withRedisServers(2) { servers in
            let eps = servers.map(\.endpoint)
            let m = try makeJob(
                "ef", servers, workers: 2, tensors: [TensorSpec(name: "w", shape: [3000])], chunkElements: 1024)
            let n = m.layout.totalElements
            let session = try WorkerSession(job: "ef", worker: 1, endpoints: eps)
            let encoding = try GradientEncoding(parsing: "bf16-lz4")
            let g = (0..<n).map { Float($0) * 0.001 + 1e-5 }
            let fb = ErrorFeedback(gradient: g, residual: nil, encoding: encoding, chunkElements: 1024)
            let name = try session.push(sent: fb.sent, step: 0, encoding: encoding, residual: fb.residual)
            #expect(name == "residual-1-1")
            // The gradient chunks are bf16 blobs holding exactly `sent`.
            let keys = JobKeys(job: "ef")
            let blob = try #require(
                try m.onShard(m.map.assignment[0]) { c throws(RedisError) in
                    try c.run(["GET", keys.gradient(chunk: 0, step: 0, worker: 1)]).bytes
                })
            let chunk = try TensorBlob.decode(blob)
            #expect(chunk.header.dtype == .bf16)
            #expect(chunk.values == Array(fb.sent[0..<chunk.values.count]))
            // The residual is stored in parts, one per chunk of the layout; a dense encoding's as
            // bit planes, exactly.
            let layout = m.layout
            #expect(layout.chunkCount > 1)
            for part in 0..<layout.chunkCount {
                let stored = try TensorBlob.decode(try #require(try session.object("residual-1-1.\(part)")))
                #expect(stored.header.codec == .bitshuffleLZ4 && stored.header.dtype == .f32)
                #expect(stored.header.step == 1 && stored.header.producer == 1)
                #expect(stored.values.map(\.bitPattern) == fb.residual![layout.range(ofChunk: part)].map(\.bitPattern))
            }
            #expect(try session.object("residual-1-1") == nil)
            let progress = WorkerProgress(nextStep: 1, generation: 0, residual: name)
            #expect(try session.loadResidual(progress) == fb.residual)
            #expect(try session.loadResidual(WorkerProgress(nextStep: 1, generation: 0)) == nil)
            // Another step's slot, a slot holding another step, another worker's, a missing one.
            for bad in [
                WorkerProgress(nextStep: 3, generation: 0, residual: name),
                WorkerProgress(nextStep: 2, generation: 0, residual: "residual-1-0"),
                WorkerProgress(nextStep: 1, generation: 0, residual: "residual-0-1"),
            ] {
                #expect(throws: ShardError.self) { try session.loadResidual(bad) }
            }
            // A part of another producer, of another size, damaged, or missing.
            let last = "residual-1-1.\(layout.chunkCount - 1)"
            let good = try #require(try session.object(last))
            let lastValues = Array(fb.residual![layout.range(ofChunk: layout.chunkCount - 1)])
            for bad in [
                TensorBlob.encode(lastValues, codec: .raw, step: 1, producer: 0),
                TensorBlob.encode(lastValues + [0], codec: .raw, step: 1, producer: 1),
                Array(good.dropLast()),
            ] {
                try session.setObject(last, bad)
                #expect(throws: ShardError.self) { try session.loadResidual(progress) }
            }
            try session.setObject(last, good)
            #expect(try session.loadResidual(progress) == fb.residual)
            let owner = JobObjects.shard(for: last, job: "ef", shards: m.map.shards)
            try m.onShard(owner) { c throws(RedisError) in _ = try c.run(["DEL", JobKeys(job: "ef").object(last)]) }
            #expect(throws: ShardError.self) { try session.loadResidual(progress) }
            // Progress JSON carries the name; without it, there is no residual.
            let json = String(decoding: try JSONEncoder().encode(progress), as: UTF8.self)
            #expect(json.contains("\"residual\":\"residual-1-1\""))
            let old = try JSONDecoder().decode(WorkerProgress.self, from: Data(#"{"next_step":4,"generation":2}"#.utf8))
            #expect(old.residual == nil && old.nextStep == 4)
        }
    }

    /// Which codec a worker stores its residual with: bit planes for a dense bf16 or f16 encoding
    /// (a rounding's residual has its low significand bits zero), raw for top-k (the unsent
    /// gradient is f32 noise).
    @Test(arguments: [
        ("bf16-shuffle-lz4", BlobCodec.bitshuffleLZ4), ("bf16-bitshuffle-lz4", .bitshuffleLZ4),
        ("f16-lz4", .bitshuffleLZ4), ("bf16", .bitshuffleLZ4), ("f16", .bitshuffleLZ4), ("topk:0.1", .raw),
        ("bf16-topk:0.1", .raw),
    ])
    func theResidualCodecFollowsTheEncoding(spec: String, codec: BlobCodec) throws {
        let encoding = try GradientEncoding(parsing: spec)
        #expect(ErrorFeedback.residualCodec(for: encoding) == codec)
        // Whatever the codec, the stored residual decodes to the same bits, and the compressed one
        // is smaller (for a rounding's residual of uniform values in ±0.05).
        var rng = SystemRandomNumberGenerator()
        let g = (0..<4096).map { _ in Float.random(in: -0.05...0.05, using: &rng) }
        let fb = ErrorFeedback(gradient: g, residual: nil, encoding: encoding, chunkElements: 1024)
        let r = try #require(fb.residual)
        let blob = TensorBlob.encode(r, codec: codec, step: 1, producer: 0)
        #expect(try TensorBlob.decode(blob).values.map(\.bitPattern) == r.map(\.bitPattern))
        if codec == .bitshuffleLZ4 {
            #expect(blob.count < TensorBlob.encode(r, codec: .raw, step: 1, producer: 0).count * 3 / 4)
        }
    }
}

/// The Swift SDK's worker loop with bf16 error feedback, against a real parameter server: workers
/// with known gradients (independent of the parameters) whose invocations die every few steps,
/// one of them after a push it never saved progress for, end with exactly the parameters of an
/// uninterrupted run with error feedback.
@Suite struct ErrorFeedbackResumeTests {
    struct Crash: Error {}

    @Test(arguments: ["bf16-shuffle-lz4", "topk:0.1", "bf16-topk:0.25"])
    func workersResumeTheirResidualExactlyAcrossCrashesAndAHalfFinishedPush(spec: String) throws {
        try withRedisServers(2) { servers in
            let steps = 9
            let eps = servers.map(\.endpoint)
            let m = try makeJob("ef-sdk", servers, workers: 2, steps: steps)
            let encoding = try GradientEncoding(parsing: spec)
            var config = TrainingConfig(
                workers: 2, steps: steps, learningRate: 0.5, momentum: 0.9, weightDecay: 0.01,
                gradientEncoding: encoding.description)
            try config.store(on: m)
            let server = RunningServer(eps)
            defer { server.stop() }
            let n = m.layout.totalElements
            // Small values next to large ones, so that bf16 rounding loses a lot of each step.
            let known: @Sendable (Int, Int) -> [Float] = { w, t in
                gradient(UInt64(100 * w + t + 1), n).enumerated().map { $1 * ($0 % 3 == 0 ? 1 : 1e-3) + 1 }
            }
            // Worker 0's generation 0 pushed step 0 (with its residual), counted it on shard 0
            // only and died before saving progress.
            let first = ErrorFeedback(gradient: known(0, 0), residual: nil, encoding: encoding, chunkElements: 16)
            let w0 = try WorkerSession(job: "ef-sdk", worker: 0, endpoints: eps)
            try first.sent.withUnsafeBufferPointer { (g) throws(ShardError) in
                try w0.shards.write(
                    g, as: .gradient(step: 0, worker: 0), step: 0, producer: 0, expireSeconds: 3600,
                    codec: encoding.codec, dtype: encoding.dtype)
            }
            for part in 0..<m.layout.chunkCount {
                try w0.setObject(
                    ErrorFeedback.partName("residual-0-1", part: part),
                    TensorBlob.encode(
                        Array(first.residual![m.layout.range(ofChunk: part)]), codec: .raw, step: 1, producer: 0))
            }
            let keys = JobKeys(job: "ef-sdk")
            try m.onShard(0) { c throws(RedisError) in
                _ = try c.pipeline([
                    ["SADD", keys.pushed(shard: 0, step: 0), "0"], ["RPUSH", keys.inbox(shard: 0), "0:0"],
                ])
            }
            let outcomes = Locked<[FunctionWorker.Outcome]>([])
            let computed = Locked<[Int]>([])
            let group = DispatchGroup()
            // Worker 1 first: once it has pushed step 0, shard 0 commits it and moves on, so
            // worker 0's next invocation finds the push half finished.
            for w in [1, 0] {
                if w == 0 {
                    for _ in 0..<500 {
                        let v = try m.onShard(0) { c throws(RedisError) in try keys.latestVersion(shard: 0, on: c) }
                        if v == 1 { break }
                        sleepFor(.milliseconds(10))
                    }
                }
                group.enter()
                Thread {
                    defer { group.leave() }
                    // Generation 0 of worker 0 is the one that died above.
                    var generation = w == 0 ? 1 : 0
                    while generation < 50 {
                        let environment = FunctionWorkerTests.environment(
                            job: "ef-sdk", worker: w, generation: generation, servers: servers)
                        var taken = 0
                        let outcome = try? FunctionWorker.run(environment: environment, log: { _ in }) { _ in
                        } step: { _, step, parameters in
                            taken += 1
                            // Each invocation dies in its third step, before pushing it.
                            if taken > 2 { throw Crash() }
                            if w == 0 { computed.withLock { $0.append(step.index) } }
                            var gradients = parameters
                            let g = known(w, step.index)
                            gradients.withUnsafeMutableBufferPointer { p in for i in 0..<p.count { p[i] = g[i] } }
                            return FunctionWorker.StepResult(gradients: gradients, loss: 1, accuracy: 0, examples: 1)
                        }
                        generation += 1
                        if let outcome {
                            outcomes.withLock { $0.append(outcome) }
                            return
                        }
                    }
                }.start()
            }
            #expect(group.wait(timeout: .now() + 120) == .success)
            #expect(outcomes.withLock { $0 } == [.finished, .finished])
            // Worker 0 never computed step 0 again: the half-finished push was finished.
            #expect(computed.withLock { $0 }.first == 1)
            config.gradientEncoding = nil
            var expected = ExpectedModel(count: n, config: config)
            var residuals: [[Float]?] = [nil, nil]
            for t in 0..<steps {
                var sent: [[Float]] = []
                for w in 0..<2 {
                    let fb = ErrorFeedback(
                        gradient: known(w, t), residual: residuals[w], encoding: encoding, chunkElements: 16)
                    sent.append(fb.sent)
                    residuals[w] = fb.residual
                }
                expected.step(sent)
            }
            let final = try w0.pull(step: steps, timeout: .seconds(30))
            #expect(final.map(\.bitPattern) == expected.params.map(\.bitPattern))
            // And error feedback did something: without it, the parameters differ.
            var plain = ExpectedModel(count: n, config: config)
            for t in 0..<steps {
                plain.step(
                    (0..<2).map { w in
                        ErrorFeedback(gradient: known(w, t), residual: nil, encoding: encoding, chunkElements: 16).sent
                    })
            }
            #expect(plain.params != expected.params)
            let progress = try #require(try w0.loadProgress())
            #expect(progress.nextStep == steps && progress.residual == "residual-0-1")
            #expect(try w0.loadResidual(progress) == residuals[0])
        }
    }
}

extension EndToEnd {
    /// `smlt train --codec bf16-shuffle-lz4` on digits/MLP: deterministic, exact through faults and
    /// time limits (the residual is worker state), and within 0.01 test accuracy of raw.
    @Suite(.serialized) struct LossyGradientTests {
        static let base = [
            "train", "--dataset", "digits", "--model", "mlp", "--workers", "4", "--shards", "2", "--json",
        ]

        func train(_ extra: [String]) throws -> [String: Any] {
            let job = "ef-\(UUID().uuidString.prefix(8))"
            let r = try smlt(Self.base + extra + ["--job", job])
            #expect(r.status.succeeded, "\(r.stderr.suffix(2000))")
            #expect(processes(containing: job).isEmpty, "processes of \(job) left running")
            return json(r.stdout)
        }

        @Test func bf16WithErrorFeedbackIsExactThroughFaultsAndKeepsAccuracy() throws {
            let raw = try train(["--codec", "raw"])
            let bf16 = try train(["--codec", "bf16-shuffle-lz4"])
            let again = try train(["--codec", "bf16-shuffle-lz4"])
            let digest = try #require(bf16["param_digest"] as? String)
            #expect(again["param_digest"] as? String == digest)
            #expect(raw["param_digest"] as? String != digest, "bf16 pushed the same bits as raw")
            // Killed and frozen workers, a killed server, and 3 s time limits: the residual each
            // worker resumes from is the one it would have had.
            let faulty = try train([
                "--codec", "bf16-shuffle-lz4", "--inject-faults", "worker-kill=2,worker-hang=1,server-kill=1",
                "--function-timeout", "3s",
            ])
            #expect(faulty["param_digest"] as? String == digest)
            #expect((faulty["faults_injected"] as? Int ?? 0) >= 2)
            #expect((faulty["continuations"] as? Int ?? 0) >= 1)
            // A shard that restarts empty: the job rolls back to its last checkpoint, which holds
            // the workers' residuals of that version, and still ends with the same bits.
            let dir = NSTemporaryDirectory() + "smlt-ef-\(UUID().uuidString)"
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let wiped = try train([
                "--codec", "bf16-shuffle-lz4", "--inject-faults", "shard-wipe=1", "--checkpoint-every", "7",
                "--checkpoint-dir", dir,
            ])
            #expect(wiped["param_digest"] as? String == digest)
            #expect(wiped["rollbacks"] as? Int == 1)
            let saved = try Checkpoint.read(from: dir)
            let residuals = try #require(saved.residuals)
            #expect(residuals.count == 4 && residuals.allSatisfy { $0.count == saved.params.count })
            #expect(residuals.contains { r in r.contains { $0 != 0 } })
            // The codec on top of bf16 is lossless, for the gradients and the pull copy alike:
            // bit planes instead of byte planes change the bytes in Redis, not the run.
            let bitPlanes = try train(["--codec", "bf16-bitshuffle-lz4"])
            #expect(bitPlanes["param_digest"] as? String == digest)
            // Same seed, same bits: this comparison is deterministic.
            let rawAccuracy = try #require(raw["test_accuracy"] as? Double)
            let bf16Accuracy = try #require(bf16["test_accuracy"] as? Double)
            #expect(abs(rawAccuracy - bf16Accuracy) <= 0.01, "raw \(rawAccuracy), bf16 \(bf16Accuracy)")
        }

        @Test func anUnknownCodecIsRefusedNamingTheFlag() throws {
            let r = try smlt(["train", "--codec", "bf16-zstd", "--steps", "3"])
            #expect(!r.status.succeeded)
            #expect(r.stderr.contains("--codec") && r.stderr.contains("bf16-zstd"), "\(r.stderr)")
        }
    }
}

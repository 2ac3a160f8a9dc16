import Checkpoints
import Foundation
import LocalProcesses
import RedisClient
import ShardManager
import TensorBlob
import TestSupport
import Testing
import TrainingProtocol

@Suite struct CheckpointTests {
    @Test func safetensorsRoundTripAndRejectsDamage() throws {
        let tensors = [
            SafeTensors.Tensor(name: "w", shape: [3, 5], values: (0..<15).map { Float($0) * 0.5 - 2 }),
            SafeTensors.Tensor(name: "b", shape: [5], values: [1, -2, 3, -4, 5]),
        ]
        let bytes = try SafeTensors.encode(tensors, metadata: ["step": "7"])
        let headerLength = bytes.withUnsafeBytes { Int(UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self))) }
        #expect((8 + headerLength) % 8 == 0)
        #expect(bytes.count == 8 + headerLength + 20 * 4)
        let (back, meta) = try SafeTensors.decode(bytes)
        #expect(back == tensors)
        #expect(meta == ["step": "7"])

        func code(_ b: [UInt8]) -> CheckpointError.Code? {
            do {
                _ = try SafeTensors.decode(b)
                return nil
            } catch { return error.code }
        }
        #expect(code(Array(bytes.prefix(5))) == .corrupt)
        #expect(code(Array(bytes.dropLast(4))) == .corrupt)  // data shorter than the offsets say
        var huge = bytes
        huge.replaceSubrange(0..<8, with: withUnsafeBytes(of: UInt64(1 << 40).littleEndian, Array.init))
        #expect(code(huge) == .corrupt)
        let f16 = String(decoding: bytes[8..<(8 + headerLength)], as: UTF8.self).replacingOccurrences(
            of: "\"F32\"", with: "\"F16\"")
        #expect(code(Array(bytes[0..<8]) + Array(f16.utf8) + Array(bytes[(8 + headerLength)...])) == .unsupported)
    }

    @Test func captureWriteReadRestore() throws {
        try withRedisServers(2) { servers in
            let eps = servers.map(\.endpoint)
            let m = try makeJob("ckpt", servers, workers: 2, steps: 6)
            let server = RunningServer(eps)
            defer { server.stop() }
            let n = m.layout.totalElements
            let w = try (0..<2).map { try WorkerSession(job: "ckpt", worker: $0, endpoints: eps) }
            let config = w[0].config
            for step in 0..<2 {
                for i in 0..<2 { try w[i].push(gradient: gradient(UInt64(50 + 2 * step + i), n), step: step) }
                _ = try w[0].pull(step: step + 1, timeout: .seconds(20))
            }
            let saved = try #require(try Checkpoint.capture(m, config: config, snapshot: false))
            #expect(saved.step == 2)
            #expect(saved.optimizer?.count == n)
            let dir = NSTemporaryDirectory() + "smlt-ckpt-\(UUID().uuidString)"
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let path = try saved.write(to: dir)
            #expect(path.hasSuffix("step-00000002.safetensors"))
            #expect(try Checkpoint.read(from: dir) == saved)

            // Two more steps, then back to step 2: parameters, momentum, streams and progress.
            for step in 2..<4 {
                for i in 0..<2 { try w[i].push(gradient: gradient(UInt64(90 + 2 * step + i), n), step: step) }
                _ = try w[0].pull(step: step + 1, timeout: .seconds(20))
            }
            try Checkpoint.read(from: dir).restore(to: m)
            let now = try #require(try Checkpoint.capture(m, config: config, snapshot: false))
            #expect(now == saved)
            #expect(try w[1].loadProgress() == WorkerProgress(nextStep: 2, generation: 0))
            // Training continues from there, and the server follows the rollback.
            for i in 0..<2 { try w[i].push(gradient: gradient(UInt64(90 + 4 + i), n), step: 2) }
            let p3 = try w[0].pull(step: 3, timeout: .seconds(20))
            #expect(p3.count == n)
        }
    }

    /// With a lossy gradient encoding a checkpoint holds every worker's residual of its version
    /// (live, or from the copies the workers store at checkpoint versions), and a restore gives
    /// each worker that residual back, named in its progress.
    @Test func aLossyJobsCheckpointHoldsTheWorkersResiduals() throws {
        try withRedisServers(2) { servers in
            let eps = servers.map(\.endpoint)
            let m = try makeJob(
                "ckpt-ef", servers, workers: 2, steps: 6, tensors: [TensorSpec(name: "w", shape: [3000])],
                chunkElements: 1024)
            let config = TrainingConfig(
                workers: 2, steps: 6, learningRate: 0.5, momentum: 0.9, weightDecay: 0.01, checkpointEvery: 2,
                gradientEncoding: "bf16-shuffle-lz4")
            try config.store(on: m)
            let server = RunningServer(eps)
            defer { server.stop() }
            let n = m.layout.totalElements
            let encoding = try GradientEncoding(parsing: "bf16-shuffle-lz4")
            let w = try (0..<2).map { try WorkerSession(job: "ckpt-ef", worker: $0, endpoints: eps) }
            var residuals: [[Float]?] = [nil, nil]
            func steps(_ range: Range<Int>) throws {
                for step in range {
                    for i in 0..<2 {
                        let fb = ErrorFeedback(
                            gradient: gradient(UInt64(70 + 2 * step + i), n), residual: residuals[i],
                            encoding: encoding, chunkElements: 1024)
                        try w[i].push(sent: fb.sent, step: step, encoding: encoding, residual: fb.residual)
                        residuals[i] = fb.residual
                    }
                    _ = try w[0].pull(step: step + 1, timeout: .seconds(20))
                }
            }
            try steps(0..<2)
            let atTwo = residuals.map { $0! }
            #expect(atTwo.allSatisfy { r in r.contains { $0 != 0 } })
            for snapshot in [false, true] {
                let c = try #require(try Checkpoint.capture(m, config: config, snapshot: snapshot))
                #expect(c.step == 2 && c.residuals == atTwo, "snapshot \(snapshot)")
            }
            let saved = try #require(try Checkpoint.capture(m, config: config, snapshot: true))
            let dir = NSTemporaryDirectory() + "smlt-ckpt-ef-\(UUID().uuidString)"
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let path = try saved.write(to: dir)
            #expect(try Checkpoint.read(from: dir) == saved)

            // Two more steps (the live residuals move on), then back to version 2.
            try steps(2..<4)
            #expect(try Checkpoint.capture(m, config: config, snapshot: false)?.residuals == residuals.map { $0! })
            try Checkpoint.read(from: dir).restore(to: m)
            for i in 0..<2 {
                let progress = try #require(try w[i].loadProgress())
                #expect(progress == WorkerProgress(nextStep: 2, generation: 0, residual: "residual-\(i)-0"))
                #expect(try w[i].loadResidual(progress) == atTwo[i])
            }

            // A file that names residuals it lacks is refused.
            let (tensors, meta) = try SafeTensors.decode(Array(try Data(contentsOf: URL(fileURLWithPath: path))))
            let damaged = try SafeTensors.encode(tensors.filter { $0.name != "smlt.residual.1" }, metadata: meta)
            try Data(damaged).write(to: URL(fileURLWithPath: path))
            #expect { try Checkpoint.read(from: dir) } throws: {
                ($0 as? CheckpointError)?.code == .corrupt && "\($0)".contains("worker 1")
            }
        }
    }

    @Test func restoreRefusesAnotherJobsTensors() throws {
        try withRedisServers(1) { servers in
            let m = try makeJob("other", servers, workers: 1)
            let c = Checkpoint(
                job: "other", step: 0, tensors: [TensorSpec(name: "w", shape: [3])], params: [1, 2, 3],
                optimizer: nil, config: TrainingConfig(workers: 1, steps: 1, learningRate: 0.1, momentum: 0))
            #expect { try c.restore(to: m) } throws: { ($0 as? CheckpointError)?.code == .invalid }
        }
    }
}

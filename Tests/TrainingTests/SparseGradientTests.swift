import Foundation
import KeySchema
import LocalProcesses
import ParamServer
import RedisClient
import ShardManager
import TestSupport
import Testing
import TrainingProtocol

@testable import TensorBlob

/// Top-k (sparse-lz4) gradients through real parameter servers: summed as the dense vectors they
/// decode to, in worker-id order, bit for bit.
@Suite struct SparseGradientTests {
    /// Registers a job of 6 020 parameters in chunks of 1 000 on `servers` and publishes version 0
    /// (all ones), as `makeJob` does for its smaller model.
    func makeBigJob(_ job: String, _ servers: [RedisServerProcess], workers: Int) throws -> ShardManager {
        try makeJob(
            job, servers, workers: workers, steps: 3,
            tensors: [TensorSpec(name: "w", shape: [300, 20]), TensorSpec(name: "b", shape: [20])], chunkElements: 1000)
    }

    /// Stores worker `w`'s gradient of `step`, each chunk encoded by `encode`, then finishes the
    /// push (the pushed sets) as a worker does. Returns the dense values the blobs decode to
    /// (zeros for a blob that does not decode).
    func push(
        _ g: [Float], step: Int, worker w: Int, session: WorkerSession, connections: [RedisConnection],
        encode: (UnsafeBufferPointer<Float>) throws -> [UInt8]
    ) throws -> [Float] {
        let map = session.shards.map
        let layout = session.shards.layout
        let keys = JobKeys(job: map.job)
        var decoded = [Float](repeating: 0, count: g.count)
        for chunk in 0..<layout.chunkCount {
            let range = layout.range(ofChunk: chunk)
            let blob = try g.withUnsafeBufferPointer { try encode(UnsafeBufferPointer(rebasing: $0[range])) }
            // A blob damaged on purpose decodes to nothing; it is stored all the same.
            if let values = try? TensorBlob.decode(blob).values { decoded.replaceSubrange(range, with: values) }
            let reply = try connections[map.assignment[chunk]].run(
                RedisCommand("SET", keys.gradient(chunk: chunk, step: step, worker: w)).appending(bytes: blob))
            #expect(reply.text == "OK")
        }
        #expect(try session.completePush(step: step))
        return decoded
    }

    @Test func topKGradientsAreSummedAsTheirDenseValues() throws {
        try withRedisServers(2) { servers in
            let job = "topk"
            let m = try makeBigJob(job, servers, workers: 3)
            let server = RunningServer(servers.map(\.endpoint))
            defer { server.stop() }
            let eps = servers.map(\.endpoint)
            let sessions = try (0..<3).map { try WorkerSession(job: job, worker: $0, endpoints: eps) }
            let connections = try servers.map { try RedisConnection($0.endpoint) }
            let n = m.layout.totalElements
            var model = ExpectedModel(count: n, config: sessions[0].config)
            var sawSparse = false
            // Each step rotates the encodings over the workers (top-k f32, dense with −0s, top-k
            // bf16) and pushes in another order, so that sparse gradients are added both while
            // they arrive in id order and after waiting for a lower id.
            let orders = [[2, 1, 0], [0, 1, 2], [1, 0, 2]]
            for step in 0..<3 {
                var grads: [[Float]] = Array(repeating: [], count: 3)
                for w in orders[step] {
                    var g = gradient(UInt64(100 * step + w), n)
                    let kind = (w + step) % 3
                    if kind == 1 { for i in stride(from: 0, to: n, by: 7) { g[i] = -0.0 } }
                    grads[w] = try push(g, step: step, worker: w, session: sessions[w], connections: connections) {
                        switch kind {
                        case 0:
                            let blob = try TensorBlob.encodeTopK(
                                $0, fraction: 0.01, step: UInt64(step), producer: UInt32(w))
                            sawSparse = sawSparse || blob[6] == BlobCodec.sparseLZ4.rawValue
                            return blob
                        case 1: return TensorBlob.encode($0, codec: .raw, step: UInt64(step), producer: UInt32(w))
                        default:
                            return try TensorBlob.encodeTopK(
                                $0, fraction: 0.1, dtype: .bf16, step: UInt64(step), producer: UInt32(w))
                        }
                    }
                    if step < 2 { Thread.sleep(forTimeInterval: 0.05) }
                }
                let sparseWorker = (3 - step) % 3
                #expect(grads[sparseWorker].filter { $0 != 0 }.count <= 70)
                model.step(grads)
                let pulled = try sessions[0].pull(step: step + 1, timeout: .seconds(20))
                #expect(pulled.map(\.bitPattern) == model.params.map(\.bitPattern), "step \(step)")
            }
            #expect(sawSparse)
        }
    }

    /// A sparse blob with an index out of range, behind a valid checksum, is rejected like any
    /// invalid gradient; the worker pushes again and the step completes.
    @Test func sparseGradientWithBadIndexIsRejected() throws {
        try withRedisServers(1) { servers in
            let job = "topk-bad"
            let m = try makeBigJob(job, servers, workers: 2)
            let server = RunningServer(servers.map(\.endpoint))
            defer { server.stop() }
            let eps = servers.map(\.endpoint)
            let sessions = try (0..<2).map { try WorkerSession(job: job, worker: $0, endpoints: eps) }
            let connections = try servers.map { try RedisConnection($0.endpoint) }
            let n = m.layout.totalElements
            let g0 = gradient(1, n)
            let g1 = gradient(2, n)
            let d0 = try push(g0, step: 0, worker: 0, session: sessions[0], connections: connections) {
                try TensorBlob.encodeTopK($0, fraction: 0.05, step: 0, producer: 0)
            }
            // Worker 1's chunk 3: the last pair's index moved past the chunk's end.
            var damaged = false
            _ = try push(g1, step: 0, worker: 1, session: sessions[1], connections: connections) { chunk in
                var blob = try TensorBlob.encodeTopK(chunk, fraction: 0.05, step: 0, producer: 1)
                if !damaged {
                    damaged = true
                    blob = Self.withLastDelta(blob, plus: 5000)
                }
                return blob
            }
            // The server refuses the push, so worker 1 pushes the good gradient again.
            let refusedBy = Date() + 20
            while try !JobKeys(job: job).pushRefused(shard: 0, step: 0, worker: 1, on: connections[0]) {
                #expect(Date() < refusedBy, "the damaged push was not refused")
                Thread.sleep(forTimeInterval: 0.05)
            }
            let rejected = try connections[0].run(["LRANGE", JobKeys(job: job).rejected, "0", "-1"])
            let reasons = (rejected.array ?? []).compactMap(\.text)
            #expect(reasons.contains { $0.contains("index 5992 is out of range for 1000 elements") }, "\(reasons)")
            let d1 = try push(g1, step: 0, worker: 1, session: sessions[1], connections: connections) {
                try TensorBlob.encodeTopK($0, fraction: 0.05, step: 0, producer: 1)
            }
            let p1 = try sessions[0].pull(step: 1, timeout: .seconds(20))
            #expect(p1.map(\.bitPattern) == expectedStep([d0, d1], config: sessions[0].config).map(\.bitPattern))
        }
    }

    /// A top-k gradient with a NaN among its pairs is refused (whether it waits for a lower id or
    /// arrives in order), and the good gradient pushed again completes the step.
    @Test(arguments: [true, false])
    func nonFiniteSparseGradientIsRejected(beforeWorker0: Bool) throws {
        try withRedisServers(1) { servers in
            let job = "topk-nan-\(beforeWorker0)"
            let m = try makeBigJob(job, servers, workers: 2)
            let server = RunningServer(servers.map(\.endpoint))
            defer { server.stop() }
            let sessions = try (0..<2).map {
                try WorkerSession(job: job, worker: $0, endpoints: servers.map(\.endpoint))
            }
            let connections = try servers.map { try RedisConnection($0.endpoint) }
            let n = m.layout.totalElements
            let (g0, g1) = (gradient(5, n), gradient(6, n))
            var bad = g1
            bad[1234] = .nan
            func pushWorker0() throws -> [Float] {
                try push(g0, step: 0, worker: 0, session: sessions[0], connections: connections) {
                    TensorBlob.encode($0, codec: .raw, step: 0, producer: 0)
                }
            }
            var d0: [Float] = []
            if !beforeWorker0 {
                d0 = try pushWorker0()
                Thread.sleep(forTimeInterval: 0.2)
            }
            _ = try push(bad, step: 0, worker: 1, session: sessions[1], connections: connections) {
                try TensorBlob.encodeTopK($0, fraction: 0.05, step: 0, producer: 1)
            }
            let refusedBy = Date() + 20
            while try !JobKeys(job: job).pushRefused(shard: 0, step: 0, worker: 1, on: connections[0]) {
                #expect(Date() < refusedBy, "the push with a NaN was not refused")
                Thread.sleep(forTimeInterval: 0.05)
            }
            let rejected = try connections[0].run(["LRANGE", JobKeys(job: job).rejected, "0", "-1"])
            let reasons = (rejected.array ?? []).compactMap(\.text)
            // Element 234 of chunk 1 (indices in messages are the chunk's).
            #expect(reasons.contains { $0.contains("\"chunk\":1") && $0.contains("element 234 is nan") }, "\(reasons)")
            if beforeWorker0 { d0 = try pushWorker0() }
            let d1 = try push(g1, step: 0, worker: 1, session: sessions[1], connections: connections) {
                try TensorBlob.encodeTopK($0, fraction: 0.05, step: 0, producer: 1)
            }
            let p1 = try sessions[0].pull(step: 1, timeout: .seconds(20))
            #expect(p1.map(\.bitPattern) == expectedStep([d0, d1], config: sessions[0].config).map(\.bitPattern))
        }
    }

    /// `blob` (sparse-lz4, f32) with its last index delta increased by `plus`, re-compressed
    /// and re-checksummed: a valid blob but for the index.
    static func withLastDelta(_ blob: [UInt8], plus: UInt32) -> [UInt8] {
        let (_, sparse) = try! TensorBlob.decodeSparse(blob)
        var indices = sparse.indices
        indices[indices.count - 1] += plus
        // Encode with a count large enough to hold the index, then put the real count back.
        let wide = try! SparseGradient(count: sparse.count + Int(plus), indices: indices, values: sparse.values)
        var out = TensorBlob.encode(wide, step: 0, producer: UInt32(blob[24]))
        out.withUnsafeMutableBytes { b in
            b.storeBytes(of: UInt64(sparse.count).littleEndian, toByteOffset: 8, as: UInt64.self)
            b.storeBytes(
                of: TensorBlob.checksum(UnsafeRawBufferPointer(b)).littleEndian, toByteOffset: 40, as: UInt32.self)
        }
        return out
    }
}

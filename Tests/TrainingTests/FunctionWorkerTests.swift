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

/// The FunctionClient SDK as a Swift function uses it: `FunctionWorker.run` with a step of its
/// own against a real parameter server, its staged objects and local cache, and its errors.
@Suite struct FunctionWorkerTests {
    /// The invocation environment a scheduler gives worker `w` (the event as the wire format has it).
    static func environment(
        job: String, worker w: Int, generation: Int, servers: [RedisServerProcess], extra: [String: String] = [:]
    ) -> [String: String] {
        let redis = servers.map { "\"\($0.endpoint)\"" }.joined(separator: ",")
        let event =
            #"{"job":"\#(job)","worker":\#(w),"generation":\#(generation),"lease_ms":3000,"redis":[\#(redis)]}"#
        return extra.merging([FunctionEnvironment.event: event]) { _, new in new }
    }

    /// Two workers, each invocation dying after a few steps and the next generation resuming where
    /// it saved its progress, end with the parameters the optimizer must reach. Worker 0 returns
    /// its gradients by name in the opposite order of the job's tensors, worker 1 writes them in
    /// place over a copy of the parameters: both must push the same bits.
    @Test func aCustomStepFunctionTrainsAcrossCrashes() throws {
        try withRedisServers(2) { servers in
            let steps = 12
            let m = try makeJob("custom", servers, workers: 2, steps: steps)
            let server = RunningServer(servers.map(\.endpoint))
            defer { server.stop() }
            let n = m.layout.totalElements
            // Worker w's gradient at step t: a known function of both, independent of the parameters.
            let known: @Sendable (Int, Int) -> [Float] = { w, t in gradient(UInt64(100 * w + t + 1), n) }
            let outcomes = Locked<[FunctionWorker.Outcome]>([])
            let generations = Locked<[Int]>([])
            let group = DispatchGroup()
            for w in 0..<2 {
                group.enter()
                Thread {
                    defer { group.leave() }
                    var generation = 0
                    while true {
                        let environment = Self.environment(
                            job: "custom", worker: w, generation: generation, servers: servers)
                        // Each invocation may take 5 steps at most: its "time limit" is a step budget.
                        var taken = 0
                        let outcome = try? FunctionWorker.run(environment: environment, log: { _ in }) { _ in
                        } step: { _, step, parameters in
                            taken += 1
                            if taken > 5 { throw Budget() }
                            let g = known(w, step.index)
                            var gradients: Tensors
                            if w == 0 {
                                gradients = Tensors()
                                var offset = g.count
                                for name in parameters.names.reversed() {
                                    let shape = parameters[name]!.shape
                                    let count = shape.reduce(1, *)
                                    offset -= count
                                    gradients[name] = try Tensor(
                                        shape: shape, values: Array(g[offset..<offset + count]))
                                }
                            } else {
                                gradients = parameters
                                gradients.withUnsafeMutableBufferPointer { p in
                                    for i in 0..<p.count { p[i] = g[i] }
                                }
                            }
                            return FunctionWorker.StepResult(gradients: gradients, loss: 1, accuracy: 0, examples: 1)
                        }
                        generation += 1
                        if let outcome {
                            outcomes.withLock { $0.append(outcome) }
                            generations.withLock { $0.append(generation) }
                            return
                        }
                    }
                }.start()
            }
            #expect(group.wait(timeout: .now() + 120) == .success)
            #expect(outcomes.withLock { $0 } == [.finished, .finished])
            // 12 steps at most 5 per invocation: each worker needed at least 3 of them.
            #expect(generations.withLock { $0 }.allSatisfy { $0 >= 3 })
            var expected = ExpectedModel(
                count: n,
                config: TrainingConfig(
                    workers: 2, steps: steps, learningRate: 0.5, momentum: 0.9, weightDecay: 0.01))
            for t in 0..<steps { expected.step([known(0, t), known(1, t)]) }
            let final = try WorkerSession(job: "custom", worker: 0, endpoints: servers.map(\.endpoint))
                .pull(step: steps, timeout: .seconds(30))
            #expect(final.map(\.bitPattern) == expected.params.map(\.bitPattern))
        }
    }

    /// A push the server refuses (here: one gradient chunk damaged in Redis after the push) is
    /// pushed again by the worker that is waiting for the next version, and the job ends with
    /// the parameters it would have reached without the damage.
    @Test func aRefusedPushIsPushedAgain() throws {
        try withRedisServers(2) { servers in
            let steps = 3
            let m = try makeJob("refused", servers, workers: 2, steps: steps)
            let n = m.layout.totalElements
            let known: @Sendable (Int, Int) -> [Float] = { w, t in gradient(UInt64(100 * w + t + 1), n) }
            let outcomes = Locked<[FunctionWorker.Outcome]>([])
            let logs = Locked<[String]>([])
            let group = DispatchGroup()
            for w in 0..<2 {
                group.enter()
                Thread {
                    defer { group.leave() }
                    let environment = Self.environment(job: "refused", worker: w, generation: 0, servers: servers)
                    let outcome = try? FunctionWorker.run(
                        environment: environment, log: { line in logs.withLock { $0.append(line) } }
                    ) { _ in
                    } step: { _, step, parameters in
                        var gradients = parameters
                        let g = known(w, step.index)
                        gradients.withUnsafeMutableBufferPointer { p in for i in 0..<p.count { p[i] = g[i] } }
                        return FunctionWorker.StepResult(gradients: gradients, loss: 1, accuracy: 0, examples: 1)
                    }
                    if let outcome { outcomes.withLock { $0.append(outcome) } }
                }.start()
            }
            // No server yet: both workers push step 0 and wait. Then worker 1's first chunk on
            // its shard gets a flipped payload byte, and the server starts.
            let keys = JobKeys(job: "refused")
            let chunk = 0
            let shard = m.map.assignment[chunk]
            let c = try RedisConnection(servers[shard].endpoint)
            let deadline = ContinuousClock.now + .seconds(30)
            while (try c.run(["SCARD", keys.pushed(shard: shard, step: 0)]).integer ?? 0) < 2 {
                try #require(ContinuousClock.now < deadline, "the workers did not push step 0")
                sleepFor(.milliseconds(20))
            }
            let key = keys.gradient(chunk: chunk, step: 0, worker: 1)
            var blob = try #require(try c.run(["GET", key]).bytes)
            blob[blob.count - 1] ^= 0x40
            try c.run(RedisCommand("SET", key).appending(bytes: blob))
            let server = RunningServer(servers.map(\.endpoint))
            defer { server.stop() }
            #expect(group.wait(timeout: .now() + 60) == .success)
            #expect(outcomes.withLock { $0 } == [.finished, .finished])
            #expect(logs.withLock { $0 }.contains { $0.contains("refused this worker's push of step 0") })
            let rejected = try c.run(["LRANGE", keys.rejected, "0", "-1"]).array?.compactMap(\.text) ?? []
            #expect(rejected.count == 1 && rejected[0].contains("\"worker\":1"), "\(rejected)")
            var expected = ExpectedModel(
                count: n,
                config: TrainingConfig(
                    workers: 2, steps: steps, learningRate: 0.5, momentum: 0.9, weightDecay: 0.01))
            for t in 0..<steps { expected.step([known(0, t), known(1, t)]) }
            let final = try WorkerSession(job: "refused", worker: 0, endpoints: servers.map(\.endpoint))
                .pull(step: steps, timeout: .seconds(30))
            #expect(final.map(\.bitPattern) == expected.params.map(\.bitPattern))
        }
    }

    /// `prepare` reads staged objects by name: from Redis on a cold start, from the function's
    /// local cache on the next (reported warm), checked either way.
    @Test func stagedObjectsComeFromTheLocalCacheOnAWarmStart() throws {
        try withRedisServers(1) { servers in
            let m = try makeJob("staged", servers, workers: 1, steps: 2)
            let server = RunningServer(servers.map(\.endpoint))
            defer { server.stop() }
            let staged: [Float] = [1, 2, 3.5]
            try JobObjects(m).set("data", TensorBlob.encode(staged, codec: .lz4, step: 0, producer: 0))
            try JobObjects(m).set("broken", Array("not a blob".utf8))
            let cache = NSTemporaryDirectory() + "smlt-cache-\(UUID().uuidString)"
            defer { try? FileManager.default.removeItem(atPath: cache) }
            for generation in 0..<2 {
                let environment = Self.environment(
                    job: "staged", worker: 0, generation: generation, servers: servers,
                    extra: [FunctionEnvironment.cache: cache])
                let outcome = try FunctionWorker.run(environment: environment, log: { _ in }) { job in
                    #expect(job.id == "staged" && job.worker == 0 && job.workers == 1 && job.steps == 2)
                    #expect(job.tensorNames == ["w", "b"])
                    #expect(job.tensorShapes == ["w": [10, 7], "b": [7]])
                    let data = try job.tensor(named: "data")
                    #expect(data == (try Tensor(shape: [3], values: staged)))
                    #expect(throws: FunctionClientError.self) { try job.object(named: "absent") }
                    let broken = #expect(throws: FunctionClientError.self) { try job.tensor(named: "broken") }
                    #expect(broken?.code == .corruptObject, "\(String(describing: broken))")
                    return data
                } step: { data, _, parameters in
                    #expect(data.values == staged)
                    var zeros = parameters
                    zeros.withUnsafeMutableBufferPointer { $0.update(repeating: 0) }
                    return FunctionWorker.StepResult(gradients: zeros, loss: 0, accuracy: 1, examples: 1)
                }
                #expect(outcome == .finished)
            }
            let starts = try RedisConnection(servers[0].endpoint).run([
                "LRANGE", JobKeys(job: "staged").starts, "0", "-1",
            ])
            let reports = (starts.array ?? []).compactMap {
                $0.bytes.flatMap { try? JSONDecoder().decode(StartReport.self, from: Data($0)) }
            }
            #expect(reports.map(\.warm) == [false, true])
        }
    }

    /// Gradients that are not the job's tensors stop the invocation with a message naming them,
    /// before anything is pushed.
    @Test func gradientsThatAreNotTheJobsTensorsAreRefused() throws {
        try withRedisServers(1) { servers in
            _ = try makeJob("shapes", servers, workers: 1, steps: 1)
            let environment = Self.environment(job: "shapes", worker: 0, generation: 0, servers: servers)
            let cases: [(Tensors, String)] = [
                (try ["w": Tensor(shape: [70], values: .init(repeating: 0, count: 70))], "no 'b'"),
                (
                    try [
                        "w": Tensor(shape: [10, 7], values: .init(repeating: 0, count: 70)),
                        "b": Tensor(shape: [7], values: .init(repeating: 0, count: 7)),
                        "extra": Tensor(shape: [], values: [0]),
                    ], "'extra', which the job does not have"
                ),
                (
                    try [
                        "w": Tensor(shape: [7, 10], values: .init(repeating: 0, count: 70)),
                        "b": Tensor(shape: [7], values: .init(repeating: 0, count: 7)),
                    ], "'w' has shape [7, 10], the job's tensor has [10, 7]"
                ),
            ]
            for (gradients, message) in cases {
                let error = #expect(throws: FunctionClientError.self) {
                    try FunctionWorker.run(environment: environment, log: { _ in }) { _ in
                    } step: { _, _, _ in
                        FunctionWorker.StepResult(gradients: gradients, loss: 0, accuracy: 0, examples: 1)
                    }
                }
                #expect(error?.code == .invalidTensor)
                #expect(
                    error?.message.contains("step 0") == true && error?.message.contains(message) == true,
                    "\(String(describing: error))")
            }
        }
    }

    /// Without an event the SDK says what it is and how it is run.
    @Test func anInvocationWithoutAnEventIsRefused() {
        let error = #expect(throws: FunctionClientError.self) {
            try FunctionWorker.run(environment: [:], log: { _ in }) { _ in
            } step: { _, _, _ in
                FunctionWorker.StepResult(gradients: [:], loss: 0, accuracy: 0, examples: 0)
            }
        }
        #expect(error?.code == .invalidInvocation)
        #expect(error?.message.contains(FunctionEnvironment.event) == true, "\(String(describing: error))")
    }

    /// The describe and evaluate phases of a function-defined model are refused by name (the
    /// SDK has no hooks for them).
    @Test(arguments: ["describe", "evaluate"])
    func anotherPhaseIsRefused(phase: String) {
        let event =
            #"{"job": "j", "worker": 0, "generation": 0, "lease_ms": 3000, "redis": ["127.0.0.1:1"], "#
            + #""phase": "\#(phase)"}"#
        let error = #expect(throws: FunctionClientError.self) {
            try FunctionWorker.run(environment: [FunctionEnvironment.event: event], log: { _ in }) { _ in
            } step: { _, _, _ in
                FunctionWorker.StepResult(gradients: [:], loss: 0, accuracy: 0, examples: 0)
            }
        }
        #expect(error?.code == .invalidInvocation)
        #expect(error?.message.contains("\(phase) phase") == true, "\(String(describing: error))")
    }

    @Test func tensorsByName() throws {
        #expect(throws: FunctionClientError.self) { try Tensor(shape: [2, 3], values: [1, 2, 3]) }
        #expect(throws: FunctionClientError.self) { try Tensor(shape: [-1], values: []) }
        let a = try Tensor(shape: [2, 2], values: [1, 2, 3, 4])
        let b = try Tensor(shape: [3], values: [5, 6, 7])
        var t: Tensors = ["a": a, "b": b]
        #expect(t.names == ["a", "b"] && t["a"] == a && t["b"] == b && t["c"] == nil)
        t.withUnsafeBufferPointer { #expect(Array($0) == [1, 2, 3, 4, 5, 6, 7]) }
        // Replacing keeps the place, whatever the shape; nil removes; a new name goes last.
        t["a"] = try Tensor(shape: [1], values: [9])
        t.withUnsafeBufferPointer { #expect(Array($0) == [9, 5, 6, 7]) }
        t["c"] = a
        t["b"] = nil
        #expect(t.names == ["a", "c"])
        t.withUnsafeMutableBufferPointer { $0[0] = 8 }
        #expect(t["a"] == (try Tensor(shape: [1], values: [8])))
        #expect(t == ["a": try Tensor(shape: [1], values: [8]), "c": a])
    }
}

/// A step function that ran out of its budget (its invocation "dies"); the caller starts the
/// next generation, which resumes from the saved progress.
private struct Budget: Error {}

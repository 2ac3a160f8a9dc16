import Foundation
import FunctionClient
import KeySchema
import RedisClient
import ShardManager
import TestSupport
import Testing
import TrainingProtocol
import WorkerRuntime

/// `WorkerRuntime` as a library a Swift function calls with its own step: two runtimes with a
/// step closure of their own (no built-in model) train against a real parameter server, each
/// invocation dying after a few steps and the next generation resuming where it saved its
/// progress, and end with the parameters the optimizer must reach.
@Suite struct WorkerRuntimeTests {
    @Test func aCustomStepFunctionTrainsAcrossCrashes() throws {
        try withRedisServers(2) { servers in
            let steps = 12
            let m = try makeJob("custom", servers, workers: 2, steps: steps)
            let server = RunningServer(servers.map(\.endpoint))
            defer { server.stop() }
            let n = m.layout.totalElements
            // Worker w's gradient at step t: a known function of both, independent of the parameters.
            let known: @Sendable (Int, Int) -> [Float] = { w, t in gradient(UInt64(100 * w + t + 1), n) }
            let outcomes = Locked<[WorkerRuntime.Outcome]>([])
            let generations = Locked<[Int]>([])
            let group = DispatchGroup()
            for w in 0..<2 {
                group.enter()
                Thread {
                    defer { group.leave() }
                    var generation = 0
                    while true {
                        let event = WorkerEvent(
                            job: "custom", worker: w, generation: generation, leaseMilliseconds: 3000,
                            redis: servers.map(\.endpoint.description), user: nil)
                        // Each invocation may take 5 steps at most: its "time limit" is a step budget.
                        var taken = 0
                        let runtime = WorkerRuntime(event: event, options: RedisOptions(), log: { _ in })
                        let outcome = try? runtime.run { step, _, gradient in
                            taken += 1
                            if taken > 5 { throw Budget() }
                            let g = known(w, step.index)
                            for i in 0..<gradient.count { gradient[i] = g[i] }
                            return WorkerRuntime.Report(loss: 1, correct: 0, examples: 1)
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
            let final = try FunctionClient(job: "custom", worker: 0, endpoints: servers.map(\.endpoint))
                .pull(step: steps, timeout: .seconds(30))
            #expect(final.map(\.bitPattern) == expected.params.map(\.bitPattern))
        }
    }
}

/// A step function that ran out of its budget (its invocation "dies"); the runtime's caller
/// starts the next generation, which resumes from the saved progress.
private struct Budget: Error {}

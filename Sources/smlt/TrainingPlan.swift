import Foundation
import LocalProcesses
import ParamServer
import ShardManager
import TrainingProtocol
import Workloads

/// Everything both training modes (BSP over Redis, and the in-process reference) share.
struct TrainingPlan {
    let settings: WorkloadSettings
    let workers: Int
    let steps: Int
    let learningRate: Float
    let momentum: Float
    let weightDecay: Float
    let train: Dataset
    let test: Dataset
    var checkpointEvery = 0

    var config: TrainingConfig {
        TrainingConfig(
            workers: workers, steps: steps, learningRate: learningRate, momentum: momentum, weightDecay: weightDecay,
            workload: settings.dictionary, checkpointEvery: checkpointEvery)
    }

    func partitions() -> [Dataset] { (0..<workers).map { train.partition($0, of: workers) } }
}

/// What `smlt train` prints at the end.
struct TrainingSummary: Codable {
    var mode: String
    var job: String?
    var model: String
    var steps: Int
    var workers: Int
    var shards: Int
    var parameters: Int
    var finalLoss: Double
    var trainAccuracy: Double
    var testAccuracy: Double
    var wallSeconds: Double
    var functionGBSeconds: Double
    var invocations: Int
    var restarts: Int
    var estimatedCostUSD: Double
    var paramDigest: String
    /// Of `restarts`: invocations continued after stopping before their time limit.
    var continuations = 0
    /// Of `restarts`: invocations relaunched after a crash, a kill or an expired lease.
    var workerRelaunches = 0
    /// Workers found frozen (lease expired while the process existed).
    var expiredLeases = 0
    /// Of `restarts`: parameter servers restarted after they died.
    var serverRestarts = 0
    var faultsInjected = 0
    /// Times a shard restarted empty and the job went back to its last checkpoint.
    var rollbacks = 0
    var checkpointsSaved = 0
    var starts = StartStatistics([])

    enum CodingKeys: String, CodingKey {
        case mode, job, model, steps, workers, shards, parameters, invocations, restarts, continuations, starts
        case workerRelaunches = "worker_relaunches"
        case expiredLeases = "expired_leases"
        case serverRestarts = "server_restarts"
        case faultsInjected = "faults_injected"
        case rollbacks
        case checkpointsSaved = "checkpoints_saved"
        case finalLoss = "final_loss"
        case trainAccuracy = "train_accuracy"
        case testAccuracy = "test_accuracy"
        case wallSeconds = "wall_seconds"
        case functionGBSeconds = "function_gb_seconds"
        case estimatedCostUSD = "estimated_cost_usd"
        case paramDigest = "param_digest"
    }

    var text: String {
        """

        SMLT training summary (\(mode))
          model            \(model), \(parameters) parameters
          steps            \(steps) with \(workers) workers on \(shards) shard\(shards == 1 ? "" : "s")
          final loss       \(String(format: "%.4f", finalLoss))
          train accuracy   \(String(format: "%.4f", trainAccuracy))
          test accuracy    \(String(format: "%.4f", testAccuracy))
          wall time        \(String(format: "%.2f", wallSeconds)) s
          function time    \(String(format: "%.3f", functionGBSeconds)) GB-s in \(invocations) invocations
          restarts         \(restarts): \(continuations) continued at the time limit, \(workerRelaunches) workers relaunched (\(expiredLeases) frozen), \(serverRestarts) servers restarted\(faultsInjected > 0 ? "; \(faultsInjected) faults injected" : "")
          start time       \(starts.text)
          checkpoints      \(checkpointsSaved) saved, \(rollbacks) rollback\(rollbacks == 1 ? "" : "s") after a shard lost its data
          estimated cost   $\(String(format: "%.6f", estimatedCostUSD))
          param digest     \(paramDigest)
        """
    }

    /// Fills in accuracy, loss and the digest from the final parameters.
    static func evaluate(_ params: [Float], plan: TrainingPlan, model: any Model) -> (Double, Double, Double, String) {
        let train = model.evaluate(params: params, on: plan.train)
        let test = model.evaluate(params: params, on: plan.test)
        return (train.loss, train.accuracy, test.accuracy, digest(params))
    }

    /// FNV-1a 64 over the little-endian bytes of the parameters.
    static func digest(_ params: [Float]) -> String {
        let h = params.withUnsafeBytes { Hash64.fnv1a($0) }
        let s = String(h, radix: 16)
        return String(repeating: "0", count: 16 - s.count) + s
    }
}

/// Cold and warm start times of the worker invocations (from process start to ready for the
/// first step): warm ones found their data partition in the function's local cache.
struct StartStatistics: Codable, Equatable {
    var cold: Int
    var warm: Int
    var coldSeconds: Double
    var warmSeconds: Double

    init(_ reports: [StartReport]) {
        let c = reports.filter { !$0.warm }
        let w = reports.filter(\.warm)
        cold = c.count
        warm = w.count
        coldSeconds = c.isEmpty ? 0 : c.reduce(0) { $0 + $1.seconds } / Double(c.count)
        warmSeconds = w.isEmpty ? 0 : w.reduce(0) { $0 + $1.seconds } / Double(w.count)
    }

    enum CodingKeys: String, CodingKey {
        case cold, warm
        case coldSeconds = "cold_mean_seconds"
        case warmSeconds = "warm_mean_seconds"
    }

    var text: String {
        var parts: [String] = []
        if cold > 0 { parts.append("\(cold) cold, mean \(String(format: "%.3f", coldSeconds)) s") }
        if warm > 0 { parts.append("\(warm) warm, mean \(String(format: "%.3f", warmSeconds)) s") }
        return parts.isEmpty ? "none reported" : parts.joined(separator: "; ")
    }
}

/// Trains in one process: each step computes every worker's gradient on its own batch, sums them
/// in worker order and applies the same optimizer code as the parameter servers, so a BSP run
/// gives bit-identical parameters.
struct ReferenceTrainer {
    let plan: TrainingPlan

    func run() throws -> TrainingSummary {
        let start = ContinuousClock.now
        let model = try plan.settings.makeModel()
        var params = model.initialParameters(seed: plan.settings.seed)
        var velocity = [Float](repeating: 0, count: params.count)
        let parts = plan.partitions()
        for step in 0..<plan.steps {
            var sum = [Float](repeating: 0, count: params.count)
            for (w, part) in parts.enumerated() {
                let (x, y) = part.batch(step: step, size: plan.settings.batchSize)
                let g = model.lossAndGradient(params: params, features: x, labels: y).gradient
                if w == 0 { sum = g } else { GradientSum.add(g, into: &sum) }
            }
            params.withUnsafeMutableBufferPointer { p in
                velocity.withUnsafeMutableBufferPointer { v in
                    sum.withUnsafeBufferPointer { s in
                        SGDMomentum.apply(
                            params: p, velocity: v, gradientSum: s, workers: plan.workers, config: plan.config)
                    }
                }
            }
        }
        let (loss, trainAcc, testAcc, digest) = TrainingSummary.evaluate(params, plan: plan, model: model)
        let wall = ContinuousClock.now - start
        return TrainingSummary(
            mode: "reference, one process", job: nil, model: plan.settings.model, steps: plan.steps,
            workers: plan.workers,
            shards: 0, parameters: params.count, finalLoss: loss, trainAccuracy: trainAcc, testAccuracy: testAcc,
            wallSeconds: wall.seconds, functionGBSeconds: 0, invocations: 0, restarts: 0, estimatedCostUSD: 0,
            paramDigest: digest)
    }
}

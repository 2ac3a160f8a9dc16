import Foundation
import Planner
import ShardManager
import TrainingProtocol
import Workloads

/// What `smlt train` prints at the end.
public struct TrainingSummary: Codable, Sendable {
    public var mode: String
    public var job: String?
    public var model: String
    public var steps: Int
    public var workers: Int
    public var shards: Int
    public var parameters: Int
    /// Mean loss on the training set (nil when a function-defined model's evaluation did not
    /// report it).
    public var finalLoss: Double?
    public var trainAccuracy: Double?
    public var testAccuracy: Double
    /// Mean loss on the test set, as a function-defined model's evaluation reports it.
    public var testLoss: Double?
    public var wallSeconds: Double
    public var functionGBSeconds: Double
    public var invocations: Int
    public var restarts: Int
    public var estimatedCostUSD: Double
    public var paramDigest: String
    /// Of `restarts`: invocations continued after stopping before their time limit.
    public var continuations = 0
    /// Of `restarts`: invocations relaunched after a crash, a kill or an expired lease.
    public var workerRelaunches = 0
    /// Workers found frozen (lease expired while the process existed).
    public var expiredLeases = 0
    /// Of `restarts`: parameter servers restarted after they died.
    public var serverRestarts = 0
    public var faultsInjected = 0
    /// Times a shard restarted empty and the job went back to its last checkpoint.
    public var rollbacks = 0
    public var checkpointsSaved = 0
    public var starts = StartStatistics([])
    /// Reconfigurations applied during the run, in step order.
    public var reconfigurations: [ReconfigurationRecord] = []

    // With a deadline or a budget (nil otherwise).
    public var deadlineSeconds: Double?
    public var budgetUSD: Double?
    public var targetLoss: Double?
    /// The first plan, made before anything started.
    public var plan: AdaptiveController.Decision?
    /// The planner's decisions during the run, with predicted against actual totals.
    public var replans: [ReplanRecord]?
    /// With a deadline: whether the wall time stayed within it.
    public var deadlineMet: Bool?
    /// What the run cost: function GB-seconds and invocations at the prices, and shard-hours.
    public var budgetUsedUSD: Double?
    /// The step-time model at the end, as fitted to the run.
    public var stepTimeModel: StepTimeModel?

    enum CodingKeys: String, CodingKey {
        case mode, job, model, steps, workers, shards, parameters, invocations, restarts, continuations, starts
        case reconfigurations, plan, replans
        case deadlineSeconds = "deadline_seconds"
        case budgetUSD = "budget_usd"
        case targetLoss = "target_loss"
        case deadlineMet = "deadline_met"
        case budgetUsedUSD = "budget_used_usd"
        case stepTimeModel = "step_time_model"
        case workerRelaunches = "worker_relaunches"
        case expiredLeases = "expired_leases"
        case serverRestarts = "server_restarts"
        case faultsInjected = "faults_injected"
        case rollbacks
        case checkpointsSaved = "checkpoints_saved"
        case finalLoss = "final_loss"
        case trainAccuracy = "train_accuracy"
        case testLoss = "test_loss"
        case testAccuracy = "test_accuracy"
        case wallSeconds = "wall_seconds"
        case functionGBSeconds = "function_gb_seconds"
        case estimatedCostUSD = "estimated_cost_usd"
        case paramDigest = "param_digest"
    }

    public var text: String {
        """

        SMLT training summary (\(mode))
          model            \(model), \(parameters) parameters
          steps            \(steps) with \(workers) workers on \(shards) shard\(shards == 1 ? "" : "s")
          final loss       \(Self.format(finalLoss))\(testLoss.map { " (test loss \(String(format: "%.4f", $0)))" } ?? "")
          train accuracy   \(Self.format(trainAccuracy))
          test accuracy    \(String(format: "%.4f", testAccuracy))
          wall time        \(String(format: "%.2f", wallSeconds)) s
          function time    \(String(format: "%.3f", functionGBSeconds)) GB-s in \(invocations) invocations
          restarts         \(restarts): \(continuations) continued at the time limit, \(workerRelaunches) workers relaunched (\(expiredLeases) frozen), \(serverRestarts) servers restarted\(faultsInjected > 0 ? "; \(faultsInjected) faults injected" : "")
          start time       \(starts.text)
          checkpoints      \(checkpointsSaved) saved, \(rollbacks) rollback\(rollbacks == 1 ? "" : "s") after a shard lost its data
          estimated cost   $\(String(format: "%.6f", estimatedCostUSD))
          reconfigurations \(reconfigurations.isEmpty ? "none" : reconfigurations.map(\.text).joined(separator: "; "))
          param digest     \(paramDigest)
        """ + planningText
    }

    /// Loss on the training set and the two accuracies of a built-in model's final parameters.
    static func evaluate(_ params: [Float], plan: TrainingPlan, model: any Model) -> (Double, Double, Double) {
        let train = model.evaluate(params: params, on: plan.train)
        let test = model.evaluate(params: params, on: plan.test)
        return (train.loss, train.accuracy, test.accuracy)
    }

    /// A metric with four decimals, or "not reported".
    static func format(_ value: Double?) -> String { value.map { String(format: "%.4f", $0) } ?? "not reported" }

    /// FNV-1a 64 over the little-endian bytes of the parameters.
    public static func digest(_ params: [Float]) -> String {
        let h = params.withUnsafeBytes { Hash64.fnv1a($0) }
        let s = String(h, radix: 16)
        return String(repeating: "0", count: 16 - s.count) + s
    }
}

/// Cold and warm start times of the worker invocations (from process start to ready for the
/// first step): warm ones found their data partition in the function's local cache.
public struct StartStatistics: Codable, Sendable, Equatable {
    public var cold: Int
    public var warm: Int
    public var coldSeconds: Double
    public var warmSeconds: Double

    public init(_ reports: [StartReport]) {
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

    public var text: String {
        var parts: [String] = []
        if cold > 0 { parts.append("\(cold) cold, mean \(String(format: "%.3f", coldSeconds)) s") }
        if warm > 0 { parts.append("\(warm) warm, mean \(String(format: "%.3f", warmSeconds)) s") }
        return parts.isEmpty ? "none reported" : parts.joined(separator: "; ")
    }
}

/// One reconfiguration of a run, as the JSON summary lists it.
public struct ReconfigurationRecord: Codable, Sendable, Equatable {
    /// The step boundary it was applied at: steps from here on ran with the new membership.
    public var step: Int
    public var workers: Int
    public var shards: Int
    /// Chunks (parameters with their optimizer state) that moved to another shard.
    public var chunksMoved: Int
    /// Bytes copied between shards (chunks, checkpoint copies, named objects).
    public var bytesMoved: Int
    /// The least chunks any placement could have moved for this change.
    public var minimumChunks: Int
    /// How long the change held training up: from every shard reaching `step` (workers held)
    /// until step `step` committed on every shard under the new membership. So it includes the
    /// move, the relaunch of workers that need new endpoints, and one step. Measured by the
    /// driver's loop, which looks every 20 ms.
    public var pauseSeconds: Double
    /// The mean step time before the change (since the run or the previous change settled),
    /// to compare the pause with.
    public var stepSecondsBefore: Double = 0

    public init(
        step: Int, workers: Int, shards: Int, chunksMoved: Int, bytesMoved: Int, minimumChunks: Int,
        pauseSeconds: Double
    ) {
        self.step = step
        self.workers = workers
        self.shards = shards
        self.chunksMoved = chunksMoved
        self.bytesMoved = bytesMoved
        self.minimumChunks = minimumChunks
        self.pauseSeconds = pauseSeconds
    }

    enum CodingKeys: String, CodingKey {
        case step, workers, shards
        case chunksMoved = "chunks_moved"
        case bytesMoved = "bytes_moved"
        case minimumChunks = "minimum_chunks"
        case pauseSeconds = "pause_seconds"
        case stepSecondsBefore = "step_seconds_before"
    }

    var text: String {
        "step \(step): \(workers) workers, \(shards) shards, \(chunksMoved) chunks moved (\(bytesMoved) bytes), paused \(String(format: "%.3f", pauseSeconds)) s"
    }
}

/// What the planner knows of a job before it runs: the model's size, the data, the batch.
public struct JobShape: Sendable, Codable, Equatable {
    public var parameters: Int
    /// Bytes one parameter takes on the wire (4 for raw float32; less with a codec that shrinks).
    public var bytesPerParameter: Double
    /// Examples one worker computes per step.
    public var batchPerWorker: Int
    /// Training examples (an epoch).
    public var trainingExamples: Int
    /// The least memory a worker needs, in MiB.
    public var minimumMemoryMiB: Int

    public init(
        parameters: Int, bytesPerParameter: Double = 4, batchPerWorker: Int, trainingExamples: Int,
        minimumMemoryMiB: Int
    ) {
        self.parameters = parameters
        self.bytesPerParameter = bytesPerParameter
        self.batchPerWorker = batchPerWorker
        self.trainingExamples = trainingExamples
        self.minimumMemoryMiB = minimumMemoryMiB
    }

    /// The model's bytes on the wire.
    public var modelBytes: Double { Double(parameters) * bytesPerParameter }
}

/// How much training a run does.
public enum TrainingAmount: Sendable, Codable, Equatable {
    /// A fixed number of steps, whatever the number of workers.
    case steps(Int)
    /// Passes over the data: the steps follow from the global batch, so from the workers.
    case epochs(Double)
    /// Until the held-out loss reaches this value.
    case targetLoss(Double)
}

/// What the user asks of the run: an amount of training, and a deadline, a budget or both.
public struct Goal: Sendable, Codable, Equatable {
    public var amount: TrainingAmount
    /// Finish within this many seconds of the start (at the least cost).
    public var deadlineSeconds: Double?
    /// Spend at most this many USD (finishing as fast as possible, or at the least cost when a
    /// deadline is given too).
    public var budgetUSD: Double?
    /// Seconds the run needs after its last step (the final pull, evaluation, stopping), which
    /// count against the deadline too.
    public var finishSeconds: Double

    public init(
        amount: TrainingAmount, deadlineSeconds: Double? = nil, budgetUSD: Double? = nil, finishSeconds: Double = 0
    ) {
        self.amount = amount
        self.deadlineSeconds = deadlineSeconds
        self.budgetUSD = budgetUSD
        self.finishSeconds = finishSeconds
    }

    enum CodingKeys: String, CodingKey {
        case amount
        case deadlineSeconds = "deadline_seconds"
        case budgetUSD = "budget_usd"
        case finishSeconds = "finish_seconds"
    }
}

/// Workers × shards × function memory: what the planner chooses.
public struct Configuration: Sendable, Codable, Hashable, CustomStringConvertible {
    public var workers: Int
    public var shards: Int
    public var memoryMiB: Int

    public init(workers: Int, shards: Int, memoryMiB: Int) {
        self.workers = workers
        self.shards = shards
        self.memoryMiB = memoryMiB
    }

    public var description: String {
        "\(workers) worker\(workers == 1 ? "" : "s"), \(shards) shard\(shards == 1 ? "" : "s"), \(memoryMiB.formatted()) MB"
    }

    enum CodingKeys: String, CodingKey {
        case workers, shards
        case memoryMiB = "memory_mib"
    }
}

extension Int {
    /// With thousands separators: 3,008.
    func formatted() -> String {
        let digits = String(Swift.abs(self))
        var out = ""
        for (i, c) in digits.enumerated() {
            if i > 0 && (digits.count - i) % 3 == 0 { out.append(",") }
            out.append(c)
        }
        return (self < 0 ? "-" : "") + out
    }
}

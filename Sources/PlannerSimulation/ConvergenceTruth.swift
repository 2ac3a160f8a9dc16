import Foundation

/// How a scenario's held-out loss really falls: against effective examples, where a step of
/// global batch B is worth B / (1 + B / B_noise) examples (McCandlish et al.'s critical batch:
/// past B_noise, bigger batches buy little), and
///
///     loss = floor + (initial − floor) / (1 + effective / halfExamples)
///
/// observed with relative noise at evaluations every `evaluationInterval` steps.
public struct ConvergenceTruth: Sendable, Codable, Equatable {
    public var initialLoss: Double
    public var floorLoss: Double
    /// Effective examples to close half the gap to the floor.
    public var halfExamples: Double
    /// The gradient noise scale B_noise, in examples.
    public var noiseBatch: Double
    /// Relative standard deviation of an evaluation.
    public var evaluationNoise: Double
    public var evaluationInterval: Int

    public init(
        initialLoss: Double, floorLoss: Double, halfExamples: Double, noiseBatch: Double, evaluationNoise: Double,
        evaluationInterval: Int
    ) {
        self.initialLoss = initialLoss
        self.floorLoss = floorLoss
        self.halfExamples = halfExamples
        self.noiseBatch = noiseBatch
        self.evaluationNoise = evaluationNoise
        self.evaluationInterval = evaluationInterval
    }

    /// Effective examples one step of `globalBatch` adds.
    public func effectiveExamples(perStepOf globalBatch: Int) -> Double {
        let b = Double(globalBatch)
        return b / (1 + b / noiseBatch)
    }

    /// The true loss after `effective` effective examples.
    public func loss(effective: Double) -> Double {
        floorLoss + (initialLoss - floorLoss) / (1 + effective / halfExamples)
    }

    /// Effective examples needed to reach `target` (nil at or below the floor).
    public func effectiveExamples(toReach target: Double) -> Double? {
        guard target > floorLoss else { return nil }
        return max(0, halfExamples * ((initialLoss - floorLoss) / (target - floorLoss) - 1))
    }
}

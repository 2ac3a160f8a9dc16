import Foundation
import Planner

/// The simulated platform's true constants for one scenario: what really happens, which the
/// planner never reads (it starts from `PlatformOffer.awsLambda()` and a prior step-time model
/// and learns from measured steps). `Calibration` gives the nominal values and their sources;
/// `drawn(around:using:)` varies them from run to run.
public struct PlatformTruth: Sendable, Codable, Equatable {
    /// Seconds per example × parameter on one whole core (forward and backward).
    public var computePerExampleParameter: Double
    /// Log-σ of one worker's compute time within a step (stragglers).
    public var computeSigma: Double
    /// The chance per worker and step of a hard straggler (a paused or throttled function),
    /// which then computes 2–4× longer. The planner's model has no such term.
    public var hardStragglerChance: Double
    /// Log-σ of the step's communication from step to step.
    public var communicationSigma: Double
    /// Seconds of round trips per step (pushes, the version wait, pulls).
    public var latency: Double
    /// Bytes per second one shard moves (Redis traffic: w gradients in, the server's reads and
    /// write, w pulls out).
    public var shardBytesPerSecond: Double
    /// Connection saturation: a shard's rate is divided by (1 + this × workers / shards).
    public var shardSaturation: Double
    /// A function's network bandwidth at 128 MB and at the largest memory, bytes per second;
    /// between them it grows as a power of memory (`functionBandwidthExponent`), so it saturates.
    public var functionBandwidthLow: Double
    public var functionBandwidthHigh: Double
    public var functionBandwidthExponent: Double
    /// Mean seconds from invoking a new function to its first step, and its log-σ.
    public var coldStartSeconds: Double
    /// Mean seconds from invoking a continuation of a worker to its first step.
    public var warmStartSeconds: Double
    public var startSigma: Double
    /// Seconds a reconfiguration holds training besides moving chunks and starting functions.
    public var reconfigurationSeconds: Double
    /// Seconds per model byte a re-shard takes (chunks with their optimizer state, copied).
    public var moveSecondsPerByte: Double
    /// The longest one invocation may run.
    public var timeLimitSeconds: Double
    /// CPU: nil for Lambda's memory-proportional vCPUs (1 at 1,769 MB, 6 at most); a number for
    /// local processes sharing that many cores.
    public var sharedCores: Int?

    /// How fast a single-threaded worker computes at `memoryMiB` among `workers`.
    public func computeSpeed(memoryMiB: Int, workers: Int) -> Double {
        if let cores = sharedCores { return min(1, Double(cores) / Double(max(1, workers))) }
        return min(1, min(6, Double(memoryMiB) / 1769))
    }

    /// A function's network bandwidth in bytes per second at `memoryMiB`.
    public func functionBandwidth(memoryMiB: Int) -> Double {
        if sharedCores != nil { return functionBandwidthHigh }
        let x = min(1, max(0, Double(memoryMiB - 128) / Double(10_240 - 128)))
        return functionBandwidthLow + (functionBandwidthHigh - functionBandwidthLow) * pow(x, functionBandwidthExponent)
    }

    /// Mean compute seconds of one worker's step at `c`.
    public func meanCompute(_ c: Configuration, job: JobShape) -> Double {
        computePerExampleParameter * Double(job.batchPerWorker) * Double(job.parameters)
            / computeSpeed(memoryMiB: c.memoryMiB, workers: c.workers)
    }

    /// Seconds a step spends outside compute, before noise: round trips, the shard's bytes
    /// (through a saturating rate) and the function's own push and pull.
    public func communication(_ c: Configuration, job: JobShape) -> Double {
        let s = job.modelBytes
        let w = Double(c.workers)
        let k = Double(c.shards)
        let shardBytes = (3 * w + 1) * s / k
        let shardRate = shardBytesPerSecond / (1 + shardSaturation * w / k)
        return latency + shardBytes / shardRate + 2 * s / functionBandwidth(memoryMiB: c.memoryMiB)
    }

    /// The expected factor on the mean compute of the slowest of `workers`, hard stragglers
    /// included (the noise-free model's value).
    public func expectedSlowestFactor(workers: Int) -> Double {
        let f = SimRandom.expectedMaxLognormalFactor(of: workers, sigma: computeSigma)
        let q = 1 - pow(1 - hardStragglerChance, Double(workers))
        return f + q * max(0, 3 - f)
    }

    /// The noise-free step time at `c`.
    public func expectedStep(_ c: Configuration, job: JobShape) -> Double {
        meanCompute(c, job: job) * expectedSlowestFactor(workers: c.workers) + communication(c, job: job)
    }

    /// This scenario's constants, drawn around `nominal`: each within a lognormal spread, so the
    /// planner's priors are off by tens of percent as a new job's are.
    public static func drawn(around nominal: PlatformTruth, using rng: inout SimRandom) -> PlatformTruth {
        var t = nominal
        t.computePerExampleParameter *= rng.lognormalFactor(0.35)
        t.computeSigma = rng.uniform(0.04, 0.35)
        t.hardStragglerChance = rng.uniform(0, 2 * nominal.hardStragglerChance)
        t.communicationSigma = rng.uniform(0.02, 0.15)
        t.latency *= rng.lognormalFactor(0.4)
        t.shardBytesPerSecond *= rng.lognormalFactor(0.3)
        t.shardSaturation *= rng.uniform(0.5, 2)
        t.functionBandwidthLow *= rng.lognormalFactor(0.25)
        t.functionBandwidthHigh *= rng.lognormalFactor(0.25)
        t.functionBandwidthExponent = rng.uniform(0.4, 0.9)
        t.coldStartSeconds *= rng.lognormalFactor(0.4)
        t.warmStartSeconds *= rng.lognormalFactor(0.4)
        t.reconfigurationSeconds *= rng.lognormalFactor(0.4)
        t.moveSecondsPerByte *= rng.lognormalFactor(0.3)
        return t
    }
}

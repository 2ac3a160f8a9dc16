import Foundation
import Planner

/// The simulator's nominal constants and where each comes from (docs/scheduling.md has the
/// measurements). Scenarios draw their true constants around these; the planner's prior
/// step-time model is made from them too, never from a scenario's draw.
public enum Calibration {
    /// Seconds per example × parameter of the bundled MLP's forward and backward pass on one
    /// core of this machine (`smlt-bench schedule --calibrate`, release build, batch 16).
    public static let computePerExampleParameter = 4.3e-10
    /// Bytes per second of Redis traffic one shard moves, from the aggregation benchmark: 8
    /// workers, 16 MB gradients, 2 shards, 400 MB per step through Redis in 142 ms, so about
    /// 1.4 GB/s per shard with the server's sums (one redis-server alone moves ~2.3 GB/s).
    public static let shardBytesPerSecond = 1.4e9
    /// Seconds of round trips per step between a function and its shards in one region (a
    /// few Redis round trips of ~1 ms plus the wait on the version stream); an assumption, not a
    /// measurement here (loopback steps of tiny models take ~5 ms, see docs/scheduling.md).
    public static let latency = 0.008
    /// A function's bandwidth: the published 70–600 MB/s across Lambda's memory sizes.
    public static let functionBandwidthLow = 70e6
    public static let functionBandwidthHigh = 600e6
    /// Cold start of a function running the Swift worker (~1 s order on Lambda; init billed).
    public static let coldStartSeconds = 1.0
    /// Warm start of a continuation.
    public static let warmStartSeconds = 0.15
    /// A reconfiguration's fixed hold, from `smlt-bench reshard`: a no-op change pauses one step,
    /// a 16M-parameter re-shard 0.92 s of which 0.61 s is the step and 0.15 s the move.
    public static let reconfigurationSeconds = 0.25
    /// Seconds per model byte of a re-shard: 40 MB (parameters and momentum of 16M parameters'
    /// moved chunks) in 0.145 s, so 0.28 GB/s, twice the bytes of the model's share.
    public static let moveSecondsPerByte = 2 / 0.28e9

    /// The nominal AWS Lambda platform.
    public static let lambda = PlatformTruth(
        computePerExampleParameter: computePerExampleParameter, computeSigma: 0.15, hardStragglerChance: 0.002,
        communicationSigma: 0.08, latency: latency, shardBytesPerSecond: shardBytesPerSecond, shardSaturation: 0.01,
        functionBandwidthLow: functionBandwidthLow, functionBandwidthHigh: functionBandwidthHigh,
        functionBandwidthExponent: 0.6, coldStartSeconds: coldStartSeconds, warmStartSeconds: warmStartSeconds,
        startSigma: 0.3, reconfigurationSeconds: reconfigurationSeconds, moveSecondsPerByte: moveSecondsPerByte,
        timeLimitSeconds: 900, sharedCores: nil)

    /// This machine as `smlt train` uses it: worker processes and redis-servers sharing 2 cores
    /// over loopback.
    public static let local = PlatformTruth(
        computePerExampleParameter: computePerExampleParameter, computeSigma: 0.1, hardStragglerChance: 0,
        communicationSigma: 0.1, latency: 0.004, shardBytesPerSecond: shardBytesPerSecond, shardSaturation: 0.01,
        functionBandwidthLow: 2.3e9, functionBandwidthHigh: 2.3e9, functionBandwidthExponent: 1,
        coldStartSeconds: 0.05, warmStartSeconds: 0.05, startSigma: 0.3, reconfigurationSeconds: reconfigurationSeconds,
        moveSecondsPerByte: moveSecondsPerByte, timeLimitSeconds: 900, sharedCores: 2)

    /// The planner's prior for a new job on `offer`: the nominal constants mapped onto
    /// `StepTimeModel`'s terms (a shard's bytes are about 3 × S·w/k; a function pushes and pulls
    /// 2 × S at one vCPU's network share).
    public static func priorModel(for offer: PlatformOffer) -> StepTimeModel {
        let oneVCPU = 1769
        let share = offer.networkShare(memoryMiB: oneVCPU)
        return StepTimeModel(
            computePerExampleParameter: computePerExampleParameter, spread: 0.15, latency: latency,
            shardSecondsPerByte: 3 / shardBytesPerSecond,
            functionSecondsPerByte: 2 / lambda.functionBandwidth(memoryMiB: oneVCPU) * share)
    }
}

import Foundation

/// What a function platform offers a job: the memory sizes it can run, how much CPU a function
/// gets at each, what it charges, how long its functions take to start and how long they may
/// run. The planner chooses among these; it learns the rest (how fast this job's steps are)
/// from measurements.
public struct PlatformOffer: Sendable, Codable, Equatable {
    /// How a function's CPU follows from its memory.
    public enum Processors: Sendable, Codable, Equatable {
        /// CPU in proportion to memory, as on AWS Lambda: `mibPerVCPU` MiB buys one vCPU, up
        /// to `maxVCPUs`.
        case proportional(mibPerVCPU: Double, maxVCPUs: Double)
        /// All functions share this many cores, whatever their memory (local processes).
        case shared(cores: Int)
    }

    /// A name for reports, such as `aws-lambda` or `local`.
    public var name: String
    /// The memory sizes a function may have, in MiB.
    public var memoryMiB: ClosedRange<Int>
    /// The sizes the planner considers (inside `memoryMiB`).
    public var memoryChoices: [Int]
    public var processors: Processors
    /// USD per GB-second of configured memory.
    public var priceGBSecond: Double
    /// USD per invocation.
    public var priceRequest: Double
    /// Seconds from invoking a new function to its first step (a prior; runs measure it).
    public var coldStartSeconds: Double
    /// Seconds from invoking a function that continues a worker to its first step.
    public var warmStartSeconds: Double
    /// The longest one invocation may run; a worker continues in a new one after it.
    public var timeLimitSeconds: Double
    public var maxWorkers: Int
    public var maxShards: Int

    public init(
        name: String, memoryMiB: ClosedRange<Int>, memoryChoices: [Int], processors: Processors,
        priceGBSecond: Double, priceRequest: Double, coldStartSeconds: Double, warmStartSeconds: Double,
        timeLimitSeconds: Double, maxWorkers: Int, maxShards: Int
    ) {
        self.name = name
        self.memoryMiB = memoryMiB
        self.memoryChoices = memoryChoices.filter { memoryMiB.contains($0) }.sorted()
        self.processors = processors
        self.priceGBSecond = priceGBSecond
        self.priceRequest = priceRequest
        self.coldStartSeconds = coldStartSeconds
        self.warmStartSeconds = warmStartSeconds
        self.timeLimitSeconds = timeLimitSeconds
        self.maxWorkers = maxWorkers
        self.maxShards = maxShards
    }

    /// AWS Lambda (x86, us-east-1, first price tier): 128–10,240 MB, 1 vCPU at 1,769 MB and 6 at
    /// 10,240 MB, $0.0000166667 per GB-s and $0.20 per million requests, 15 minutes at most.
    public static func awsLambda(maxWorkers: Int = 256, maxShards: Int = 16) -> PlatformOffer {
        PlatformOffer(
            name: "aws-lambda", memoryMiB: 128...10_240,
            memoryChoices: [512, 1024, 1769, 2048, 3008, 4096, 6144, 8192, 10_240],
            processors: .proportional(mibPerVCPU: 1769, maxVCPUs: 6), priceGBSecond: 0.0000166667,
            priceRequest: 0.0000002, coldStartSeconds: 1.0, warmStartSeconds: 0.1, timeLimitSeconds: 900,
            maxWorkers: maxWorkers, maxShards: maxShards)
    }

    enum CodingKeys: String, CodingKey {
        case name, processors
        case memoryMiB = "memory_mib"
        case memoryChoices = "memory_choices"
        case priceGBSecond = "price_gb_second"
        case priceRequest = "price_request"
        case coldStartSeconds = "cold_start_seconds"
        case warmStartSeconds = "warm_start_seconds"
        case timeLimitSeconds = "time_limit_seconds"
        case maxWorkers = "max_workers"
        case maxShards = "max_shards"
    }

    /// The vCPUs one function has at `memoryMiB` while `concurrent` functions run.
    public func vcpus(memoryMiB m: Int, concurrent: Int) -> Double {
        switch processors {
        case .proportional(let per, let most): return min(most, Double(m) / per)
        case .shared(let cores): return Double(cores) / Double(max(1, concurrent))
        }
    }

    /// How fast a single-threaded worker computes at `memoryMiB` among `workers`, relative to
    /// one whole core.
    public func computeSpeed(memoryMiB m: Int, workers: Int) -> Double {
        min(1, vcpus(memoryMiB: m, concurrent: workers))
    }

    /// A function's network share at `memoryMiB`, relative to one vCPU's (serverless platforms
    /// give bigger functions more bandwidth; local processes share loopback). With proportional
    /// CPU, bandwidth grows less than the vCPUs: published Lambda measurements span roughly
    /// 70 MB/s at the smallest size to 600 MB/s at the largest, so the share follows
    /// 70 + 530 · x^0.6 MB/s (x the size's place between 128 MB and 6 vCPUs), relative to its
    /// value at one vCPU: 0.28 at 128 MB, 0.58 at 512 MB, 2.4 at 10,240 MB.
    public func networkShare(memoryMiB m: Int) -> Double {
        switch processors {
        case .proportional(let per, let most):
            func bandwidth(_ mib: Double) -> Double {
                let x = min(1, max(0, (mib - 128) / (per * most - 128)))
                return 70 + 530 * pow(x, 0.6)
            }
            return bandwidth(Double(m)) / bandwidth(per)
        case .shared: return 1
        }
    }

    /// The memory sizes that hold a worker of a job needing `minimum` MiB.
    public func memoryCandidates(minimum: Int) -> [Int] {
        let fits = memoryChoices.filter { $0 >= minimum }
        if !fits.isEmpty { return fits }
        return minimum <= memoryMiB.upperBound ? [max(minimum, memoryMiB.lowerBound)] : []
    }
}

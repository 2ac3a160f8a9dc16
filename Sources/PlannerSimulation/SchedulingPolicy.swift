import Planner

/// What a policy is told when it starts: the same as a real run's planner is.
public struct PolicyContext: Sendable {
    public var job: JobShape
    public var goal: Goal
    public var offer: PlatformOffer
    public var shardPrice: ShardPrice
    /// The prior step-time model (nominal constants, not the scenario's).
    public var prior: StepTimeModel

    public init(job: JobShape, goal: Goal, offer: PlatformOffer, shardPrice: ShardPrice, prior: StepTimeModel) {
        self.job = job
        self.goal = goal
        self.offer = offer
        self.shardPrice = shardPrice
        self.prior = prior
    }
}

/// How a policy starts a run.
public enum PolicyStart: Sendable, Equatable {
    /// Launch this configuration and run this many steps (unless told otherwise later).
    case run(Configuration, totalSteps: Int)
    /// Refuse the goal, with the message a user would see.
    case refuse(String)
}

/// A change a policy asks for at a step boundary.
public struct PolicyAction: Sendable, Equatable {
    public var configuration: Configuration
    /// The run's total steps from now on; at or below the current step, the run ends.
    public var totalSteps: Int

    public init(configuration: Configuration, totalSteps: Int) {
        self.configuration = configuration
        self.totalSteps = totalSteps
    }
}

/// What a run reports to its policy, as a real run's workers and driver do.
public enum SimulationEvent: Sendable {
    case step(StepSample)
    case loss(Double, afterExamples: Double)
    /// A reconfiguration's pause (without function starts, which come as `start`) and the bytes
    /// it moved between shards.
    case pause(seconds: Double, bytesMoved: Double)
    case start(seconds: Double, cold: Bool)
}

/// A scheduling policy: chooses the first configuration, hears every step, and may change the
/// configuration or the number of steps at any step boundary.
public protocol SchedulingPolicy {
    /// The name in reports: `smlt`, `fixed`, `one-shot`, `bo-1d`, `scale-in`, `optimal`.
    var name: String { get }
    mutating func start() -> PolicyStart
    mutating func observe(_ event: SimulationEvent)
    mutating func decide(_ progress: AdaptiveController.Progress) -> PolicyAction?
}

/// What the policies without a planner share: the steps an amount takes at a configuration, and
/// stopping once a target loss is observed.
struct AmountTracker: Sendable {
    let job: JobShape
    let amount: TrainingAmount
    /// Epochs a target loss is assumed to need before it is reached (as the planner assumes).
    var guessEpochs = 2.0
    private(set) var lastLoss: Double?

    init(job: JobShape, amount: TrainingAmount) {
        self.job = job
        self.amount = amount
    }

    mutating func observe(_ event: SimulationEvent) {
        if case .loss(let l, _) = event { lastLoss = l }
    }

    /// Whether a target loss has been observed.
    var reached: Bool {
        if case .targetLoss(let t) = amount, let l = lastLoss { return l <= t }
        return false
    }

    /// The run's total steps when running `c` from `step` after `examples` (a cap for a target
    /// loss: the run ends when it is observed).
    func totalSteps(at c: Configuration, step: Int, examples: Double) -> Int {
        let perStep = Double(c.workers * job.batchPerWorker)
        switch amount {
        case .steps(let n): return n
        case .epochs(let e):
            let left = max(0, e * Double(job.trainingExamples) - examples)
            return step + Int((left / perStep).rounded(.up))
        case .targetLoss:
            return step + 4 * Int((guessEpochs * Double(job.trainingExamples) / perStep).rounded(.up)) + 1_000_000
        }
    }
}

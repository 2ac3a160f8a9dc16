import Planner

/// SMLT's planner: `AdaptiveController`, driven exactly as the Coordinator drives it in a real
/// run (start, then per step observe and decide; evaluations, pauses and starts observed).
public struct SMLTPolicy: SchedulingPolicy {
    public let name = "smlt"
    public private(set) var controller: AdaptiveController

    public init(_ context: PolicyContext) {
        let planner = Planner(
            job: context.job, offer: context.offer, shardPrice: context.shardPrice, goal: context.goal)
        controller = AdaptiveController(planner: planner, prior: context.prior)
    }

    public mutating func start() -> PolicyStart {
        do {
            let d = try controller.start()
            return .run(d.configuration, totalSteps: d.totalSteps)
        } catch {
            return .refuse(error.description)
        }
    }

    public mutating func observe(_ event: SimulationEvent) {
        switch event {
        case .step(let s): controller.observe(s)
        case .loss(let l, let e): controller.observe(loss: l, afterExamples: e)
        case .pause(let s, let b): controller.observe(pauseSeconds: s, bytesMoved: b)
        case .start(let s, let cold): controller.observe(startSeconds: s, cold: cold)
        }
    }

    public mutating func decide(_ progress: AdaptiveController.Progress) -> PolicyAction? {
        controller.decide(progress).map { PolicyAction(configuration: $0.configuration, totalSteps: $0.totalSteps) }
    }
}

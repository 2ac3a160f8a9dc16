import LocalProcesses
import ParamServer
import TrainingProtocol
import Workloads

/// Trains in one process: each step computes every worker's gradient on its own batch, sums them
/// in worker order and applies the same optimizer code as the parameter servers, so a BSP run
/// gives bit-identical parameters.
public struct ReferenceTrainer {
    let plan: TrainingPlan

    public init(plan: TrainingPlan) { self.plan = plan }

    public func run() throws -> TrainingSummary {
        let start = ContinuousClock.now
        let model = plan.settings.makeModel()
        var params = model.initialParameters(seed: plan.settings.seed)
        var velocity = [Float](repeating: 0, count: params.count)
        var parts: [Dataset] = []
        for step in 0..<plan.steps {
            // The membership of this step, as the schedule sets it; each worker's partition is
            // cut for that many workers.
            let workers = plan.workers(at: step)
            if parts.count != workers { parts = (0..<workers).map { plan.partition($0, of: workers) } }
            let config = plan.config(workers: workers)
            var sum = [Float](repeating: 0, count: params.count)
            for (w, part) in parts.enumerated() {
                let (x, y) = part.batch(step: step, size: plan.settings.batchSize)
                let (loss, _, g) = model.lossAndGradient(params: params, features: x, labels: y)
                guard loss.isFinite, g.allSatisfy(\.isFinite) else {
                    throw CoordinatorError(
                        "training diverged at step \(step): worker \(w)'s loss is \(loss) (learning rate \(plan.learningRate), momentum \(plan.momentum)); try a lower learning rate (--lr)"
                    )
                }
                if w == 0 { sum = g } else { GradientSum.add(g, into: &sum) }
            }
            params.withUnsafeMutableBufferPointer { p in
                velocity.withUnsafeMutableBufferPointer { v in
                    sum.withUnsafeBufferPointer { s in
                        SGDMomentum.apply(
                            params: p, velocity: v, gradientSum: s, workers: workers, config: config)
                    }
                }
            }
        }
        let (loss, trainAcc, testAcc) = TrainingSummary.evaluate(params, plan: plan, model: model)
        let wall = ContinuousClock.now - start
        return TrainingSummary(
            mode: "reference, one process", job: nil, model: plan.settings.model, steps: plan.steps,
            workers: plan.workers(at: plan.steps - 1),
            shards: 0, parameters: params.count, finalLoss: loss, trainAccuracy: trainAcc, testAccuracy: testAcc,
            wallSeconds: wall.seconds, functionGBSeconds: 0, invocations: 0, restarts: 0, estimatedCostUSD: 0,
            paramDigest: TrainingSummary.digest(params))
    }
}

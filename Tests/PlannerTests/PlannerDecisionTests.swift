import Foundation
import Planner
import Testing

/// The planner's decisions against recorded timings.
struct PlannerDecisionTests {
    let offer = PlatformOffer.awsLambda(maxWorkers: 64, maxShards: 8)
    let job = JobShape(parameters: 1_000_000, batchPerWorker: 32, trainingExamples: 100_000, minimumMemoryMiB: 256)
    /// The constants the recorded samples were made with.
    let truth = StepTimeModel(
        computePerExampleParameter: 5e-10, spread: 0.1, latency: 0.01, shardSecondsPerByte: 2e-9,
        functionSecondsPerByte: 8e-9)
    let prior = StepTimeModel(
        computePerExampleParameter: 2e-9, spread: 0.2, latency: 0.02, shardSecondsPerByte: 4e-9,
        functionSecondsPerByte: 4e-9)

    /// Samples recorded at three configurations (step times as the true model gives them).
    var recorded: [StepSample] {
        [
            Configuration(workers: 4, shards: 1, memoryMiB: 1769),
            Configuration(workers: 16, shards: 2, memoryMiB: 1769),
            Configuration(workers: 8, shards: 4, memoryMiB: 3008),
        ].flatMap { c in
            (0..<10).map { _ in
                StepSample(
                    configuration: c, computeSeconds: truth.compute(c, job: job, offer: offer), computeSpread: 0.1,
                    stepSeconds: truth.step(c, job: job, offer: offer))
            }
        }
    }

    @Test func fitRecoversComputeAndPredictsRecordedSteps() {
        let model = StepTimeModel.fit(recorded, prior: prior, job: job, offer: offer, priorWeight: 0.01)
        #expect(abs(model.computePerExampleParameter / 5e-10 - 1) < 1e-6)
        #expect(abs(model.spread - 0.1) < 1e-9)
        for s in recorded {
            let predicted = model.step(s.configuration, job: job, offer: offer)
            #expect(abs(predicted / s.stepSeconds - 1) < 0.02, "\(s.configuration): \(predicted) vs \(s.stepSeconds)")
        }
        // Away from the samples too.
        let other = Configuration(workers: 32, shards: 8, memoryMiB: 1769)
        #expect(abs(model.step(other, job: job, offer: offer) / truth.step(other, job: job, offer: offer) - 1) < 0.1)
    }

    @Test func choosePicksTheCheapestConfigurationMeetingTheDeadline() throws {
        let goal = Goal(amount: .epochs(2), deadlineSeconds: 300)
        var planner = Planner(job: job, offer: offer, shardPrice: ShardPrice(perHourUSD: 0.03), goal: goal)
        planner.margin = 0
        let work = Planner.Work.examples(200_000)
        let choice = try #require(planner.choose(work: work, elapsed: 0, spent: 0, current: nil, model: truth))
        #expect(choice.meetsGoal)
        #expect(choice.best.seconds <= 300)
        let all = planner.candidates().map { planner.predict($0, work: work, from: nil, model: truth) }
        let meeting = all.filter { $0.seconds <= 300 }
        #expect(!meeting.isEmpty)
        let cheapest = meeting.map(\.costUSD).min()!
        #expect(abs(choice.best.costUSD - cheapest) <= cheapest * 1e-9)
        // The fastest plan is faster but dearer than the choice.
        #expect(choice.fastest.seconds <= choice.best.seconds)
        #expect(choice.fastest.costUSD >= choice.best.costUSD)
    }

    @Test func startRefusesAnInfeasibleDeadlineWithTheLeastTime() throws {
        let planner = Planner(
            job: job, offer: offer, shardPrice: ShardPrice(perHourUSD: 0.03),
            goal: Goal(amount: .epochs(2), deadlineSeconds: 1))
        var controller = AdaptiveController(planner: planner, prior: truth)
        let fastest = try #require(
            planner.choose(work: .examples(200_000), elapsed: 0, spent: 0, current: nil, model: truth)
        ).fastest
        #expect(fastest.seconds > 1)
        do {
            _ = try controller.start()
            Issue.record("start() accepted a 1 s deadline for 2 epochs")
        } catch {
            #expect(error.description.contains("--deadline"))
            #expect(error.description.contains(String(format: "%.1f", fastest.seconds)), "\(error.description)")
        }
    }

    @Test func bigBatchesNeedMoreExamplesUnderACriticalBatch() {
        var planner = Planner(
            job: job, offer: offer, shardPrice: ShardPrice(perHourUSD: 0.03), goal: Goal(amount: .targetLoss(0.1)))
        let c = Configuration(workers: 8, shards: 2, memoryMiB: 1769)
        // Global batch 256: 1,000 examples are 4 steps; with B_noise = 256 a step is worth 128.
        #expect(planner.steps(.examples(1000), at: c) == 4)
        planner.noiseBatch = 256
        #expect(planner.steps(.examples(1000), at: c) == 8)
        #expect(planner.steps(.examples(.infinity), at: c) > 1_000_000)
    }

    @Test func aLaunchWaitsForTheSlowestStart() {
        let planner = Planner(
            job: job, offer: offer, shardPrice: ShardPrice(perHourUSD: 0.03), goal: Goal(amount: .steps(10)))
        let one = planner.pause(from: nil, to: Configuration(workers: 1, shards: 1, memoryMiB: 1769))
        let many = planner.pause(from: nil, to: Configuration(workers: 64, shards: 1, memoryMiB: 1769))
        #expect(one == offer.coldStartSeconds)
        #expect(many > one * 1.5)
    }

    @Test func anUnreachableDeadlineKeepsTheBudget() throws {
        let work = Planner.Work.examples(200_000)
        // Without a budget: nearly as fast as the fastest, and no dearer.
        let free = Planner(
            job: job, offer: offer, shardPrice: ShardPrice(perHourUSD: 0.03),
            goal: Goal(amount: .epochs(2), deadlineSeconds: 1))
        let fast = try #require(free.choose(work: work, elapsed: 0, spent: 0, current: nil, model: truth))
        #expect(!fast.meetsGoal)
        #expect(fast.best.seconds <= fast.fastest.seconds * (1 + free.fastestSlack))
        #expect(fast.best.costUSD <= fast.fastest.costUSD)
        // With a budget between the cheapest and the fastest plan: the fastest within it.
        let budget = (fast.cheapest.costUSD + fast.best.costUSD) / 2
        #expect(budget < fast.best.costUSD)
        var kept = free
        kept.goal.budgetUSD = budget
        let choice = try #require(kept.choose(work: work, elapsed: 0, spent: 0, current: nil, model: truth))
        #expect(!choice.meetsGoal)
        #expect(choice.best.costUSD <= budget)
        #expect(choice.best.seconds < choice.cheapest.seconds)
    }

    @Test func aTargetLossEndsTheRunWhenObserved() throws {
        let planner = Planner(
            job: job, offer: offer, shardPrice: ShardPrice(perHourUSD: 0.03),
            goal: Goal(amount: .targetLoss(0.5), deadlineSeconds: 3600))
        var controller = AdaptiveController(planner: planner, prior: truth)
        let start = try controller.start()
        #expect(start.totalSteps > 0)
        let c = start.configuration
        let perStep = Double(c.workers * job.batchPerWorker)
        var step = 0
        var decision: AdaptiveController.Decision?
        for (i, loss) in [2.0, 1.5, 1.1, 0.9, 0.7, 0.6, 0.55, 0.49].enumerated() {
            step = (i + 1) * 10
            controller.observe(loss: loss, afterExamples: Double(step) * perStep)
            decision = controller.decide(
                AdaptiveController.Progress(
                    step: step, examples: Double(step) * perStep, elapsedSeconds: Double(step), spentUSD: 0))
        }
        let end = try #require(decision)
        #expect(end.reason == "target loss reached")
        #expect(end.totalSteps == step)
    }
}

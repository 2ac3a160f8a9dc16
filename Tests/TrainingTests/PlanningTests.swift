import Coordinator
import Foundation
import LocalProcesses
import Planner
import Testing

/// Goals on the command line: bad values are refused naming the flag, an infeasible goal is
/// refused before anything starts, and a planned run meets its deadline and reports its plan.
@Suite struct PlanningRequestTests {
    func request(_ change: (inout TrainingRequest) -> Void) -> TrainingRequest {
        var r = TrainingRequest()
        r.dataset = "synthetic"
        r.model = "mlp"
        r.epochs = 3
        change(&r)
        return r
    }

    @Test(arguments: [
        ("--deadline", "0s", "invalid duration '0s' for --deadline"),
        ("--deadline", "-5s", "invalid duration '-5s' for --deadline"),
        ("--deadline", "soon", "invalid duration 'soon' for --deadline"),
    ])
    func badDeadlinesNameTheFlag(flag: String, value: String, message: String) {
        #expect(throws: RequestError.self) {
            _ = try TrainingRequest.milliseconds(value, flag: flag, limit: 86_400_000)
        }
        do {
            _ = try TrainingRequest.milliseconds(value, flag: flag, limit: 86_400_000)
        } catch { #expect(error.description.contains(message), "\(error)") }
    }

    @Test(arguments: ["0", "-0.05", "lots", "nan", "inf"])
    func badBudgetsNameTheFlag(value: String) {
        do {
            _ = try TrainingRequest.dollars(value, flag: "--budget")
            Issue.record("\(value) was accepted")
        } catch { #expect(error.description.contains("--budget"), "\(error)") }
    }

    @Test func moneyAndLossParse() throws {
        #expect(try TrainingRequest.dollars("$0.05", flag: "--budget") == 0.05)
        #expect(try TrainingRequest.loss("0.3", flag: "--target-loss") == 0.3)
        #expect(throws: RequestError.self) { _ = try TrainingRequest.loss("-1", flag: "--target-loss") }
    }

    @Test func inconsistentGoalsAreRefused() {
        let cases: [(TrainingRequest, String)] = [
            (
                request {
                    $0.deadlineSeconds = 60; $0.priceShardHour = -1
                }, "--price-shard-hour"
            ),
            (
                request {
                    $0.budgetUSD = 1; $0.priceGBSecond = -1
                }, "--price-gb-second"
            ),
            (
                request {
                    $0.budgetUSD = 1; $0.priceRequest = .nan
                }, "--price-request"
            ),
            (
                request {
                    $0.budgetUSD = 1
                    $0.priceGBSecond = 0
                    $0.priceRequest = 0
                    $0.priceShardHour = 0
                }, "need prices"
            ),
            (request { $0.targetLoss = 0.1 }, "--target-loss replaces --steps and --epochs"),
            (
                request {
                    $0.epochs = nil
                    $0.targetLoss = 0.1
                }, "--target-loss needs a goal"
            ),
            (
                request {
                    $0.deadlineSeconds = 60; $0.schedule = "10:workers=2"
                }, "--schedule and --deadline"
            ),
            (request { $0.deadlineSeconds = -1 }, "--deadline must be a positive duration"),
        ]
        for (r, message) in cases {
            do {
                try r.validate()
                Issue.record("accepted; expected \(message)")
            } catch { #expect(error.description.contains(message), "\(error)") }
        }
    }

    @Test func anInfeasibleDeadlineIsRefusedWithTheLeastTime() throws {
        setenv("SMLT_DATA_DIR", packageRoot() + "/data", 1)
        do {
            _ = try Coordinator.preview(request { $0.deadlineSeconds = 1 })
            Issue.record("a 1 s deadline for 3 epochs was accepted")
        } catch let e as PlanError {
            #expect(e.description.hasPrefix("--deadline: 3 epochs"), "\(e)")
            let least = e.description.firstMatch(of: /need at least ([0-9.]+) s/).flatMap { Double($0.1) }
            #expect((least ?? 0) > 1, "\(e)")
            #expect(e.description.contains("the deadline is 1.0 s"), "\(e)")
        }
    }

    @Test func aFeasibleGoalGetsAPlanThatMeetsIt() throws {
        setenv("SMLT_DATA_DIR", packageRoot() + "/data", 1)
        let preview = try Coordinator.preview(request { $0.deadlineSeconds = 600 })
        #expect(preview.plan.prediction.seconds < 600)
        #expect(preview.plan.configuration.memoryMiB >= TrainingRequest.minMemoryMiB)
        // Epochs: the steps follow from the global batch.
        #expect(preview.plan.totalSteps == preview.plan.prediction.steps)
        #expect(preview.plan.totalSteps * preview.plan.configuration.workers * 16 >= 3 * 16_000)
        // With a budget that only the cheapest plans meet, the plan is within it.
        let cheap = try Coordinator.preview(request { $0.budgetUSD = preview.plan.prediction.costUSD * 1.5 })
        #expect(cheap.plan.prediction.costUSD <= preview.plan.prediction.costUSD * 1.5)
    }
}

extension EndToEnd {
    /// Real runs under a goal.
    @Suite(.serialized) struct PlannedRunTests {
        @Test func aDeadlineIsMetAndThePlanReported() throws {
            let r = try smlt([
                "train", "--dataset", "synthetic", "--model", "mlp", "--epochs", "3", "--deadline", "60s", "--json",
            ])
            #expect(r.status.succeeded, "\(r.stderr)")
            let out = json(r.stdout)
            #expect(out["deadline_met"] as? Bool == true, "\(r.stdout)")
            #expect((out["wall_seconds"] as? Double ?? 99) <= 60)
            let plan = out["plan"] as? [String: Any]
            #expect((plan?["configuration"] as? [String: Any])?["workers"] as? Int ?? 0 >= 1)
            #expect(out["replans"] is [Any])
            #expect((out["budget_used_usd"] as? Double ?? 0) > 0)
        }

        @Test func anImpossibleDeadlineStartsNothing() throws {
            let before = processes(containing: "redis-server").count
            let r = try smlt([
                "train", "--dataset", "synthetic", "--model", "mlp", "--epochs", "3", "--deadline", "1s", "--json",
            ])
            #expect(!r.status.succeeded)
            #expect(r.stderr.contains("need at least"), "\(r.stderr)")
            #expect(r.stderr.contains("the deadline is 1.0 s"), "\(r.stderr)")
            #expect(!r.stderr.contains("plan:"))
            #expect(r.stdout.isEmpty)
            #expect(processes(containing: "redis-server").count <= before)
        }

        @Test func aTargetLossEndsTheRunOnceReached() throws {
            let r = try smlt([
                "train", "--dataset", "synthetic", "--model", "mlp", "--target-loss", "0.05", "--deadline", "60s",
                "--json",
            ])
            #expect(r.status.succeeded, "\(r.stderr)")
            let out = json(r.stdout)
            let planned = (out["plan"] as? [String: Any])?["total_steps"] as? Int ?? 0
            let steps = out["steps"] as? Int ?? 0
            #expect(steps > 0 && steps < planned, "\(steps) of \(planned)")
            let reasons = (out["replans"] as? [[String: Any]] ?? []).compactMap {
                ($0["decision"] as? [String: Any])?["reason"] as? String
            }
            #expect(reasons.contains("target loss reached"), "\(reasons)")
            #expect((out["final_loss"] as? Double ?? 1) < 0.1)
        }

        /// A run within a budget re-plans from what it measures; the decisions it applied,
        /// replayed by the in-process reference, give the same parameters bit for bit.
        @Test func aReplannedRunMatchesTheReferenceWithItsDecisions() throws {
            let args = ["train", "--dataset", "synthetic", "--model", "mlp", "--json"]
            let r = try smlt(args + ["--epochs", "2", "--budget", "0.01"])
            #expect(r.status.succeeded, "\(r.stderr)")
            let out = json(r.stdout)
            let replans = out["replans"] as? [[String: Any]] ?? []
            #expect(!replans.isEmpty, "\(r.stdout)")
            for p in replans {
                #expect((p["predicted_total_seconds"] as? Double ?? 0) > 0)
                #expect(p["actual_total_seconds"] as? Double == out["wall_seconds"] as? Double)
            }
            #expect((out["budget_used_usd"] as? Double ?? 1) <= 0.01)
            let plan = (out["plan"] as? [String: Any])?["configuration"] as? [String: Any] ?? [:]
            let records = out["reconfigurations"] as? [[String: Any]] ?? []
            let schedule = records.map { "\($0["step"]!):workers=\($0["workers"]!)" }.joined(separator: ";")
            let steps = out["steps"] as? Int ?? 0
            if let last = records.last { #expect(out["workers"] as? Int == last["workers"] as? Int) }
            let reference = try smlt(
                args + ["--reference", "--steps", "\(steps)", "--workers", "\(plan["workers"] ?? 0)"]
                    + (schedule.isEmpty ? [] : ["--schedule", schedule]))
            #expect(reference.status.succeeded, "\(reference.stderr)")
            #expect(json(reference.stdout)["param_digest"] as? String == out["param_digest"] as? String)
        }
    }
}

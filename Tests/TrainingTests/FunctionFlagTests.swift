import Coordinator
import Foundation
import LocalProcesses
import Scheduler
import Testing

/// `smlt train --function CMD`: the command is checked before anything starts. (The Python
/// client's tests run real jobs with it: python/tests/test_builtin.py.)
@Suite struct FunctionFlagTests {
    @Test(arguments: ["", " ", "\t\n"])
    func anEmptyCommandIsRefusedNamingTheFlag(command: String) {
        var r = TrainingRequest()
        r.function = command
        do {
            try r.validate()
            Issue.record("--function '\(command)' was accepted")
        } catch { #expect(error.description.contains("--function"), "\(error)") }
    }

    @Test func aCommandIsKeptInTheRunState() throws {
        var r = TrainingRequest()
        r.function = "python3 -m smlt.builtin"
        try r.validate()
        let decoded = try JSONDecoder().decode(TrainingRequest.self, from: try JSONEncoder().encode(r))
        #expect(decoded.function == "python3 -m smlt.builtin")
        // Without --function the run state has no such key, as run states stored before the
        // flag existed; they load without a function.
        let plain = try JSONEncoder().encode(TrainingRequest())
        #expect(!String(decoding: plain, as: UTF8.self).contains(#""function""#))
        #expect(try JSONDecoder().decode(TrainingRequest.self, from: plain).function == nil)
    }

    /// The smlt binary refuses these while parsing its arguments: no shard or worker starts.
    @Test(arguments: [
        (["--function", ""], "--function must be a command"),
        (["--function", "python3 -m smlt.builtin", "--reference"], "--function does not apply to --reference"),
    ])
    func smltTrainRefuses(extra: [String], message: String) throws {
        let r = try smlt(["train", "--steps", "1"] + extra)
        #expect(!r.status.succeeded)
        #expect(r.stderr.contains(message), "\(r.stderr)")
    }

    /// A `--function` command may start processes of its own: the time limit's SIGKILL ends them
    /// with it (the platform signals the invocation's process group).
    @Test func aFunctionKilledAtItsTimeLimitTakesItsChildrenWithIt() throws {
        let n = Int.random(in: 100_000...999_999)
        let logs = NSTemporaryDirectory() + "smlt-fn-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: logs) }
        let platform = LocalProcessPlatform(
            command: ["/bin/sh", "-c", "exec /bin/sh -c 'sleep \(n) & exec sleep \(n + 1)'"], logDirectory: logs)
        let invocation = try platform.invoke(
            FunctionRequest(name: "w0", event: "{}", timeout: .milliseconds(500), memoryMiB: 1024))
        var outcome: InvocationOutcome?
        var sawChild = false
        let end = ContinuousClock.now + .seconds(20)
        while outcome == nil && ContinuousClock.now < end {
            sawChild = sawChild || processes(containing: "sleep \(n) ").contains { $0.hasPrefix("sleep \(n) ") }
            outcome = invocation.poll()
            sleepFor(.milliseconds(20))
        }
        #expect(sawChild, "the function's child process never ran")
        #expect(outcome?.timedOut == true)
        // A killed orphan may stay a zombie (no command line) until it is reaped.
        let gone = ContinuousClock.now + .seconds(5)
        while !processes(containing: "sleep \(n)").isEmpty && ContinuousClock.now < gone { sleepFor(.milliseconds(20)) }
        #expect(processes(containing: "sleep \(n)").isEmpty)
    }
}

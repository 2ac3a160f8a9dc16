import Foundation
import LocalProcesses
import Testing

extension EndToEnd {
    /// README.md's Swift worker (Examples/softmax-worker, on the FunctionClient SDK alone) is a
    /// correct worker: as every function of a real `smlt train`, through time limits and a killed
    /// worker, it ends with the parameters of the same run with `smlt worker`.
    @Suite(.serialized) struct ExampleWorkerTests {
        static let base = [
            "train", "--dataset", "digits", "--model", "softmax", "--workers", "4", "--shards", "2", "--steps", "300",
            "--seed", "7", "--json",
        ]

        /// The example's binary, built next to smlt.
        static var example: String {
            URL(fileURLWithPath: smltBinary()).deletingLastPathComponent().appendingPathComponent("softmax-worker").path
        }

        @Test func theSoftmaxExampleTrainsLikeTheBuiltinWorker() throws {
            #expect(FileManager.default.isExecutableFile(atPath: Self.example), "build it: swift build")
            let builtin = try smlt(Self.base + ["--job", "ex-\(UUID().uuidString.prefix(8))"])
            #expect(builtin.status.succeeded, "\(builtin.stderr)")
            let job = "ex-\(UUID().uuidString.prefix(8))"
            let quoted = "'" + Self.example.replacingOccurrences(of: "'", with: #"'\''"#) + "'"
            let r = try smlt(
                Self.base + [
                    "--job", job, "--function", quoted, "--function-timeout", "1s", "--inject-faults", "worker-kill=1",
                ])
            #expect(r.status.succeeded, "\(r.stderr.suffix(3000))")
            #expect(processes(containing: job).isEmpty, "processes of \(job) left running")
            let out = json(r.stdout)
            let digest = out["param_digest"] as? String
            #expect(digest != nil && digest == json(builtin.stdout)["param_digest"] as? String)
            // The time limit stopped workers, which saved their progress and were continued; their
            // next invocations found the data partition in the function cache.
            let continuations = out["continuations"] as? Int ?? 0
            #expect(continuations >= 1)
            #expect((out["worker_relaunches"] as? Int ?? 0) >= (out["faults_injected"] as? Int ?? 0))
            let starts = out["starts"] as? [String: Any] ?? [:]
            #expect((starts["warm"] as? Int ?? 0) >= 1, "\(starts)")
        }

        /// With `--model function` the example defines the model too (zeros, as the built-in
        /// softmax) and evaluates it: the run ends with the built-in run's parameters and test
        /// accuracy, through a killed worker.
        @Test func theSoftmaxExampleDefinesItsModel() throws {
            let flags = ["--lr", "0.5"]
            let builtin = try smlt(Self.base + flags + ["--job", "ex-\(UUID().uuidString.prefix(8))"])
            #expect(builtin.status.succeeded, "\(builtin.stderr)")
            let quoted = "'" + Self.example.replacingOccurrences(of: "'", with: #"'\''"#) + "'"
            var args = Self.base + flags + ["--function", quoted, "--inject-faults", "worker-kill=1"]
            args[args.firstIndex(of: "softmax")!] = "function"
            let r = try smlt(args + ["--job", "ex-\(UUID().uuidString.prefix(8))"])
            #expect(r.status.succeeded, "\(r.stderr.suffix(3000))")
            let out = json(r.stdout)
            #expect(out["model"] as? String == "function")
            #expect(out["param_digest"] as? String == json(builtin.stdout)["param_digest"] as? String)
            #expect(out["test_accuracy"] as? Double == json(builtin.stdout)["test_accuracy"] as? Double)
            #expect((out["test_loss"] as? Double ?? 9) < 1)
        }
    }
}

/// README.md shows the example worker as it is built and tested.
@Suite struct ExampleSourceTests {
    @Test func theReadmeShowsTheExampleWorkerVerbatim() throws {
        let source = try String(contentsOfFile: packageRoot() + "/Examples/softmax-worker/main.swift", encoding: .utf8)
        let readme = try String(contentsOfFile: packageRoot() + "/README.md", encoding: .utf8)
        #expect(readme.contains("```swift\n" + source + "```\n"))
    }
}

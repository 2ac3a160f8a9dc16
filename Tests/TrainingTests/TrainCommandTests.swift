import Foundation
import LocalProcesses
import RedisClient
import TestSupport
import Testing

/// The `smlt` binary next to the test bundle (make test also sets SMLT_BIN).
func smltBinary() -> String {
    if let b = ProcessInfo.processInfo.environment["SMLT_BIN"] { return b }
    let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? ""
    return URL(fileURLWithPath: exe).deletingLastPathComponent().appendingPathComponent("smlt").path
}

struct RunResult {
    let status: LocalProcesses.ExitStatus
    let stdout: String
    let stderr: String
}

/// Runs smlt with `args` from the package root and collects its output.
func smlt(_ args: [String], environment: [String: String]? = nil) throws -> RunResult {
    let dir = NSTemporaryDirectory() + "smlt-test-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    var env = environment ?? ProcessInfo.processInfo.environment
    env["SMLT_DATA_DIR"] = packageRoot() + "/data"
    env["SMLT_REDIS_PASSWORD"] = environment?["SMLT_REDIS_PASSWORD"]
    let p = try ChildProcess(
        smltBinary(), arguments: args, environment: env.compactMapValues { $0 }, stdout: .file("\(dir)/out"),
        stderr: .file("\(dir)/err"))
    let status = p.wait(timeout: .seconds(300)) ?? p.terminate()
    return RunResult(
        status: status, stdout: (try? String(contentsOfFile: "\(dir)/out", encoding: .utf8)) ?? "",
        stderr: (try? String(contentsOfFile: "\(dir)/err", encoding: .utf8)) ?? "")
}

func packageRoot() -> String {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .path
}

func json(_ s: String) -> [String: Any] {
    (try? JSONSerialization.jsonObject(with: Data(s.utf8))) as? [String: Any] ?? [:]
}

/// Processes whose command line contains `text`.
func processes(containing text: String) -> [String] {
    let all = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
    return all.compactMap { pid -> String? in
        guard Int(pid) != nil, let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else {
            return nil
        }
        let cmd = String(decoding: data.map { $0 == 0 ? 32 : $0 }, as: UTF8.self)
        return cmd.contains(text) ? cmd : nil
    }
}

extension EndToEnd {
    @Suite(.serialized) struct TrainCommandTests {
        @Test func digitsEndToEndMatchesReferenceAndLeavesNothing() throws {
            let job = "e2e-\(UUID().uuidString.prefix(8))"
            let args = ["train", "--dataset", "digits", "--model", "softmax", "--workers", "4", "--json"]
            let bsp = try smlt(args + ["--shards", "2", "--job", job])
            #expect(bsp.status.succeeded, "\(bsp.stderr)")
            let out = json(bsp.stdout)
            #expect((out["test_accuracy"] as? Double ?? 0) >= 0.93)
            #expect(out["workers"] as? Int == 4)
            #expect(out["shards"] as? Int == 2)
            #expect(out["steps"] as? Int == 300)
            for key in ["final_loss", "wall_seconds", "param_digest", "function_gb_seconds"] {
                #expect(out[key] != nil, "\(key)")
            }
            let again = json(try smlt(args + ["--shards", "2"]).stdout)
            #expect(again["param_digest"] as? String == out["param_digest"] as? String)
            let reference = json(try smlt(args + ["--reference"]).stdout)
            #expect(reference["param_digest"] as? String == out["param_digest"] as? String)
            #expect(processes(containing: job).isEmpty)
        }

        @Test func mlpOnSyntheticDataMatchesReference() throws {
            let args = [
                "train", "--dataset", "synthetic", "--synthetic-examples", "2000", "--synthetic-features", "20",
                "--model",
                "mlp", "--hidden", "16", "--workers", "3", "--steps", "40", "--chunk-elements", "100", "--json",
            ]
            let bsp = try smlt(args + ["--shards", "3", "--codec", "shuffle-lz4"])
            #expect(bsp.status.succeeded, "\(bsp.stderr)")
            let reference = try smlt(args + ["--reference"])
            #expect(json(bsp.stdout)["param_digest"] as? String == json(reference.stdout)["param_digest"] as? String)
            #expect((json(bsp.stdout)["test_accuracy"] as? Double ?? 0) > 0.5)
        }

        @Test(arguments: [
            (["--dataset", "nope"], "unknown dataset 'nope'"),
            (["--model", "resnet"], "unknown model 'resnet'"),
            (["--workers", "0"], "--workers must be from 1 to 256"),
            (["--dataset", "libsvm:/does/not/exist"], "cannot read /does/not/exist"),
        ])
        func badArgumentsGiveClearErrors(extra: [String], message: String) throws {
            let r = try smlt(["train"] + extra)
            #expect(!r.status.succeeded)
            #expect(r.stderr.contains(message), "\(r.stderr)")
        }

        @Test func unreachableRedisIsAClearError() throws {
            let port = try freeLoopbackPort()
            let job = "down-\(UUID().uuidString.prefix(8))"
            let r = try smlt(["train", "--redis", "127.0.0.1:\(port)", "--job", job, "--steps", "5"])
            #expect(!r.status.succeeded)
            #expect(r.stderr.contains("cannot connect to 127.0.0.1:\(port)"), "\(r.stderr)")
            #expect(processes(containing: job).isEmpty)
        }

        @Test func passwordProtectedRedisWithoutPassword() throws {
            try withRedisServers(1, password: "pw") { servers in
                let ep = servers[0].endpoint.description
                let r = try smlt(["train", "--redis", ep, "--steps", "5"])
                #expect(!r.status.succeeded)
                #expect(r.stderr.contains("NOAUTH") || r.stderr.contains("authentication"), "\(r.stderr)")
                let shards = try smlt(["admin", "shards", "--redis", ep, "--json"])
                #expect(!shards.status.succeeded)
            }
        }

        @Test func workerRefusesAJobWhoseTensorsDisagreeWithItsModel() throws {
            try withRedisServers(1) { servers in
                let ep = servers[0].endpoint.description
                // A job laid out for a 10-feature model, whose config claims 64 features.
                let c = try RedisConnection(servers[0].endpoint)
                let map = """
                    {"job":"mismatch","epoch":1,"shards":["\(ep)"],"assignment":[0],"chunk_elements":262144,"codec":"raw",
                    "tensors":[{"name":"weight","shape":[10,10]},{"name":"bias","shape":[10]}]}
                    """
                try c.run(["SET", "smlt:{mismatch}:map", map])
                try c.run(["SADD", "smlt:jobs", "mismatch"])
                let config = """
                    {"workers":1,"steps":1,"learning_rate":0.1,"momentum":0.9,"weight_decay":0,
                    "workload":{"model":"softmax","hidden":"1","inputs":"64","classes":"10","batch_size":"4","seed":"1"}}
                    """
                try c.run(["SET", "smlt:{mismatch}:train", config])
                let r = try smlt(["worker", "--job", "mismatch", "--worker", "0", "--redis", ep])
                #expect(r.status.code == 1)
                #expect(
                    r.stderr.contains("the job's tensors hold 110 parameters but the softmax model needs 650"),
                    "\(r.stderr)")
            }
        }

        @Test func adminShardsReportsUnreachableShardAndExitsNonZero() throws {
            try withRedisServers(1) { servers in
                let port = try freeLoopbackPort()
                let r = try smlt(["admin", "shards", "--redis", "\(servers[0].endpoint),127.0.0.1:\(port)", "--json"])
                #expect(r.status.code == 1)
                let rows = (try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8))) as? [[String: Any]] ?? []
                #expect(rows.count == 2)
                #expect(rows.first?["reachable"] as? Bool == true)
                #expect(rows.last?["reachable"] as? Bool == false)
                for key in ["endpoint", "reachable", "chunks", "bytes", "used_memory"] {
                    #expect(rows.first?[key] != nil, "\(key)")
                }
                #expect(r.stderr.contains("127.0.0.1:\(port) is unreachable"))
            }
        }
    }
}

import Foundation
import LocalProcesses
import TestSupport
import Testing

/// Training over many shards, each function under the default 1 GiB address-space limit. It used
/// to hang: every pull and push started a thread per shard, each thread got a glibc malloc arena
/// reserving 64 MiB, the workers ran out of address space, and a thread that failed to start
/// left its caller waiting forever.
@Suite(.serialized) struct ManyShardsTests {
    @Test func trainingOverSixtyFourShardsCompletesAndMatchesTheReference() throws {
        // 64 shards and one `smlt serve` for all of them (a thread each): lighter on the machine
        // than `smlt train` starting a server process per shard, while other tests run.
        try withRedisServers(64) { servers in
            let shards = servers.map(\.endpoint.description).joined(separator: ",")
            let job = "shards64-\(UUID().uuidString.prefix(8))"
            let log = NSTemporaryDirectory() + "smlt-test-serve-\(job).log"
            defer { try? FileManager.default.removeItem(atPath: log) }
            let serve = try ChildProcess(
                smltBinary(), arguments: ["serve", "--redis", shards], stdout: .discard, stderr: .file(log))
            defer { _ = serve.terminate() }

            let args = ["train", "--steps", "10", "--workers", "2", "--json"]
            let run = try smlt(args + ["--redis", shards, "--job", job], timeout: .seconds(180))
            #expect(run.status.succeeded, "\(run.status): \(run.stderr.suffix(2000))")
            let out = json(run.stdout)
            #expect(out["shards"] as? Int == 64)
            #expect(out["steps"] as? Int == 10)
            #expect(out["restarts"] as? Int == 0)
            let reference = json(try smlt(args + ["--reference"], timeout: .seconds(180)).stdout)
            #expect(out["param_digest"] as? String != nil)
            #expect(out["param_digest"] as? String == reference["param_digest"] as? String)
            #expect(processes(containing: job).isEmpty)
            #expect(serve.isRunning, "\((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
        }
    }
}

/// Runs smlt like `smlt(_:)`, but stops it after `timeout` (a hang fails the test sooner).
private func smlt(_ args: [String], timeout: Duration) throws -> RunResult {
    let dir = NSTemporaryDirectory() + "smlt-test-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    var env = ProcessInfo.processInfo.environment
    env["SMLT_DATA_DIR"] = packageRoot() + "/data"
    env["SMLT_REDIS_PASSWORD"] = nil
    let p = try ChildProcess(
        smltBinary(), arguments: args, environment: env, stdout: .file("\(dir)/out"), stderr: .file("\(dir)/err"))
    // SIGTERM first: smlt stops its workers (and servers and shards, if it started them).
    let status = p.wait(timeout: timeout) ?? p.terminate()
    return RunResult(
        status: status, stdout: (try? String(contentsOfFile: "\(dir)/out", encoding: .utf8)) ?? "",
        stderr: (try? String(contentsOfFile: "\(dir)/err", encoding: .utf8)) ?? "")
}

import ArgumentParser
import Foundation
import LocalProcesses
import RedisClient
import Scheduler

/// The pause a live re-shard causes, against model size, next to the time plain SET/GET would
/// take to move the same bytes between the same kind of servers (the redis limit) plus a step.
struct ReshardBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reshard",
        abstract:
            "Pause of a live re-shard (2 -> 3 shards) against model size, versus moving its bytes with plain SET/GET.")

    @Option(help: "Model sizes in parameters (an MLP with 1000 inputs, sized by its hidden layer).")
    var params = "1000000,4000000,16000000"
    @Option(help: "Workers.") var workers = 2
    @Option(help: "Steps per run; the re-shard happens at half of them.") var steps = 30
    @Option(help: "Repetitions per size; the median pause is reported.") var repeats = 3
    @Flag(help: "Print JSON.") var json = false

    struct Row: Codable {
        var parameters: Int
        var chunksMoved: Int
        var minimumChunks: Int
        var bytesMoved: Int
        var pauseSeconds: Double
        var stepSeconds: Double
        var limitSeconds: Double
        /// pause / (limit + step): at most 1 meets the goal.
        var ratio: Double

        enum CodingKeys: String, CodingKey {
            case parameters, ratio
            case chunksMoved = "chunks_moved"
            case minimumChunks = "minimum_chunks"
            case bytesMoved = "bytes_moved"
            case pauseSeconds = "pause_seconds"
            case stepSeconds = "step_seconds"
            case limitSeconds = "limit_seconds"
        }
    }

    func run() throws {
        ChildRegistry.installSignalHandlers()
        let smlt = URL(fileURLWithPath: currentExecutable()).deletingLastPathComponent().appendingPathComponent("smlt")
            .path
        var rows: [Row] = []
        for p in params.split(separator: ",").compactMap({ Int($0) }) {
            let hidden = max(1, p / 1010)
            var pauses: [Row] = []
            for _ in 0..<repeats {
                let out = try runTrain(smlt, hidden: hidden)
                guard let change = (out["reconfigurations"] as? [[String: Any]])?.first else {
                    throw ValidationError("smlt train reported no reconfiguration: \(out)")
                }
                let bytes = change["bytes_moved"] as? Int ?? 0
                let limit = try copySeconds(bytes: bytes)
                let pause = change["pause_seconds"] as? Double ?? 0
                let step = change["step_seconds_before"] as? Double ?? 0
                pauses.append(
                    Row(
                        parameters: (out["parameters"] as? Int) ?? p, chunksMoved: change["chunks_moved"] as? Int ?? 0,
                        minimumChunks: change["minimum_chunks"] as? Int ?? 0, bytesMoved: bytes, pauseSeconds: pause,
                        stepSeconds: step, limitSeconds: limit, ratio: pause / max(limit + step, 1e-9)))
            }
            rows.append(pauses.sorted { $0.ratio < $1.ratio }[pauses.count / 2])
        }
        if json {
            let e = JSONEncoder()
            e.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try e.encode(rows), as: UTF8.self))
            return
        }
        print("parameters  chunks moved (min)  MB moved  pause ms  step ms  limit ms  pause/(limit+step)")
        for r in rows {
            print(
                String(
                    format: "%10d  %8d (%d)  %12.1f  %8.1f  %7.1f  %8.1f  %6.2f", r.parameters, r.chunksMoved,
                    r.minimumChunks, Double(r.bytesMoved) / 1e6, r.pauseSeconds * 1000, r.stepSeconds * 1000,
                    r.limitSeconds * 1000, r.ratio))
        }
    }

    /// One `smlt train` run with a re-shard from 2 to 3 shards half way.
    func runTrain(_ smlt: String, hidden: Int) throws -> [String: Any] {
        let dir = NSTemporaryDirectory() + "smlt-bench-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let p = try ChildProcess(
            smlt,
            arguments: [
                "train", "--dataset", "synthetic", "--model", "mlp", "--synthetic-features", "1000",
                "--synthetic-examples", "400", "--synthetic-classes", "10", "--hidden", "\(hidden)", "--workers",
                "\(workers)", "--shards", "2", "--steps", "\(steps)", "--schedule", "\(steps / 2):shards=3",
                "--checkpoint-every", "0", "--memory", "4096", "--json",
            ], stdout: .file(dir + "/out"), stderr: .file(dir + "/err"))
        let status = p.wait()
        let out = (try? Data(contentsOf: URL(fileURLWithPath: dir + "/out"))) ?? Data()
        guard status?.succeeded == true, let parsed = try? JSONSerialization.jsonObject(with: out) as? [String: Any]
        else {
            throw ValidationError(
                "smlt train failed: \((try? String(contentsOfFile: dir + "/err", encoding: .utf8)) ?? "")")
        }
        return parsed
    }

    /// Seconds to move `bytes` as 1 MiB values from one redis-server to another with plain GET
    /// and SET (the least a move must do), measured on two throw-away servers.
    func copySeconds(bytes: Int) throws -> Double {
        let (a, b) = (try RedisServerProcess(), try RedisServerProcess())
        defer {
            a.stop()
            b.stop()
        }
        let ca = try RedisConnection(a.endpoint)
        let cb = try RedisConnection(b.endpoint)
        let size = 1 << 20
        let n = max(1, (bytes + size - 1) / size)
        let value = [UInt8](repeating: 7, count: size)
        for i in 0..<n { try ca.run(RedisCommand("SET", "k\(i)").appending(bytes: value)) }
        let start = ContinuousClock.now
        for i in 0..<n {
            guard let v = try ca.run(["GET", "k\(i)"]).bytes else { continue }
            try cb.run(RedisCommand("SET", "k\(i)").appending(bytes: v))
        }
        return (ContinuousClock.now - start).seconds * Double(bytes) / Double(n * size)
    }
}

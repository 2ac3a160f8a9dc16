import Foundation
import KeySchema
import LocalProcesses
import Observability
import RedisClient
import ShardManager
import TensorBlob
import TestSupport
import Testing
import TrainingProtocol

/// One sample of a Prometheus text page: `name{labels} value`.
struct MetricSample: Equatable {
    var name: String
    var labels: [String: String]
    var value: Double
}

/// Parses the Prometheus text format (comments skipped; label values unescaped).
func parseMetrics(_ text: String) -> [MetricSample] {
    text.split(separator: "\n").compactMap { line -> MetricSample? in
        guard !line.hasPrefix("#"), let space = line.lastIndex(of: " "), let value = Double(line[space...].dropFirst())
        else { return nil }
        let series = line[..<space]
        guard let open = series.firstIndex(of: "{") else {
            return MetricSample(name: String(series), labels: [:], value: value)
        }
        var labels: [String: String] = [:]
        var rest = series[series.index(after: open)...].dropLast()  // without the closing brace
        while let eq = rest.firstIndex(of: "=") {
            let name = String(rest[..<eq]).trimmingCharacters(in: CharacterSet(charactersIn: ","))
            var i = rest.index(eq, offsetBy: 2)  // past `="`
            var v = ""
            while i < rest.endIndex, rest[i] != "\"" {
                if rest[i] == "\\", rest.index(after: i) < rest.endIndex {
                    i = rest.index(after: i)
                    v.append(rest[i] == "n" ? "\n" : rest[i])
                } else {
                    v.append(rest[i])
                }
                i = rest.index(after: i)
            }
            labels[name] = v
            rest = i < rest.endIndex ? rest[rest.index(after: i)...] : rest[rest.endIndex...]
        }
        return MetricSample(name: String(series[..<open]), labels: labels, value: value)
    }
}

/// The value of `name` with exactly these labels among `samples`, if there is one.
func metric(_ samples: [MetricSample], _ name: String, _ labels: [String: String]) -> Double? {
    samples.first { $0.name == name && $0.labels == labels }?.value
}

/// `smlt serve` on one endpoint with metrics and JSON logs, its log in a file.
struct ServeProcess {
    let process: ChildProcess
    let port: Int
    let log: String

    init(_ endpoint: RedisEndpoint, password: String) throws {
        port = try freeLoopbackPort()
        log = NSTemporaryDirectory() + "smlt-test-serve-\(UUID().uuidString).log"
        var env = ProcessInfo.processInfo.environment
        env["SMLT_REDIS_PASSWORD"] = password
        process = try ChildProcess(
            smltBinary(),
            arguments: [
                "serve", "--redis", endpoint.description, "--metrics-port", "\(port)", "--log-format", "json",
            ],
            environment: env, stdout: .discard, stderr: .file(log))
    }

    /// The metrics page, once it answers (bounded wait).
    func scrape() throws -> [MetricSample] {
        var last: (any Error)?
        for _ in 0..<100 {
            do {
                let page = try MetricsScrape.get(port: port)
                #expect(page.status == 200)
                return parseMetrics(page.body)
            } catch {
                last = error
                usleep(100_000)
            }
        }
        throw last!
    }

    /// Scrapes until `condition` holds (bounded); the last page either way.
    func scrape(until condition: ([MetricSample]) -> Bool) throws -> [MetricSample] {
        var samples = try scrape()
        for _ in 0..<200 where !condition(samples) {
            usleep(100_000)
            samples = try scrape()
        }
        return samples
    }

    /// Every log line, each parsed as a JSON object (an unparsable line fails the test).
    var logLines: [[String: Any]] {
        let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").map { line in
            let object = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any]
            #expect(object != nil, "not a JSON object: \(line)")
            return object ?? [:]
        }
    }

    func stop() {
        _ = process.terminate()
        try? FileManager.default.removeItem(atPath: log)
    }
}

extension EndToEnd {
    @Suite(.serialized) struct ObservabilityTests {
        /// `smlt serve --metrics-port` counts a trained job's steps and a damaged push, logs each
        /// as a JSON line with its identifiers and never the password, counts its own restart,
        /// and `smlt admin top --json` shows both jobs with their versions and stragglers.
        @Test func serveExportsMetricsLogsAsJSONAndAdminTopShowsStragglers() throws {
            let password = "pw-\(UUID().uuidString)"
            try withRedisServers(1, password: password) { servers in
                let e = servers[0].endpoint
                let shard = e.description
                var serve = try ServeProcess(e, password: password)
                defer { serve.stop() }
                let before = try serve.scrape()
                #expect(metric(before, "smlt_server_restarts_total", ["shard": shard]) == 0)

                // A job trained against it: every step counted once.
                let job = "metrics-\(UUID().uuidString.prefix(8))"
                var env = ProcessInfo.processInfo.environment
                env["SMLT_REDIS_PASSWORD"] = password
                let run = try smlt(
                    ["train", "--redis", shard, "--job", job, "--steps", "25", "--workers", "2", "--json"],
                    environment: env)
                #expect(run.status.succeeded, "\(run.stderr)")
                let trained = try serve.scrape()
                let labels = ["job": job, "shard": shard]
                #expect(metric(trained, "smlt_steps_committed_total", labels) == 25)
                #expect(metric(trained, "smlt_version", labels) == 25)
                #expect(metric(trained, "smlt_step_seconds_count", labels) == 25)
                #expect((metric(trained, "smlt_gradient_bytes_total", labels) ?? 0) > 0)
                #expect((metric(trained, "smlt_model_bytes_total", labels) ?? 0) > 0)
                #expect(metric(trained, "smlt_push_rejected_total", labels.merging(["reason": "corrupt"]) { $1 }) == 0)
                // No per-worker series.
                #expect(!trained.contains { $0.labels["worker"] != nil })

                // A second job whose worker 1 pushes a damaged blob (valid header, one payload
                // byte flipped) and worker 0 a good one.
                let options = RedisOptions(password: password)
                let damaged = "damaged-\(UUID().uuidString.prefix(8))"
                let spec = JobSpec(job: damaged, tensors: [TensorSpec(name: "w", shape: [40])], chunkElements: 16)
                let m = try ShardManager.register(spec, on: [e], options: options)
                try TrainingConfig(workers: 2, steps: 3, learningRate: 0.1).start(
                    on: m, initial: [Float](repeating: 1, count: 40))
                let n = m.layout.totalElements
                try WorkerSession(job: damaged, worker: 0, endpoints: [e], options: options)
                    .push(gradient: gradient(1, n), step: 0)
                let keys = JobKeys(job: damaged)
                let c = try RedisConnection(e, options: options)
                for chunk in 0..<m.layout.chunkCount {
                    let range = m.layout.range(ofChunk: chunk)
                    var blob = Array(gradient(2, n)[range]).withUnsafeBufferPointer {
                        TensorBlob.encode($0, codec: .raw, step: 0, producer: 1)
                    }
                    blob[blob.count - 1] ^= 0x40
                    try c.run(
                        RedisCommand("SET", keys.gradient(chunk: chunk, step: 0, worker: 1)).appending(bytes: blob))
                }
                for command in keys.markPushedCommands(shard: 0, step: 0, worker: 1, ttlSeconds: 600) {
                    try c.run(command)
                }
                let rejectedLabels = ["job": damaged, "shard": shard, "reason": "corrupt"]
                let afterDamage = try serve.scrape { metric($0, "smlt_push_rejected_total", rejectedLabels) == 1 }
                #expect(metric(afterDamage, "smlt_push_rejected_total", rejectedLabels) == 1)
                #expect(
                    metric(
                        afterDamage, "smlt_push_rejected_total",
                        ["job": damaged, "shard": shard, "reason": "non_finite"])
                        == 0)
                #expect(metric(afterDamage, "smlt_version", ["job": damaged, "shard": shard]) == 0)
                #expect(metric(afterDamage, "smlt_steps_committed_total", ["job": damaged, "shard": shard]) == 0)

                // The live view: the finished job, and the damaged one waiting for worker 1.
                let top = try smlt(["admin", "top", "--redis", shard, "--json"], environment: env)
                #expect(top.status.succeeded, "\(top.stderr)")
                let rows = (try? JSONSerialization.jsonObject(with: Data(top.stdout.utf8))) as? [[String: Any]] ?? []
                let byJob = Dictionary(rows.map { ($0["job"] as? String ?? "", $0) }) { a, _ in a }
                #expect(byJob[job]?["version"] as? Int == 25, "\(top.stdout)")
                #expect(byJob[job]?["finished"] as? Bool == true)
                #expect(byJob[job]?["stragglers"] as? [Int] == [])
                #expect(byJob[job]?["estimated_cost_usd"] as? Double != nil)
                #expect(byJob[damaged]?["version"] as? Int == 0, "\(top.stdout)")
                #expect(byJob[damaged]?["finished"] as? Bool == false)
                #expect(byJob[damaged]?["stragglers"] as? [Int] == [1], "\(top.stdout)")
                let table = try smlt(["admin", "top", "--redis", shard, "--count", "1"], environment: env)
                #expect(table.stdout.contains(damaged) && table.stdout.contains("STRAGGLERS"), "\(table.stdout)")

                // The log: JSON lines with the event and identifiers, and no password anywhere.
                let lines = serve.logLines
                let rejection = lines.first { $0["event"] as? String == "push_rejected" }
                #expect(rejection?["job"] as? String == damaged, "\(lines)")
                #expect(rejection?["worker"] as? String == "1")
                #expect(rejection?["step"] as? String == "0")
                #expect(rejection?["reason"] as? String == "corrupt")
                #expect(rejection?["level"] as? String == "warning")
                #expect(rejection?["shard"] as? String == shard)
                #expect(lines.contains { $0["event"] as? String == "job_serving" && $0["job"] as? String == job })
                #expect(lines.contains { $0["event"] as? String == "job_finished" && $0["job"] as? String == job })
                let raw = (try? String(contentsOfFile: serve.log, encoding: .utf8)) ?? ""
                #expect(!raw.contains(password))

                // A second server start on the shard is a restart.
                serve.stop()
                serve = try ServeProcess(e, password: password)
                // The server counts its start once its shard loop reaches the shard, which may be
                // after its endpoint answers.
                let restarted = try serve.scrape {
                    (metric($0, "smlt_server_restarts_total", ["shard": shard]) ?? 0) >= 1
                }
                #expect(metric(restarted, "smlt_server_restarts_total", ["shard": shard]) == 1)
                #expect(
                    serve.logLines.contains {
                        $0["event"] as? String == "server_start" && $0["starts"] as? String == "2"
                    })
            }
        }

        /// `smlt train --metrics-port P` gives shard i's server the port P + i while it trains.
        @Test func trainServesEachServersMetricsOnItsOwnPort() throws {
            var base = try freeLoopbackPort()
            for _ in 0..<20 {
                if let next = try? freeLoopbackPort(), next == base + 1 { break }
                base = try freeLoopbackPort()
            }
            let dir = NSTemporaryDirectory() + "smlt-test-\(UUID().uuidString)"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: dir) }
            var env = ProcessInfo.processInfo.environment
            env["SMLT_DATA_DIR"] = packageRoot() + "/data"
            let job = "trainmetrics-\(UUID().uuidString.prefix(8))"
            let train = try ChildProcess(
                smltBinary(),
                arguments: [
                    "train", "--shards", "2", "--workers", "2", "--steps", "100000", "--job", job, "--metrics-port",
                    "\(base)",
                ], environment: env, stdout: .discard, stderr: .file(dir + "/err"))
            defer { _ = train.terminate() }
            for shard in 0..<2 {
                var version: Double?
                for _ in 0..<300 where (version ?? 0) < 1 {
                    if let page = try? MetricsScrape.get(port: base + shard) {
                        version =
                            parseMetrics(page.body).first { $0.name == "smlt_version" && $0.labels["job"] == job }?
                            .value
                    }
                    if (version ?? 0) < 1 { usleep(100_000) }
                }
                #expect((version ?? 0) >= 1, "shard \(shard) at port \(base + shard)")
            }
            // Stopped with SIGTERM: its servers (and their ports) go with it.
            _ = train.terminate()
            #expect(processes(containing: job).isEmpty)
            #expect((try? MetricsScrape.get(port: base)) == nil)
        }
    }
}

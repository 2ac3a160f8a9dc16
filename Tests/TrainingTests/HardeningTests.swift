import Coordinator
import Foundation
import KeySchema
import LocalProcesses
import RedisClient
import ShardManager
import TestSupport
import Testing
import TrainingProtocol

extension EndToEnd {
    /// The defects a hostile first user found (issue #14), each against real processes.
    @Suite(.serialized) struct HardeningTests {
        @Test(arguments: [
            (["--memory", "99999999999999"], "--memory must be from 384 to 10240 MiB"),
            (["--memory", "64"], "--memory must be from 384 to 10240 MiB"),
            (["--function-timeout", "inf"], "invalid duration 'inf' for --function-timeout"),
            (["--function-timeout", "1e300s"], "--function-timeout 1e300s is too long"),
            (["--lease-timeout", "1e19"], "--lease-timeout 1e19 is too long"),
            (["--epochs", "1e300"], "--epochs must be from 0 to 1000000"),
            (["--synthetic-examples=-1"], "--synthetic-examples must be from 1"),
            (["--batch-size", "100000000"], "--batch-size must be from 1 to"),
            (["--batch-size", "1000000"], "a worker would need about"),
            (["--dataset", "synthetic", "--synthetic-examples", "0"], "--synthetic-examples must be from 1"),
            (["--lr", "nan"], "--lr must be a positive number"),
            (["--workers", "300"], "--workers must be from 1 to 256"),
        ])
        func absurdNumbersAreClearErrorsBeforeAnythingStarts(extra: [String], message: String) throws {
            let r = try smlt(["train"] + extra)
            // A usage error (64), or a plain failure once the data shows the problem: never a trap.
            #expect(r.status.code == 64 || r.status.code == 1, "\(r.status) \(r.stderr)")
            #expect(r.stderr.contains(message), "\(r.stderr)")
        }

        @Test func trainingDataWithoutExamplesIsAnError() throws {
            let file = NSTemporaryDirectory() + "one-\(UUID().uuidString).svm"
            try "1 1:0.5\n".write(toFile: file, atomically: true, encoding: .utf8)
            defer { try? FileManager.default.removeItem(atPath: file) }
            let r = try smlt(["train", "--dataset", "libsvm:" + file])
            #expect(!r.status.succeeded)
            #expect(r.stderr.contains("has no examples"), "\(r.stderr)")
        }

        @Test func theLargestSeedTrains() throws {
            let r = try smlt(["train", "--seed", "18446744073709551615", "--steps", "5", "--json"])
            #expect(r.status.succeeded, "\(r.stderr)")
            #expect(json(r.stdout)["param_digest"] != nil)
        }

        /// A run that diverges stops at once with the step and a hint, instead of relaunching a
        /// worker that cannot encode its metrics; the default learning rate of that model does not
        /// diverge.
        @Test func aDivergingRunStopsAtOnceAndTheDefaultsDoNot() throws {
            let args = [
                "train", "--dataset", "synthetic", "--model", "mlp", "--synthetic-examples", "8000",
                "--synthetic-features", "64", "--hidden", "128", "--epochs", "2", "--workers", "1", "--shards", "1",
            ]
            let diverged = try smlt(args + ["--lr", "0.5"])
            #expect(diverged.status.code == 1)
            #expect(diverged.stderr.contains("training diverged at step"), "\(diverged.stderr)")
            #expect(diverged.stderr.contains("try a lower learning rate"))
            #expect(!diverged.stderr.contains("relaunching"), "\(diverged.stderr)")
            let reference = try smlt(args + ["--lr", "0.5", "--reference"])
            #expect(reference.stderr.contains("training diverged at step"), "\(reference.stderr)")
            let defaults = try smlt(args + ["--json"])
            #expect(defaults.status.succeeded, "\(defaults.stderr)")
            #expect((json(defaults.stdout)["test_accuracy"] as? Double ?? 0) > 0.9)
        }

        /// The metrics stream and the start reports keep a bounded number of entries, however long
        /// a job runs.
        @Test func metricsAndStartReportsStayBounded() throws {
            try withRedisServers(1) { servers in
                _ = try makeJob("bounded", servers, workers: 1)
                let client = try WorkerSession(job: "bounded", worker: 0, endpoints: servers.map(\.endpoint))
                for i in 0..<(StepMetrics.retained + 2_000) {
                    try client.report(StepMetrics(worker: 0, step: i, loss: 1, accuracy: 0.5, examples: 16))
                }
                for i in 0..<(StartReport.retained + 100) {
                    try client.reportStart(StartReport(worker: 0, generation: i, warm: true, seconds: 0.01))
                }
                let c = try RedisConnection(servers[0].endpoint)
                let keys = JobKeys(job: "bounded")
                let metrics = try c.run(["XLEN", keys.metrics]).integer ?? 0
                #expect(metrics >= Int64(StepMetrics.retained) && metrics < Int64(StepMetrics.retained + 1_000))
                #expect(try c.run(["LLEN", keys.starts]).integer == Int64(StartReport.retained))
            }
        }

        /// Jobs on given shards: an existing id needs --resume, a finished job's keys expire after
        /// the retention, and `smlt admin delete` removes every key.
        @Test func jobIdsRetentionAndDelete() throws {
            try withRedisServers(1) { servers in
                let e = servers[0].endpoint.description
                let serve = try ChildProcess(
                    smltBinary(), arguments: ["serve", "--redis", e], stdout: .discard, stderr: .discard)
                defer { serve.terminate() }
                let job = "keep-\(UUID().uuidString.prefix(8))"
                let first = try smlt(["train", "--redis", e, "--job", job, "--steps", "20", "--retain", "1h", "--json"])
                #expect(first.status.succeeded, "\(first.stderr)")
                let c = try RedisConnection(servers[0].endpoint)
                let keys = try c.scanKeys(matching: "smlt:{\(job)*")
                #expect(!keys.isEmpty)
                for key in keys {
                    let ttl = try c.run(["TTL", key]).integer ?? -1
                    #expect(ttl > 0 && ttl <= 3600, "\(key) has TTL \(ttl)")
                }
                let again = try smlt(["train", "--redis", e, "--job", job, "--steps", "20"])
                #expect(!again.status.succeeded)
                #expect(again.stderr.contains("job '\(job)' already exists"), "\(again.stderr)")
                #expect(again.stderr.contains("--resume"))
                let deleted = try smlt(["admin", "delete", "--redis", e, "--job", job])
                #expect(deleted.status.succeeded, "\(deleted.stderr)")
                #expect(try c.scanKeys(matching: "smlt:{\(job)*").isEmpty)
                #expect(try c.run(["SISMEMBER", JobKeys.jobs, job]).integer == 0)
                let gone = try smlt(["train", "--redis", e, "--job", "t\(job)", "--steps", "10", "--retain", "0"])
                #expect(gone.status.succeeded, "\(gone.stderr)")
                #expect(try c.scanKeys(matching: "smlt:{t\(job)*").isEmpty)
            }
        }

        /// With a password, a map that names an endpoint nobody gave is refused before anything is
        /// sent there: a listener put into the map receives no connection.
        @Test func credentialsGoOnlyToGivenEndpoints() throws {
            try withRedisServers(1, password: "pw") { servers in
                let options = RedisOptions(password: "pw")
                let spec = JobSpec(job: "creds", tensors: [TensorSpec(name: "w", shape: [4])], chunkElements: 2)
                let m = try ShardManager.register(spec, on: servers.map(\.endpoint), options: options)
                try TrainingConfig(workers: 1, steps: 1, learningRate: 0.1).store(on: m)
                // A listener nobody gave, written into the job's map as a second shard.
                let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
                defer { close(listener) }
                var addr = sockaddr_in()
                addr.sin_family = sa_family_t(AF_INET)
                addr.sin_addr.s_addr = inet_addr("127.0.0.1")
                var len = socklen_t(MemoryLayout<sockaddr_in>.size)
                let bound = withUnsafeMutablePointer(to: &addr) { p in
                    p.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        bind(listener, $0, len) == 0 && listen(listener, 4) == 0 && getsockname(listener, $0, &len) == 0
                    }
                }
                #expect(bound)
                _ = fcntl(listener, F_SETFL, O_NONBLOCK)
                let trap = "127.0.0.1:\(UInt16(bigEndian: addr.sin_port))"
                var map = m.map
                map.shards.append(trap)
                map.assignment = [0, 1]
                let c = try RedisConnection(servers[0].endpoint, options: options)
                try c.run(RedisCommand("SET", m.keys.map).appending(bytes: Array(try JSONEncoder().encode(map))))
                #expect {
                    _ = try WorkerSession(
                        job: "creds", worker: 0, endpoints: servers.map(\.endpoint), options: options)
                } throws: { error in
                    (error as? ShardError)?.code == .untrustedEndpoint && "\(error)".contains(trap)
                }
                #expect(accept(listener, nil, nil) < 0, "the listener was contacted")
                // Allowed explicitly, the map is accepted.
                let allowed = try WorkerSession(
                    job: "creds", worker: 0, endpoints: servers.map(\.endpoint), options: options, allowed: [trap])
                #expect(allowed.shards.map.shards.contains(trap))
            }
        }

        /// The admin and checkpoint commands that read a job's map take `--allow-endpoints`, as the
        /// refusal tells the user to: a job re-sharded onto a shard the command was not given.
        @Test func adminCommandsTakeAllowEndpoints() throws {
            try withRedisServers(2, password: "pw") { servers in
                _ = try makeJob("moved", servers, workers: 1, options: RedisOptions(password: "pw"))
                let (home, other) = (servers[0].endpoint.description, servers[1].endpoint.description)
                let dir = NSTemporaryDirectory() + "allow-\(UUID().uuidString.prefix(8))"
                defer { try? FileManager.default.removeItem(atPath: dir) }
                for args in [
                    ["admin", "chunks", "--job", "moved", "--json"], ["admin", "jobs", "--json"],
                    ["admin", "checkpoint", "--job", "moved", "--dir", dir],
                    ["admin", "restore", "--job", "moved", "--dir", dir],
                ] {
                    let refused = try smlt(args + ["--redis", home, "--password", "pw"])
                    #expect("\(refused.stdout)\(refused.stderr)".contains("--allow-endpoints"), "\(args): \(refused)")
                    let allowed = try smlt(args + ["--redis", home, "--password", "pw", "--allow-endpoints", other])
                    #expect(allowed.status.succeeded, "\(args): \(allowed.stderr)")
                    #expect(!"\(allowed.stdout)\(allowed.stderr)".contains("refusing"), "\(args): \(allowed)")
                }
            }
        }

        /// The shards `smlt train` starts itself get a password (the one given, or a random one),
        /// and `--password` on the command line is warned about.
        @Test func ownShardsArePasswordProtected() throws {
            let r = try smlt(["train", "--steps", "20", "--password", "given", "--json"])
            #expect(r.status.succeeded, "\(r.stderr)")
            #expect(r.stderr.contains("warning: --password is visible"))
            #expect(json(r.stdout)["param_digest"] != nil)
        }

        /// A shard whose server never advances (here: none runs for it) is named by the driver
        /// instead of the run freezing in silence.
        @Test func theDriverNamesAShardThatStopsAdvancing() throws {
            try withRedisServers(2) { servers in
                let serve = try ChildProcess(
                    smltBinary(), arguments: ["serve", "--redis", servers[0].endpoint.description], stdout: .discard,
                    stderr: .discard)
                defer { serve.terminate() }
                let dir = NSTemporaryDirectory() + "smlt-test-\(UUID().uuidString)"
                try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
                defer { try? FileManager.default.removeItem(atPath: dir) }
                var env = ProcessInfo.processInfo.environment
                env["SMLT_DATA_DIR"] = packageRoot() + "/data"
                let train = try ChildProcess(
                    smltBinary(),
                    arguments: [
                        "train", "--redis", servers.map(\.endpoint.description).joined(separator: ","), "--steps",
                        "50", "--chunk-elements", "64",
                    ], environment: env, stdout: .discard, stderr: .file(dir + "/err"))
                defer { train.terminate() }
                let deadline = ContinuousClock.now + .seconds(40)
                var log = ""
                while ContinuousClock.now < deadline && !log.contains("has been stuck at version") {
                    sleepFor(.milliseconds(200))
                    log = (try? String(contentsOfFile: dir + "/err", encoding: .utf8)) ?? ""
                }
                #expect(log.contains("shard 1 (\(servers[1].endpoint)) has been stuck at version 0"), "\(log)")
            }
        }

        @Test func theRunDirectoryIsPrivate() throws {
            let dir = try RunDirectory()
            defer { dir.remove() }
            let attributes = try FileManager.default.attributesOfItem(atPath: dir.path)
            #expect((attributes[.posixPermissions] as? Int) == 0o700)
            dir.remove()
            #expect(!FileManager.default.fileExists(atPath: dir.path))
        }
    }
}

extension EndToEnd {
    /// A driver killed with SIGKILL in the middle of a job on given shards: `smlt train --resume`
    /// continues the job from what Redis holds and ends with the digest of an uninterrupted run.
    @Suite(.serialized) struct ResumeTests {
        @Test func resumeAfterTheDriverWasKilled() throws {
            try withRedisServers(2) { servers in
                let eps = servers.map(\.endpoint.description).joined(separator: ",")
                var serves: [ChildProcess] = []
                defer { for s in serves { s.terminate() } }
                for s in servers {
                    serves.append(
                        try ChildProcess(
                            smltBinary(), arguments: ["serve", "--redis", s.endpoint.description], stdout: .discard,
                            stderr: .discard))
                }
                let job = "resume-\(UUID().uuidString.prefix(8))"
                let args = [
                    "train", "--dataset", "digits", "--model", "mlp", "--workers", "3", "--steps", "500",
                    "--chunk-elements", "1024", "--checkpoint-every", "50", "--json",
                ]
                var env = ProcessInfo.processInfo.environment
                env["SMLT_DATA_DIR"] = packageRoot() + "/data"
                let driver = try ChildProcess(
                    smltBinary(), arguments: args + ["--redis", eps, "--job", job], environment: env, stdout: .discard,
                    stderr: .discard)
                let c = try RedisConnection(servers[0].endpoint)
                let deadline = ContinuousClock.now + .seconds(120)
                while ContinuousClock.now < deadline,
                    (try? JobKeys(job: job).latestVersion(shard: 0, on: c)).flatMap({ $0 }) ?? 0 < 150
                {
                    sleepFor(.milliseconds(10))
                }
                // The driver and its workers die at once, as when the machine running them fails.
                let workers = children(of: driver.pid).map(\.1)
                #expect(!workers.isEmpty)
                driver.send(SIGKILL)
                for w in workers { kill(w, SIGKILL) }
                _ = driver.wait(timeout: .seconds(10))
                let at = (try? JobKeys(job: job).latestVersion(shard: 0, on: c)).flatMap { $0 } ?? 0
                #expect(at >= 150 && at < 500, "killed at version \(at)")
                // As if the driver had died in the middle of a re-shard: a copy of chunk 0's
                // parameters on the shard that does not own it, and the move's journal.
                let keys = JobKeys(job: job)
                let m = try ShardManager.open(job: job, endpoints: servers.map(\.endpoint))
                let (owner, stray) = (m.map.assignment[0], 1 - m.map.assignment[0])
                let blob = try m.onShard(owner) { c throws(RedisError) in
                    try c.run(["GET", keys.params(chunk: 0)]).bytes
                }
                try m.onShard(stray) { c throws(RedisError) in
                    _ = try c.run(RedisCommand("SET", keys.params(chunk: 0)).appending(bytes: blob ?? []))
                }
                let journal = try JSONSerialization.data(withJSONObject: ["epoch": m.map.epoch, "shards": m.map.shards])
                try c.run(RedisCommand("SET", keys.moving).appending(bytes: Array(journal)))
                let resumed = try smlt(["train", "--resume", "--job", job, "--redis", eps, "--json"])
                #expect(resumed.status.succeeded, "\(resumed.stderr)")
                #expect(try c.run(["EXISTS", keys.moving]).integer == 0)
                #expect(
                    try m.onShard(stray) { c throws(RedisError) in try c.run(["EXISTS", keys.params(chunk: 0)]) }
                        .integer == 0)
                #expect(
                    try m.onShard(owner) { c throws(RedisError) in try c.run(["EXISTS", keys.params(chunk: 0)]) }
                        .integer == 1)
                let reference = try smlt(args + ["--reference"])
                #expect(json(resumed.stdout)["param_digest"] as? String != nil)
                #expect(
                    json(resumed.stdout)["param_digest"] as? String == json(reference.stdout)["param_digest"] as? String
                )
                #expect(processes(containing: job).isEmpty)
            }
        }
    }
}

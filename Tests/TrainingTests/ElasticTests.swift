import Coordinator
import Foundation
import KeySchema
import LocalProcesses
import RedisClient
import ShardManager
import Synchronization
import TestSupport
import Testing
import TrainingProtocol

extension EndToEnd {
    /// Elastic jobs against real processes: a schedule of worker and shard changes must end with the
    /// parameters of the single-process reference replaying the same membership, and a schedule
    /// that only re-shards with the parameters of no schedule at all.
    @Suite(.serialized) struct ElasticTests {
        static let mlp = [
            "train", "--dataset", "digits", "--model", "mlp", "--workers", "4", "--shards", "2", "--json",
        ]

        func digest(_ r: RunResult) -> String? { json(r.stdout)["param_digest"] as? String }

        func reconfigurations(_ r: RunResult) -> [[String: Any]] {
            json(r.stdout)["reconfigurations"] as? [[String: Any]] ?? []
        }

        @Test func workersAndShardsChangeAndTheDigestMatchesTheReference() throws {
            let job = "el-\(UUID().uuidString.prefix(8))"
            let args =
                Self.mlp + ["--steps", "400", "--schedule", "100:workers=8;200:shards=3;300:workers=2,shards=1"]
            let run = try smlt(args + ["--job", job])
            #expect(run.status.succeeded, "\(run.stderr)")
            let changes = reconfigurations(run)
            #expect(changes.count == 3)
            #expect(changes.map { $0["step"] as? Int } == [100, 200, 300])
            #expect(changes.map { $0["workers"] as? Int } == [8, 8, 2])
            #expect(changes.map { $0["shards"] as? Int } == [2, 3, 1])
            for c in changes {
                for key in ["chunks_moved", "bytes_moved", "pause_seconds"] { #expect(c[key] != nil, "\(key)") }
            }
            #expect(json(run.stdout)["workers"] as? Int == 2)
            #expect(json(run.stdout)["shards"] as? Int == 1)
            let reference = try smlt(args + ["--reference"])
            #expect(digest(run) != nil)
            #expect(digest(run) == digest(reference))
            #expect(processes(containing: job).isEmpty)
        }

        @Test func reshardingAloneLeavesTheDigestUnchanged() throws {
            // Small chunks, so that re-sharding really moves some.
            let base = Self.mlp + ["--steps", "300", "--chunk-elements", "256"]
            let plain = try smlt(base)
            let resharded = try smlt(base + ["--schedule", "100:shards=3;200:shards=1"])
            #expect(resharded.status.succeeded, "\(resharded.stderr)")
            #expect(digest(plain) != nil)
            #expect(digest(resharded) == digest(plain))
            let changes = reconfigurations(resharded)
            #expect(changes.count == 2)
            for c in changes {
                let moved = c["chunks_moved"] as? Int ?? -1
                #expect(moved > 0)
                // The placement moves the fewest chunks a balanced placement can.
                #expect(moved == c["minimum_chunks"] as? Int)
                #expect((c["bytes_moved"] as? Int ?? 0) >= moved * 4)
            }
        }

        @Test func faultsDuringAScheduleStillGiveTheReferenceDigest() throws {
            let args =
                Self.mlp + [
                    "--steps", "300", "--chunk-elements", "512", "--schedule", "100:workers=6,shards=3;200:workers=3",
                    "--seed", "11",
                ]
            let faulty = try smlt(
                args + ["--inject-faults", "worker-kill=2,server-kill=2", "--function-timeout", "5s"])
            #expect(faulty.status.succeeded, "\(faulty.stderr)")
            #expect((json(faulty.stdout)["faults_injected"] as? Int ?? 0) >= 1)
            #expect(digest(faulty) == digest(try smlt(args + ["--reference"])))
        }

        @Test(arguments: [
            ("100:workers", "'workers' must be workers=N or shards=K"),
            ("x:workers=2", "must look like STEP:workers=N,shards=K"),
            ("100:cores=2", "unknown or repeated setting 'cores'"),
            ("500:workers=2", "schedule step 500 is outside the run"),
            ("100:workers=0", "workers=0 must be from 1"),
            ("100:shards=0", "shards=0 must be from 1"),
            ("200:workers=2;100:workers=3", "schedule steps must increase"),
        ])
        func badSchedulesAreRefusedBeforeAnythingStarts(schedule: String, message: String) throws {
            let job = "bad-\(UUID().uuidString.prefix(8))"
            let r = try smlt(["train", "--steps", "300", "--schedule", schedule, "--job", job])
            #expect(!r.status.succeeded)
            #expect(r.stderr.contains(message), "\(r.stderr)")
            #expect(processes(containing: job).isEmpty)
            #expect(!r.stderr.contains("step 0/"), "training must not start: \(r.stderr)")
        }

        /// A worker and a parameter server are SIGKILLed after the chunks are copied and before the
        /// switch; the run must still end with the reference's parameters.
        @Test func killsDuringAMoveLoseNothing() throws {
            var request = TrainingRequest()
            request.model = "mlp"
            request.steps = 200
            request.chunkElements = 512
            request.schedule = "60:shards=3;120:workers=3,shards=2"
            request.checkpointEvery = 0
            setenv("SMLT_DATA_DIR", packageRoot() + "/data", 1)
            let killed = Mutex<[String]>([])
            let me = getpid()
            let coordinator = Coordinator(
                request: request, job: "kill-\(UUID().uuidString.prefix(8))", endpoints: nil, options: RedisOptions(),
                launch: Coordinator.Launch(worker: [smltBinary(), "worker"], server: [smltBinary(), "serve"]),
                events: Coordinator.Events(beforeSwitch: {
                    for (role, pid) in children(of: me) where role == "worker" || role == "serve" {
                        if killed.withLock({ $0.contains(role) }) { continue }
                        kill(pid, SIGKILL)
                        killed.withLock { $0.append(role) }
                    }
                }))
            let summary = try coordinator.run()
            #expect(killed.withLock { Set($0) } == ["worker", "serve"])
            #expect(summary.reconfigurations.count == 2)
            let data = try TrainingData.load(request)
            let reference = try ReferenceTrainer(plan: try TrainingPlan(request, train: data.train, test: data.test))
                .run()
            #expect(summary.paramDigest == reference.paramDigest)
        }

        /// A switch that fails (the new shard dies after the copies) leaves the job on its old map,
        /// with its parameters where they were and nothing of it on the new shard.
        @Test func aFailedSwitchLeavesTheOldMap() throws {
            try withRedisServers(2) { servers in
                let m = try makeJob("halfway", Array(servers.prefix(1)), workers: 2)
                let newShard = try startTestRedis()
                let before = try m.read(.params).values
                let config = TrainingConfig(workers: 2, steps: 5, learningRate: 0.5, momentum: 0.9, weightDecay: 0.01)
                #expect(throws: ReshardError.self) {
                    _ = try Resharder(m, options: RedisOptions()).move(
                        to: [servers[0].endpoint, newShard.endpoint], step: 0, config: config,
                        beforeSwitch: { newShard.kill() })
                }
                let reopened = try ShardManager.open(job: "halfway", endpoints: [servers[0].endpoint])
                #expect(reopened.map == m.map)
                #expect(try reopened.read(.params).values == before)
                let c = try RedisConnection(servers[0].endpoint)
                #expect(try c.run(["GET", JobKeys(job: "halfway").epoch]).text == "\(m.map.epoch)")
            }
        }

        @Test func reshardRefusesUnusableEndpointsBeforeMovingAnything() throws {
            try withRedisServers(2) { servers in
                let m = try makeJob("refuse", servers, workers: 2)
                let locked = try startTestRedis(password: "s3cret")
                let port = try freeLoopbackPort()
                for target in ["127.0.0.1:\(port)", locked.endpoint.description] {
                    let r = try smlt([
                        "admin", "reshard", "--job", "refuse", "--redis",
                        servers.map(\.endpoint.description).joined(separator: ","),
                        "--to", servers[0].endpoint.description + "," + target,
                    ])
                    #expect(!r.status.succeeded)
                    #expect(r.stderr.contains("cannot use \(target) as a shard"), "\(r.stderr)")
                    #expect(r.stderr.contains("nothing was moved"))
                    let now = try ShardManager.open(job: "refuse", endpoints: servers.map(\.endpoint))
                    #expect(now.map == m.map)
                    #expect(try now.control().hold == nil)
                }
            }
        }

        /// `smlt admin reshard` on a job that `smlt serve` and `smlt train --redis` are running: the
        /// job moves to a third shard in the middle of training and ends with the reference digest.
        @Test func adminReshardMovesARunningJob() throws {
            try withRedisServers(3) { servers in
                let eps = servers.map(\.endpoint.description)
                var serves: [ChildProcess] = []
                defer { for s in serves { s.terminate() } }
                for e in eps {
                    serves.append(
                        try ChildProcess(
                            smltBinary(), arguments: ["serve", "--redis", e], stdout: .discard, stderr: .discard))
                }
                let job = "live-\(UUID().uuidString.prefix(8))"
                let args = [
                    "train", "--dataset", "digits", "--model", "mlp", "--workers", "3", "--steps", "600",
                    "--chunk-elements", "256", "--json",
                ]
                let dir = NSTemporaryDirectory() + "smlt-test-\(UUID().uuidString)"
                try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
                defer { try? FileManager.default.removeItem(atPath: dir) }
                var env = ProcessInfo.processInfo.environment
                env["SMLT_DATA_DIR"] = packageRoot() + "/data"
                let train = try ChildProcess(
                    smltBinary(), arguments: args + ["--redis", eps[0] + "," + eps[1], "--job", job], environment: env,
                    stdout: .file(dir + "/out"), stderr: .file(dir + "/err"))
                defer { train.terminate() }
                // Wait until the job is well under way.
                let c = try RedisConnection(servers[0].endpoint)
                let deadline = ContinuousClock.now + .seconds(120)
                while ContinuousClock.now < deadline,
                    (try? JobKeys(job: job).latestVersion(shard: 0, on: c)).flatMap({ $0 }) ?? 0 < 100
                {
                    sleepFor(.milliseconds(20))
                }
                let moved = try smlt([
                    "admin", "reshard", "--job", job, "--redis", eps[0] + "," + eps[1], "--to",
                    eps.joined(separator: ","),
                    "--json",
                ])
                #expect(moved.status.succeeded, "\(moved.stderr)")
                let status = train.wait(timeout: .seconds(240))
                #expect(
                    status?.succeeded == true, "\((try? String(contentsOfFile: dir + "/err", encoding: .utf8)) ?? "")")
                let out = (try? String(contentsOfFile: dir + "/out", encoding: .utf8)) ?? ""
                #expect(json(out)["shards"] as? Int == 3)
                let jobs = try smlt(["admin", "jobs", "--redis", eps.joined(separator: ","), "--json"])
                #expect(jobs.stdout.contains("\"epoch\" : 2"), "\(jobs.stdout)")
                let reference = try smlt(args + ["--reference"])
                #expect(json(out)["param_digest"] as? String == digest(reference))
            }
        }
    }
}

/// Child processes of `parent` as (role, pid), the role being `worker`, `serve` or the command.
func children(of parent: pid_t) -> [(String, pid_t)] {
    let all = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
    return all.compactMap { entry -> (String, pid_t)? in
        guard let pid = pid_t(entry),
            let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 2, pid_t(fields[1]) == parent,
            let cmd = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline")
        else { return nil }
        let args = cmd.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
        let role = args.contains("worker") ? "worker" : args.contains("serve") ? "serve" : (args.first ?? "")
        return (role, pid)
    }
}

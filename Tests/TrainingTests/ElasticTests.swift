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
                // The move's journal went with its copies.
                #expect(try c.run(["EXISTS", JobKeys(job: "halfway").moving]).integer == 0)
            }
        }

        /// A driver that dies in the middle of a move, before its switch or after it, leaves copies
        /// and the move's journal; `tidy` (which `smlt train --resume` and the next move run)
        /// removes what the map in force does not need and nothing else.
        @Test(arguments: ["before the switch", "after the switch"])
        func aMoveWhoseDriverDiedIsTidiedUp(died: String) throws {
            try withRedisServers(2) { servers in
                let job = "died-\(died.hasPrefix("before") ? "b" : "a")"
                let keys = JobKeys(job: job)
                let m = try makeJob(job, Array(servers.prefix(1)), workers: 2)
                let eps = servers.map(\.endpoint)
                // A named object that the move gives to the new shard.
                let name = (0..<100).map { "progress-\($0)" }.first {
                    JobObjects.shard(for: $0, job: job, shards: eps.map(\.description)) == 1
                }!
                try JobObjects(m).set(name, [1, 2, 3])
                let before = try m.read(.params).values
                let connections = try eps.map { try RedisConnection($0) }
                // Every key of the job (and the job set) on each server, as DUMPs.
                func snapshot() throws -> [[String: [UInt8]]] {
                    try connections.map { c in
                        var dumps: [String: [UInt8]] = [:]
                        for pattern in keys.patterns + [JobKeys.jobs] {
                            for key in try c.scanKeys(matching: pattern) {
                                dumps[key] = try c.run(["DUMP", key]).bytes
                            }
                        }
                        return dumps
                    }
                }
                let atSwitch = Mutex<[[String: [UInt8]]]>([])
                let config = TrainingConfig(workers: 2, steps: 5, learningRate: 0.5, momentum: 0.9, weightDecay: 0.01)
                let outcome = try Resharder(m, options: RedisOptions()).move(
                    to: eps, step: 0, config: config,
                    beforeSwitch: { atSwitch.withLock { $0 = (try? snapshot()) ?? [] } })
                #expect(outcome.chunksMoved > 0)
                let dumps = atSwitch.withLock { $0 }
                try #require(dumps.count == 2)
                #expect(dumps[0][keys.moving] != nil, "the journal is written before the switch")
                #expect(try connections[0].run(["EXISTS", keys.moving]).integer == 0, "and removed after")
                func restore(_ server: Int, only: (String) -> Bool = { _ in true }) throws {
                    let c = connections[server]
                    if only(JobKeys.jobs) {
                        for pattern in keys.patterns + [JobKeys.jobs] {
                            for key in try c.scanKeys(matching: pattern) { try c.run(["DEL", key]) }
                        }
                    }
                    for (key, dump) in dumps[server] where only(key) {
                        try c.run(RedisCommand("RESTORE", key, "0").appending(bytes: dump).appending("REPLACE"))
                    }
                }
                let expectedRemoved: Int
                if died.hasPrefix("before") {
                    // Everything as it was when the driver died: the old map, copies on shard 1.
                    try restore(0)
                    try restore(1)
                    expectedRemoved = 0
                } else {
                    // The new map is in force, but shard 0 still holds what moved, and the journal.
                    let moved = Set(
                        (0..<m.map.assignment.count).filter { outcome.manager.map.assignment[$0] == 1 }.flatMap { c in
                            [keys.params(chunk: c), keys.optimizer(chunk: c)]
                        } + [keys.object(name), keys.moving])
                    try restore(0) { moved.contains($0) }
                    // Version 0 has no optimizer state: only the blobs the snapshot had come back.
                    expectedRemoved = moved.filter { dumps[0][$0] != nil }.count - 1
                }
                let reopened = try ShardManager.open(job: job, endpoints: [eps[0]])
                #expect(reopened.map.epoch == (died.hasPrefix("before") ? m.map.epoch : m.map.epoch + 1))
                let tidied = try #require(try Resharder.tidy(reopened, options: RedisOptions()))
                #expect(tidied.keysRemoved == expectedRemoved)
                #expect(tidied.shardsForgotten == (died.hasPrefix("before") ? [eps[1].description] : []))
                #expect(tidied.skipped.isEmpty)
                #expect(try Resharder.tidy(reopened, options: RedisOptions()) == nil, "the journal is gone")
                // Each chunk's blobs and the object are on their owner only, and the model is whole.
                let map = reopened.map
                for (i, c) in connections.enumerated() {
                    let onIt = Set(try keys.patterns.flatMap { try c.scanKeys(matching: $0) })
                    for chunk in 0..<map.assignment.count {
                        let owner = map.shards.firstIndex(of: eps[i].description) == map.assignment[chunk]
                        #expect(onIt.contains(keys.params(chunk: chunk)) == owner, "chunk \(chunk) on server \(i)")
                    }
                    let objectOwner = JobObjects.shard(for: name, job: job, shards: map.shards)
                    #expect(onIt.contains(keys.object(name)) == (map.shards[objectOwner] == eps[i].description))
                }
                #expect(try reopened.read(.params).values == before)
                #expect(try JobObjects(reopened).get(name) == [1, 2, 3])
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

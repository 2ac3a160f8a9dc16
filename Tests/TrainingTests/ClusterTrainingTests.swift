import Foundation
import LocalProcesses
import RedisClient
import ShardManager
import TestSupport
import Testing
import TrainingProtocol

/// Training on a real local Redis Cluster (3 masters, 3 replicas, `smlt serve` on the whole
/// cluster): a master killed mid-run, or the home lane's slot migrated to another master
/// mid-run, ends with the same `param_digest` as the same job on independent shards.
@Suite(.serialized) struct ClusterTrainingTests {
    static let password = "cluster-train-secret"
    static let args = [
        "train", "--dataset", "digits", "--workers", "3", "--steps", "300", "--chunk-elements", "128", "--json",
    ]

    /// The digest of the same job on shards `smlt train` starts itself (independent servers).
    static let independentDigest: String? = {
        let run = try? smlt(args)
        return run.flatMap { json($0.stdout)["param_digest"] as? String }
    }()

    @Test func aMasterKilledMidRunChangesNothing() throws {
        try withClusterJob("fail") { cluster, manager, seeds in
            let lane = try #require(RedisEndpoint(parsing: manager.map.shards[0]).laneTag)
            let client = try ClusterClient(seeds: cluster.endpoints, options: RedisOptions(password: Self.password))
            let master = try #require(client.slots.master(for: HashSlot(key: "{\(lane)}")))
            try #require(cluster.nodes.first { $0.endpoint == master }).kill()
        }
    }

    @Test func aSlotMigrationMidRunChangesNothing() throws {
        try withClusterJob("migrate") { cluster, manager, seeds in
            let lane = try #require(RedisEndpoint(parsing: manager.map.shards[0]).laneTag)
            let options = RedisOptions(password: Self.password)
            let client = try ClusterClient(seeds: cluster.endpoints, options: options)
            let slot = HashSlot(key: "{\(lane)}")
            let source = try #require(client.slots.master(for: slot))
            let target = try #require(client.slots.allMasters.first { $0 != source })
            try migrate(slot, from: source, to: target, masters: client.slots.allMasters, options: options)
            #expect(try ClusterClient(seeds: [target], options: options).slots.master(for: slot) == target)
        }
    }

    /// `smlt admin` on a cluster: every node with its role, slots and reachability, the lanes and
    /// their jobs; `jobs` and `chunks` as on plain shards. A server not in cluster mode is refused.
    @Test func adminShowsTheCluster() throws {
        let plain = try startTestRedis()
        let refused = try smlt(["train", "--steps", "5", "--redis", "cluster://\(plain.endpoint)", "--job", "x"])
        #expect(!refused.status.succeeded)
        #expect(refused.stderr.contains("not in cluster mode"), "\(refused.stderr)")
        plain.stop()

        let cluster = try RedisClusterProcesses()
        defer { cluster.stop() }
        let seeds = "cluster://\(cluster.endpoints[1])"
        let serve = try ChildProcess(
            smltBinary(), arguments: ["serve", "--redis", seeds], stdout: .discard, stderr: .discard)
        defer { _ = serve.terminate() }
        let job = "cluster-admin-\(UUID().uuidString.prefix(6))"
        let run = try smlt(["train", "--dataset", "digits", "--steps", "20", "--redis", seeds, "--job", job, "--json"])
        #expect(run.status.succeeded, "\(run.stderr.suffix(2000))")

        let shards = try smlt(["admin", "shards", "--redis", seeds, "--json"])
        #expect(shards.status.succeeded, "\(shards.stderr)")
        let status = json(shards.stdout)
        let nodes = try #require(status["nodes"] as? [[String: Any]])
        #expect(nodes.count == 6)
        #expect(nodes.allSatisfy { $0["reachable"] as? Bool == true && $0["role"] != nil && $0["slots"] != nil })
        let masters = nodes.filter { $0["role"] as? String == "master" }
        #expect(masters.count == 3)
        #expect(masters.map { $0["slot_count"] as? Int ?? 0 }.reduce(0, +) == 16_384)
        #expect(masters.allSatisfy { ($0["lanes"] as? [String])?.count == 1 && ($0["jobs"] as? [String]) == [job] })
        #expect(nodes.filter { $0["role"] as? String == "replica" }.allSatisfy { $0["replication_lag_bytes"] != nil })
        #expect((status["lanes"] as? [Any])?.count == 3)

        let jobs = try smlt(["admin", "jobs", "--redis", seeds])
        #expect(jobs.status.succeeded && jobs.stdout.contains(job), "\(jobs.stdout)\(jobs.stderr)")
        let chunks = try smlt(["admin", "chunks", "--redis", seeds, "--job", job, "--json"])
        #expect(chunks.status.succeeded, "\(chunks.stderr)")
        #expect(
            chunks.stdout.contains("\"version\" : 20") || chunks.stdout.contains("\"version\":20"), "\(chunks.stdout)")

        // A replica that died is reported, and the command fails.
        let replica = try #require(
            nodes.first { $0["role"] as? String == "replica" }.flatMap { $0["endpoint"] as? String })
        try #require(cluster.nodes.first { $0.endpoint.description == replica }).kill()
        let after = try smlt(["admin", "shards", "--redis", seeds, "--json"])
        #expect(!after.status.succeeded)
        let down = (json(after.stdout)["nodes"] as? [[String: Any]] ?? []).first {
            $0["endpoint"] as? String == replica
        }
        #expect(down?["reachable"] as? Bool == false, "\(after.stdout)")
    }

    /// Starts a cluster and `smlt serve` for it, runs the digits job on it, calls `disturb`
    /// once the home lane has published version 40, and checks the run's digest.
    private func withClusterJob(
        _ name: String,
        _ disturb: (RedisClusterProcesses, ShardManager, String) throws -> Void
    ) throws {
        let cluster = try RedisClusterProcesses(password: Self.password)
        defer { cluster.stop() }
        let seeds = "cluster://\(cluster.endpoints[0])"
        let dir = NSTemporaryDirectory() + "smlt-cluster-\(name)-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var env = ProcessInfo.processInfo.environment
        env["SMLT_DATA_DIR"] = packageRoot() + "/data"
        env["SMLT_REDIS_PASSWORD"] = Self.password
        let serve = try ChildProcess(
            smltBinary(), arguments: ["serve", "--redis", seeds], environment: env, stdout: .discard,
            stderr: .file("\(dir)/serve.log"))
        defer { _ = serve.terminate() }
        let job = "cluster-\(name)-\(UUID().uuidString.prefix(6))"
        let train = try ChildProcess(
            smltBinary(), arguments: Self.args + ["--redis", seeds, "--job", job], environment: env,
            stdout: .file("\(dir)/out"), stderr: .file("\(dir)/err"))
        defer { _ = train.terminate() }
        let options = RedisOptions(password: Self.password)
        let deadline = ContinuousClock.now + .seconds(120)
        var manager: ShardManager?
        var version = -1
        while version < 40 && ContinuousClock.now < deadline && train.isRunning {
            sleepFor(.milliseconds(50))
            if manager == nil {
                manager = try? ShardManager.open(
                    job: job, endpoints: [try RedisEndpoint(parsing: seeds)], options: options)
            }
            version = (try? manager?.publishedVersions().compactMap { $0 }.min()) ?? -1
        }
        let m = try #require(manager, "the job never appeared: \(read("\(dir)/err"))")
        #expect(version >= 40 && version < 250, "the disturbance did not come mid-run (version \(version))")
        try disturb(cluster, m, seeds)
        let status = train.wait(timeout: .seconds(240)) ?? train.terminate()
        let out = json(read("\(dir)/out"))
        #expect(status.succeeded, "\(status): \(read("\(dir)/err").suffix(2000))")
        #expect(out["steps"] as? Int == 300)
        #expect(out["shards"] as? Int == 3)
        let digest = try #require(out["param_digest"] as? String)
        #expect(digest == Self.independentDigest, "the cluster run differs from the run on independent shards")
        #expect(serve.isRunning, "smlt serve died: \(read("\(dir)/serve.log").suffix(2000))")
    }
}

/// Moves `slot` from `source` to `target` the way `redis-cli --cluster reshard` does: importing
/// and migrating states, MIGRATE of its keys in batches, then the new owner announced.
func migrate(
    _ slot: HashSlot, from source: RedisEndpoint, to target: RedisEndpoint, masters: [RedisEndpoint],
    options: RedisOptions
) throws {
    let src = try RedisConnection(source, options: options)
    let dst = try RedisConnection(target, options: options)
    let srcID = try #require(try src.run(["CLUSTER", "MYID"]).text)
    let dstID = try #require(try dst.run(["CLUSTER", "MYID"]).text)
    try dst.run(["CLUSTER", "SETSLOT", "\(slot)", "IMPORTING", srcID])
    try src.run(["CLUSTER", "SETSLOT", "\(slot)", "MIGRATING", dstID])
    guard case .tcp(let host, let port) = target.address else { return }
    while true {
        let keys = (try src.run(["CLUSTER", "GETKEYSINSLOT", "\(slot)", "20"]).array ?? []).compactMap(\.text)
        if keys.isEmpty { break }
        var command = RedisCommand(strings: ["MIGRATE", host, "\(port)", "", "0", "10000"])
        if let password = options.password { command = command.appending("AUTH", password) }
        try src.run(
            RedisCommand(strings: command.arguments.map { String(decoding: $0, as: UTF8.self) } + ["KEYS"] + keys))
    }
    for node in [target, source] + masters.filter({ $0 != source && $0 != target }) {
        try RedisConnection(node, options: options).run(["CLUSTER", "SETSLOT", "\(slot)", "NODE", dstID])
    }
}

private func read(_ path: String) -> String { (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }

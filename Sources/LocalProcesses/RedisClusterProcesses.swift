import Foundation
import RedisClient

/// A throw-away Redis Cluster of local `redis-server --cluster-enabled yes` processes on free
/// loopback ports: `masters` masters with `replicasPerMaster` replicas each, joined by
/// `redis-cli --cluster create`. For tests and demos; `stop()` (also run on deinit) stops every
/// node and removes their directory.
public final class RedisClusterProcesses: Sendable {
    /// Every node, masters first as they were created (a failover changes who is master).
    public let nodes: [RedisServerProcess]
    public let password: String?
    private let directory: String

    /// Starts the nodes, creates the cluster and waits until every slot is served and every
    /// replica has attached.
    public init(masters: Int = 3, replicasPerMaster: Int = 1, password: String? = nil) throws {
        precondition(masters >= 3, "redis-cli --cluster create needs at least 3 masters")
        let dir = NSTemporaryDirectory() + "smlt-cluster-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var nodes: [RedisServerProcess] = []
        do {
            for i in 0..<(masters * (1 + replicasPerMaster)) {
                // The cluster bus gets a free port of its own (by default it is port + 10000).
                var args = [
                    "--cluster-enabled", "yes", "--cluster-config-file", "\(dir)/nodes-\(i).conf",
                    "--cluster-node-timeout", "1000", "--cluster-port", "\(try freeLoopbackPort())", "--dir", dir,
                ]
                if let password { args += ["--masterauth", password] }
                if let pids = ProcessInfo.processInfo.environment["SMLT_TEST_PIDDIR"] {
                    args += ["--pidfile", "\(pids)/cluster-\(UUID().uuidString).pid"]
                }
                nodes.append(try RedisServerProcess(password: password, extraArguments: args))
            }
            var create = ["--cluster", "create"] + nodes.map(\.endpoint.description)
            create += ["--cluster-replicas", "\(replicasPerMaster)", "--cluster-yes"]
            var env = ProcessInfo.processInfo.environment
            if let password { env["REDISCLI_AUTH"] = password }
            let log = "\(dir)/create.log"
            let cli = try ChildProcess(
                "redis-cli", arguments: create, environment: env, stdout: .file(log), stderr: .file(log))
            let status = cli.wait(timeout: .seconds(60)) ?? cli.terminate()
            guard status.succeeded else {
                let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
                throw RedisError(
                    .serverError, endpoint: nodes[0].endpoint.description,
                    "redis-cli --cluster create: \(status)\n\(output)")
            }
            self.nodes = nodes
            self.password = password
            directory = dir
        } catch {
            for n in nodes { n.stop() }
            try? FileManager.default.removeItem(atPath: dir)
            throw error
        }
        try waitUntilHealthy(replicas: masters * replicasPerMaster)
    }

    deinit { stop() }

    /// The nodes' endpoints, to use as seeds.
    public var endpoints: [RedisEndpoint] { nodes.map(\.endpoint) }

    /// Stops every node and removes their files.
    public func stop() {
        for n in nodes { n.stop() }
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Waits until every running node reports `cluster_state:ok` and `replicas` replicas are
    /// attached to their masters, seen from both sides: the replica's link is up
    /// (`master_link_status:up`) and its master counts it online (`state=online`, which is what
    /// `ROLE` lists). A replica's link comes up before its master has its first acknowledgement;
    /// a write in between is not waited for (`WAIT` sees no replica), so a failover then could
    /// lose it.
    public func waitUntilHealthy(replicas: Int, timeout: Duration = .seconds(30)) throws {
        let deadline = ContinuousClock.now + timeout
        var last = ""
        while ContinuousClock.now < deadline {
            var ok = true
            var linked = 0
            var online = 0
            for n in nodes where n.isRunning {
                guard let c = try? RedisConnection(n.endpoint, options: RedisOptions(password: password)),
                    let info = try? c.run(["CLUSTER", "INFO"]).text,
                    let repl = try? c.run(["INFO", "replication"]).text
                else {
                    ok = false
                    break
                }
                if !info.contains("cluster_state:ok") {
                    ok = false
                    last = "\(n.endpoint) is not in cluster_state:ok"
                }
                if repl.contains("role:slave") && repl.contains("master_link_status:up") { linked += 1 }
                if repl.contains("role:master") { online += repl.components(separatedBy: "state=online").count - 1 }
            }
            if ok && linked >= replicas && online >= replicas { return }
            if ok { last = "\(linked) of \(replicas) replicas attached, \(online) online on their masters" }
            sleepFor(.milliseconds(100))
        }
        throw RedisError(
            .timedOut, endpoint: nodes[0].endpoint.description, "the cluster did not become healthy: \(last)")
    }
}

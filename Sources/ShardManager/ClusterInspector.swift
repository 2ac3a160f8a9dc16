import Foundation
import KeySchema
import RedisClient

/// One node of a Redis Cluster as `smlt admin shards` reports it.
public struct ClusterNodeStatus: Codable, Sendable {
    public var endpoint: String
    /// `master` or `replica`.
    public var role: String
    /// For a replica, its master's endpoint.
    public var master: String?
    /// The slot ranges the node serves, as `[first, last]` pairs (masters only).
    public var slots: [[Int]]
    public var slotCount: Int
    public var reachable: Bool
    /// The cluster's own flags for the node (`fail`, `fail?`, …) besides its role.
    public var flags: [String]
    /// The lanes (SMLT shards) whose slot the node serves, and the jobs registered on them.
    public var lanes: [String]
    public var jobs: [String]
    /// For a replica: bytes of its master's replication stream it has not processed yet, and
    /// whether its link to the master is up.
    public var replicationLagBytes: Int?
    public var masterLinkUp: Bool?
    public var usedMemory: Int?
    public var error: String?

    enum CodingKeys: String, CodingKey {
        case endpoint, role, master, slots, reachable, flags, lanes, jobs, error
        case slotCount = "slot_count"
        case replicationLagBytes = "replication_lag_bytes"
        case masterLinkUp = "master_link_up"
        case usedMemory = "used_memory"
    }
}

/// A Redis Cluster as `smlt admin shards` reports it: its nodes, and SMLT's lanes on it.
public struct ClusterStatus: Codable, Sendable {
    public var nodes: [ClusterNodeStatus]
    public var lanes: [ShardStatus]
}

/// Read-only views of a Redis Cluster for operators.
public enum ClusterInspector {
    /// Every node the cluster knows (`CLUSTER NODES`, failed ones included), with its role, slots,
    /// reachability, lanes and replication lag, and the status of every recorded lane.
    public static func status(of cluster: RedisEndpoint, options: RedisOptions) throws(ShardError) -> ClusterStatus {
        var lines: [Substring] = []
        var lastError: RedisError?
        for seed in cluster.clusterSeeds + ClusterLanes.nodes(seeds: cluster.clusterSeeds, options: options) {
            do {
                let c = try RedisConnection(seed, options: options)
                let reply = try c.run(["CLUSTER", "NODES"])
                lines = (reply.text ?? "").split(whereSeparator: \.isNewline)
                break
            } catch { lastError = error }
        }
        if lines.isEmpty {
            if let lastError, lastError.message.contains("cluster support disabled") {
                throw ShardError(
                    .invalidSpec,
                    "\(cluster.clusterSeeds[0]) is not in cluster mode (cluster_enabled:0); give it without cluster://")
            }
            throw ShardError(lastError ?? RedisError(.connectionFailed, endpoint: "\(cluster)", "no node answered"))
        }
        let lanes = (try? ClusterLanes.registered(on: cluster, options: options)) ?? []
        let laneStatus = ShardInspector.shards(lanes, options: options)
        struct Parsed {
            var id: String
            var endpoint: RedisEndpoint
            var flags: [String]
            var masterID: String?
            var slots: [ClosedRange<Int>]
        }
        let parsed: [Parsed] = lines.compactMap { line in
            let f = line.split(separator: " ")
            guard f.count >= 8 else { return nil }
            let address = f[1].split(separator: "@")[0].split(separator: ",")[0]
            guard let endpoint = try? RedisEndpoint(parsing: String(address)) else { return nil }
            let flags = f[2].split(separator: ",").map(String.init)
            let slots: [ClosedRange<Int>] = f.dropFirst(8).compactMap { s in
                if s.hasPrefix("[") { return nil }
                let p = s.split(separator: "-").compactMap { Int($0) }
                if p.count == 1 { return p[0]...p[0] }
                return p.count == 2 && p[0] <= p[1] ? p[0]...p[1] : nil
            }
            return Parsed(
                id: String(f[0]), endpoint: endpoint, flags: flags, masterID: f[3] == "-" ? nil : String(f[3]),
                slots: slots)
        }
        let byID = Dictionary(parsed.map { ($0.id, $0.endpoint) }, uniquingKeysWith: { a, _ in a })
        let offsets = Parallel.map(parsed.count) { i in replication(parsed[i].endpoint, options: options) }
        var nodes: [ClusterNodeStatus] = []
        for (p, info) in zip(parsed, offsets) {
            let isMaster = p.flags.contains("master")
            var laneTags: [String] = []
            var jobs = Set<String>()
            for (lane, status) in zip(lanes, laneStatus) {
                guard let tag = lane.laneTag else { continue }
                let slot = Int(HashSlot(key: "{\(tag)}").value)
                if isMaster && p.slots.contains(where: { $0.contains(slot) }) {
                    laneTags.append(tag)
                    jobs.formUnion(status.jobs)
                }
            }
            var node = ClusterNodeStatus(
                endpoint: p.endpoint.description, role: isMaster ? "master" : "replica",
                master: p.masterID.flatMap { byID[$0]?.description },
                slots: p.slots.map { [$0.lowerBound, $0.upperBound] },
                slotCount: p.slots.reduce(0) { $0 + $1.count }, reachable: info.error == nil,
                flags: p.flags.filter { !["master", "slave", "myself"].contains($0) }, lanes: laneTags,
                jobs: jobs.sorted(), usedMemory: info.usedMemory, error: info.error)
            if !isMaster, let offset = info.replicaOffset,
                let m = p.masterID.flatMap({ id in parsed.firstIndex { $0.id == id } }),
                let masterOffset = offsets[m].masterOffset
            {
                node.replicationLagBytes = max(0, masterOffset - offset)
            }
            if !isMaster { node.masterLinkUp = info.linkUp }
            nodes.append(node)
        }
        nodes.sort { ($0.role, $0.endpoint) < ($1.role, $1.endpoint) }
        return ClusterStatus(nodes: nodes, lanes: laneStatus)
    }

    /// What `INFO` says of a node's replication and memory (or why it could not be asked).
    struct Replication: Sendable {
        var masterOffset: Int?
        var replicaOffset: Int?
        var linkUp: Bool?
        var usedMemory: Int?
        var error: String?
    }

    static func replication(_ node: RedisEndpoint, options: RedisOptions) -> Replication {
        var r = Replication()
        do {
            let c = try RedisConnection(node, options: options)
            let info = (try c.run(["INFO", "replication"]).text ?? "") + (try c.run(["INFO", "memory"]).text ?? "")
            for line in info.split(whereSeparator: \.isNewline) {
                let kv = line.split(separator: ":", maxSplits: 1)
                guard kv.count == 2 else { continue }
                switch kv[0] {
                case "master_repl_offset": r.masterOffset = Int(kv[1])
                case "slave_repl_offset": r.replicaOffset = Int(kv[1])
                case "master_link_status": r.linkUp = kv[1] == "up"
                case "used_memory": r.usedMemory = Int(kv[1])
                default: break
                }
            }
        } catch { r.error = "\(error)" }
        return r
    }
}

import KeySchema
import RedisClient

/// The shards of jobs on a Redis Cluster: lanes, each a hash tag whose slot one master serves
/// (docs/wire-format.md, "Redis Cluster").
///
/// The lanes SMLT chooses have tags `smlt-N`. The lanes of a new job are spread over the masters: the job's shard
/// `i` goes to master `i mod M` (masters in the order of their first slot), on the `i / M`-th
/// tag, in the order of N, whose slot that master serves. Every lane ever used is recorded in
/// the set `smlt:lanes` (also lanes `smlt admin reshard` moves a job to), which is how
/// parameter servers and tools given only the cluster find them.
public enum ClusterLanes {
    /// The set of lane tags in use on a cluster.
    public static let registry = "smlt:lanes"

    /// Chooses `count` lanes (one per master when nil) for a new job on `cluster` and records
    /// them. Refuses a cluster that is down or leaves slots uncovered.
    public static func choose(on cluster: RedisEndpoint, count: Int?, options: RedisOptions) throws(ShardError)
        -> [RedisEndpoint]
    {
        let client = try healthy(cluster, options: options)
        let masters = client.slots.allMasters
        let k = count ?? masters.count
        guard k >= 1 else { throw ShardError(.invalidSpec, "a job needs at least one shard") }
        var tags: [[String]] = masters.map { _ in [] }
        let perMaster = (k + masters.count - 1) / masters.count
        var n = 0
        while tags.contains(where: { $0.count < perMaster }) {
            let tag = "smlt-\(n)"
            if let master = client.slots.master(for: HashSlot(key: "{\(tag)}")),
                let m = masters.firstIndex(of: master), tags[m].count < perMaster
            {
                tags[m].append(tag)
            }
            n += 1
        }
        let chosen = (0..<k).map { tags[$0 % masters.count][$0 / masters.count] }
        // The lanes name every node as a seed, so that a process started after one of them died
        // (a relaunched worker, after a failover) still reaches the cluster.
        let given = cluster.clusterSeeds
        let seeds = given + client.slots.allNodes.filter { !given.contains($0) }
        do {
            try client.run(
                RedisCommand(strings: ["SADD", registry] + chosen), slot: HashSlot(key: registry))
        } catch { throw ShardError(error) }
        return chosen.map { RedisEndpoint(cluster: seeds, tag: $0) }
    }

    /// Records the lanes among `endpoints` in their cluster's `smlt:lanes`.
    public static func record(_ endpoints: [RedisEndpoint], options: RedisOptions) throws(ShardError) {
        for lane in endpoints {
            guard let tag = lane.laneTag else { continue }
            do {
                let client = try ClusterClient(seeds: lane.clusterSeeds, options: options)
                try client.run(["SADD", registry, tag], slot: HashSlot(key: registry))
            } catch { throw ShardError(describe(error, lane)) }
        }
    }

    /// The lanes recorded on `cluster`, by tag.
    public static func registered(on cluster: RedisEndpoint, options: RedisOptions) throws(ShardError)
        -> [RedisEndpoint]
    {
        try registered(on: cluster, using: client(for: cluster, options: options))
    }

    /// The lanes recorded on `cluster`, read through `client` (a caller that asks again and
    /// again keeps one client, and its connections, for all of them).
    public static func registered(on cluster: RedisEndpoint, using client: ClusterClient) throws(ShardError)
        -> [RedisEndpoint]
    {
        do {
            let reply = try client.run(["SMEMBERS", registry], slot: HashSlot(key: registry))
            return (reply.array ?? []).compactMap(\.text).filter(isTag).sorted().map { cluster.lane($0) }
        } catch { throw ShardError(describe(error, cluster)) }
    }

    /// A client for `cluster` (its slot map read from the seeds).
    public static func client(for cluster: RedisEndpoint, options: RedisOptions) throws(ShardError) -> ClusterClient {
        do { return try ClusterClient(seeds: cluster.clusterSeeds, options: options) } catch {
            throw ShardError(describe(error, cluster))
        }
    }

    /// `endpoints` with every whole cluster replaced by its recorded lanes.
    public static func expand(_ endpoints: [RedisEndpoint], options: RedisOptions) throws(ShardError)
        -> [RedisEndpoint]
    {
        var out: [RedisEndpoint] = []
        for e in endpoints {
            if e.isCluster && e.laneTag == nil {
                out += try registered(on: e, options: options)
            } else {
                out.append(e)
            }
        }
        return out
    }

    /// A client for `cluster` after checking that it is a cluster, reports `cluster_state:ok`
    /// and serves every slot.
    public static func healthy(_ cluster: RedisEndpoint, options: RedisOptions) throws(ShardError) -> ClusterClient {
        let client = try client(for: cluster, options: options)
        guard client.slots.coversAllSlots else {
            throw ShardError(
                .invalidSpec,
                "the cluster at \(cluster) leaves slots without a master (CLUSTER SLOTS); assign every slot first")
        }
        guard let master = client.slots.allMasters.first else {
            throw ShardError(.invalidSpec, "the cluster at \(cluster) has no master")
        }
        do {
            let info = try client.connection(to: master).run(["CLUSTER", "INFO"]).text ?? ""
            if !info.contains("cluster_state:ok") {
                throw ShardError(
                    .invalidSpec,
                    "the cluster at \(cluster) reports cluster_state:fail (CLUSTER INFO on \(master)); repair it first")
            }
        } catch let error as ShardError {
            throw error
        } catch let error as RedisError {
            throw ShardError(error)
        } catch {
            throw ShardError(.redis, "\(error)")
        }
        return client
    }

    /// Every node of the cluster at `seeds`, as its slot map names them (empty when it cannot be
    /// read).
    public static func nodes(seeds: [RedisEndpoint], options: RedisOptions) -> [RedisEndpoint] {
        (try? ClusterClient(seeds: seeds, options: options))?.slots.allNodes ?? []
    }

    /// Whether `text` is a valid lane tag.
    static func isTag(_ text: String) -> Bool {
        (try? RedisEndpoint(parsing: "cluster://127.0.0.1:1/\(text)")) != nil
    }

    /// A Redis error reaching a cluster, with a hint when the node is not in cluster mode.
    private static func describe(_ error: RedisError, _ cluster: RedisEndpoint) -> RedisError {
        if error.message.contains("cluster support disabled") {
            return RedisError(
                .invalidEndpoint, endpoint: cluster.description,
                "the server is not in cluster mode (cluster_enabled:0); give its endpoint without cluster://")
        }
        return error
    }
}

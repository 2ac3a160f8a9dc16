import Foundation
import LocalProcesses
import Testing

@testable import RedisClient

/// Connections to cluster lanes (`cluster://…/TAG`) on a real local cluster: every key gets the
/// lane's hash tag, so multi-key commands and transactions work; writes reach the replica before
/// they return, so a master's failover loses nothing a caller saw done; bad input is refused.
@Suite(.serialized) struct ClusterLaneTests {
    @Test func laneEndpointsParse() throws {
        let e = try RedisEndpoint(parsing: "cluster://127.0.0.1:7000,[::1]:7001/smlt-3")
        #expect(e.laneTag == "smlt-3" && e.clusterSeeds.count == 2)
        #expect(e.description == "cluster://127.0.0.1:7000,[::1]:7001/smlt-3")
        #expect(
            try RedisEndpoint.list(parsing: "cluster://a:1,b:2") == [try RedisEndpoint(parsing: "cluster://a:1,b:2")])
        let lanes = try RedisEndpoint.list(parsing: "a:1,cluster://b:2,c:3/t0,cluster://b:2/t1,d:4,cluster://e:5,f:6")
        #expect(
            lanes.map(\.description) == [
                "a:1", "cluster://b:2,c:3/t0", "cluster://b:2/t1", "d:4", "cluster://e:5,f:6",
            ])
        let other = try RedisEndpoint(parsing: "cluster://10.0.0.9:7005/smlt-3")
        #expect(e.sameShard(as: other) && !e.sameShard(as: other.lane("smlt-4")))
        for bad in [
            "cluster://", "cluster://a:1/", "cluster://a:1/x y", "cluster://unix:/tmp/s/t", "cluster://a:1/{t}",
        ] {
            #expect(throws: RedisError.self, "\(bad)") { try RedisEndpoint(parsing: bad) }
        }
        // A connection needs a lane, not a whole cluster.
        #expect(throws: RedisError.self) { try RedisConnection(try RedisEndpoint(parsing: "cluster://127.0.0.1:1")) }
    }

    @Test func keysGetTheLaneTagAndCommandsWork() throws {
        let cluster = try RedisClusterProcesses(password: "lane-secret")
        let options = RedisOptions(password: "lane-secret")
        let lane = try RedisConnection(RedisEndpoint(cluster: [cluster.endpoints[5]], tag: "lane-a"), options: options)
        try lane.run(["SET", "smlt:{j}:map", "m"])
        try lane.run(["SET", "smlt:{j/3}:params", "p"])
        // Keys of different tags in one transaction and one MGET: they all hash to the lane.
        let exec = try lane.pipeline([["MULTI"], ["SET", "smlt:{j}:a", "1"], ["SADD", "smlt:{j/9}:s", "x"], ["EXEC"]])
        #expect(exec.last?.array?.count == 2)
        #expect(try lane.run(["MGET", "smlt:{j}:map", "smlt:{j/3}:params"]).array?.compactMap(\.text) == ["m", "p"])
        try lane.run(["RPUSH", "smlt:{k}:inbox:0", "w"])
        let popped = try lane.run(["BLPOP", "smlt:{j}:inbox:0", "smlt:{k}:inbox:0", "1"], blockingFor: .seconds(1))
        #expect(popped.array?.first?.text == "smlt:{k}:inbox:0", "BLPOP names the key without the lane's prefix")
        try lane.run(["XADD", "smlt:{j}:versions:0", "1-1", "version", "1"])
        let read = try lane.run(["XREAD", "COUNT", "1", "STREAMS", "smlt:{j}:versions:0", "0-0"])
        #expect(read.array?.first?.array?.first?.text == "smlt:{j}:versions:0")
        #expect(Set(try lane.scanKeys(matching: "smlt:{j}*")) == ["smlt:{j}:map", "smlt:{j}:a", "smlt:{j}:versions:0"])
        // On the cluster, the keys carry the prefix and sit on the lane's master.
        let client = try ClusterClient(seeds: cluster.endpoints, options: options)
        let slot = HashSlot(key: "{lane-a}")
        #expect(try client.run(["GET", "{lane-a}smlt:{j}:map"], slot: slot).text == "m")
        #expect(lane.node == client.slots.master(for: slot))
        // A command whose keys the lane cannot find is refused rather than sent unprefixed.
        #expect(throws: RedisError.self) { try lane.run(["RENAME", "a", "b"]) }
        // Two lanes do not see each other's keys.
        let other = try RedisConnection(RedisEndpoint(cluster: cluster.endpoints, tag: "lane-b"), options: options)
        #expect(try other.run(["GET", "smlt:{j}:map"]) == .null)
        #expect(try lane.deleteKeys(matching: "smlt:{j/*") == 2)
        #expect(try lane.run(["EXISTS", "smlt:{j}:map"]).integer == 1)
    }

    /// A master killed right after a write: the write was on its replica (WAIT), and the lane
    /// finds the new master by itself.
    @Test func aLaneSurvivesItsMastersFailover() throws {
        let cluster = try RedisClusterProcesses()
        let lane = try RedisConnection(RedisEndpoint(cluster: cluster.endpoints, tag: "lane-f"))
        for i in 0..<50 { try lane.run(["RPUSH", "list", "\(i)"]) }
        let old = lane.node
        try #require(cluster.nodes.first { $0.endpoint == old }).kill()
        let length = try lane.run(["LLEN", "list"]).integer
        #expect(length == 50, "a write the caller saw done was lost: \(String(describing: length)) of 50 left")
        #expect(lane.node != old)
        try lane.run(["RPUSH", "list", "50"])
        #expect(try lane.run(["LLEN", "list"]).integer == 51)
    }

    @Test func aServerNotInClusterModeIsNamed() throws {
        let plain = try RedisServerProcess()
        let error = #expect(throws: RedisError.self) {
            try RedisConnection(RedisEndpoint(cluster: [plain.endpoint], tag: "x"))
        }
        #expect(error?.message.contains("not in cluster mode") == true, "\(String(describing: error))")
    }
}

/// Clusters that cannot serve a lane give a clear error within a bound, never an endless retry.
@Suite(.serialized) struct ClusterLaneFailureTests {
    /// The slot's master says the key moved on (ASK), and the node it names sends it back
    /// (MOVED): the lane gives up after its redirect limit.
    @Test func aRedirectLoopIsAnError() throws {
        let cluster = try RedisClusterProcesses()
        let client = try ClusterClient(seeds: cluster.endpoints)
        let slot = HashSlot(key: "{loop}")
        let owner = try #require(client.slots.master(for: slot))
        let other = try #require(client.slots.allMasters.first { $0 != owner })
        let otherID = try #require(try RedisConnection(other).run(["CLUSTER", "MYID"]).text)
        // MIGRATING without IMPORTING on the other side: a missing key bounces between the two.
        try RedisConnection(owner).run(["CLUSTER", "SETSLOT", "\(slot)", "MIGRATING", otherID])
        let lane = try RedisConnection(RedisEndpoint(cluster: cluster.endpoints, tag: "loop"))
        let start = ContinuousClock.now
        let error = #expect(throws: RedisError.self) { try lane.run(["GET", "missing"]) }
        #expect(error?.message.contains("redirect") == true, "\(String(describing: error))")
        #expect(ContinuousClock.now - start < .seconds(20))
    }

    /// A node that refuses the credentials the others accept is named.
    @Test func credentialsOnlySomeNodesAcceptAreNamed() throws {
        let cluster = try RedisClusterProcesses(password: "right")
        let options = RedisOptions(password: "right")
        let client = try ClusterClient(seeds: cluster.endpoints, options: options)
        let master = try #require(client.slots.master(for: HashSlot(key: "{creds}")))
        let direct = try RedisConnection(master, options: options)
        try direct.run(["CONFIG", "SET", "requirepass", "other"])
        let seeds = cluster.endpoints.filter { $0 != master }
        let error = #expect(throws: RedisError.self) {
            try RedisConnection(RedisEndpoint(cluster: seeds, tag: "creds"), options: options).run(["GET", "k"])
        }
        #expect(error?.code == .authenticationFailed, "\(String(describing: error))")
        #expect(error?.description.contains(master.description) == true, "\(String(describing: error))")
    }

    /// A cluster with a slot nobody serves: the lane on it says so, after its retry window.
    @Test func anUncoveredSlotIsNamed() throws {
        let cluster = try RedisClusterProcesses()
        let client = try ClusterClient(seeds: cluster.endpoints)
        let slot = HashSlot(key: "{hole}")
        let master = try #require(client.slots.master(for: slot))
        for node in cluster.endpoints {
            _ = try? RedisConnection(node).run(["CLUSTER", "DELSLOTS", "\(slot)"])
        }
        _ = master
        let start = ContinuousClock.now
        let error = #expect(throws: RedisError.self) {
            let lane = try RedisConnection(RedisEndpoint(cluster: cluster.endpoints, tag: "hole"))
            try lane.run(["GET", "k"])
        }
        let text = String(describing: error)
        #expect(text.contains("slot") && (text.contains("uncovered") || text.contains("CLUSTERDOWN")), "\(text)")
        #expect(ContinuousClock.now - start < .seconds(45))
    }
}

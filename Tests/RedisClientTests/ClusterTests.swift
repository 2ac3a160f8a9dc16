import Foundation
import LocalProcesses
import Testing

@testable import RedisClient

/// The cluster connection layer against a real local Redis Cluster (3 masters, 3 replicas):
/// slots as Redis computes them, routing, `ASK` and `MOVED` during a slot migration, and a
/// master's failover.
@Suite(.serialized) struct ClusterTests {
    @Test func slotsOfKnownKeys() {
        // CRC16/XMODEM("123456789") is 0x31C3 (the check value of the algorithm).
        #expect(HashSlot.crc16(Array("123456789".utf8)) == 0x31C3)
        #expect(HashSlot(key: "123456789").value == 0x31C3 & 0x3FFF)
        #expect(HashSlot(key: "{user1000}.following") == HashSlot(key: "{user1000}.followers"))
        #expect(HashSlot(key: "foo{}{bar}") == HashSlot(key: "foo{}{bar}"))
        #expect(HashSlot(key: "foo{}{bar}") != HashSlot(key: "bar"))
        #expect(HashSlot(key: "foo{{bar}}zap") == HashSlot(key: "{bar"))
        #expect(HashSlot(key: "foo{bar}{zap}") == HashSlot(key: "bar"))
        #expect(HashSlot(16_384) == nil && HashSlot(-1) == nil)
    }

    @Test func redirectsAreParsed() {
        let node = RedisEndpoint(host: "10.0.0.1", port: 7000)
        #expect(
            ClusterRedirect("MOVED 3999 127.0.0.1:6381", from: node)
                == .moved(HashSlot(3999)!, RedisEndpoint(host: "127.0.0.1", port: 6381)))
        #expect(
            ClusterRedirect("ASK 1 :6390", from: node)
                == .ask(HashSlot(1)!, RedisEndpoint(host: "10.0.0.1", port: 6390)))
        #expect(ClusterRedirect("TRYAGAIN Multiple keys request during rehashing of slot", from: node) == .tryAgain)
        #expect(ClusterRedirect("CLUSTERDOWN The cluster is down", from: node) == .tryAgain)
        for bad in [
            "MOVED 16384 127.0.0.1:1", "MOVED x 127.0.0.1:1", "MOVED 1 127.0.0.1", "ERR wrong type", "MOVED 1 h:0",
        ] {
            #expect(ClusterRedirect(bad, from: node) == nil, "\(bad)")
        }
    }

    @Test func aDamagedSlotMapIsRefused() {
        let node = RedisEndpoint(host: "127.0.0.1", port: 7000)
        let master = RedisReply.array([.string(Array("127.0.0.1".utf8)), .integer(7001)])
        let bad: [RedisReply] = [
            .string([1]),
            .array([.array([.integer(0), .integer(16_384), master])]),
            .array([.array([.integer(10), .integer(5), master])]),
            .array([.array([.integer(0), .integer(10), .array([.integer(1)])])]),
            .array([.array([.integer(0), .integer(10), master]), .array([.integer(10), .integer(20), master])]),
        ]
        for reply in bad {
            #expect(throws: RedisError.self, "\(reply)") { try ClusterSlotMap.parse(reply, from: node) }
        }
        let ok = try? ClusterSlotMap.parse(
            .array([.array([.integer(0), .integer(16_383), .array([.string([]), .integer(7001)])])]), from: node)
        #expect(ok?.master(for: HashSlot(5)!) == RedisEndpoint(host: "127.0.0.1", port: 7001))
        #expect(ok?.coversAllSlots == true)
    }

    @Test func commandsGoToTheMasterOfTheirSlot() throws {
        let cluster = try RedisClusterProcesses(password: "cluster-secret")
        let options = RedisOptions(password: "cluster-secret")
        let client = try ClusterClient(seeds: [cluster.endpoints[4]], options: options)
        #expect(client.slots.coversAllSlots)
        #expect(client.slots.allMasters.count == 3)
        let probe = try RedisConnection(cluster.endpoints[0], options: options)
        for i in 0..<300 {
            let key = i % 3 == 0 ? "{job-\(i % 7)}:k\(i)" : "key:\(i)"
            // The slot Redis computes is ours.
            #expect(try probe.run(["CLUSTER", "KEYSLOT", key]).integer == Int64(HashSlot(key: key).value))
            try client.run(["SET", key, "v\(i)"], slot: HashSlot(key: key))
        }
        var perMaster: [RedisEndpoint: Int] = [:]
        for i in 0..<300 {
            let key = i % 3 == 0 ? "{job-\(i % 7)}:k\(i)" : "key:\(i)"
            let slot = HashSlot(key: key)
            let master = try #require(client.slots.master(for: slot))
            // Read straight from that node: the value is there, not elsewhere.
            let direct = try RedisConnection(master, options: options)
            #expect(try direct.run(["GET", key]).text == "v\(i)")
            #expect(try client.run(["GET", key], slot: slot).text == "v\(i)")
            perMaster[master, default: 0] += 1
        }
        #expect(perMaster.count == 3, "the keys did not spread over the masters: \(perMaster)")
        // A same-slot pipeline and a transaction.
        let slot = HashSlot(key: "{tx}")
        let replies = try client.pipeline(
            [["SET", "{tx}:a", "1"], ["INCR", "{tx}:a"], ["GET", "{tx}:a"]], slot: slot)
        #expect(replies.last?.text == "2")
        let exec = try client.transaction([["INCR", "{tx}:a"], ["SADD", "{tx}:s", "x"]], slot: slot)
        #expect(exec.first?.integer == 3 && exec.last?.integer == 1)
        // An error reply that is not a redirect is an error.
        #expect(throws: RedisError.self) { try client.run(["INCR", "key:1"], slot: HashSlot(key: "key:1")) }
    }

    /// While a slot migrates, moved keys answer `ASK` (followed with `ASKING`); once it is
    /// done, the old owner answers `MOVED` and the client reads the map again.
    @Test func aMigratingSlotIsFollowed() throws {
        let cluster = try RedisClusterProcesses()
        let client = try ClusterClient(seeds: cluster.endpoints)
        let slot = HashSlot(key: "{mig}")
        let source = try #require(client.slots.master(for: slot))
        let target = try #require(client.slots.allMasters.first { $0 != source })
        let src = try RedisConnection(source)
        let dst = try RedisConnection(target)
        for k in ["a", "b", "c"] { try client.run(["SET", "{mig}:\(k)", k], slot: slot) }
        let srcID = try #require(try src.run(["CLUSTER", "MYID"]).text)
        let dstID = try #require(try dst.run(["CLUSTER", "MYID"]).text)
        try dst.run(["CLUSTER", "SETSLOT", "\(slot)", "IMPORTING", srcID])
        try src.run(["CLUSTER", "SETSLOT", "\(slot)", "MIGRATING", dstID])
        guard case .tcp(let host, let port) = target.address else { return }
        try src.run(["MIGRATE", host, "\(port)", "", "0", "5000", "KEYS", "{mig}:a"])
        // a moved (ASK), b still at the source, d new (created at the target through ASK).
        let before = client.refreshes
        #expect(try client.run(["GET", "{mig}:a"], slot: slot).text == "a")
        #expect(try client.run(["GET", "{mig}:b"], slot: slot).text == "b")
        try client.run(["SET", "{mig}:d", "d"], slot: slot)
        try dst.run(["ASKING"])
        #expect(try dst.run(["EXISTS", "{mig}:d"]).integer == 1, "the new key was not created at the target")
        #expect(client.refreshes == before, "ASK must not change the slot map")
        // Finish the migration.
        try src.run(["MIGRATE", host, "\(port)", "", "0", "5000", "KEYS", "{mig}:b", "{mig}:c"])
        for c in [dst, src] { try c.run(["CLUSTER", "SETSLOT", "\(slot)", "NODE", dstID]) }
        for k in ["a", "b", "c", "d"] { #expect(try client.run(["GET", "{mig}:\(k)"], slot: slot).text == k) }
        #expect(client.refreshes > before)
        // Wait for the others to learn the new owner through the bus, then check the map.
        let deadline = ContinuousClock.now + .seconds(10)
        while client.slots.master(for: slot) != target && ContinuousClock.now < deadline {
            sleepFor(.milliseconds(100))
            try client.refresh()
        }
        #expect(client.slots.master(for: slot) == target)
    }

    /// A master killed with SIGKILL: its replica takes over and the client carries on.
    @Test func aFailedMasterIsReplaced() throws {
        let cluster = try RedisClusterProcesses()
        let client = try ClusterClient(seeds: cluster.endpoints)
        client.retryWindow = .seconds(30)
        let slot = HashSlot(key: "{fail}")
        try client.run(["SET", "{fail}:x", "1"], slot: slot)
        let old = try #require(client.slots.master(for: slot))
        // Let the replica copy the write before its master dies (replication is asynchronous).
        try client.run(["WAIT", "1", "2000"], slot: slot)
        let victim = try #require(cluster.nodes.first { $0.endpoint == old })
        victim.kill()
        #expect(try client.run(["INCR", "{fail}:x"], slot: slot).integer == 2)
        #expect(client.slots.master(for: slot) != old)
    }
}

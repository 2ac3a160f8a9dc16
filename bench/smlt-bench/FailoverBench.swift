import ArgumentParser
import Foundation
import LocalProcesses
import RedisClient

/// `smlt-bench failover`: how long a cluster lane stops answering when its master dies.
struct FailoverBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "failover",
        abstract: "The pause a cluster lane sees when its master is killed, until its replica serves it.",
        discussion: """
            Starts a local 3-master / 3-replica cluster (cluster-node-timeout 1000 ms), writes 64 KiB
            values to one lane in a loop (each SET waits for the replica, as every SMLT write on a
            lane does), and kills the lane's master with SIGKILL after a second. The pause is the
            longest gap between two completed writes. Each round uses a lane on a master that is
            still alive. Afterwards every key must hold its last acknowledged value.
            """)

    @Option(help: "Masters killed, one after another (at most 2: a cluster needs a majority of masters).")
    var rounds = 2
    @Flag(help: "Print JSON.") var json = false

    struct Round: Codable {
        var lane: String
        var pauseSeconds: Double
        var iterationsBefore: Int
        var medianIterationSeconds: Double
        enum CodingKeys: String, CodingKey {
            case lane
            case pauseSeconds = "pause_seconds"
            case iterationsBefore = "iterations_before"
            case medianIterationSeconds = "median_iteration_seconds"
        }
    }

    func validate() throws {
        guard (1...2).contains(rounds) else { throw ValidationError("--rounds must be 1 or 2") }
    }

    func run() throws {
        ChildRegistry.installSignalHandlers()
        let cluster = try RedisClusterProcesses()
        defer { cluster.stop() }
        let value = [UInt8](repeating: 7, count: 64 << 10)
        var rows: [Round] = []
        var killed: Set<RedisEndpoint> = []
        for round in 0..<rounds {
            let client = try ClusterClient(seeds: cluster.endpoints)
            // A lane whose master is alive.
            var tag = ""
            for n in 0... {
                let t = "failover-\(round)-\(n)"
                if let m = client.slots.master(for: HashSlot(key: "{\(t)}")), !killed.contains(m) {
                    tag = t
                    break
                }
            }
            let lane = try RedisConnection(RedisEndpoint(cluster: cluster.endpoints, tag: tag))
            var done: [Double] = []
            var written = 0
            let start = monotonicSeconds()
            var killedAt: Double?
            while true {
                let now = monotonicSeconds()
                if killedAt == nil && now - start > 1 {
                    killed.insert(lane.currentNode)
                    cluster.nodes.first { $0.endpoint == lane.currentNode }?.kill()
                    killedAt = now
                }
                // One second of work after the first iteration that completed after the kill.
                if let k = killedAt, let back = done.first(where: { $0 > k }), now - back > 1 { break }
                guard now - start < 120 else { throw ValidationError("the lane did not come back within 120 s") }
                // 200 keys, overwritten in turn: the cluster's memory stays bounded.
                try lane.run(
                    RedisCommand("SET", "k:\(written % 200)").appending(bytes: Array("\(written):".utf8) + value))
                written += 1
                done.append(monotonicSeconds())
            }
            // Every key holds the last value written to it: nothing acknowledged was lost.
            let keys = (0..<min(written, 200)).map { "k:\($0)" }
            let values = try lane.run(RedisCommand(strings: ["MGET"] + keys)).array ?? []
            for (i, v) in values.enumerated() {
                let last = written - 1 - ((written - 1 - i) % 200)
                guard let bytes = v.bytes, bytes.starts(with: Array("\(last):".utf8)) else {
                    throw ValidationError("k:\(i) lost its last write (\(last)) in the failover")
                }
            }
            let gaps = zip(done.dropFirst(), done).map { $0 - $1 }.sorted()
            let before = done.filter { $0 < killedAt! }.count
            rows.append(
                Round(
                    lane: tag, pauseSeconds: gaps.last ?? 0, iterationsBefore: before,
                    medianIterationSeconds: gaps[gaps.count / 2]))
            try cluster.waitUntilHealthy(replicas: 3 - killed.count)
        }
        if json {
            let e = JSONEncoder()
            e.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try e.encode(rows), as: UTF8.self))
        } else {
            print("lane            pause      median iteration")
            for r in rows {
                print(
                    r.lane.padding(toLength: 14, withPad: " ", startingAt: 0)
                        + String(format: "  %6.2f s   %8.2f ms", r.pauseSeconds, r.medianIterationSeconds * 1e3))
            }
        }
    }
}

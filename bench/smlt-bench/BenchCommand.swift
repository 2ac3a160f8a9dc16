import ArgumentParser
import Foundation
import LocalProcesses
import RedisClient

@main
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "smlt-bench", abstract: "Benchmarks for SMLT, each against a baseline run in the same invocation.",
        subcommands: [
            AggregateBench.self, SweepBench.self, RedisValueBench.self, CodecBench.self, ChecksumBench.self,
            ReshardBench.self,
            ScheduleBench.self, FailoverBench.self, AggregateWorker.self,
        ])
}

/// Large SET/GET through SMLT's hiredis connection against redis-benchmark on the same server.
struct RedisValueBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "redis",
        abstract: "SET/GET of large values from Swift versus redis-benchmark, on one throw-away redis-server.")

    @Option(help: "Value size in bytes.") var size = 1 << 20
    @Option(help: "Commands per measurement.") var count = 2000
    @Option(help: "Repetitions; the best of each is reported.") var repeats = 3
    @Flag(help: "Print JSON.") var json = false

    struct Row: Codable {
        var client: String
        var command: String
        var opsPerSecond: Double
        var gigabytesPerSecond: Double
        enum CodingKeys: String, CodingKey {
            case client, command
            case opsPerSecond = "ops_per_second"
            case gigabytesPerSecond = "gigabytes_per_second"
        }
    }

    func run() throws {
        ChildRegistry.installSignalHandlers()
        let server = try RedisServerProcess()
        defer { server.stop() }
        let c = try RedisConnection(server.endpoint)
        let value = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 7) }
        let set = RedisCommand("SET", "bench:key").appending(bytes: value)
        var best = (set: 0.0, get: 0.0)
        for _ in 0..<repeats {
            var start = ContinuousClock.now
            for _ in 0..<count { try c.run(set) }
            best.set = max(best.set, Double(count) / (ContinuousClock.now - start).seconds)
            start = ContinuousClock.now
            var total = 0
            for _ in 0..<count {
                // Read in place, as the ShardManager does when it decodes.
                total += try c.withReply(["GET", "bench:key"]) { $0.bytes?.count ?? 0 }
            }
            precondition(total == count * size)
            best.get = max(best.get, Double(count) / (ContinuousClock.now - start).seconds)
        }
        var rows = [
            Row(
                client: "smlt (hiredis)", command: "SET", opsPerSecond: best.set,
                gigabytesPerSecond: best.set * Double(size) / 1e9),
            Row(
                client: "smlt (hiredis)", command: "GET", opsPerSecond: best.get,
                gigabytesPerSecond: best.get * Double(size) / 1e9),
        ]
        var bench = (set: 0.0, get: 0.0)
        for _ in 0..<repeats {
            let r = try redisBenchmark(port: server.port)
            bench = (max(bench.set, r.set), max(bench.get, r.get))
        }
        rows.append(
            Row(
                client: "redis-benchmark", command: "SET", opsPerSecond: bench.set,
                gigabytesPerSecond: bench.set * Double(size) / 1e9))
        rows.append(
            Row(
                client: "redis-benchmark", command: "GET", opsPerSecond: bench.get,
                gigabytesPerSecond: bench.get * Double(size) / 1e9))
        if json {
            let e = JSONEncoder()
            e.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try e.encode(rows), as: UTF8.self))
        } else {
            print("\(count) commands of \(size) bytes, one connection, no pipelining, best of \(repeats):")
            for r in rows {
                print(
                    "  \(r.client.padding(toLength: 16, withPad: " ", startingAt: 0)) \(r.command)  "
                        + String(format: "%8.0f ops/s  %6.2f GB/s", r.opsPerSecond, r.gigabytesPerSecond))
            }
            print(
                String(
                    format: "  smlt / redis-benchmark: SET %.2f, GET %.2f", best.set / bench.set, best.get / bench.get))
        }
    }

    func redisBenchmark(port: Int) throws -> (set: Double, get: Double) {
        let out = NSTemporaryDirectory() + "smlt-bench-\(getpid()).csv"
        defer { try? FileManager.default.removeItem(atPath: out) }
        let p = try ChildProcess(
            "redis-benchmark",
            arguments: [
                "-p", "\(port)", "-t", "set,get", "-d", "\(size)", "-n", "\(count)", "-c", "1", "-P", "1", "--csv",
            ],
            stdout: .file(out), stderr: .discard)
        _ = p.wait()
        let text = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
        var set = 0.0
        var get = 0.0
        for line in text.split(whereSeparator: \.isNewline) {
            let cells = line.split(separator: ",").map { $0.trimmingCharacters(in: CharacterSet(charactersIn: "\"")) }
            guard cells.count >= 2, let rps = Double(cells[1]) else { continue }
            if cells[0] == "SET" { set = rps }
            if cells[0] == "GET" { get = rps }
        }
        return (set, get)
    }
}

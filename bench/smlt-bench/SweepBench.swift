import ArgumentParser
import Foundation
import LocalProcesses
import TensorBlob

/// `smlt-bench sweep`: the aggregation benchmark over a grid, written as CSV and an SVG chart.
struct SweepBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sweep",
        abstract: "Runs smlt-bench aggregate over workers x shards x codec x params; writes a CSV and an SVG chart.")

    @Option(help: "Worker counts, comma separated.") var workers = "2,4,8"
    @Option(help: "Shard counts, comma separated.") var shards = "1,2"
    @Option(help: "Codecs, comma separated.") var codecs = "raw,lz4"
    @Option(help: "Gradient sizes in elements, comma separated.") var params = "4000000"
    @Option(help: "Timed steps per run.") var steps = 8
    @Option(help: "Untimed steps per run.") var warmup = 2
    @Option(help: "Elements per chunk.") var chunkElements = 262_144
    @Flag(help: "Run SMLT only, without the redis-limit and scatter-reduce baselines.") var smltOnly = false
    @Option(help: "CSV output path.") var csv = "bench/results/sweep.csv"
    @Option(help: "SVG chart output path.") var chart = "bench/results/sweep.svg"

    func ints(_ s: String, _ name: String) throws -> [Int] {
        let v = s.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !v.isEmpty, v.count == s.split(separator: ",").count, v.allSatisfy({ $0 >= 1 }) else {
            throw ValidationError("--\(name) must be a comma-separated list of positive integers, got '\(s)'")
        }
        return v
    }

    func run() throws {
        ChildRegistry.installSignalHandlers()
        let workerCounts = try ints(workers, "workers")
        let shardCounts = try ints(shards, "shards")
        let sizes = try ints(params, "params")
        let codecList = try codecs.split(separator: ",").map { name in
            guard let c = BlobCodec(name: String(name)) else {
                throw ValidationError("unknown codec '\(name)' (\(BlobCodec.names))")
            }
            return c
        }
        let methods: [AggregationMethod] = smltOnly ? [.smlt] : [.smlt, .redisLimit, .scatterReduce]
        var rows: [AggregateResult] = []
        let cells = shardCounts.count * codecList.count * sizes.count * workerCounts.count
        var done = 0
        for k in shardCounts {
            for codec in codecList {
                for p in sizes {
                    for n in workerCounts {
                        done += 1
                        FileHandle.standardError.write(
                            Data("[\(done)/\(cells)] workers \(n), shards \(k), codec \(codec), params \(p)\n".utf8))
                        var setup = try AggregateSetup.parse([])
                        setup.workers = n
                        setup.shards = k
                        setup.codec = codec
                        setup.params = p
                        setup.steps = steps
                        setup.warmup = warmup
                        setup.chunkElements = chunkElements
                        try setup.validate()
                        rows += try AggregateRunner(setup: setup, verbose: false).run(methods)
                    }
                }
            }
        }
        try write(csv: rows)
        try write(chart: rows)
        print("wrote \(csv) and \(chart) (\(rows.count) rows)")
    }

    func write(csv rows: [AggregateResult]) throws {
        var out =
            "method,workers,params,shards,codec,steps,step_seconds_median,step_seconds_min,step_seconds_max,"
            + "gradient_gbps,wire_bytes_per_step,compression_ratio,vs_redis_limit\n"
        for r in rows {
            out +=
                [
                    r.method.rawValue, "\(r.workers)", "\(r.params)", "\(r.shards)", r.codec.description, "\(r.steps)",
                    fmt(r.stepSecondsMedian, 5), fmt(r.stepSecondsMin, 5), fmt(r.stepSecondsMax, 5),
                    fmt(r.gradientGBps, 4), fmt(r.wireBytesPerStep, 0), fmt(r.compressionRatio, 3),
                    r.vsRedisLimit.map { fmt($0, 3) } ?? "",
                ].joined(separator: ",") + "\n"
        }
        try create(csv)
        try out.write(toFile: csv, atomically: true, encoding: .utf8)
    }

    func write(chart rows: [AggregateResult]) throws {
        try create(chart)
        try SweepChart(rows: rows).svg().write(toFile: chart, atomically: true, encoding: .utf8)
    }

    func create(_ path: String) throws {
        let dir = (path as NSString).deletingLastPathComponent
        if !dir.isEmpty { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) }
    }
}

func fmt(_ v: Double, _ digits: Int) -> String { String(format: "%.\(digits)f", v) }

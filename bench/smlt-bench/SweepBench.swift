import ArgumentParser
import Foundation
import LocalProcesses
import Scheduler
import TensorBlob

/// `smlt-bench sweep`: the aggregation benchmark over a grid, written as CSV and an SVG chart.
/// Each cell is one `smlt-bench aggregate --json` process (with `--link-rate`, one inside its own
/// network), so that no cell inherits another's threads, connections or namespaces.
struct SweepBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sweep",
        abstract:
            "Runs smlt-bench aggregate over link rate x workers x shards x codec x params; writes a CSV and an SVG chart."
    )

    @Option(help: "Worker counts, comma separated.") var workers = "2,4,8"
    @Option(help: "Shard counts, comma separated.") var shards = "1,2"
    @Option(help: "Codecs, comma separated.") var codecs = "raw,lz4"
    @Option(help: "Gradient sizes in elements, comma separated.") var params = "4000000"
    @Option(
        help: ArgumentHelp(
            "Link rates, comma separated: loopback, or a rate per worker and per shard as --link-rate takes (100mbit, 1gbit, 2.5gbit; needs root).",
            valueName: "rates"))
    var linkRates = "loopback"
    @Option(help: "Timed steps per run.") var steps = 8
    @Option(help: "Untimed steps per run.") var warmup = 2
    @Option(help: "Elements per chunk.") var chunkElements = 262_144
    @Flag(help: "Run SMLT only, without the redis-limit and scatter-reduce baselines.") var smltOnly = false
    @Option(help: "CSV output path.") var csv = "bench/results/sweep.csv"
    @Option(help: "SVG chart output path.") var chart = "bench/results/sweep.svg"
    @Flag(help: "Measure nothing: draw --chart again from the rows in --csv (written by an earlier sweep).")
    var replot = false

    func ints(_ s: String, _ name: String) throws -> [Int] {
        let v = s.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !v.isEmpty, v.count == s.split(separator: ",").count, v.allSatisfy({ $0 >= 1 }) else {
            throw ValidationError("--\(name) must be a comma-separated list of positive integers, got '\(s)'")
        }
        return v
    }

    /// The rates of `--link-rates`, nil for loopback.
    func rates() throws -> [LinkRate?] {
        try linkRates.split(separator: ",").map { r in
            let t = r.trimmingCharacters(in: .whitespaces)
            if t == "loopback" { return nil }
            do throws(NetworkError) { return try LinkRate(parsing: t, flag: "--link-rates") } catch {
                throw ValidationError(error.description + " (or loopback)")
            }
        }
    }

    func validate() throws {
        _ = try ints(workers, "workers")
        _ = try ints(shards, "shards")
        _ = try ints(params, "params")
        _ = try rates()
        for name in codecs.split(separator: ",") {
            do { _ = try GradientEncoding(parsing: String(name)) } catch { throw ValidationError("--codecs: \(error)") }
        }
    }

    func run() throws {
        if replot {
            let rows = try read(csv: csv)
            try write(chart: rows)
            print("wrote \(chart) from \(csv) (\(rows.count) rows)")
            return
        }
        ChildRegistry.installSignalHandlers()
        let workerCounts = try ints(workers, "workers")
        let shardCounts = try ints(shards, "shards")
        let sizes = try ints(params, "params")
        let codecList = codecs.split(separator: ",").map(String.init)
        let rateList = try rates()
        if rateList.contains(where: { $0 != nil }) && !NetworkNamespace.isPermitted {
            FileHandle.standardError.write(
                Data("note: link rates need root (network namespaces and tc); those cells run on loopback\n".utf8))
        }
        var rows: [AggregateResult] = []
        let cells = rateList.count * shardCounts.count * codecList.count * sizes.count * workerCounts.count
        var done = 0
        for rate in rateList {
            for k in shardCounts {
                for codec in codecList {
                    for p in sizes {
                        for n in workerCounts {
                            done += 1
                            FileHandle.standardError.write(
                                Data(
                                    ("[\(done)/\(cells)] \(rate.map { "link rate \($0)" } ?? "loopback"), workers \(n), "
                                        + "shards \(k), codec \(codec), params \(p)\n").utf8))
                            var args = [
                                "aggregate", "--workers", "\(n)", "--shards", "\(k)", "--codec", codec, "--params",
                                "\(p)",
                                "--steps", "\(steps)", "--warmup", "\(warmup)", "--chunk-elements", "\(chunkElements)",
                                "--json",
                            ]
                            if !smltOnly { args.append("--compare") }
                            if let rate { args += ["--link-rate", rate.text] }
                            rows += try aggregate(args)
                        }
                    }
                }
            }
        }
        try write(csv: rows)
        try write(chart: rows)
        print("wrote \(csv) and \(chart) (\(rows.count) rows)")
    }

    /// Runs one `smlt-bench aggregate` and reads its JSON rows.
    func aggregate(_ args: [String]) throws -> [AggregateResult] {
        let out = NSTemporaryDirectory() + "smlt-sweep-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).json"
        defer { try? FileManager.default.removeItem(atPath: out) }
        let p = try ChildProcess(currentExecutable(), arguments: args, stdout: .file(out))
        let status = p.wait()!
        guard status.succeeded else {
            throw BenchError("smlt-bench \(args.joined(separator: " ")) failed (\(status))")
        }
        return try JSONDecoder().decode([AggregateResult].self, from: Data(contentsOf: URL(fileURLWithPath: out)))
    }

    func write(csv rows: [AggregateResult]) throws {
        var out =
            "method,workers,params,shards,codec,link_rate,steps,step_seconds_median,step_seconds_min,step_seconds_max,"
            + "gradient_gbps,wire_bytes_per_step,compression_ratio,vs_redis_limit\n"
        for r in rows {
            out +=
                [
                    r.method.rawValue, "\(r.workers)", "\(r.params)", "\(r.shards)", r.codec,
                    r.linkRate, "\(r.steps)",
                    fmt(r.stepSecondsMedian, 5), fmt(r.stepSecondsMin, 5), fmt(r.stepSecondsMax, 5),
                    fmt(r.gradientGBps, 4), fmt(r.wireBytesPerStep, 0), fmt(r.compressionRatio, 3),
                    r.vsRedisLimit.map { fmt($0, 3) } ?? "",
                ].joined(separator: ",") + "\n"
        }
        try create(csv)
        try out.write(toFile: csv, atomically: true, encoding: .utf8)
    }

    /// The rows of a CSV `write(csv:)` wrote (the fields the chart needs; no checked elements).
    func read(csv path: String) throws -> [AggregateResult] {
        let lines = try String(contentsOfFile: path, encoding: .utf8).split(whereSeparator: \.isNewline)
        guard let header = lines.first?.split(separator: ",", omittingEmptySubsequences: false).map(String.init) else {
            throw BenchError("\(path) is empty")
        }
        return try lines.dropFirst().enumerated().map { (i, line) in
            let cells = line.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
            let row = Dictionary(uniqueKeysWithValues: zip(header, cells))
            func field<T>(_ name: String, _ parse: (String) -> T?) throws -> T {
                guard let text = row[name], let v = parse(text) else {
                    throw BenchError("\(path), line \(i + 2): no valid \(name)")
                }
                return v
            }
            let rate = try field("link_rate") { $0 }
            return AggregateResult(
                method: try field("method", AggregationMethod.init(rawValue:)),
                workers: try field("workers") { Int($0) },
                params: try field("params") { Int($0) }, shards: try field("shards") { Int($0) },
                codec: try field("codec") { $0 }, linkRate: rate,
                linkRateBitsPerSecond: rate == "loopback" ? nil : try LinkRate(parsing: rate).bitsPerSecond,
                steps: try field("steps") { Int($0) },
                stepSecondsMedian: try field("step_seconds_median") { Double($0) },
                stepSecondsMin: try field("step_seconds_min") { Double($0) },
                stepSecondsMax: try field("step_seconds_max") { Double($0) },
                gradientGBps: try field("gradient_gbps") { Double($0) },
                wireBytesPerStep: try field("wire_bytes_per_step") { Double($0) },
                compressionRatio: try field("compression_ratio") { Double($0) }, checkedElements: 0,
                vsRedisLimit: row["vs_redis_limit"].flatMap { Double($0) })
        }
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

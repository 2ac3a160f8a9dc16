import ArgumentParser
import CoreMetrics
import Foundation
import LocalProcesses
import Logging
import Observability
import ParamServer
import Prometheus
import RedisClient
import Scheduler
import ShardManager
import Synchronization
import TensorBlob
import TrainingProtocol

/// What one aggregation benchmark runs: the same for every method it compares.
struct AggregateSetup: ParsableArguments, Sendable {
    @Option(help: "Worker processes (N).") var workers = 8
    @Option(help: "f32 elements per gradient (P).") var params = 4_000_000
    @Option(help: "Timed steps.") var steps = 20
    @Option(help: "Untimed steps before the timed ones.") var warmup = 2
    @Option(help: "Redis shards to start (K); ignored with --redis.") var shards = 2
    @Option(
        name: .customLong("codec"),
        help: ArgumentHelp(
            "Gradient encodings, comma separated, as `smlt train --codec` takes them ([DTYPE-]CODEC, DTYPE or [DTYPE-]topk:FRACTION; e.g. raw, bf16-shuffle-lz4, topk:0.01): SMLT is measured with each in turn. The baselines move raw f32 bytes, once.",
            valueName: "encodings"))
    var codecNames = "raw"
    @Option(help: "Elements per chunk.") var chunkElements = JobSpec.defaultChunkElements
    @Option(
        help: ArgumentHelp(
            "Optimizer momentum. 0 (plain SGD) keeps no optimizer state, so the server writes only the model, as the redis-limit traffic assumes."
        ))
    var momentum: Float = 0
    @Option(
        help: ArgumentHelp(
            "Use these Redis servers (host:port,...) instead of starting shards. No `smlt serve` may serve them.",
            valueName: "endpoints"))
    var redis: String?
    @Flag(
        help: ArgumentHelp(
            "Also run SMLT on the lanes of a local Redis Cluster: as many masters as --shards (at least 3), one replica each (rows smlt-cluster, and smlt-cluster-nowait without WAIT after writes)."
        ))
    var cluster = false
    @Option(
        help: ArgumentHelp(
            "Run each worker and each shard in its own network namespace behind a link of this rate in each direction (tc tbf), as 100mbit, 1gbit or 2.5gbit. Needs root; without it the run is on loopback.",
            valueName: "rate"))
    var linkRate: String?
    @Flag(
        help: ArgumentHelp(
            "With a lossy encoding, have each worker run ErrorFeedback (from a zero residual, as a real worker's push computes it) before every push, timed: the CPU of error feedback, without storing the residual."
        ))
    var errorFeedbackPass = false
    @Flag(
        help: ArgumentHelp(
            "With a lossy encoding, also store each step's residual as a real worker's push does (the object residual-W-P, in the push's first phase; implies --error-feedback-pass): the bytes of error feedback."
        ))
    var storeResidual = false
    @Option(
        help: ArgumentHelp(
            "The residual's codec with --store-residual (default: the one SMLT's workers write for the encoding, ErrorFeedback.residualCodec).",
            valueName: "codec"))
    var residualCodec: BlobCodec?
    @Option(
        help: ArgumentHelp(
            "What workers pull with a bf16 or f16 encoding, as `smlt train --pull`: f32 (the parameters), or a pull copy (e.g. bf16). Default: the encoding's dtype and codec (f32 for f32 and top-k encodings).",
            valueName: "spec"))
    var pull: String?

    /// The pull copy of a job whose gradients are `encoding` (see `--pull`).
    func pullEncoding(for encoding: GradientEncoding) throws(ValidationError) -> PullEncoding? {
        do { return try PullEncoding.chosen(by: pull, for: encoding) } catch {
            throw ValidationError("--pull: \(error)")
        }
    }

    /// The gradient encodings of `--codec`, in order.
    func encodings() throws(ValidationError) -> [GradientEncoding] {
        var list: [GradientEncoding] = []
        for name in codecNames.split(separator: ",", omittingEmptySubsequences: false) {
            let n = name.trimmingCharacters(in: .whitespaces)
            let e: GradientEncoding
            do { e = try GradientEncoding(parsing: n) } catch { throw ValidationError("--codec: \(error)") }
            if !list.contains(e) { list.append(e) }
        }
        return list
    }

    /// The rate of `--link-rate`, nil without it.
    func rate() throws(ValidationError) -> LinkRate? {
        do throws(NetworkError) {
            return try linkRate.map { r throws(NetworkError) in try LinkRate(parsing: r, flag: "--link-rate") }
        } catch {
            throw ValidationError(error.description)
        }
    }

    func validate() throws {
        _ = try encodings()
        _ = try pullEncoding(for: .dense(.bf16, .raw))
        if try rate() != nil && redis != nil {
            throw ValidationError("--link-rate starts its own shards in network namespaces; it cannot use --redis")
        }
        if try rate() != nil && cluster {
            throw ValidationError("--link-rate cannot be combined with --cluster (the cluster's nodes run on loopback)")
        }
        guard workers >= 1, workers <= 256 else { throw ValidationError("--workers must be from 1 to 256") }
        guard params >= workers else { throw ValidationError("--params must be at least --workers") }
        guard steps >= 1, warmup >= 0 else { throw ValidationError("--steps must be at least 1") }
        guard shards >= 1, shards <= 64 else { throw ValidationError("--shards must be from 1 to 64") }
        guard chunkElements >= 1, chunkElements <= 1 << 26 else {
            throw ValidationError("--chunk-elements must be from 1 to \(1 << 26)")
        }
    }
}

/// `smlt-bench aggregate`: BSP aggregation throughput of SMLT, and with `--compare` the
/// redis-limit and scatter-reduce baselines on the same servers in the same run.
struct AggregateBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "aggregate",
        abstract: "Aggregation throughput: N worker processes push gradients and pull the model each step.",
        discussion: """
            Step time runs from the first worker starting its push to the last worker holding the
            next version. gradient_gbps = N * P * 4 bytes / median step time, whatever the encoding
            (effective f32 gradient bytes); vs_raw is that over the same method's raw row. Every
            worker checks its share of the model bit for bit against the sums the servers must
            compute (for lossy encodings, of the decoded pushes, in worker order).
            """)

    @OptionGroup var setup: AggregateSetup
    @Flag(help: "Also run the redis-limit and scatter-reduce baselines.") var compare = false
    @Flag(
        help: ArgumentHelp(
            "Also run SMLT with the server's Prometheus metrics on, scraped over HTTP every second (smlt-metrics), right after SMLT with them off."
        ))
    var metrics = false
    @Option(help: "Run the methods this many times, in turn (to see the noise between runs).") var rounds = 1
    @Option(help: ArgumentHelp("Run only this method (for profiling one of them).", visibility: .hidden))
    var only: AggregationMethod?
    @Flag(help: "Print JSON: one object per method.") var json = false
    @Flag(help: "Show the parameter server's log.") var verbose = false
    @Option(help: ArgumentHelp("The network this run is inside (set by --link-rate).", visibility: .private))
    var networkPrefix: String?

    func run() throws {
        ChildRegistry.installSignalHandlers()
        var network: BenchNetwork?
        if let rate = try setup.rate() {
            if let prefix = networkPrefix {
                network = try BenchNetwork(prefix: prefix, workers: setup.workers, shards: setup.shards, rate: rate)
            } else if NetworkNamespace.isPermitted {
                let status = try BenchNetwork.runInside(workers: setup.workers, shards: setup.shards, rate: rate)
                guard status.succeeded else { throw ExitCode(status.code ?? 1) }
                return
            } else {
                FileHandle.standardError.write(
                    Data(
                        "note: --link-rate \(rate) needs root (network namespaces and tc); running on loopback, without rate limits\n"
                            .utf8))
            }
        }
        var methods: [AggregationMethod] =
            only.map { [$0] } ?? (compare ? [.smlt, .redisLimit, .scatterReduce] : [.smlt])
        if setup.cluster && only == nil { methods += [.smltCluster, .smltClusterNoWait] }
        if metrics && only == nil { methods.insert(.smltMetrics, at: 1) }
        // With metrics, every other round runs smlt-metrics before smlt, so that neither always
        // comes second.
        var sequence: [AggregationMethod] = []
        for round in 0..<max(1, rounds) {
            sequence += methods.map { m in
                guard metrics, round % 2 == 1 else { return m }
                return m == .smlt ? .smltMetrics : m == .smltMetrics ? .smlt : m
            }
        }
        var results: [AggregateResult]
        do {
            results = try AggregateRunner(setup: setup, verbose: verbose, network: network).run(
                sequence, encodings: setup.encodings())
        } catch {
            // On Ctrl-C the signal handler stops everything and exits; the failures it causes
            // here (a worker or a shard gone) are not worth reporting.
            while ChildRegistry.isStopping { sleepFor(.seconds(1)) }
            throw error
        }
        if results.contains(where: { $0.method == .smltMetrics }) {
            let cost = try MetricsCost.measure(workers: setup.workers)
            for i in results.indices where results[i].method == .smltMetrics {
                results[i].metricUpdatesSecondsPerStep = cost.updatesPerStep
                results[i].scrapeSeconds = cost.scrape
            }
        }
        if json {
            let e = JSONEncoder()
            e.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try e.encode(results), as: UTF8.self))
        } else {
            print(AggregateResult.table(results))
        }
    }
}

/// One method's figures; every method reports the same fields.
struct AggregateResult: Codable, Sendable {
    var method: AggregationMethod
    var workers: Int
    var params: Int
    var shards: Int
    /// The gradient encoding (`--codec`), as `smlt train --codec` writes it; raw for the baselines.
    var codec: String
    /// What the workers pulled: `f32` (the parameters) or the pull copy's spec (`bf16-raw`).
    var pull: String = "f32"
    /// The codec of the error-feedback residual each worker stored with every push
    /// (`--store-residual`); nil when none was stored.
    var residual: String?
    /// The rate of each worker's and each shard's link (`--link-rate`), or `loopback`.
    var linkRate: String
    /// The same in bits per second; nil on loopback.
    var linkRateBitsPerSecond: Int?
    var steps: Int
    var stepSecondsMedian: Double
    var stepSecondsMin: Double
    var stepSecondsMax: Double
    var gradientGBps: Double
    var wireBytesPerStep: Double
    var compressionRatio: Double
    /// Elements of the aggregate compared bit for bit with the known sums, over all workers and steps.
    var checkedElements: Int
    /// gradient_gbps divided by redis-limit's, when both ran.
    var vsRedisLimit: Double?
    /// gradient_gbps divided by that of the same method with the raw encoding in the same
    /// invocation (and round), when both ran.
    var vsRaw: Double?
    /// For smlt-metrics: its median step time over that of the smlt run next to it.
    var vsMetricsOff: Double?
    /// CPU time (user + system) of the benchmark process per timed step: for the smlt methods,
    /// the parameter server's threads (and the scrapes and their HTTP server with metrics on).
    var processCPUSecondsPerStep: Double = 0
    /// For smlt-metrics: the metric updates of one step, timed alone (`MetricsCost`).
    var metricUpdatesSecondsPerStep: Double?
    /// For smlt-metrics: one scrape of `/metrics` over HTTP, timed alone.
    var scrapeSeconds: Double?

    enum CodingKeys: String, CodingKey {
        case method, workers, params, shards, codec, pull, residual, steps
        case linkRate = "link_rate"
        case linkRateBitsPerSecond = "link_rate_bits_per_second"
        case stepSecondsMedian = "step_seconds_median"
        case stepSecondsMin = "step_seconds_min"
        case stepSecondsMax = "step_seconds_max"
        case gradientGBps = "gradient_gbps"
        case wireBytesPerStep = "wire_bytes_per_step"
        case compressionRatio = "compression_ratio"
        case checkedElements = "checked_elements"
        case vsRedisLimit = "vs_redis_limit"
        case vsRaw = "vs_raw"
        case vsMetricsOff = "vs_metrics_off"
        case processCPUSecondsPerStep = "process_cpu_seconds_per_step"
        case metricUpdatesSecondsPerStep = "metric_updates_seconds_per_step"
        case scrapeSeconds = "scrape_seconds"
    }

    static func table(_ rows: [AggregateResult]) -> String {
        guard let first = rows.first else { return "" }
        let codecs = rows.reduce(into: [String]()) { list, r in
            if !list.contains(r.codec) { list.append(r.codec) }
        }
        var out =
            "N=\(first.workers) workers, P=\(first.params) params, K=\(first.shards) shards, codec \(codecs.joined(separator: ", ")), "
            + "\(first.steps) timed steps, "
            + (rows.contains { $0.residual != nil } ? "error-feedback residuals stored, " : "")
            + ((first.linkRateBitsPerSecond == nil
                ? "loopback" : "links of \(first.linkRate) per worker and per shard"))
            + "\n"
        out +=
            "method               codec             step median      min      max   gradient GB/s   wire MB/step   process CPU/step   vs redis-limit   vs raw\n"
        for r in rows {
            out +=
                r.method.rawValue.padding(toLength: 19, withPad: " ", startingAt: 0) + "  "
                + r.codec.padding(toLength: 16, withPad: " ", startingAt: 0)
                + String(
                    format: "  %9.1f ms %6.1f ms %6.1f ms %13.2f %14.1f %15.1f ms", r.stepSecondsMedian * 1e3,
                    r.stepSecondsMin * 1e3, r.stepSecondsMax * 1e3, r.gradientGBps, r.wireBytesPerStep / 1e6,
                    r.processCPUSecondsPerStep * 1e3)
                + (r.vsRedisLimit.map { String(format: "   %13.2fx", $0) } ?? "                -")
                + (r.vsRaw.map { String(format: "   %5.2fx", $0) } ?? (r.vsMetricsOff == nil ? "" : "        -"))
                + (r.vsMetricsOff.map { String(format: "   step time %.3fx of metrics off", $0) } ?? "") + "\n"
        }
        let ratios = rows.compactMap(\.vsMetricsOff).sorted()
        if !ratios.isEmpty {
            out += String(
                format: "metrics on / off, median step time: %.3f (median of %d pairs; each pair %@)\n",
                ratios[ratios.count / 2], ratios.count,
                ratios.map { String(format: "%.3f", $0) }.joined(separator: ", "))
            func median(_ m: AggregationMethod, _ v: (AggregateResult) -> Double) -> Double {
                let xs = rows.filter { $0.method == m }.map(v).sorted()
                return xs[xs.count / 2]
            }
            let offCPU = median(.smlt, \.processCPUSecondsPerStep)
            let onCPU = median(.smltMetrics, \.processCPUSecondsPerStep)
            out += String(
                format:
                    "process CPU per step, median: %.2f ms off, %.2f ms on (%+.2f ms, %+.2f%% of the median step time off)\n",
                offCPU * 1e3, onCPU * 1e3, (onCPU - offCPU) * 1e3,
                (onCPU - offCPU) / median(.smlt, \.stepSecondsMedian) * 100)
            if let on = rows.first(where: { $0.method == .smltMetrics }), let updates = on.metricUpdatesSecondsPerStep,
                let scrape = on.scrapeSeconds
            {
                let step = median(.smlt, \.stepSecondsMedian)
                out += String(
                    format:
                        "timed alone: a step's metric updates %.2f us (%.4f%% of the median step time off); a scrape %.3f ms (once a second: %.3f%% of a core)\n",
                    updates * 1e6, updates / step * 100, scrape * 1e3, scrape * 100)
            }
        }
        return out
    }
}

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// Runs the methods one after another on the same shards (its own, or `--redis`): the SMLT
/// methods for each gradient encoding in turn, the baselines once, on raw f32 bytes, with the
/// first encoding.
struct AggregateRunner {
    let setup: AggregateSetup
    let verbose: Bool
    /// The network this process runs inside (`--link-rate` as root); nil on loopback.
    let network: BenchNetwork?

    func run(_ methods: [AggregationMethod], encodings: [GradientEncoding]) throws -> [AggregateResult] {
        var servers: [RedisServerProcess] = []
        defer { for s in servers { s.stop() } }
        let endpoints: [RedisEndpoint]
        if let redis = setup.redis {
            endpoints = try RedisEndpoint.list(parsing: redis)
        } else if let network {
            // Each shard in its namespace, on its address there: what the workers and this
            // process reach it through is its link.
            for s in 0..<setup.shards {
                servers.append(
                    try RedisServerProcess(
                        networkNamespace: network.shardNamespace(s), host: network.shardAddress(s)))
            }
            endpoints = servers.map(\.endpoint)
        } else {
            for _ in 0..<setup.shards { servers.append(try RedisServerProcess()) }
            endpoints = servers.map(\.endpoint)
        }
        // The cluster methods run on lanes of a cluster of their own, one lane per shard.
        var cluster: RedisClusterProcesses?
        defer { cluster?.stop() }
        var lanes: [RedisEndpoint] = []
        if methods.contains(where: \.onCluster) {
            let c = try RedisClusterProcesses(masters: max(3, setup.shards))
            cluster = c
            lanes = try ClusterLanes.choose(
                on: RedisEndpoint(cluster: c.endpoints), count: setup.shards, options: RedisOptions())
        }
        var results: [AggregateResult] = []
        for (e, encoding) in encodings.enumerated() {
            for m in methods where m.isSMLT || e == 0 {
                results.append(
                    try measure(m, m.isSMLT ? encoding : .dense(.f32, .raw), m.onCluster ? lanes : endpoints))
            }
        }
        if let limit = results.first(where: { $0.method == .redisLimit }) {
            for i in results.indices { results[i].vsRedisLimit = results[i].gradientGBps / limit.gradientGBps }
        }
        // Each SMLT row against the same method's raw row of the same round (the k-th of each).
        for i in results.indices where results[i].method.isSMLT {
            let r = results[i]
            let round = results[..<i].filter { $0.method == r.method && $0.codec == r.codec }.count
            let raws = results.filter {
                $0.method == r.method && $0.codec == GradientEncoding.dense(.f32, .raw).description
            }
            if round < raws.count { results[i].vsRaw = r.gradientGBps / raws[round].gradientGBps }
        }
        // Each smlt-metrics run against the smlt run next to it (before or after it).
        for i in results.indices where results[i].method == .smltMetrics {
            let next = [i - 1, i + 1].first { results.indices.contains($0) && results[$0].method == .smlt }
            if let off = next.map({ results[$0] }) {
                results[i].vsMetricsOff = results[i].stepSecondsMedian / off.stepSecondsMedian
            }
        }
        return results
    }

    /// One method with one gradient encoding. The job is registered as `smlt train --codec` does
    /// it: the map's codec is `JobSpec.parameterCodec(for:)`, its pull copy `--pull`'s (by
    /// default the encoding's dtype and codec for bf16 and f16), and the config names the
    /// encoding when it is lossy.
    func measure(_ method: AggregationMethod, _ encoding: GradientEncoding, _ endpoints: [RedisEndpoint]) throws
        -> AggregateResult
    {
        let codec = JobSpec.parameterCodec(for: encoding)
        let pull = try setup.pullEncoding(for: encoding)
        let n = setup.workers
        let run = "\(getpid())-\(method.rawValue)-\(UInt32.random(in: 0...UInt32.max))"
        let keys = BenchKeys(run: run)
        let shards = ShardConnections(endpoints)
        let dir = NSTemporaryDirectory() + "smlt-bench-\(run)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        defer { cleanUp(shards, keys) }

        // SMLT: the job, version 0, and the parameter server (in this process, one thread per
        // shard; with a network, each of those threads in its shard's namespace).
        var job = ""
        var servers: [ParamServer] = []
        let serverDone = DispatchGroup()
        var manager: ShardManager?
        var endpoint: MetricsEndpoint?
        let scraping = ScrapeLoop()
        defer {
            for s in servers { s.stop() }
            serverDone.wait()
            scraping.stop()
            endpoint?.stop()
            try? manager?.deleteJob()
        }
        var options = RedisOptions()
        options.waitForReplica = method != .smltClusterNoWait
        if method.isSMLT {
            job = "bench-\(run)"
            let spec = JobSpec(
                job: job, tensors: [TensorSpec(name: "gradient", shape: [setup.params])],
                chunkElements: setup.chunkElements, codec: codec, pullEncoding: pull)
            manager = try ShardManager.register(spec, on: endpoints, options: options, replace: true)
            try TrainingConfig(
                workers: n, steps: setup.warmup + setup.steps, learningRate: 0.01, momentum: setup.momentum,
                gradientEncoding: encoding.isLossy ? encoding.description : nil
            )
            .start(
                on: manager!,
                initial: KnownGradient(workers: n, params: setup.params).initialModel(range: 0..<setup.params))
            var logger = Logger(label: "smlt.serve") { _ in TextLogHandler(prefix: "[serve]") }
            logger.logLevel = verbose ? .info : .critical
            var metrics = ServerMetrics.off
            if method == .smltMetrics {
                // As `smlt serve --metrics-port` runs it, and scraped every second as Prometheus would.
                let registry = PrometheusCollectorRegistry()
                var factory = PrometheusMetricsFactory(registry: registry)
                factory.durationHistogramBuckets[ServerMetrics.Name.stepSeconds] = ServerMetrics.stepSecondsBuckets
                metrics = ServerMetrics(factory: factory)
                let e = try MetricsEndpoint(registry: registry, host: "127.0.0.1", port: 0)
                endpoint = e
                try scraping.start(port: Int(e.address.split(separator: ":").last!)!)
            }
            // On loopback one server for all shards; in a network one per shard, so that each
            // shard's thread can enter that shard's namespace: a server sits next to its shard,
            // and what it reads and writes there does not cross the shard's link.
            let groups: [(namespace: String?, endpoints: [RedisEndpoint])] =
                network.map { net in endpoints.indices.map { (net.shardNamespace($0), [endpoints[$0]]) } }
                ?? [(nil, endpoints)]
            for (namespace, shardEndpoints) in groups {
                let s = ParamServer(endpoints: shardEndpoints, options: options, logger: logger, metrics: metrics)
                servers.append(s)
                try startServer(s, in: namespace, done: serverDone)
            }
        }

        var workers: [ChildProcess] = []
        defer { for w in workers where w.isRunning { _ = w.terminate(grace: .seconds(1)) } }
        for w in 0..<n {
            workers.append(
                try ChildProcess(
                    currentExecutable(),
                    arguments: [
                        "aggregate-worker", "--method", (method == .smltMetrics ? .smlt : method).rawValue, "--worker",
                        "\(w)", "--workers", "\(n)",
                        "--params", "\(setup.params)", "--steps", "\(setup.steps)", "--warmup", "\(setup.warmup)",
                        "--codec", codec.description, "--chunk-elements", "\(setup.chunkElements)", "--momentum",
                        "\(setup.momentum)",
                        "--redis", endpoints.map(\.description).joined(separator: ","), "--run", run, "--job", job,
                    ] + (setup.errorFeedbackPass ? ["--error-feedback-pass"] : [])
                        + (setup.storeResidual ? ["--store-residual"] : [])
                        + (setup.residualCodec.map { ["--residual-codec", "\($0)"] } ?? []),
                    stdout: .file("\(dir)/\(w).json"), stderr: .file("\(dir)/\(w).err"),
                    networkNamespace: network?.workerNamespace(w)))
        }
        func failIfExited() throws {
            for (w, p) in workers.enumerated() {
                if let status = p.poll(), !status.succeeded {
                    let err = (try? String(contentsOfFile: "\(dir)/\(w).err", encoding: .utf8)) ?? ""
                    throw BenchError("\(method.rawValue) worker \(w) failed (\(status)): \(err.suffix(600))")
                }
            }
        }
        // Everyone warmed up: snapshot the traffic counters, then start the timed steps.
        try shards.on(0) { c throws(RedisError) in
            var arrived = 0
            while arrived < n {
                if try c.run(["BLPOP", keys.ready, "1"], blockingFor: .seconds(1)) != .null {
                    arrived += 1
                } else {
                    do { try failIfExited() } catch {
                        throw RedisError(.unexpectedReply, endpoint: "", "\(error)")
                    }
                }
            }
        }
        let before = try netBytes(shards)
        let cpuBefore = processCPUSeconds()
        _ = try shards.on(0) { c throws(RedisError) in
            try c.run(RedisCommand(strings: ["RPUSH", keys.go] + [String](repeating: "1", count: n)))
        }
        while workers.contains(where: \.isRunning) {
            try failIfExited()
            sleepFor(.milliseconds(20))
        }
        try failIfExited()
        let cpu = processCPUSeconds() - cpuBefore
        let after = try netBytes(shards)

        let decoder = JSONDecoder()
        let times = try (0..<n).map { w in
            let text = try String(contentsOfFile: "\(dir)/\(w).json", encoding: .utf8)
            return try decoder.decode(WorkerTimes.self, from: Data(text.utf8))
        }
        let blobBytes = encodedGradientBytes(encoding)
        var stepTimes: [Double] = []
        for t in 0..<setup.steps {
            // From the moment every worker has started (the last start) to the last end: a worker
            // starts step t+1 as soon as it holds version t+1, so these intervals tile the run
            // and their sum is its wall time.
            let first = times.map { $0.start[t] }.max()!
            let last = times.map { $0.end[t] }.max()!
            if method == .redisLimit {
                let get = times.map { $0.getEnd[t] }.max()! - times.map { $0.getStart[t] }.max()!
                if network == nil {
                    // The rates of this step's SET and GET phases, applied to the design's minimal
                    // traffic: N gradients and the model written, 2N gradients' worth read.
                    stepTimes.append((last - first) * Double(n + 1) / Double(n) + get * 2)
                } else {
                    // Behind links, an aggregator next to its shard reads the gradients and
                    // writes the model off the links: the least any design sends over them is
                    // the workers' pushes and pulls, which the two phases are.
                    stepTimes.append((last - first) + get)
                }
            } else {
                stepTimes.append(last - first)
            }
        }
        stepTimes.sort()
        let median = stepTimes[stepTimes.count / 2]
        let wire =
            method == .redisLimit
            ? Double((3 * n + 1) * blobBytes) : Double(after - before) / Double(setup.steps)
        return AggregateResult(
            method: method, workers: n, params: setup.params, shards: endpoints.count, codec: encoding.description,
            pull: method.isSMLT ? pull?.description ?? "f32" : "f32",
            residual: method.isSMLT && setup.storeResidual && encoding.isLossy
                ? "\(setup.residualCodec ?? ErrorFeedback.residualCodec(for: encoding))" : nil,
            linkRate: network?.rate.text ?? "loopback", linkRateBitsPerSecond: network?.rate.bitsPerSecond,
            steps: setup.steps,
            stepSecondsMedian: median, stepSecondsMin: stepTimes.first!,
            stepSecondsMax: stepTimes.last!, gradientGBps: Double(n * setup.params * 4) / median / 1e9,
            wireBytesPerStep: wire, compressionRatio: Double(setup.params * 4) / Double(blobBytes),
            checkedElements: times.reduce(0) { $0 + $1.checked }, processCPUSecondsPerStep: cpu / Double(setup.steps))
    }

    /// Starts `server` on a thread of its own that first enters `namespace` (when given); returns
    /// once the thread is serving, or throws why it could not enter the namespace.
    func startServer(_ server: ParamServer, in namespace: String?, done: DispatchGroup) throws {
        let entered = DispatchSemaphore(value: 0)
        let failure = Mutex<NetworkError?>(nil)
        done.enter()
        try DedicatedThread.start(name: "bench-serve") {
            defer { done.leave() }
            if let namespace {
                do throws(NetworkError) { try NetworkNamespace.enterOnThisThread(namespace) } catch {
                    failure.withLock { $0 = error }
                    entered.signal()
                    return
                }
            }
            entered.signal()
            server.run()
        }
        entered.wait()
        if let error = failure.withLock({ $0 }) { throw error }
    }

    /// The blob bytes of one worker's gradient in chunks of `--chunk-elements`, in `encoding`.
    func encodedGradientBytes(_ encoding: GradientEncoding) -> Int {
        let g = KnownGradient(workers: setup.workers, params: setup.params).base(worker: 0)
        return g.withUnsafeBufferPointer { p in
            stride(from: 0, to: setup.params, by: setup.chunkElements).reduce(0) { total, start in
                total
                    + encoding.encode(
                        UnsafeBufferPointer(rebasing: p[start..<min(setup.params, start + setup.chunkElements)]),
                        step: 0, producer: 0
                    ).count
            }
        }
    }

    /// User and system CPU seconds of this process so far (its threads, not its children).
    func processCPUSeconds() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        func seconds(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
        return seconds(usage.ru_utime) + seconds(usage.ru_stime)
    }

    /// Bytes into and out of all shards so far (INFO stats).
    func netBytes(_ shards: ShardConnections) throws -> Int {
        var total = 0
        for i in 0..<shards.count {
            let info = try shards.on(i) { c throws(RedisError) in try c.run(["INFO", "stats"]).text ?? "" }
            for line in info.split(whereSeparator: \.isNewline) {
                for field in ["total_net_input_bytes:", "total_net_output_bytes:"] where line.hasPrefix(field) {
                    total += Int(line.dropFirst(field.count).trimmingCharacters(in: .whitespaces)) ?? 0
                }
            }
        }
        return total
    }

    /// Deletes the run's own keys; other keys on the servers are left alone.
    func cleanUp(_ shards: ShardConnections, _ keys: BenchKeys) {
        for i in 0..<shards.count {
            _ = try? shards.on(i) { c throws(RedisError) in try c.deleteKeys(matching: keys.pattern) }
        }
    }
}

extension BlobCodec: ExpressibleByArgument {
    public init?(argument: String) { self.init(name: argument) }
    public var defaultValueDescription: String { description }
    public static var allValueStrings: [String] { allCases.map(\.description) }
}

/// Scrapes `/metrics` over HTTP once a second on a thread of its own, as Prometheus would, and
/// checks that each scrape answers 200.
final class ScrapeLoop: Sendable {
    private let stopping = Atomic<Bool>(false)
    private let done = DispatchSemaphore(value: 0)
    private let running = Atomic<Bool>(false)
    /// Scrapes that failed (reported when the loop stops).
    let failures = Atomic<Int>(0)
    let scrapes = Atomic<Int>(0)

    func start(port: Int) throws {
        running.store(true, ordering: .relaxed)
        try DedicatedThread.start(name: "bench-scrape") { [self] in
            while !stopping.load(ordering: .relaxed) {
                let page = try? MetricsScrape.get(port: port)
                scrapes.add(1, ordering: .relaxed)
                if page?.status != 200 {
                    failures.add(1, ordering: .relaxed)
                }
                for _ in 0..<10 where !stopping.load(ordering: .relaxed) { usleep(100_000) }
            }
            done.signal()
        }
    }

    func stop() {
        guard running.exchange(false, ordering: .relaxed) else { return }
        stopping.store(true, ordering: .relaxed)
        done.wait()
        let (f, n) = (failures.load(ordering: .relaxed), scrapes.load(ordering: .relaxed))
        if f > 0 { FileHandle.standardError.write(Data("warning: \(f) of \(n) metrics scrapes failed\n".utf8)) }
    }
}

/// The metrics path's own cost, timed alone in the benchmark process: the updates of one step
/// (`ServerMetrics.timeStepUpdates`, on the Prometheus factory `smlt serve` uses) and one scrape
/// of `/metrics` over HTTP with those series present.
enum MetricsCost {
    static func measure(workers: Int) throws -> (updatesPerStep: Double, scrape: Double) {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets[ServerMetrics.Name.stepSeconds] = ServerMetrics.stepSecondsBuckets
        let metrics = ServerMetrics(factory: factory)
        let steps = 100_000
        _ = metrics.timeStepUpdates(workers: workers, steps: steps / 10)  // warm-up
        let updates = metrics.timeStepUpdates(workers: workers, steps: steps)
        // The page of a server with one job on two shards: every family, with its labels.
        typealias N = ServerMetrics.Name
        var handles: [AnyObject] = []
        for shard in ["127.0.0.1:7001", "127.0.0.1:7002"] {
            let labels = [("job", "bench"), ("shard", shard)]
            for name in [N.stepsCommitted, N.gradientBytes, N.modelBytes] {
                handles.append(Counter(label: name, dimensions: labels, factory: factory))
            }
            for reason in RejectionReason.allCases {
                handles.append(
                    Counter(label: N.pushRejected, dimensions: labels + [("reason", reason.rawValue)], factory: factory)
                )
            }
            for name in [N.version, N.workersPushed] {
                handles.append(Gauge(label: name, dimensions: labels, factory: factory))
            }
            let timer = CoreMetrics.Timer(label: N.stepSeconds, dimensions: labels, factory: factory)
            timer.recordNanoseconds(2_000_000)
            handles.append(timer)
            for name in [N.redisErrors, N.serverRestarts] {
                handles.append(Counter(label: name, dimensions: [("shard", shard)], factory: factory))
            }
        }
        defer { withExtendedLifetime(handles) {} }
        let endpoint = try MetricsEndpoint(registry: registry, host: "127.0.0.1", port: 0)
        defer { endpoint.stop() }
        let port = Int(endpoint.address.split(separator: ":").last!)!
        _ = try MetricsScrape.get(port: port)
        let scrapes = 200
        let start = ContinuousClock.now
        for _ in 0..<scrapes { _ = try MetricsScrape.get(port: port) }
        let scrape = (ContinuousClock.now - start) / scrapes
        func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }
        return (seconds(updates) / Double(steps), seconds(scrape))
    }
}

import ArgumentParser
import Foundation
import ParamServer
import RedisClient
import ShardManager
import TensorBlob
import TrainingProtocol

/// The aggregation methods `smlt-bench aggregate` compares.
enum AggregationMethod: String, CaseIterable, Codable, ExpressibleByArgument, Sendable {
    /// SMLT: workers push through a WorkerSession, the ParamServer aggregates, workers pull.
    case smlt
    /// The same with the server's Prometheus metrics on and scraped over HTTP every second.
    case smltMetrics = "smlt-metrics"
    /// Plain SET/GET of the same bytes: the ceiling for storage-mediated aggregation.
    case redisLimit = "redis-limit"
    /// Serverless reduce-scatter + all-gather through Redis, no server (SMLT paper, LambdaML).
    case scatterReduce = "scatter-reduce"
    /// SMLT on the lanes of a local Redis Cluster (one replica per master; writes WAIT for it).
    case smltCluster = "smlt-cluster"
    /// The same without WAIT after writes: what the durability costs.
    case smltClusterNoWait = "smlt-cluster-nowait"

    /// Whether SMLT's parameter server runs for this method.
    var isSMLT: Bool { [.smlt, .smltMetrics, .smltCluster, .smltClusterNoWait].contains(self) }
    /// Whether this method runs on a cluster's lanes.
    var onCluster: Bool { self == .smltCluster || self == .smltClusterNoWait }
}

/// When one worker's timed steps started and ended (system-wide monotonic seconds).
/// For `redis-limit`, `start`/`end` bracket the SET phase and `getStart`/`getEnd` the GET phase.
struct WorkerTimes: Codable, Sendable {
    var worker: Int
    var start: [Double] = []
    var end: [Double] = []
    var getStart: [Double] = []
    var getEnd: [Double] = []
    /// Elements whose aggregate was compared bit for bit with the known sum.
    var checked = 0

    /// Adds one timed step.
    mutating func record(start: Double, end: Double, getStart: Double? = nil, getEnd: Double? = nil) {
        self.start.append(start)
        self.end.append(end)
        if let getStart, let getEnd {
            self.getStart.append(getStart)
            self.getEnd.append(getEnd)
        }
    }
}

/// One benchmark worker process (started by `smlt-bench aggregate`; not for direct use).
struct AggregateWorker: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "aggregate-worker", abstract: "One worker of smlt-bench aggregate.", shouldDisplay: false)

    @Option var method: AggregationMethod
    @Option var worker: Int
    @Option var workers: Int
    @Option var params: Int
    @Option var steps: Int
    @Option var warmup: Int
    @Option var codec: BlobCodec
    @Option var chunkElements: Int
    @Option var momentum: Float
    @Option var redis: String
    @Option(name: .customLong("run")) var runID: String
    @Option var job: String = ""
    @Flag var errorFeedbackPass = false
    @Flag var storeResidual = false
    @Option var residualCodec: BlobCodec?

    func run() throws {
        let endpoints = try RedisEndpoint.list(parsing: redis)
        let keys = BenchKeys(run: runID)
        let known = KnownGradient(workers: workers, params: params)
        var times = WorkerTimes(worker: worker)
        switch method {
        case .smlt, .smltMetrics, .smltCluster, .smltClusterNoWait: try runSMLT(endpoints, keys, known, &times)
        case .redisLimit: try runRedisLimit(endpoints, keys, known, &times)
        case .scatterReduce: try runScatterReduce(endpoints, keys, known, &times)
        }
        print(String(decoding: try JSONEncoder().encode(times), as: UTF8.self))
    }

    /// Tells the driver this worker is warmed up and waits for the start signal.
    func ready(_ shards: ShardConnections, _ keys: BenchKeys) throws(RedisError) {
        try shards.on(0) { c throws(RedisError) in
            try c.run(["RPUSH", keys.ready, "\(worker)"])
            try blockingPop(c, keys.go, what: "start signal")
        }
    }

    // MARK: smlt

    func runSMLT(_ endpoints: [RedisEndpoint], _ keys: BenchKeys, _ known: KnownGradient, _ times: inout WorkerTimes)
        throws
    {
        var options = RedisOptions()
        options.waitForReplica = method != .smltClusterNoWait
        let client = try WorkerSession(job: job, worker: worker, endpoints: endpoints, options: options)
        let control = ShardConnections(endpoints, options: options)
        let gradients = known.gradients(worker: worker)
        // The encoding the job's config names, as a real worker reads it.
        let encoding = try client.config.encoding(mapCodec: client.shards.map.codec)
        let chunkElements = client.shards.layout.chunkElements
        var model = [Float](repeating: 0, count: params)
        var checker = ModelChecker(
            range: KnownGradient.checkedRange(worker: worker, workers: workers, params: params), known: known,
            config: client.config, encoding: encoding, chunkElements: chunkElements,
            initial: known.initialModel(
                range: KnownGradient.checkedRange(worker: worker, workers: workers, params: params)),
            pulled: client.shards.map.pullEncoding?.dtype ?? .f32)
        _ = try model.withUnsafeMutableBufferPointer { m in try client.pull(step: 0, into: m) }
        var sent: [Float] = []
        var residual: [Float]? = [Float](repeating: 0, count: params)
        for t in 0..<(warmup + steps) {
            if t == warmup { try ready(control, keys) }
            let start = monotonicSeconds()
            // Without error feedback (see bench/README.md): a dense encoding rounds as it encodes
            // the chunks; top-k picks each chunk's largest elements (`ErrorFeedback` from a zero
            // residual) and pushes those as sparse blobs. Both are timed. With
            // --error-feedback-pass dense lossy pushes go through `ErrorFeedback` too, and with
            // --store-residual the push stores the residual as a real worker's does.
            var viaErrorFeedback = (errorFeedbackPass || storeResidual) && encoding.isLossy
            if case .topK = encoding { viaErrorFeedback = true }
            if viaErrorFeedback {
                // As a real worker's loop does it: into storage kept across steps (the residual
                // set to zero, as this benchmark pushes without carrying it; see bench/README.md).
                residual!.withUnsafeMutableBufferPointer { $0.update(repeating: 0) }
                ErrorFeedback.apply(
                    gradient: gradients[t % 2], residual: &residual, sent: &sent, encoding: encoding,
                    chunkElements: chunkElements)
                try client.push(
                    sent: sent, step: t, encoding: encoding, residual: storeResidual ? residual : nil,
                    residualCodec: residualCodec)
            } else {
                try gradients[t % 2].withUnsafeBufferPointer { g in
                    try client.push(gradient: g, step: t, encoding: encoding)
                }
            }
            _ = try model.withUnsafeMutableBufferPointer { m in try client.pull(step: t + 1, into: m) }
            let end = monotonicSeconds()
            try checker.step(t, model: model)
            if t >= warmup { times.record(start: start, end: end) }
        }
        times.checked = checker.checked
    }

    // MARK: redis-limit

    func runRedisLimit(
        _ endpoints: [RedisEndpoint], _ keys: BenchKeys, _ known: KnownGradient, _ times: inout WorkerTimes
    ) throws {
        let shards = ShardConnections(endpoints)
        let worker = self.worker
        let gradient = known.base(worker: worker)
        // Encoded once, outside the timing: this baseline only moves the bytes.
        let chunks = stride(from: 0, to: params, by: chunkElements).map { start in
            gradient.withUnsafeBufferPointer { g in
                let blob = TensorBlob.encode(
                    UnsafeBufferPointer(rebasing: g[start..<min(params, start + chunkElements)]), codec: codec,
                    step: 0, producer: UInt32(worker))
                let owned = UnsafeMutableRawBufferPointer.allocate(byteCount: blob.count, alignment: 16)
                blob.withUnsafeBytes { owned.copyMemory(from: $0) }
                return UnsafeRawBufferPointer(owned)
            }
        }
        defer { for c in chunks { c.deallocate() } }
        nonisolated(unsafe) let blobs = chunks
        let k = shards.count
        let blobKeys = chunks.indices.map { keys.key("limit:\(worker):\($0)") }
        let perBatch = max(1, batchBytes / max(1, chunks.map(\.count).max() ?? 1))
        // The same client paths SMLT uses for large values: writev from the caller's memory,
        // replies streamed from the socket into the caller's memory.
        func setAll() throws(RedisError) {
            _ = try shards.each { s, c throws(RedisError) in
                let mine = blobs.indices.filter { $0 % k == s }
                for batch in stride(from: 0, to: mine.count, by: perBatch) {
                    let ids = mine[batch..<min(mine.count, batch + perBatch)]
                    for r in try c.pipeline(
                        borrowing: ids.map { BorrowedCommand(["SET", blobKeys[$0]], payload: [blobs[$0]]) })
                    {
                        if case .error(let m) = r { throw c.serverError(m, command: "SET") }
                    }
                }
            }
        }
        // Every blob lands in its own place in one gradient-sized buffer, as a model being pulled
        // does (not over and over in one small buffer that stays in cache).
        let offsets = chunks.reduce(into: [0]) { $0.append($0.last! + $1.count) }
        let landing = UnsafeMutableRawBufferPointer.allocate(byteCount: offsets.last!, alignment: 64)
        landing.initializeMemory(as: UInt8.self, repeating: 0)
        defer { landing.deallocate() }
        nonisolated(unsafe) let destination = landing
        func getAll() throws(RedisError) {
            _ = try shards.each { s, c throws(RedisError) in
                let mine = blobs.indices.filter { $0 % k == s }
                for batch in stride(from: 0, to: mine.count, by: perBatch) {
                    let ids = Array(mine[batch..<min(mine.count, batch + perBatch)])
                    var sizes: [Int] = []
                    try c.pipelineStreaming(
                        ids.map { RedisCommand("GET", blobKeys[$0]) }, prefixLength: 0,
                        target: { i, _, rest in
                            let at = offsets[ids[i]]
                            return rest == offsets[ids[i] + 1] - at
                                ? UnsafeMutableRawBufferPointer(rebasing: destination[at..<(at + rest)]) : nil
                        },
                        done: { _, reply in
                            if case .bulk(_, let rest) = reply {
                                sizes.append(rest?.count ?? -1)
                            } else {
                                sizes.append(-1)
                            }
                        })
                    for (i, n) in zip(ids, sizes) where n != blobs[i].count {
                        throw RedisError(
                            .unexpectedReply, endpoint: c.endpoint.description,
                            "GET \(blobKeys[i]) returned \(n) bytes, expected \(blobs[i].count)")
                    }
                }
            }
        }
        try setAll()
        try getAll()
        for t in 0..<(warmup + steps) {
            if t == warmup { try ready(shards, keys) }
            try shards.on(0) { c throws(RedisError) in try barrier(c, keys: keys, name: "set:\(t)", parties: workers) }
            let setStart = monotonicSeconds()
            try setAll()
            let setEnd = monotonicSeconds()
            try shards.on(0) { c throws(RedisError) in try barrier(c, keys: keys, name: "get:\(t)", parties: workers) }
            let getStart = monotonicSeconds()
            try getAll()
            let getEnd = monotonicSeconds()
            if t >= warmup { times.record(start: setStart, end: setEnd, getStart: getStart, getEnd: getEnd) }
        }
    }

    // MARK: scatter-reduce

    func runScatterReduce(
        _ endpoints: [RedisEndpoint], _ keys: BenchKeys, _ known: KnownGradient, _ times: inout WorkerTimes
    ) throws {
        let shards = ShardConnections(endpoints)
        let n = workers
        let k = shards.count
        let worker = self.worker
        let codec = self.codec
        let slices = (0..<n).map { KnownGradient.checkedRange(worker: $0, workers: n, params: params) }
        let config = TrainingConfig(workers: n, steps: warmup + steps, learningRate: 0.01, momentum: momentum)
        let gradients = known.gradients(worker: worker)
        var aggregate = [Float](repeating: 0, count: params)
        var model = [Float](repeating: 0, count: params)
        var velocity = [Float](repeating: 0, count: params)
        var scratch = [Float](repeating: 0, count: slices.map(\.count).max() ?? 0)
        var checker = ModelChecker(range: slices[worker], known: known, config: config)
        let decodeScratch = DecodeScratch()
        @Sendable func g(_ t: Int, _ j: Int, _ w: Int) -> String { keys.key("sr:\(t):g:\(j):\(w)") }
        @Sendable func agg(_ t: Int, _ j: Int) -> String { keys.key("sr:\(t):agg:\(j)") }
        @Sendable func inbox(_ t: Int, _ j: Int) -> String { keys.key("sr:\(t):in:\(j)") }
        @Sendable func done(_ t: Int, _ w: Int) -> String { keys.key("sr:\(t):done:\(w)") }

        for t in 0..<(warmup + steps) {
            if t == warmup { try ready(shards, keys) }
            let start = monotonicSeconds()
            // 1. Scatter: slice j of this worker's gradient goes to aggregator j's shard.
            let source = gradients[t % 2]
            _ = try shards.each { s, c throws(RedisError) in
                for j in 0..<n where j % k == s {
                    try source.withUnsafeBufferPointer { (p) throws(RedisError) in
                        let values = UnsafeBufferPointer(rebasing: p[slices[j]])
                        let blob = TensorBlob.encodeParts(
                            values, codec: codec, step: UInt64(t), producer: UInt32(worker))
                        _ = try withExtendedLifetime(blob) { () throws(RedisError) in
                            try c.pipeline(borrowing: [
                                BorrowedCommand(
                                    ["SET", g(t, j, worker)], payload: blob.segments(values: values),
                                    trailing: ["EX", "600"]),
                                BorrowedCommand(["RPUSH", inbox(t, j), "\(worker)"]),
                            ])
                        }
                    }
                }
            }
            // 2. Reduce slice `worker`: wait for all N pieces, sum them in worker order.
            let home = worker % k
            try shards.on(home) { c throws(RedisError) in
                for _ in 0..<n { try blockingPop(c, inbox(t, worker), what: "scatter-reduce step \(t) pieces") }
                let mine = slices[worker]
                try aggregate.withUnsafeMutableBufferPointer { a throws(RedisError) in
                    let sum = UnsafeMutableBufferPointer(rebasing: a[mine])
                    try scratch.withUnsafeMutableBufferPointer { sc throws(RedisError) in
                        let piece = UnsafeMutableBufferPointer(rebasing: sc[0..<mine.count])
                        try streamBlobs(
                            c, (0..<n).map { g(t, worker, $0) }, scratch: decodeScratch,
                            into: { $0 == 0 ? sum : piece },
                            decoded: { w in if w > 0 { GradientSum.add(UnsafeBufferPointer(piece), into: sum) } })
                    }
                }
                try aggregate.withUnsafeBufferPointer { (a) throws(RedisError) in
                    let values = UnsafeBufferPointer(rebasing: a[mine])
                    let blob = TensorBlob.encodeParts(values, codec: codec, step: UInt64(t), producer: UInt32(worker))
                    var commands: [BorrowedCommand] = [
                        BorrowedCommand(RedisCommand(strings: ["UNLINK"] + (0..<n).map { g(t, worker, $0) })),
                        BorrowedCommand(
                            ["SET", agg(t, worker)], payload: blob.segments(values: values), trailing: ["EX", "600"]),
                    ]
                    if t > 0 { commands.append(BorrowedCommand(["UNLINK", agg(t - 1, worker)])) }
                    _ = try withExtendedLifetime(blob) { () throws(RedisError) in try c.pipeline(borrowing: commands) }
                }
            }
            try shards.on(0) { c throws(RedisError) in
                _ = try c.pipeline((0..<n).map { RedisCommand("RPUSH", done(t, $0), "\(worker)") })
            }
            // 3. All-gather: wait for every aggregator, read every aggregated slice.
            try shards.on(0) { c throws(RedisError) in
                for _ in 0..<n { try blockingPop(c, done(t, worker), what: "scatter-reduce step \(t) aggregates") }
            }
            try aggregate.withUnsafeMutableBufferPointer { buf in
                // Each shard's thread writes its own slices; all are joined before this returns.
                nonisolated(unsafe) let destination = buf
                _ = try shards.each { s, c throws(RedisError) in
                    let scratch = DecodeScratch()
                    let js = (0..<n).filter { $0 % k == s && $0 != worker }
                    try streamBlobs(
                        c, js.map { agg(t, $0) }, scratch: scratch,
                        into: { UnsafeMutableBufferPointer(rebasing: destination[slices[js[$0]]]) })
                }
            }
            // Every worker applies the optimizer to its own replica of the model.
            model.withUnsafeMutableBufferPointer { p in
                velocity.withUnsafeMutableBufferPointer { v in
                    aggregate.withUnsafeBufferPointer { a in
                        SGDMomentum.apply(params: p, velocity: v, gradientSum: a, workers: n, config: config)
                    }
                }
            }
            let end = monotonicSeconds()
            try checker.step(t, model: model)
            if t >= warmup { times.record(start: start, end: end) }
        }
        times.checked = checker.checked
    }
}

/// GETs blobs with the ShardManager's reader; `decoded(i)` runs after blob `i` is verified and
/// decoded. Any failure stops the benchmark, naming the key.
func streamBlobs(
    _ c: RedisConnection, _ keys: [String], scratch: DecodeScratch,
    into destination: (Int) -> UnsafeMutableBufferPointer<Float>, decoded: (Int) -> Void = { _ in }
) throws(RedisError) {
    let failures = try c.getBlobs(keys, scratch: scratch, into: destination, decoded: { i, _ in decoded(i) })
    if let (i, failure) = failures.min(by: { $0.key < $1.key }) {
        throw RedisError(.unexpectedReply, endpoint: c.endpoint.description, "\(keys[i]): \(failure)")
    }
}

/// Largest number of blob bytes in one pipelined batch, as the ShardManager uses.
let batchBytes = 2 << 20

/// Follows the exact optimizer trajectory of one slice of the model from the known gradient
/// sums, and compares a pulled model with it bit for bit.
struct ModelChecker {
    let range: Range<Int>
    let known: KnownGradient
    let config: TrainingConfig
    /// The sums the servers compute over this worker's range, for even and odd steps.
    let rangeSums: [[Float]]
    var params: [Float]
    var velocity: [Float]
    /// The dtype of what the worker pulls: the servers' f32 parameters, or a pull copy of them.
    let pulled: DType
    private var expected: [Float]
    private(set) var checked = 0

    /// With a lossy `encoding` the sums are those of the decoded pushes
    /// (`KnownGradient.expectedSums`), so every element is still checked bit for bit; with a
    /// pull copy of dtype `pulled`, against the parameters rounded to it.
    init(
        range: Range<Int>, known: KnownGradient, config: TrainingConfig,
        encoding: GradientEncoding = .dense(.f32, .raw), chunkElements: Int = 1, initial: [Float]? = nil,
        pulled: DType = .f32
    ) {
        self.range = range
        self.known = known
        self.config = config
        self.pulled = pulled
        expected = pulled == .f32 ? [] : [Float](repeating: 0, count: range.count)
        rangeSums = known.expectedSums(range: range, encoding: encoding, chunkElements: chunkElements)
        params = initial ?? Array(repeating: 0, count: range.count)
        velocity = params
    }

    mutating func step(_ t: Int, model: [Float]) throws {
        let sums = rangeSums[t % 2]
        params.withUnsafeMutableBufferPointer { p in
            velocity.withUnsafeMutableBufferPointer { v in
                sums.withUnsafeBufferPointer { s in
                    SGDMomentum.apply(params: p, velocity: v, gradientSum: s, workers: known.workers, config: config)
                }
            }
        }
        if pulled != .f32 {
            params.withUnsafeBufferPointer { p in
                expected.withUnsafeMutableBufferPointer { e in pulled.round(p, into: e) }
            }
        }
        let want = pulled == .f32 ? params : expected
        let same = model.withUnsafeBytes { m in
            want.withUnsafeBytes { p in memcmp(m.baseAddress! + range.lowerBound * 4, p.baseAddress!, p.count) == 0 }
        }
        if !same,
            let o = want.indices.first(where: { model[range.lowerBound + $0].bitPattern != want[$0].bitPattern })
        {
            let i = range.lowerBound + o
            throw ValidationError(
                "aggregate is wrong at step \(t), element \(i): got \(model[i]), expected \(want[o])")
        }
        checked += range.count
    }
}

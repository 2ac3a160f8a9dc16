import CTensorKernels
import Foundation
import KeySchema
import Logging
import RedisClient
import ShardManager
import TrainingProtocol

/// The jobs one server loop knows on one shard: which it serves (an aggregator each), which it
/// skips and why, and when each was last read.
///
/// Refreshing is cheap. Once a second it reads the job set, and the epoch key of every job that
/// is still training or skipped (one pipeline). A job's map and config are read only when the
/// job is new, its epoch changed, a driver woke the server for it, or its last read is ~30 s old
/// (which catches a config replaced without a new epoch; these re-reads are spread out). A
/// finished job is not read at all in between. Maps and configs larger than a limit are refused
/// by their length, before they are read. Every job dropped or skipped is logged once per
/// distinct reason. A job's metric series go with its aggregator, and a finished job's after
/// `ServerMetrics.finishedRetention`.
final class ShardJobs {
    /// The largest shard map read; a larger one is refused (a map of 20 MB cost a server 120 MB).
    static let mapLimit = 4 << 20
    /// The largest training config read.
    static let configLimit = 1 << 20
    /// How old a job's last full read may get before it is read again.
    static let rereadInterval: Duration = .seconds(30)
    /// Jobs whose map and config are read in one pipeline (keeps the replies in memory small).
    static let readBatch = 32

    let endpoint: String
    private let logger: Logger
    private let series: JobSeries
    private var entries: [String: Entry] = [:]
    /// Jobs to read in full at the next refresh (a driver woke the server for them).
    private var woken: Set<String> = []
    /// What was last logged per job, so that each state is logged once; it outlives `reset()`.
    private var logged: [String: String] = [:]
    /// Jobs refused by the ACL (`deny`) that have not committed a step since.
    private var denied: Set<String> = []

    private struct Entry {
        /// The epoch key's value when the job was last read (nil: no epoch key).
        var epoch: String?
        /// Checksums of the map and the config as last read.
        var mapCRC: UInt32?
        var configCRC: UInt32?
        var aggregator: ShardAggregator?
        var readAt: ContinuousClock.Instant
    }

    init(endpoint: String, logger: Logger, metrics: ServerMetrics = .off) {
        self.endpoint = endpoint
        var logger = logger
        logger[metadataKey: "shard"] = "\(endpoint)"
        self.logger = logger
        series = JobSeries(endpoint: endpoint, metrics: metrics)
    }

    /// The aggregators of the jobs still training, in job order.
    var active: [ShardAggregator] {
        entries.values.compactMap(\.aggregator).filter { !$0.finished }.sorted { $0.job < $1.job }
    }

    /// How many jobs are served (training or finished).
    var servedCount: Int { entries.values.count { $0.aggregator != nil } }

    /// Asks for `job` to be read in full at the next refresh.
    func wake(_ job: String) { woken.insert(job) }

    /// Forgets every job (after a connection error, when caches may be stale); the next refresh
    /// reads them all again. What was logged is kept, so nothing is logged twice.
    func reset() { entries = [:] }

    /// Reads the job set and whatever changed; see the type's description.
    func refresh(_ c: RedisConnection) throws(RedisError) {
        let now = ContinuousClock.now
        let ids = Set((try c.run(["SMEMBERS", JobKeys.jobs]).array ?? []).compactMap(\.text))
        for job in entries.keys.sorted() where !ids.contains(job) {
            series.retire(job)
            entries[job] = nil
            denied.remove(job)
            note(
                job, .warning, "job_dropped", "stopped serving it: it is no longer registered (not in \(JobKeys.jobs))",
                reason: "not registered")
            logged[job] = nil
        }
        // A finished job's series stay for a few scrapes, then go.
        for e in entries.values {
            if let a = e.aggregator, series.exists(a.job), let at = a.finishedAt,
                now - at > ServerMetrics.finishedRetention
            {
                series.retire(a.job)
            }
        }
        var toRead = Set(ids.filter { entries[$0] == nil }).union(woken.intersection(ids))
        woken = []

        // Jobs still training or skipped: has their epoch changed?
        let watched = ids.filter { job in
            guard !toRead.contains(job), let e = entries[job] else { return false }
            return !(e.aggregator?.finished ?? false)
        }.sorted()
        if !watched.isEmpty {
            let epochs = try c.pipeline(watched.map { ["GET", JobKeys(job: $0).epoch] })
            for (job, reply) in zip(watched, epochs) {
                if case .error(let m) = reply {
                    let error = c.serverError(m, command: "GET")
                    guard error.code == .permissionDenied else { throw error }
                    deny(job, error, now: now)
                    continue
                }
                if reply.text != entries[job]?.epoch { toRead.insert(job) }
            }
        }

        // The oldest reads, a share of the jobs per refresh so that they spread out.
        let stale = entries.filter { !toRead.contains($0.key) && now - $0.value.readAt > Self.rereadInterval }
        let share = max(1, ids.count / 30 + 1)
        for (job, _) in stale.sorted(by: { $0.value.readAt < $1.value.readAt }).prefix(share) { toRead.insert(job) }

        let ordered = toRead.sorted()
        for start in stride(from: 0, to: ordered.count, by: Self.readBatch) {
            try read(Array(ordered[start..<min(start + Self.readBatch, ordered.count)]), c, now: now)
        }
    }

    /// What one read of a job found.
    private struct Found {
        var epoch: String?
        var mapLength = 0
        var configLength = 0
        var mapCRC: UInt32?
        var configCRC: UInt32?
        var map: [UInt8]?
        var config: [UInt8]?
        /// The newest version in the stream of a job already served.
        var latest: Int?
    }

    /// Reads the epochs, lengths and (within the limits) the maps and configs of `jobs`, then
    /// brings each job's entry up to date.
    private func read(_ jobs: [String], _ c: RedisConnection, now: ContinuousClock.Instant) throws(RedisError) {
        var found = [Found](repeating: Found(), count: jobs.count)
        // Per job: its epoch, the lengths of its map and config, and (when it is served) the
        // newest version in its stream, so that a finished job restored to an earlier version
        // comes back to life.
        var sizing: [RedisCommand] = []
        for job in jobs {
            let keys = JobKeys(job: job)
            let training = JobKeys(job: job)
            let shard = entries[job]?.aggregator?.shard
            sizing += [
                ["GET", keys.epoch], ["STRLEN", keys.map], ["STRLEN", training.config],
                shard.map { training.latestVersionCommand(shard: $0) } ?? ["PING"],
            ]
        }
        let sizes = try c.pipeline(sizing)
        // A job whose keys the ACL user may not read is not served; the others are.
        var refused: [Int: RedisError] = [:]
        for i in jobs.indices {
            for r in sizes[(4 * i)..<(4 * i + 4)] {
                guard case .error(let m) = r else { continue }
                let error = c.serverError(m, command: "GET/STRLEN/XREVRANGE")
                guard error.code == .permissionDenied else { throw error }
                refused[i] = refused[i] ?? error
            }
            found[i].epoch = sizes[4 * i].text
            found[i].mapLength = Int(sizes[4 * i + 1].integer ?? 0)
            found[i].configLength = Int(sizes[4 * i + 2].integer ?? 0)
            found[i].latest = JobKeys.version(inLatest: sizes[4 * i + 3])
        }
        // GET only what is within the limits; a value is copied only when its checksum changed.
        var gets: [(job: Int, isMap: Bool)] = []
        var commands: [RedisCommand] = []
        for (i, job) in jobs.enumerated() where refused[i] == nil {
            if found[i].mapLength > 0 && found[i].mapLength <= Self.mapLimit {
                gets.append((i, true))
                commands.append(["GET", JobKeys(job: job).map])
            }
            if found[i].configLength > 0 && found[i].configLength <= Self.configLimit {
                gets.append((i, false))
                commands.append(["GET", JobKeys(job: job).config])
            }
        }
        _ = try c.pipeline(commands) { n, reply throws(RedisError) -> Void in
            let (i, isMap) = gets[n]
            if reply.isError {
                let message = reply.bytes.map { String(decoding: $0, as: UTF8.self) } ?? "error"
                let error = c.serverError(message, command: "GET")
                guard error.code == .permissionDenied else { throw error }
                refused[i] = refused[i] ?? error
                return
            }
            guard let bytes = reply.bytes else { return }
            let crc = ctk_crc32c(0, bytes.baseAddress, bytes.count)
            if isMap {
                found[i].mapCRC = crc
                // An unchanged map is not copied (nor decoded): the aggregator holds it.
                let known = entries[jobs[i]]
                if crc != known?.mapCRC || known?.aggregator == nil { found[i].map = Array(bytes) }
            } else {
                found[i].configCRC = crc
                found[i].config = Array(bytes)
            }
        }
        for (i, job) in jobs.enumerated() {
            if let error = refused[i] {
                deny(job, error, now: now)
            } else {
                update(job, found[i], now: now)
            }
        }
    }

    /// Stops serving `job` (or does not start) because the ACL user may not touch its keys (a
    /// `NOPERM` reply), without stopping the shard's other jobs. The job is read again when its
    /// epoch key reads differently (as when the ACL lets the server read it again) or at its next
    /// full re-read; until one of its steps commits (`confirm`), that is done quietly, so a job
    /// whose ACL stays wrong is logged once, not once per re-read.
    func deny(_ job: String, _ error: RedisError, now: ContinuousClock.Instant = .now) {
        var entry = entries[job] ?? Entry(epoch: nil, mapCRC: nil, configCRC: nil, aggregator: nil, readAt: now)
        entry.mapCRC = nil
        entry.configCRC = nil
        entry.readAt = now
        let served = entry.aggregator != nil
        if served {
            series.retire(job)
            entry.aggregator = nil
        }
        entries[job] = entry
        denied.insert(job)
        // The same words whichever command was refused, so that the line is not repeated.
        let reply = error.message.range(of: "NOPERM").map { String(error.message[$0.lowerBound...]) }
        note(
            job, .warning, served ? "job_dropped" : "job_skipped",
            "not serving it: the ACL user may not use its keys on this shard: \(reply ?? "\(error)")",
            reason: "permission denied")
    }

    /// Says that `job` committed a step: if it had been refused by the ACL, it is served again.
    func confirm(_ job: String) {
        guard denied.remove(job) != nil, let a = entries[job]?.aggregator else { return }
        note(
            job, .info, "job_serving",
            "serving job \(job) (\(a.map.chunks(onShard: a.shard).count) chunks): the ACL lets this server use its keys again",
            prefix: false)
    }

    /// Keeps, replaces, creates or drops a job's aggregator after a read, and logs what changed.
    private func update(_ job: String, _ f: Found, now: ContinuousClock.Instant) {
        var entry =
            entries[job] ?? Entry(epoch: nil, mapCRC: nil, configCRC: nil, aggregator: nil, readAt: now)
        entry.epoch = f.epoch
        entry.readAt = now
        defer { entries[job] = entry }
        let unchanged = entry.aggregator != nil && f.mapCRC == entry.mapCRC && f.configCRC == entry.configCRC
        if unchanged, let a = entry.aggregator {
            // A finished job may have been restored to an earlier version.
            a.adopt(latest: f.latest)
            return
        }
        let keys = JobKeys(job: job)
        let configKey = JobKeys(job: job).config
        let outcome: Result<(ShardMap, Int, TrainingConfig), Skip>
        outcome = Result { () throws(Skip) in
            guard f.mapLength > 0 else { throw Skip("it has no shard map (\(keys.map)) on this shard") }
            guard f.mapLength <= Self.mapLimit else {
                throw Skip(
                    "its shard map (\(keys.map)) is \(f.mapLength) bytes, over the limit of \(Self.mapLimit); not read")
            }
            let map: ShardMap
            if let mapBytes = f.map {
                do { map = try JSONDecoder().decode(ShardMap.self, from: Data(mapBytes)) } catch {
                    throw Skip("its shard map (\(keys.map)) is not valid JSON: \(describe(error))")
                }
                do { try map.validate() } catch { throw Skip("its shard map (\(keys.map)) is not valid: \(error)") }
            } else if let a = entry.aggregator, f.mapCRC != nil, f.mapCRC == entry.mapCRC {
                map = a.map
            } else {
                throw Skip("its shard map (\(keys.map)) vanished while being read")
            }
            guard let me = try? RedisEndpoint(parsing: endpoint), let shard = map.index(of: me) else {
                throw Skip(
                    "its shard map does not list this shard (\(endpoint)); it lists \(map.shards.joined(separator: ", "))"
                )
            }
            guard f.configLength > 0 else { throw Skip("it has no training config (\(configKey)) yet") }
            guard f.configLength <= Self.configLimit else {
                throw Skip(
                    "its training config (\(configKey)) is \(f.configLength) bytes, over the limit of \(Self.configLimit); not read"
                )
            }
            guard let configBytes = f.config else {
                throw Skip("its training config (\(configKey)) vanished while being read")
            }
            let config: TrainingConfig
            do { config = try JSONDecoder().decode(TrainingConfig.self, from: Data(configBytes)) } catch {
                throw Skip("its training config (\(configKey)) is not valid JSON: \(describe(error))")
            }
            do { try config.validate() } catch {
                throw Skip("its training config (\(configKey)) is not valid: \(error)")
            }
            return (map, shard, config)
        }
        switch outcome {
        case .failure(let skip):
            entry.mapCRC = nil
            entry.configCRC = nil
            if entry.aggregator != nil {
                series.retire(job)
                entry.aggregator = nil
                note(job, .warning, "job_dropped", "stopped serving it: \(skip.reason)", reason: skip.reason)
            } else {
                note(job, .warning, "job_skipped", "not serving it: \(skip.reason)", reason: skip.reason)
            }
        case .success(let (map, shard, config)):
            entry.mapCRC = f.mapCRC
            entry.configCRC = f.configCRC
            if let a = entry.aggregator, a.map == map, a.config == config {
                a.adopt(latest: f.latest)
                return
            }
            let next = ShardAggregator(
                map: map, config: config, shard: shard, endpoint: endpoint, logger: logger, series: series)
            // A reconfigured job keeps the parameters this server already holds for the chunks
            // it still owns, so the step after a re-shard does not read them from Redis again.
            if let old = entry.aggregator { next.inherit(from: old) }
            entry.aggregator = next
            // A job the ACL refused is said to be served once a step of it commits (`confirm`).
            guard !denied.contains(job) else { return }
            note(
                job, .info, "job_serving", "serving job \(job) (\(map.chunks(onShard: shard).count) chunks)",
                prefix: false)
        }
    }

    /// Logs `message` about `job` unless it is what was logged last for that job.
    private func note(
        _ job: String, _ level: Logger.Level, _ event: String, _ message: String, reason: String? = nil,
        prefix: Bool = true
    ) {
        guard logged[job] != message else { return }
        logged[job] = message
        var metadata: Logger.Metadata = ["event": "\(event)", "job": "\(job)"]
        if let reason { metadata["reason"] = "\(reason)" }
        logger.log(
            level: level, "\(prefix ? "\(endpoint): job \(job): \(message)" : "\(endpoint): \(message)")",
            metadata: metadata)
    }
}

/// Why a job is not served.
private struct Skip: Error {
    let reason: String
    init(_ reason: String) { self.reason = reason }
}

/// A decoding error in a few words: which field, and what was wrong with it.
private func describe(_ error: any Error) -> String {
    guard let e = error as? DecodingError else { return "\(error)" }
    func path(_ c: DecodingError.Context) -> String {
        c.codingPath.isEmpty ? "" : " at '\(c.codingPath.map(\.stringValue).joined(separator: "."))'"
    }
    switch e {
    case .typeMismatch(_, let c), .valueNotFound(_, let c), .dataCorrupted(let c):
        return "\(c.debugDescription)\(path(c))"
    case .keyNotFound(let key, let c): return "field '\(key.stringValue)' is missing\(path(c))"
    @unknown default: return "\(error)"
    }
}

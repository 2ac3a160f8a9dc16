import Foundation
import KeySchema
import RedisClient
import ShardManager
import Synchronization
import TensorBlob
import TrainingProtocol

/// Moves a held job to a new set of shards at a step boundary (live re-sharding).
///
/// The job must be held at `step` and every shard must have published version `step`, so no
/// gradient is in flight. Then:
/// 1. every new endpoint is checked (reachable, credentials accepted) before anything moves;
/// 2. chunks are placed anew moving as few as possible: a chunk stays where it is unless its
///    shard goes away or holds more than its new equal share;
/// 3. each moved chunk's blobs (parameters, optimizer state, checkpoint copies) are copied to
///    the new owner and verified there (length and checksum read back), and so are the named
///    objects (staged data, worker progress) whose owner changes;
/// 4. new shards get the config and a version stream at `step`;
/// 5. the switch: the config, then the map with the next epoch is written to every new shard,
///    the home shard last (servers fence their commits on their shard's epoch; workers compare
///    with the home shard's);
/// 6. the old copies are deleted, and removed shards forget the job.
///
/// A failure before the switch leaves the job on its old map (the copies are removed again);
/// the error says what failed. A driver that dies in the middle of a move leaves its journal
/// (`smlt:{JOB}:moving`, written before the first copy and removed after the last cleanup), from
/// which `tidy` removes whatever the job's map in force does not need.
public struct Resharder {
    public let manager: ShardManager
    let options: RedisOptions

    /// What a move did.
    public struct Outcome: Sendable {
        /// The job's manager on its new map.
        public var manager: ShardManager
        public var chunksMoved: Int
        public var bytesMoved: Int
        /// The fewest chunks any balanced placement on the new shards must move.
        public var minimumChunks: Int
        /// Endpoints that no longer belong to the job.
        public var removed: [String]
    }

    public init(_ manager: ShardManager, options: RedisOptions) {
        self.manager = manager
        self.options = options
    }

    /// The shard list after a move to `targets`: the current shards that stay, in their order
    /// (so the home shard stays first), then the new ones in the order given.
    public static func shardList(current: [String], targets: [String]) -> [String] {
        current.filter { targets.contains($0) } + targets.filter { !current.contains($0) }
    }

    /// The least-moving balanced placement of `old`'s chunks on `shards`: each shard gets
    /// `C / K` chunks or one more; a chunk stays on its shard while that shard has room
    /// (highest rendezvous weight first), and the rest go, in chunk order, to the shard with
    /// room and the highest weight. Returns the assignment and the chunks moved.
    public static func placement(of old: ShardMap, on shards: [String]) -> (assignment: [Int], moved: Int) {
        let chunks = old.assignment.count
        let k = shards.count
        let share = chunks / k
        let extra = chunks % k
        let index = Dictionary(uniqueKeysWithValues: shards.enumerated().map { ($1, $0) })
        // Current holdings on the shards that stay.
        var held = [[Int]](repeating: [], count: k)
        for (c, s) in old.assignment.enumerated() {
            if let i = index[old.shards[s]] { held[i].append(c) }
        }
        // The shards holding the most get the `extra` bigger shares, so fewer chunks move.
        let order = (0..<k).sorted { (held[$0].count, shards[$1]) > (held[$1].count, shards[$0]) }
        var capacity = [Int](repeating: share, count: k)
        for i in order.prefix(extra) { capacity[i] += 1 }
        var assignment = [Int](repeating: -1, count: chunks)
        var load = [Int](repeating: 0, count: k)
        for i in 0..<k {
            let keep = held[i].sorted {
                (Placement.weight(job: old.job, chunk: $0, shard: shards[i]), $1)
                    > (Placement.weight(job: old.job, chunk: $1, shard: shards[i]), $0)
            }.prefix(capacity[i])
            for c in keep { assignment[c] = i }
            load[i] = keep.count
        }
        var moved = 0
        for c in 0..<chunks where assignment[c] < 0 {
            var best = -1
            var bestWeight: UInt64 = 0
            for i in 0..<k where load[i] < capacity[i] {
                let w = Placement.weight(job: old.job, chunk: c, shard: shards[i])
                if best < 0 || w > bestWeight || (w == bestWeight && shards[i] < shards[best]) {
                    best = i
                    bestWeight = w
                }
            }
            assignment[c] = best
            load[best] += 1
            moved += 1
        }
        return (assignment, moved)
    }

    /// Checks that every endpoint answers and accepts the credentials; nothing is written.
    /// New cluster lanes are recorded (`smlt:lanes`), so that servers of the cluster serve them.
    public static func preflight(_ endpoints: [RedisEndpoint], options: RedisOptions) throws(ReshardError) {
        for e in endpoints {
            do {
                let c = try RedisConnection(e, options: options)
                try c.run(["PING"])
            } catch {
                throw ReshardError("cannot use \(e) as a shard: \(error); nothing was moved")
            }
        }
        do { try ClusterLanes.record(endpoints, options: options) } catch {
            throw ReshardError("cannot record the new cluster lanes: \(error); nothing was moved")
        }
    }

    /// Moves the job to `targets` at `step` with `config` in force from then on (see the type's
    /// description). `beforeSwitch` runs after every copy is verified, before the map changes
    /// (tests use it to kill processes in the middle of a move).
    public func move(
        to targets: [RedisEndpoint], step: Int, config: TrainingConfig, beforeSwitch: () -> Void = {}
    ) throws(ReshardError) -> Outcome {
        let old = manager.map
        // A cluster lane already in the map keeps its name there, whatever seeds reach it.
        let targets = targets.map { t in
            old.index(of: t).flatMap { try? RedisEndpoint(parsing: old.shards[$0]) } ?? t
        }
        let names = Self.shardList(current: old.shards, targets: targets.map(\.description))
        guard names.first == old.shards.first else {
            throw ReshardError(
                "the new shards must keep the job's home shard \(old.shards[0]) (it holds the job's control keys)")
        }
        guard !names.isEmpty, Set(names).count == names.count else {
            throw ReshardError("a job needs one or more distinct shard endpoints")
        }
        let added = names.filter { !old.shards.contains($0) }
        let removed = old.shards.filter { !names.contains($0) }
        var endpoints: [String: RedisEndpoint] = [:]
        for t in targets { endpoints[t.description] = t }
        for s in old.shards {
            do { endpoints[s] = try RedisEndpoint(parsing: s) } catch { throw ReshardError("\(error)") }
        }
        try Self.preflight(added.compactMap { endpoints[$0] }, options: options)
        let versions: [Int?]
        do { versions = try manager.publishedVersions() } catch { throw ReshardError("\(error)") }
        guard versions.allSatisfy({ $0 == step }) else {
            throw ReshardError(
                "job '\(old.job)' is not held at step \(step) on every shard (versions \(versions.map { $0.map(String.init) ?? "none" }))"
            )
        }

        // A journal left by a move whose driver died is cleaned up first; then this move's.
        do { _ = try Self.tidy(manager, options: options, allowed: Set(endpoints.keys)) } catch {
            throw ReshardError("cleaning up after an earlier move: \(error); nothing was moved")
        }
        let journal = MoveJournal(epoch: old.epoch, shards: Array(Set(old.shards + names)).sorted())
        do { try journal.store(on: manager) } catch {
            throw ReshardError("recording the move in \(manager.keys.moving): \(error); nothing was moved")
        }

        let (assignment, minimum) = Self.placement(of: old, on: names)
        var map = old
        map.shards = names
        map.assignment = assignment
        map.epoch = old.epoch + 1
        let all = Array(Set(old.shards + names)).sorted()
        let lanes = ShardConnections(all.map { endpoints[$0]! }, options: options)
        let lane = Dictionary(uniqueKeysWithValues: all.enumerated().map { ($1, $0) })
        let keys = manager.keys
        var copied: [(shard: String, key: String)] = []
        var chunksMoved = 0
        var bytes = 0
        func fail(_ message: String) -> ReshardError {
            // Leave the job on its old map: remove what was copied, and the job from new shards.
            for (shard, key) in copied {
                _ = try? lanes.on(lane[shard]!) { c throws(RedisError) in try c.run(["UNLINK", key]) }
            }
            MoveJournal.remove(from: manager)
            return ReshardError("\(message); the job stays on its old shards (epoch \(old.epoch))")
        }
        // Moved chunks are copied by one thread per source shard (sources and targets get
        // separate connections), each blob read, checked and written, then read back.
        struct Move: Sendable {
            var chunk: Int
            var from: Int
            var to: Int
        }
        let moves = (0..<assignment.count).compactMap { c -> Move? in
            let (from, to) = (old.shards[old.assignment[c]], names[assignment[c]])
            return from == to ? nil : Move(chunk: c, from: lane[from]!, to: lane[to]!)
        }
        let writers = ShardConnections(all.map { endpoints[$0]! }, options: options)
        let done = CopyLog()
        let momentum = config.momentum != 0
        let results = lanes.eachResult { i, source throws(RedisError) -> ReshardError? in
            for m in moves where m.from == i {
                var blobs: [(key: String, version: UInt64?, required: Bool)] = [
                    (keys.params(chunk: m.chunk), UInt64(step), true)
                ]
                // Version 0 has no optimizer state yet (zero velocity); later versions must have it.
                if momentum { blobs.append((keys.optimizer(chunk: m.chunk), UInt64(step), step > 0)) }
                // The pull copy is at the same version as the parameters, whenever the job keeps one.
                if old.pullEncoding != nil { blobs.append((keys.pullCopy(chunk: m.chunk), UInt64(step), true)) }
                blobs += [
                    (keys.checkpointParams(chunk: m.chunk), nil, false),
                    (keys.checkpointOptimizer(chunk: m.chunk), nil, false),
                ]
                for blob in blobs {
                    do throws(ReshardError) {
                        let n = try Self.copyBlob(
                            blob.key, from: source, to: writers, lane: m.to, version: blob.version,
                            record: { done.copied(all[m.to], blob.key) })
                        if let n {
                            done.add(bytes: n)
                        } else if blob.required {
                            return ReshardError("chunk \(m.chunk) has no \(blob.key) on \(all[i])")
                        }
                    } catch { return error }
                }
                done.add(chunks: 1)
            }
            return nil
        }
        for r in results {
            switch r {
            case .failure(let e): throw fail("reading from a shard: \(e)")
            case .success(let e?):
                copied += done.keys
                throw fail(e.description)
            case .success(nil): break
            }
        }
        copied += done.keys
        chunksMoved = done.chunks
        bytes = done.bytes

        // Named objects whose owner changes under the new shard list.
        var movedObjects: [(from: String, key: String)] = []
        let prefix = keys.object("")
        for shard in old.shards {
            let found: [String]
            do {
                found = try lanes.on(lane[shard]!) { c throws(RedisError) in try c.scanKeys(matching: prefix + "*") }
            } catch { throw fail("listing the objects on \(shard): \(error)") }
            for key in found {
                let name = String(key.dropFirst(prefix.count))
                let owner = names[JobObjects.shard(for: name, job: old.job, shards: names)]
                guard owner != shard else { continue }
                let dump: [UInt8]?
                do {
                    dump = try lanes.on(lane[shard]!) { c throws(RedisError) in try c.run(["DUMP", key]).bytes }
                } catch { throw fail("reading \(key) on \(shard): \(error)") }
                guard let dump else { continue }
                do {
                    _ = try lanes.on(lane[owner]!) { c throws(RedisError) in
                        try c.run(RedisCommand("RESTORE", key, "0").appending(bytes: dump).appending("REPLACE"))
                    }
                } catch { throw fail("writing \(key) to \(owner): \(error)") }
                copied.append((owner, key))
                movedObjects.append((shard, key))
                bytes += dump.count
            }
        }

        // New shards, and shards whose index changed, get a version stream at `step`.
        let configJSON: [UInt8]
        do { configJSON = Array(try JSONEncoder().encode(config)) } catch { throw fail("\(error)") }
        for (i, shard) in names.enumerated() {
            let oldIndex = old.shards.firstIndex(of: shard)
            do {
                try lanes.on(lane[shard]!) { c throws(RedisError) in
                    if oldIndex != i, try keys.latestVersion(shard: i, on: c) != step {
                        try c.run(["DEL", keys.versions(shard: i)])
                        try c.run(keys.publishVersionCommand(shard: i, version: step))
                    }
                }
            } catch { throw fail("preparing \(shard): \(error)") }
            if oldIndex == nil { copied.append((shard, keys.versions(shard: i))) }
        }
        beforeSwitch()

        // The switch: config first, then the map and its epoch (home shard last). The home shard
        // decides; if the switch fails before it, the shards written so far get the old map and
        // config back.
        let previousConfig: [UInt8]?
        do {
            previousConfig = try lanes.on(lane[old.shards[0]]!) { c throws(RedisError) in
                try c.run(["GET", keys.config]).bytes
            }
        } catch { throw fail("reading the current config: \(error)") }
        let next: ShardManager
        do {
            next = try ShardManager(map: map, options: options)
            _ = try next.onEachShard { _, c throws(RedisError) in
                try c.run(RedisCommand("SET", keys.config).appending(bytes: configJSON))
            }
            try next.storeMap()
        } catch {
            let restored = (try? manager.storeMap()) != nil
            if let previousConfig {
                _ = try? manager.onEachShard { _, c throws(RedisError) in
                    try c.run(RedisCommand("SET", keys.config).appending(bytes: previousConfig))
                }
            }
            for shard in added {
                _ = try? lanes.on(lane[shard]!) { c throws(RedisError) in try ShardManager.forget(keys, on: c) }
            }
            throw fail(
                "switching to the new map: \(error)\(restored ? "" : " (and the old map could not be written back)")")
        }

        // The old copies go. Failures here leave garbage, not inconsistency: log-worthy only.
        for c in 0..<assignment.count where old.shards[old.assignment[c]] != names[assignment[c]] {
            let from = old.shards[old.assignment[c]]
            let victims = keys.chunkBlobs(chunk: c)
            _ = try? lanes.on(lane[from]!) { c throws(RedisError) in
                try c.run(RedisCommand(strings: ["UNLINK"] + victims))
            }
        }
        for (from, key) in movedObjects {
            _ = try? lanes.on(lane[from]!) { c throws(RedisError) in try c.run(["UNLINK", key]) }
        }
        for (i, shard) in old.shards.enumerated() {
            if removed.contains(shard) {
                _ = try? lanes.on(lane[shard]!) { c throws(RedisError) in try ShardManager.forget(keys, on: c) }
            } else if names.firstIndex(of: shard) != i {
                _ = try? lanes.on(lane[shard]!) { c throws(RedisError) in
                    try c.run(["DEL", keys.versions(shard: i), keys.inbox(shard: i)])
                }
            }
        }
        _ = try? next.onEachShard { _, c throws(RedisError) in try c.pipeline(keys.wakeServersCommands) }
        MoveJournal.remove(from: next)
        return Outcome(
            manager: next, chunksMoved: chunksMoved, bytesMoved: bytes, minimumChunks: minimum, removed: removed)
    }
}

extension Resharder {
    /// Copies blob `key` from `source` to shard `lane` of `targets`: the blob's header and
    /// checksum (and `version`, when given) are checked before, its length and checksum bytes read
    /// back after. Returns the bytes copied, or nil when the source has no such key.
    static func copyBlob(
        _ key: String, from source: RedisConnection, to targets: ShardConnections, lane: Int, version: UInt64?,
        record: () -> Void
    ) throws(ReshardError) -> Int? {
        let blob: [UInt8]?
        do { blob = try source.run(["GET", key]).bytes } catch {
            throw ReshardError("reading \(key) on \(source.endpoint): \(error)")
        }
        guard let blob else { return nil }
        let header: BlobHeader
        do { header = try blob.withUnsafeBytes { b throws(TensorBlobError) in try TensorBlob.header(of: b) } } catch {
            throw ReshardError("\(key) on \(source.endpoint) is damaged: \(error)")
        }
        if let version, header.step != version {
            throw ReshardError("\(key) on \(source.endpoint) holds version \(header.step), not \(version)")
        }
        let back: [RedisReply]
        do {
            back = try targets.on(lane) { c throws(RedisError) in
                try c.run(RedisCommand("SET", key).appending(bytes: blob))
                return try c.pipeline([["STRLEN", key], ["GETRANGE", key, "40", "43"]])
            }
        } catch { throw ReshardError("writing \(key) to \(targets.endpoints[lane]): \(error)") }
        record()
        guard back[0].integer == Int64(blob.count), back[1].bytes == Array(blob[40..<44]) else {
            throw ReshardError("the copy of \(key) on \(targets.endpoints[lane]) does not match the original")
        }
        return blob.count
    }
}

/// What the copying threads of a move did, shared between them.
private final class CopyLog: Sendable {
    private let state = Mutex<(keys: [(String, String)], chunks: Int, bytes: Int)>(([], 0, 0))

    func copied(_ shard: String, _ key: String) { state.withLock { $0.keys.append((shard, key)) } }
    func add(bytes: Int) { state.withLock { $0.bytes += bytes } }
    func add(chunks: Int) { state.withLock { $0.chunks += chunks } }
    var keys: [(String, String)] { state.withLock { $0.keys } }
    var chunks: Int { state.withLock { $0.chunks } }
    var bytes: Int { state.withLock { $0.bytes } }
}

/// A re-shard that could not be done; the message says why and where the job stands.
public struct ReshardError: Error, Sendable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

extension Resharder {
    /// Re-shards a running (or finished) job by hand, as `smlt admin reshard` does: holds its
    /// workers at the next step, waits until every shard has published it, moves the job to
    /// `targets` and lifts the hold. The job's servers follow by themselves; servers for new
    /// endpoints must be running (`smlt serve`).
    /// - Parameters:
    ///   - timeout: how long to wait for the job to reach the step it is held at.
    /// - Returns: the move's outcome and the step it happened at.
    public static func live(
        job: String, endpoints: [RedisEndpoint], targets: [RedisEndpoint], options: RedisOptions,
        allowed: [String] = [], timeout: Duration = .seconds(60)
    ) throws(ReshardError) -> (outcome: Outcome, step: Int) {
        let manager: ShardManager
        let config: TrainingConfig
        do {
            manager = try ShardManager.open(job: job, endpoints: endpoints, options: options, allowed: allowed)
            config = try TrainingConfig.load(from: manager)
        } catch { throw ReshardError("cannot open job '\(job)': \(error)") }
        // Refused before anything is held or moved.
        let added = targets.filter { !manager.map.shards.contains($0.description) }
        try preflight(added, options: options)
        if options.password != nil {
            let trusted = Set(endpoints.map(\.description) + allowed + targets.map(\.description))
            if let foreign = manager.map.shards.first(where: { !trusted.contains($0) }) {
                throw ReshardError("the job's map names \(foreign), which was not given; nothing was moved")
            }
        }
        let step: Int
        do {
            let versions = try manager.publishedVersions()
            guard let current = versions.compactMap({ $0 }).max() else {
                throw ReshardError("job '\(job)' has not started (no version published)")
            }
            if let hold = try manager.control().hold {
                throw ReshardError(
                    "a reconfiguration of job '\(job)' is already pending at step \(hold); try again after it")
            }
            if current >= config.steps {
                step = current  // finished: nothing runs, no hold needed
            } else {
                var target = current + 1
                while try !manager.setHold(at: target) {
                    if let hold = try manager.control().hold, hold != target {
                        throw ReshardError("another reconfiguration of job '\(job)' took the hold at step \(hold)")
                    }
                    target = (try manager.publishedVersions().compactMap { $0 }.max() ?? target) + 1
                }
                step = target
            }
        } catch let e as ReshardError {
            throw e
        } catch { throw ReshardError("\(error)") }
        func release() { if step < config.steps { try? manager.releaseHold(step) } }
        let deadline = ContinuousClock.now + timeout
        do {
            while try !manager.publishedVersions().allSatisfy({ $0 == step }) {
                guard ContinuousClock.now < deadline else {
                    release()
                    throw ReshardError(
                        "job '\(job)' did not reach step \(step) on every shard within \(timeout) (are its workers and servers running?); nothing was moved"
                    )
                }
                Thread.sleep(forTimeInterval: 0.005)
            }
        } catch let e as ReshardError {
            throw e
        } catch {
            release()
            throw ReshardError("\(error)")
        }
        do {
            let outcome = try Resharder(manager, options: options).move(to: targets, step: step, config: config)
            if step < config.steps { try? outcome.manager.releaseHold(step) }
            return (outcome, step)
        } catch {
            release()
            throw error
        }
    }
}

/// The journal of a move in progress: the epoch it started from and every shard it touches.
struct MoveJournal: Codable, Sendable {
    var epoch: Int
    var shards: [String]

    func store(on manager: ShardManager) throws(ShardError) {
        let key = manager.keys.moving
        let json: [UInt8]
        do { json = Array(try JSONEncoder().encode(self)) } catch { throw ShardError(.invalidSpec, "\(error)") }
        try manager.onShard(0) { c throws(RedisError) in _ = try c.run(RedisCommand("SET", key).appending(bytes: json))
        }
    }

    /// Removes the journal (a failure leaves it for the next `tidy`, which finds nothing to do).
    static func remove(from manager: ShardManager) {
        let key = manager.keys.moving
        _ = try? manager.onShard(0) { c throws(RedisError) in try c.run(["DEL", key]) }
    }
}

extension Resharder {
    /// What `tidy` did.
    public struct TidyOutcome: Sendable, Equatable {
        /// Keys removed from the job's shards: chunk blobs and named objects on a shard that does
        /// not own them (their owner holds them too).
        public var keysRemoved: Int
        /// Shards the move touched that the job's map does not list, which forgot the job.
        public var shardsForgotten: [String]
        /// Shards the journal names that could not be cleaned (unreachable, or not trusted with
        /// the password); the journal stays for the next try.
        public var skipped: [String]
    }

    /// Cleans up after a move whose driver died, if its journal is on the home shard; nil when
    /// there is none. Whether the move died before or after its switch, the map in force is
    /// complete and decides: every shard the journal names that the map does not list forgets
    /// the job, and on the map's shards each parameter, pull-copy, optimizer or checkpoint blob
    /// and each named object on a shard other than its owner is removed, if its owner holds it
    /// too. With a password, only the map's shards and `allowed` are connected to.
    public static func tidy(
        _ manager: ShardManager, options: RedisOptions, allowed: Set<String> = []
    ) throws(ReshardError) -> TidyOutcome? {
        let keys = manager.keys
        let map = manager.map
        let stored: [UInt8]?
        do { stored = try manager.onShard(0) { c throws(RedisError) in try c.run(["GET", keys.moving]).bytes } } catch {
            throw ReshardError("reading \(keys.moving): \(error)")
        }
        guard let stored else { return nil }
        // An unreadable journal names no shard to trust; the map's shards are still swept.
        let journal = try? JSONDecoder().decode(MoveJournal.self, from: Data(stored))
        var outcome = TidyOutcome(keysRemoved: 0, shardsForgotten: [], skipped: [])
        for shard in (journal?.shards ?? []).sorted() where !map.shards.contains(shard) {
            guard options.password == nil || allowed.contains(shard),
                let endpoint = try? RedisEndpoint(parsing: shard)
            else {
                outcome.skipped.append(shard)
                continue
            }
            do {
                let c = try RedisConnection(endpoint, options: options)
                try ShardManager.forget(keys, on: c)
                outcome.shardsForgotten.append(shard)
            } catch { outcome.skipped.append(shard) }
        }
        let chunkPrefix = "smlt:{\(map.job)/"
        let objectPrefix = keys.object("")
        for (i, shard) in map.shards.enumerated() {
            // (key, owner) of every blob and object here that belongs elsewhere.
            let strays: [(key: String, owner: Int)]
            do {
                strays = try manager.onShard(i) { c throws(RedisError) in
                    var found: [(String, Int)] = []
                    for key in try c.scanKeys(matching: chunkPrefix + "*") {
                        let rest = key.dropFirst(chunkPrefix.count)
                        // smlt:{JOB/CHUNK}:KIND, one of the chunk's blobs.
                        guard let close = rest.firstIndex(of: "}"), let chunk = Int(rest[..<close]),
                            chunk >= 0, chunk < map.assignment.count, map.assignment[chunk] != i,
                            keys.chunkBlobs(chunk: chunk).contains(key)
                        else { continue }
                        found.append((key, map.assignment[chunk]))
                    }
                    for key in try c.scanKeys(matching: objectPrefix + "*") {
                        let owner = JobObjects.shard(
                            for: String(key.dropFirst(objectPrefix.count)), job: map.job, shards: map.shards)
                        if owner != i { found.append((key, owner)) }
                    }
                    return found
                }
            } catch { throw ReshardError("listing the job's keys on \(shard): \(error)") }
            for (key, owner) in strays {
                let held: Bool
                do {
                    held = try manager.onShard(owner) { c throws(RedisError) in try c.run(["EXISTS", key]).integer == 1
                    }
                } catch {
                    throw ReshardError("checking \(key) on \(map.shards[owner]): \(error)")
                }
                guard held else { continue }
                do { _ = try manager.onShard(i) { c throws(RedisError) in try c.run(["UNLINK", key]) } } catch {
                    throw ReshardError("removing \(key) from \(shard): \(error)")
                }
                outcome.keysRemoved += 1
            }
        }
        if outcome.skipped.isEmpty { MoveJournal.remove(from: manager) }
        return outcome
    }
}

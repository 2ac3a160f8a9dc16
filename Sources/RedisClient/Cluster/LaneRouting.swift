import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The routing state of a connection to a cluster lane: which slot its keys hash to, and what
/// it knows of the master serving it.
final class LaneState {
    let seeds: [RedisEndpoint]
    let tag: String
    let namespace: KeyNamespace
    /// The slot of every key of the lane (`{tag}`).
    let slot: HashSlot
    /// Every node of the last slot map read, asked first when the slot's master must be found.
    var known: [RedisEndpoint] = []
    /// Replicas attached to the current master (`ROLE`), and those the slot map gives it
    /// (`CLUSTER SLOTS`, also while one is detached or resyncing); writes wait for one when
    /// either has any.
    var replicas = 0
    var mappedReplicas = 0
    /// No `WAIT` before this time (the replica stayed silent through every try).
    var waitPausedUntil = ContinuousClock.now
    /// When `ROLE` was last read.
    var roleReadAt = ContinuousClock.now
    /// A `WATCH` is in force on the connection; `watchBroken`: the connection broke since.
    var watching = false
    var watchBroken = false
    /// How long a command keeps retrying through a failover, a migration or a down cluster.
    var retryWindow: Duration = .seconds(30)
    /// The most redirects one command follows.
    let maxRedirects = 16
    /// How long a write waits for its replica.
    let replicaWait = 2000

    init(seeds: [RedisEndpoint], tag: String) {
        self.seeds = seeds
        self.tag = tag
        namespace = KeyNamespace(tag: tag)
        slot = HashSlot(key: "{\(tag)}")
        known = ClusterNodes.known(seeds: seeds)
    }
}

/// The nodes of each cluster this process has read a slot map of, by seed list: a new connection
/// to a lane asks them before its seeds, so a process whose seed node died still finds the
/// cluster.
enum ClusterNodes {
    private static let table = Mutex<[[RedisEndpoint]: [RedisEndpoint]]>([:])

    static func known(seeds: [RedisEndpoint]) -> [RedisEndpoint] { table.withLock { $0[seeds] ?? [] } }

    static func learn(seeds: [RedisEndpoint], nodes: [RedisEndpoint]) {
        table.withLock { t in
            if t.count > 64 { t.removeAll() }
            t[seeds] = nodes
        }
    }
}

extension RedisConnection {
    /// The most a lane waits between two attempts.
    private static let maxPause: Duration = .milliseconds(500)

    /// Finds the master serving the lane's slot from the last known nodes or the seeds, and
    /// points the connection at it (without connecting).
    func resolveLane(_ lane: LaneState) throws(RedisError) {
        var lastError = RedisError(.connectionFailed, endpoint: endpoint.description, "no seed node answered")
        var tried = Set<RedisEndpoint>()
        for candidate in [node] + lane.known + lane.seeds where tried.insert(candidate).inserted {
            let map: ClusterSlotMap
            do throws(RedisError) {
                let c = try RedisConnection(candidate, options: options)
                let reply = try c.directSend(["CLUSTER", "SLOTS"])
                if case .error(let message) = reply {
                    if message.contains("cluster support disabled") {
                        throw RedisError(
                            .invalidEndpoint, endpoint: endpoint.description,
                            "\(candidate) is not in cluster mode (cluster_enabled:0); give it without cluster://")
                    }
                    throw c.serverError(message, command: "CLUSTER SLOTS")
                }
                map = try ClusterSlotMap.parse(reply, from: candidate)
            } catch {
                switch error.code {
                case .connectionFailed, .connectionLost:
                    lastError = error
                    continue
                case .authenticationFailed:
                    throw RedisError(
                        .authenticationFailed, endpoint: endpoint.description,
                        "cluster node \(candidate) refused the credentials: \(error.message) (every node of the cluster must accept them)"
                    )
                default: throw error
                }
            }
            lane.known = map.ranges.flatMap { [$0.master] + $0.replicas }
            ClusterNodes.learn(seeds: lane.seeds, nodes: lane.known)
            guard let master = map.master(for: lane.slot) else {
                lastError = RedisError(
                    .serverError, endpoint: endpoint.description,
                    "no master serves slot \(lane.slot) of lane '\(lane.tag)' (the cluster has uncovered slots)")
                continue
            }
            if master != node { disconnect() }
            node = master
            lane.mappedReplicas = map.replicas(for: lane.slot).count
            return
        }
        throw lastError
    }

    /// Called when the socket to a lane's master is up: learns its replicas, and notes that a
    /// `WATCH` given before did not survive.
    func laneConnected() throws(RedisError) {
        guard let lane else { return }
        if lane.watching { lane.watchBroken = true }
        try readRole(lane)
    }

    /// Asks the master for its replicas (`ROLE`). Without ROLE the lane cannot know whether to
    /// wait for a replica: it refuses rather than silently give up durability (an ACL user
    /// needs +role, +wait and +cluster|slots).
    private func readRole(_ lane: LaneState) throws(RedisError) {
        let role = try directSend(["ROLE"])
        if case .error(let message) = role { throw serverError(message, command: "ROLE") }
        if case .array(let parts) = role, parts.first?.text == "master", parts.count >= 3 {
            lane.replicas = parts[2].array?.count ?? 0
        } else {
            lane.replicas = 0
        }
        lane.roleReadAt = .now
    }

    /// Waits until the master's replica has every write so far (`WAIT 1`): up to five times
    /// `replicaWait`, asking `ROLE` again between tries (a replica that left is not waited for,
    /// and one that attached later is). Only a replica that is attached but silent for all of
    /// that is given up on, for 10 s.
    private func waitForReplica(_ lane: LaneState) throws(RedisError) {
        func none() -> Bool { lane.replicas == 0 && lane.mappedReplicas == 0 }
        if none() && ContinuousClock.now - lane.roleReadAt > .seconds(1) { try readRole(lane) }
        guard !none(), ContinuousClock.now >= lane.waitPausedUntil else { return }
        for attempt in 0..<5 {
            let acked = try directSend(["WAIT", "1", "\(lane.replicaWait)"])
            if (acked.integer ?? 0) >= 1 { return }
            try readRole(lane)
            // A replica the slot map still names may be gone for good: read the map again.
            if attempt >= 1, let map = try? ClusterSlotMap.parse(directSend(["CLUSTER", "SLOTS"]), from: node) {
                lane.mappedReplicas = map.master(for: lane.slot) == node ? map.replicas(for: lane.slot).count : 0
            }
            if none() { return }
        }
        lane.waitPausedUntil = ContinuousClock.now + .seconds(10)
    }

    /// Sends the commands at some indices of a batch on a connection (`ASKING` before each when
    /// asked to), delivers the replies that are not redirects, and returns the redirected ones.
    typealias LaneAttempt = (RedisConnection, [Int], Bool) throws(RedisError) -> [(Int, ClusterRedirect)]

    /// Runs a batch of `count` commands on the lane's master until every command has an answer
    /// that is not a redirect.
    ///
    /// - `MOVED` sends the redirected commands to the new master; `ASK` sends them once, with
    ///   `ASKING`, to the node named; `TRYAGAIN` and `CLUSTERDOWN` wait and send them again.
    /// - A lost or refused connection (a master that died) finds the slot's master again and
    ///   sends the batch again, unless a reply was already delivered or the batch is a
    ///   transaction (it may have run): then it throws, and the next command goes to the new
    ///   master.
    /// - A transaction is all or nothing: any redirect sends it whole again, unless a `WATCH`
    ///   was in force (it stays on the old node): then it throws.
    /// - After the batch, when it wrote and the master has a replica, `WAIT 1` makes the writes
    ///   reach it before the caller goes on, so a failover cannot lose what a caller saw done.
    private func laneRouted(
        _ lane: LaneState, names: [String], delivered: () -> Bool, _ attempt: LaneAttempt
    ) throws(RedisError) {
        let upper = names.map { $0.uppercased() }
        let transaction = upper.contains("EXEC")
        let watched = lane.watching
        if lane.watchBroken && transaction {
            lane.watching = false
            lane.watchBroken = false
            throw RedisError(
                .connectionLost, endpoint: errorEndpoint,
                "the connection broke after WATCH; the transaction was not run")
        }
        let deadline = ContinuousClock.now + lane.retryWindow
        var pending = Array(names.indices)
        var pause = Duration.milliseconds(10)
        var redirects = 0
        var lastError: RedisError?
        func wait(_ why: @autoclosure () -> String) throws(RedisError) {
            guard ContinuousClock.now + pause < deadline else {
                throw lastError
                    ?? RedisError(
                        .timedOut, endpoint: errorEndpoint,
                        "slot \(lane.slot) was not served within \(lane.retryWindow): \(why())")
            }
            Self.sleep(pause)
            pause = min(pause * 2, Self.maxPause)
        }
        while true {
            let redirected: [(Int, ClusterRedirect)]
            do {
                if context == nil { try self.connect() }
                redirected = try attempt(self, pending, false)
            } catch {
                guard error.code == .connectionLost || error.code == .connectionFailed else { throw error }
                disconnect()
                lastError = error
                if transaction || delivered() {
                    try? resolveLane(lane)
                    throw error
                }
                try wait("\(error)")
                do { try resolveLane(lane) } catch {
                    if error.code != .connectionFailed && error.code != .serverError { throw error }
                    lastError = error
                }
                continue
            }
            if redirected.isEmpty { break }
            redirects += 1
            guard redirects <= lane.maxRedirects else {
                throw RedisError(
                    .serverError, endpoint: errorEndpoint,
                    "slot \(lane.slot): more than \(lane.maxRedirects) redirects (a redirect loop between nodes?)")
            }
            if transaction {
                if watched {
                    throw RedisError(
                        .serverError, endpoint: errorEndpoint,
                        "slot \(lane.slot) moved or is migrating; the transaction after WATCH was not run")
                }
                if case .moved(_, let to) = redirected[0].1 {
                    disconnect()
                    node = to
                } else {
                    try wait("the slot is migrating")
                }
                continue
            }
            var next: [Int] = []
            var asks: [RedisEndpoint: [Int]] = [:]
            var again = false
            for (i, r) in redirected {
                switch r {
                case .moved(_, let to):
                    if to != node {
                        disconnect()
                        node = to
                    }
                    next.append(i)
                case .ask(_, let to): asks[to, default: []].append(i)
                case .tryAgain:
                    again = true
                    next.append(i)
                }
            }
            for (to, indices) in asks {
                let c: RedisConnection
                do { c = try RedisConnection(to, options: options) } catch {
                    lastError = error
                    again = true
                    next += indices
                    continue
                }
                for (i, _) in try attempt(c, indices, true) {
                    again = true
                    next.append(i)
                }
            }
            if again { try wait("TRYAGAIN or CLUSTERDOWN") }
            pending = next.sorted()
            if pending.isEmpty { break }
        }
        for name in upper {
            switch name {
            case "WATCH": lane.watching = true
            case "EXEC", "UNWATCH", "DISCARD":
                lane.watching = false
                lane.watchBroken = false
            default: break
            }
        }
        if options.waitForReplica, upper.contains(where: { KeyNamespace.writes($0) }) { try waitForReplica(lane) }
    }

    /// `commands` with the lane's prefix on their keys.
    private func prefixing(_ commands: [RedisCommand], _ lane: LaneState) throws(RedisError) -> [RedisCommand] {
        try commands.map { (c) throws(RedisError) -> RedisCommand in
            var p = c
            p.arguments = try lane.namespace.apply(c.arguments, endpoint: errorEndpoint)
            return p
        }
    }

    /// The commands at `indices`, each after an `ASKING` when `asking`.
    private static func batch(_ commands: [RedisCommand], _ indices: [Int], asking: Bool) -> [RedisCommand] {
        indices.flatMap { asking ? [RedisCommand("ASKING"), commands[$0]] : [commands[$0]] }
    }

    /// The caller's index of reply `k` to a batch built as `batch` builds it (nil for the reply
    /// to an `ASKING`).
    private static func original(_ k: Int, _ indices: [Int], asking: Bool) -> Int? {
        if asking { return k % 2 == 0 ? nil : indices[k / 2] }
        return indices[k]
    }

    func laneSend(_ command: RedisCommand, _ lane: LaneState) throws(RedisError) -> RedisReply {
        let reply = try laneWithReply(command, lane) { RedisReply($0) }
        return lane.namespace.strip(reply, command: command.name.uppercased())
    }

    func laneWithReply<R>(
        _ command: RedisCommand, _ lane: LaneState, _ body: (BorrowedReply) throws(RedisError) -> R
    ) throws(RedisError) -> R {
        let prefixed = try prefixing([command], lane)[0]
        var result: R?
        try laneRouted(lane, names: [command.name], delivered: { result != nil }) {
            (c, _, asking) throws(RedisError) -> [(Int, ClusterRedirect)] in
            if asking { _ = try c.directSend(["ASKING"]) }
            let node = c.node
            return try c.directWithReply(prefixed) { (r) throws(RedisError) -> [(Int, ClusterRedirect)] in
                if let redirect = ClusterRedirect(r, from: node) { return [(0, redirect)] }
                result = try body(r)
                return []
            }
        }
        return result!
    }

    func lanePipeline<R>(
        _ commands: [RedisCommand], _ lane: LaneState, _ body: (Int, BorrowedReply) throws(RedisError) -> R
    ) throws(RedisError) -> [R] {
        guard !commands.isEmpty else { return [] }
        let prefixed = try prefixing(commands, lane)
        var results = [R?](repeating: nil, count: commands.count)
        var deliveredAny = false
        try laneRouted(lane, names: commands.map(\.name), delivered: { deliveredAny }) {
            (c, indices, asking) throws(RedisError) -> [(Int, ClusterRedirect)] in
            let batch = Self.batch(prefixed, indices, asking: asking)
            var redirected: [(Int, ClusterRedirect)] = []
            let node = c.node
            _ = try c.directPipeline(batch) { (k, r) throws(RedisError) -> Void in
                guard let i = Self.original(k, indices, asking: asking) else { return }
                if let redirect = ClusterRedirect(r, from: node) {
                    redirected.append((i, redirect))
                    return
                }
                deliveredAny = true
                results[i] = try body(i, r)
            }
            return redirected
        }
        return results.map { $0! }
    }

    func lanePipeline(borrowing commands: [BorrowedCommand], _ lane: LaneState) throws(RedisError) -> [RedisReply] {
        guard !commands.isEmpty else { return [] }
        let prefixed = try commands.map { (c) throws(RedisError) in
            try c.prefixed(lane.namespace, endpoint: errorEndpoint)
        }
        var results = [RedisReply](repeating: .null, count: commands.count)
        try laneRouted(lane, names: commands.map(\.name), delivered: { false }) {
            (c, indices, asking) throws(RedisError) -> [(Int, ClusterRedirect)] in
            let asked = BorrowedCommand(["ASKING"])
            let batch = indices.flatMap { asking ? [asked, prefixed[$0]] : [prefixed[$0]] }
            let replies = try c.directPipeline(borrowing: batch)
            var redirected: [(Int, ClusterRedirect)] = []
            for (k, reply) in replies.enumerated() {
                guard let i = Self.original(k, indices, asking: asking) else { continue }
                if case .error(let message) = reply, let redirect = ClusterRedirect(message, from: c.node) {
                    redirected.append((i, redirect))
                } else if case .array(let queued) = reply, prefixed[i].isCommand("EXEC"),
                    let redirect = queued.lazy.compactMap({ q -> ClusterRedirect? in
                        if case .error(let m) = q { return ClusterRedirect(m, from: c.node) }
                        return nil
                    }).first
                {
                    redirected.append((i, redirect))
                } else {
                    results[i] = reply
                }
            }
            // A transaction's commands are queued: a redirect of any of them voids its EXEC.
            if let exec = prefixed.firstIndex(where: { $0.isCommand("EXEC") }), indices.contains(exec),
                case .error(let message) = results[exec], message.hasPrefix("EXECABORT"),
                let first = redirected.first
            {
                return [(exec, first.1)]
            }
            return redirected
        }
        return results
    }

    func lanePipelineStreaming(
        _ commands: [RedisCommand], _ lane: LaneState, prefixLength: Int,
        target: (Int, UnsafeRawBufferPointer, Int) -> UnsafeMutableRawBufferPointer?,
        done: (Int, StreamedReply) -> Void
    ) throws(RedisError) {
        guard !commands.isEmpty else { return }
        let prefixed = try prefixing(commands, lane)
        var deliveredAny = false
        try laneRouted(lane, names: commands.map(\.name), delivered: { deliveredAny }) {
            (c, indices, asking) throws(RedisError) -> [(Int, ClusterRedirect)] in
            let batch = Self.batch(prefixed, indices, asking: asking)
            var redirected: [(Int, ClusterRedirect)] = []
            let node = c.node
            try c.directPipelineStreaming(
                batch, prefixLength: prefixLength,
                target: { k, prefix, rest in
                    Self.original(k, indices, asking: asking).flatMap { target($0, prefix, rest) }
                },
                done: { k, outcome in
                    guard let i = Self.original(k, indices, asking: asking) else { return }
                    if case .error(let message) = outcome, let redirect = ClusterRedirect(message, from: node) {
                        redirected.append((i, redirect))
                        return
                    }
                    deliveredAny = true
                    done(i, outcome)
                })
            return redirected
        }
    }

    private static func sleep(_ d: Duration) {
        let (s, atto) = d.components
        var request = timespec(tv_sec: Int(s), tv_nsec: Int(atto / 1_000_000_000))
        var remaining = timespec()
        while nanosleep(&request, &remaining) != 0 && errno == EINTR { request = remaining }
    }
}

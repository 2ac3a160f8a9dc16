#if canImport(Glibc)
    import Glibc
#endif

/// A connection to a Redis Cluster: it learns the slot map from seed nodes, sends each command
/// (or same-slot pipeline) to the master of its slot, follows `MOVED` (and refreshes the map)
/// and `ASK` (with `ASKING`), and retries `TRYAGAIN`, `CLUSTERDOWN` and lost nodes (a failover)
/// within `retryWindow`. Like `RedisConnection`, one instance belongs to one thread.
///
/// A command that was sent when its node's connection broke is sent again after the map is
/// refreshed: it may run twice. Writes that must not (counters, list pushes) need the protocol
/// above to make them idempotent.
public final class ClusterClient {
    /// The nodes to ask for the slot map first.
    public let seeds: [RedisEndpoint]
    public let options: RedisOptions
    /// The slot map as last read.
    public private(set) var slots: ClusterSlotMap
    /// How long a command keeps retrying while the cluster is down, a slot migrates or a failed
    /// master is replaced.
    public var retryWindow: Duration = .seconds(10)
    /// The most redirects one command follows before it fails.
    public var maxRedirects = 16
    /// Times the slot map was read (for tests and metrics).
    public private(set) var refreshes = 0

    private var pool: [RedisEndpoint: RedisConnection] = [:]

    /// Connects to the first seed that answers and reads the slot map.
    public init(seeds: [RedisEndpoint], options: RedisOptions = RedisOptions()) throws(RedisError) {
        precondition(!seeds.isEmpty, "a cluster needs at least one seed node")
        self.seeds = seeds
        self.options = options
        slots = ClusterSlotMap(ranges: [])
        try refresh()
    }

    /// Reads the slot map again, from a known master or else a seed.
    public func refresh() throws(RedisError) {
        var lastError = RedisError(.connectionFailed, endpoint: seeds[0].description, "no node answered")
        var tried = Set<RedisEndpoint>()
        for node in slots.allMasters + seeds + ClusterNodes.known(seeds: seeds) where tried.insert(node).inserted {
            do {
                let reply = try connection(to: node).run(["CLUSTER", "SLOTS"])
                slots = try ClusterSlotMap.parse(reply, from: node)
                refreshes += 1
                ClusterNodes.learn(seeds: seeds, nodes: slots.allNodes)
                return
            } catch {
                if error.code == .connectionFailed || error.code == .connectionLost { pool[node] = nil }
                lastError = error
            }
        }
        throw lastError
    }

    /// The pooled connection to `node` (connected on first use).
    public func connection(to node: RedisEndpoint) throws(RedisError) -> RedisConnection {
        if let c = pool[node] { return c }
        let c = try RedisConnection(node, options: options)
        pool[node] = c
        return c
    }

    /// Sends `command`, whose keys all hash to `slot`, and returns its reply; error replies
    /// other than redirects come back as `.error`.
    @discardableResult
    public func send(_ command: RedisCommand, slot: HashSlot) throws(RedisError) -> RedisReply {
        try routed(slot) { (c, asking) throws(RedisError) -> Attempt<RedisReply> in
            if asking { _ = try c.send(["ASKING"]) }
            let reply = try c.send(command)
            if case .error(let message) = reply, let redirect = ClusterRedirect(message, from: c.endpoint) {
                return .redirect(redirect)
            }
            return .done(reply)
        }
    }

    /// Sends `command` and throws on an error reply.
    @discardableResult
    public func run(_ command: RedisCommand, slot: HashSlot) throws(RedisError) -> RedisReply {
        var node = slots.master(for: slot)
        let reply = try routed(slot) { (c, asking) throws(RedisError) -> Attempt<RedisReply> in
            node = c.endpoint
            if asking { _ = try c.send(["ASKING"]) }
            let reply = try c.send(command)
            if case .error(let message) = reply, let redirect = ClusterRedirect(message, from: c.endpoint) {
                return .redirect(redirect)
            }
            return .done(reply)
        }
        if case .error(let message) = reply, let node {
            throw try connection(to: node).serverError(message, command: command.name)
        }
        return reply
    }

    /// Sends `command` and lets `body` read the reply in place (no copy of bulk strings), as
    /// `RedisConnection.withReply` does.
    public func withReply<R>(
        _ command: RedisCommand, slot: HashSlot, _ body: (BorrowedReply) throws(RedisError) -> R
    ) throws(RedisError) -> R {
        try routed(slot) { (c, asking) throws(RedisError) -> Attempt<R> in
            if asking { _ = try c.send(["ASKING"]) }
            return try c.withReply(command) { (r) throws(RedisError) -> Attempt<R> in
                if let redirect = ClusterRedirect(r, from: c.endpoint) { return .redirect(redirect) }
                return .done(try body(r))
            }
        }
    }

    /// Sends `commands`, whose keys all hash to `slot`, in one write; returns their replies in
    /// order. Commands redirected during a slot migration are sent again where the cluster says.
    public func pipeline(_ commands: [RedisCommand], slot: HashSlot) throws(RedisError) -> [RedisReply] {
        var replies = [RedisReply](repeating: .null, count: commands.count)
        var pending = Array(commands.indices)
        try routed(slot) { (c, asking) throws(RedisError) -> Attempt<Void> in
            var batch: [RedisCommand] = []
            for i in pending {
                if asking { batch.append(["ASKING"]) }
                batch.append(commands[i])
            }
            let got = try c.pipeline(batch)
            var redirected: [Int] = []
            var redirect: ClusterRedirect?
            for (k, i) in pending.enumerated() {
                let reply = got[asking ? 2 * k + 1 : k]
                if case .error(let message) = reply, let r = ClusterRedirect(message, from: c.endpoint) {
                    redirected.append(i)
                    redirect = redirect ?? r
                } else {
                    replies[i] = reply
                }
            }
            pending = redirected
            return redirect.map { .redirect($0) } ?? .done(())
        }
        return replies
    }

    /// Runs `commands` as one `MULTI`/`EXEC` transaction on `slot`'s master and returns `EXEC`'s
    /// replies. During a migration of the slot it waits and tries again (a transaction cannot
    /// follow `ASK`), within `retryWindow`.
    public func transaction(_ commands: [RedisCommand], slot: HashSlot) throws(RedisError) -> [RedisReply] {
        try routed(slot) { (c, _) throws(RedisError) -> Attempt<[RedisReply]> in
            let got = try c.pipeline([["MULTI"]] + commands + [["EXEC"]])
            for reply in got.dropFirst().dropLast() {
                if case .error(let message) = reply, let r = ClusterRedirect(message, from: c.endpoint) {
                    if case .moved = r { return .redirect(r) }
                    return .redirect(.tryAgain)
                }
            }
            switch got.last! {
            case .array(let results): return .done(results)
            case .error(let message):
                if let r = ClusterRedirect(message, from: c.endpoint) { return .redirect(r) }
                throw c.serverError(message, command: "EXEC")
            default:
                throw RedisError(.unexpectedReply, endpoint: c.endpoint.description, "EXEC replied \(got.last!)")
            }
        }
    }

    /// The outcome of one attempt at a command on one node.
    enum Attempt<R> {
        case done(R)
        case redirect(ClusterRedirect)
    }

    /// Runs `attempt` on the master of `slot`, following redirects and retrying while the
    /// cluster recovers. `attempt` gets the connection and whether to send `ASKING` first.
    private func routed<R>(
        _ slot: HashSlot, _ attempt: (RedisConnection, Bool) throws(RedisError) -> Attempt<R>
    ) throws(RedisError) -> R {
        let deadline = ContinuousClock.now + retryWindow
        var target = slots.master(for: slot)
        var asking = false
        var redirects = 0
        var pause = Duration.milliseconds(10)
        var lastError: RedisError?
        func wait() throws(RedisError) {
            guard ContinuousClock.now + pause < deadline else {
                throw lastError
                    ?? RedisError(
                        .timedOut, endpoint: target?.description ?? "cluster",
                        "slot \(slot) was not served within \(retryWindow)")
            }
            Self.sleep(pause)
            pause = min(pause * 2, .milliseconds(250))
        }
        while true {
            guard let node = target else {
                lastError = RedisError(.serverError, endpoint: seeds[0].description, "no master serves slot \(slot)")
                try wait()
                try? refresh()
                target = slots.master(for: slot)
                continue
            }
            let outcome: Attempt<R>
            do { outcome = try attempt(try connection(to: node), asking) } catch {
                guard error.code == .connectionFailed || error.code == .connectionLost else { throw error }
                // The node is gone (a failover, or it left): ask the others who serves the slot.
                pool[node] = nil
                lastError = error
                try wait()
                try? refresh()
                target = slots.master(for: slot)
                asking = false
                continue
            }
            asking = false
            switch outcome {
            case .done(let value): return value
            case .redirect(.moved(let s, let to)) where s == slot:
                redirects += 1
                target = to
                // The map is out of date; read it once more, but go where the node said.
                try? refresh()
            case .redirect(.moved(_, let to)):
                redirects += 1
                target = to
            case .redirect(.ask(_, let to)):
                redirects += 1
                target = to
                asking = true
            case .redirect(.tryAgain):
                lastError = RedisError(
                    .serverError, endpoint: node.description, "slot \(slot) is busy (TRYAGAIN/CLUSTERDOWN)")
                try wait()
                target = slots.master(for: slot) ?? target
            }
            if redirects > maxRedirects {
                throw RedisError(
                    .serverError, endpoint: node.description, "slot \(slot): more than \(maxRedirects) redirects")
            }
        }
    }

    private static func sleep(_ d: Duration) {
        let (s, atto) = d.components
        var request = timespec(tv_sec: Int(s), tv_nsec: Int(atto / 1_000_000_000))
        var remaining = timespec()
        while nanosleep(&request, &remaining) != 0 && errno == EINTR { request = remaining }
    }
}

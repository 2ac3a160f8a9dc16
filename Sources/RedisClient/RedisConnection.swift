import CHiredis

#if canImport(Glibc)
    import Glibc
#endif

/// How to reach and log in to a Redis server.
public struct RedisOptions: Sendable, Equatable {
    /// `AUTH password`, or `AUTH username password` when `username` is set (Redis 6 ACL).
    public var password: String?
    public var username: String?
    public var connectTimeout: Duration = .seconds(2)
    /// How long a command may wait for its reply; blocking commands pass their own.
    public var commandTimeout: Duration = .seconds(30)
    /// On a cluster lane, whether writes wait (`WAIT 1`) until the master's replica has them, so
    /// that a failover loses nothing a caller saw done. Off only to measure what it costs.
    public var waitForReplica = true

    public init(password: String? = nil, username: String? = nil) {
        self.password = password
        self.username = username
    }
}

private let tuneMallocOnce: Void = chiredis_tune_malloc_for_large_values()

/// One blocking connection to a Redis server over hiredis.
///
/// Not thread safe: own it from one thread or behind a lock. A connection that breaks
/// (server restart, timeout) reports the error once and reconnects, with AUTH, on its next command.
///
/// Given a cluster lane (`cluster://HOST:PORT,…/TAG`), it talks to whichever master serves the
/// lane's slot: every key it sends gets the lane's `{TAG}` prefix, it follows `MOVED` and `ASK`,
/// waits out `TRYAGAIN`, `CLUSTERDOWN` and failovers within `laneRetryWindow`, and after every
/// write waits (`WAIT`) until the master's replica has it (LaneRouting.swift).
public final class RedisConnection {
    /// The server, or the cluster lane, this connection talks to.
    public let endpoint: RedisEndpoint
    public let options: RedisOptions
    private(set) var context: UnsafeMutablePointer<redisContext>?
    /// Read buffer of the streaming reply reader (LargeValues.swift); allocated on first use.
    var streamBuffer: UnsafeMutableRawBufferPointer?
    /// The routing state of a cluster lane; nil for a plain server.
    let lane: LaneState?
    /// The server the socket goes to: `endpoint`, or the master serving a lane's slot.
    var node: RedisEndpoint

    /// Connects and authenticates.
    public init(_ endpoint: RedisEndpoint, options: RedisOptions = RedisOptions()) throws(RedisError) {
        Self.tuneMalloc()
        self.endpoint = endpoint
        self.options = options
        switch endpoint.address {
        case .cluster(let seeds, let tag):
            guard let tag else {
                throw RedisError(
                    .invalidEndpoint, endpoint: endpoint.description,
                    "a connection goes to a server or to one lane of a cluster (cluster://…/TAG)")
            }
            let state = LaneState(seeds: seeds, tag: tag)
            lane = state
            node = seeds[0]
            try resolveLane(state)
        default:
            lane = nil
            node = endpoint
        }
        try connect()
    }

    deinit {
        if let context { redisFree(context) }
        streamBuffer?.deallocate()
    }

    /// Tunes glibc malloc for this process, once: megabyte values stay in the heap instead of
    /// being mapped and unmapped on every command, and the number of malloc arenas is capped so
    /// that threads do not reserve the address space of a memory-limited process (see the
    /// CHiredis shim). The first connection does it; code that starts threads before it calls it
    /// first.
    public static func tuneMalloc() { _ = tuneMallocOnce }

    /// Whether the connection is currently up (it reconnects lazily when it is not).
    public var isConnected: Bool { context != nil }

    func connect() throws(RedisError) {
        let tv = timeval(options.connectTimeout)
        let ctx: UnsafeMutablePointer<redisContext>?
        switch node.address {
        case .tcp(let host, let port): ctx = redisConnectWithTimeout(host, Int32(port), tv)
        case .unix(let path): ctx = redisConnectUnixWithTimeout(path, tv)
        case .cluster: ctx = nil
        }
        guard let ctx else { throw RedisError(.connectionFailed, endpoint: errorEndpoint, "out of memory") }
        if ctx.pointee.err != 0 {
            let message = String(cString: chiredis_errstr(ctx))
            redisFree(ctx)
            throw RedisError(.connectionFailed, endpoint: errorEndpoint, message)
        }
        // Child processes (workers, servers) must not inherit the socket.
        _ = fcntl(ctx.pointee.fd, F_SETFD, FD_CLOEXEC)
        context = ctx
        setTimeout(options.commandTimeout)
        if let password = options.password {
            var auth = RedisCommand("AUTH")
            if let user = options.username { auth.append(user) }
            auth.append(password)
            let reply: RedisReply
            do { reply = try directSend(auth) } catch {
                disconnect()
                throw error
            }
            if case .error(let message) = reply {
                disconnect()
                if message.hasPrefix("NOPERM") { throw permissionError(message, command: "AUTH") }
                throw RedisError(.authenticationFailed, endpoint: errorEndpoint, message)
            }
        }
        if lane != nil { try laneConnected() }
    }

    /// The server the socket goes to: `endpoint`, or for a cluster lane the master serving it
    /// as far as the connection knows.
    public var currentNode: RedisEndpoint { node }

    /// How errors name this connection: the endpoint, and for a lane also the node.
    var errorEndpoint: String { lane == nil ? endpoint.description : "\(endpoint) (node \(node))" }

    func disconnect() {
        if let context { redisFree(context) }
        context = nil
    }

    private func setTimeout(_ d: Duration) {
        if let context { _ = redisSetTimeout(context, timeval(d)) }
    }

    func liveContext() throws(RedisError) -> UnsafeMutablePointer<redisContext> {
        if context == nil { try connect() }
        return context!
    }

    func lostError(_ ctx: UnsafeMutablePointer<redisContext>, _ command: String) -> RedisError {
        var message = String(cString: chiredis_errstr(ctx))
        if message == "Resource temporarily unavailable" { message = "no reply within the timeout" }
        disconnect()
        return RedisError(.connectionLost, endpoint: errorEndpoint, "\(command): \(message)")
    }

    /// Sends one command and returns its reply. Server error replies come back as `.error`.
    @discardableResult
    public func send(_ command: RedisCommand) throws(RedisError) -> RedisReply {
        if let lane { return try laneSend(command, lane) }
        return try directSend(command)
    }

    func directSend(_ command: RedisCommand) throws(RedisError) -> RedisReply {
        try directWithReply(command) { RedisReply($0) }
    }

    /// Sends one command and throws on an error reply.
    @discardableResult
    public func run(_ command: RedisCommand) throws(RedisError) -> RedisReply {
        let reply = try send(command)
        if case .error(let message) = reply { throw serverError(message, command: command.name) }
        return reply
    }

    /// Sends one command that may block on the server (BLPOP, XREAD BLOCK) for up to `wait`.
    public func run(_ command: RedisCommand, blockingFor wait: Duration) throws(RedisError) -> RedisReply {
        _ = try liveContext()
        setTimeout(wait + options.commandTimeout)
        defer { setTimeout(options.commandTimeout) }
        return try run(command)
    }

    /// Sends one command and lets `body` read the reply in place, without copying bulk strings.
    /// The reply is only valid inside `body`.
    public func withReply<R>(
        _ command: RedisCommand, _ body: (BorrowedReply) throws(RedisError) -> R
    ) throws(RedisError) -> R {
        if let lane { return try laneWithReply(command, lane, body) }
        return try directWithReply(command, body)
    }

    func directWithReply<R>(
        _ command: RedisCommand, _ body: (BorrowedReply) throws(RedisError) -> R
    ) throws(RedisError) -> R {
        let ctx = try liveContext()
        let raw: UnsafeMutableRawPointer? = withArgv(command.arguments) { argc, argv, lens in
            redisCommandArgv(ctx, argc, argv, lens)
        }
        guard let raw else { throw lostError(ctx, command.name) }
        let reply = raw.assumingMemoryBound(to: redisReply.self)
        defer { freeReplyObject(raw) }
        return try body(BorrowedReply(reply))
    }

    /// Sends all commands in one write and reads all replies, in order.
    public func pipeline(_ commands: [RedisCommand]) throws(RedisError) -> [RedisReply] {
        let replies = try pipeline(commands) { _, reply in RedisReply(reply) }
        guard let lane else { return replies }
        return zip(commands, replies).map { lane.namespace.strip($1, command: $0.name.uppercased()) }
    }

    /// `pipeline(_:)` for commands that must all succeed: the first error reply is thrown as a
    /// typed error naming its command (every reply is read first, so the connection stays in
    /// sync).
    @discardableResult
    public func checkedPipeline(_ commands: [RedisCommand]) throws(RedisError) -> [RedisReply] {
        let replies = try pipeline(commands)
        try throwFirstError(replies, names: commands.map(\.name))
        return replies
    }

    /// Throws the first `.error` of `replies` as `serverError`, naming the command it answered.
    func throwFirstError(_ replies: [RedisReply], names: [String]) throws(RedisError) {
        for (name, reply) in zip(names, replies) {
            if case .error(let m) = reply { throw serverError(m, command: name.uppercased()) }
        }
    }

    /// Pipelines `commands`; `body` reads each reply in place (index, reply).
    public func pipeline<R>(
        _ commands: [RedisCommand], _ body: (Int, BorrowedReply) throws(RedisError) -> R
    ) throws(RedisError) -> [R] {
        if let lane { return try lanePipeline(commands, lane, body) }
        return try directPipeline(commands, body)
    }

    func directPipeline<R>(
        _ commands: [RedisCommand], _ body: (Int, BorrowedReply) throws(RedisError) -> R
    ) throws(RedisError) -> [R] {
        guard !commands.isEmpty else { return [] }
        let ctx = try liveContext()
        for command in commands {
            let status = withArgv(command.arguments) { argc, argv, lens in
                redisAppendCommandArgv(ctx, argc, argv, lens)
            }
            if status != REDIS_OK { throw lostError(ctx, command.name) }
        }
        var results: [R] = []
        results.reserveCapacity(commands.count)
        var firstError: RedisError?
        for i in commands.indices {
            var raw: UnsafeMutableRawPointer?
            if redisGetReply(ctx, &raw) != REDIS_OK || raw == nil { throw lostError(ctx, commands[i].name) }
            defer { freeReplyObject(raw) }
            // Keep reading after a failing body so the connection stays in sync.
            do throws(RedisError) {
                if firstError == nil {
                    results.append(try body(i, BorrowedReply(raw!.assumingMemoryBound(to: redisReply.self))))
                }
            } catch { firstError = error }
        }
        if let firstError { throw firstError }
        return results
    }

    /// The typed error for a server error reply to `command`.
    public func serverError(_ message: String, command: String) -> RedisError {
        if message.hasPrefix("NOPERM") { return permissionError(message, command: command) }
        if message.hasPrefix("NOAUTH") || message.hasPrefix("WRONGPASS") {
            return RedisError(
                .authenticationFailed, endpoint: errorEndpoint,
                "\(message) (give the password with --password or SMLT_REDIS_PASSWORD)")
        }
        return RedisError(.serverError, endpoint: errorEndpoint, "\(command): \(message)")
    }

    /// A NOPERM reply: the login worked, but the ACL user lacks a permission for `command`.
    private func permissionError(_ message: String, command: String) -> RedisError {
        let user = options.username ?? "default"
        return RedisError(
            .permissionDenied, endpoint: errorEndpoint,
            "the ACL user '\(user)' lacks a permission for \(command.uppercased()): \(message) (grant it with ACL SETUSER)"
        )
    }
}

/// Calls `body` with hiredis's argv form of `args`, without copying them.
private func withArgv<R>(
    _ args: [[UInt8]],
    _ body: (Int32, UnsafeMutablePointer<UnsafePointer<CChar>?>, UnsafePointer<Int>) -> R
) -> R {
    var pointers = [UnsafePointer<CChar>?](repeating: nil, count: args.count)
    let lengths = args.map(\.count)
    func nest(_ i: Int) -> R {
        if i == args.count {
            return pointers.withUnsafeMutableBufferPointer { p in
                lengths.withUnsafeBufferPointer { l in body(Int32(args.count), p.baseAddress!, l.baseAddress!) }
            }
        }
        return args[i].withUnsafeBufferPointer { buf in
            // hiredis reads `length` bytes; an empty argument still needs a valid pointer.
            pointers[i] = UnsafeRawPointer(buf.baseAddress ?? UnsafePointer(bitPattern: 1)!)
                .assumingMemoryBound(to: CChar.self)
            return nest(i + 1)
        }
    }
    return nest(0)
}

extension timeval {
    init(_ d: Duration) {
        let (s, atto) = d.components
        self.init(tv_sec: Int(s), tv_usec: Int(atto / 1_000_000_000_000))
    }
}

/// A reply still inside hiredis's buffers; valid only in the closure that received it.
public struct BorrowedReply {
    let pointer: UnsafeMutablePointer<redisReply>

    init(_ pointer: UnsafeMutablePointer<redisReply>) { self.pointer = pointer }

    public var isNull: Bool { pointer.pointee.type == REDIS_REPLY_NIL }
    public var isError: Bool { pointer.pointee.type == REDIS_REPLY_ERROR }

    /// The bytes of a bulk string, status or error reply.
    public var bytes: UnsafeRawBufferPointer? {
        let t = pointer.pointee.type
        guard t == REDIS_REPLY_STRING || t == REDIS_REPLY_STATUS || t == REDIS_REPLY_ERROR,
            let str = pointer.pointee.str
        else { return nil }
        return UnsafeRawBufferPointer(start: str, count: pointer.pointee.len)
    }

    public var count: Int { pointer.pointee.type == REDIS_REPLY_ARRAY ? pointer.pointee.elements : 0 }

    public subscript(i: Int) -> BorrowedReply {
        precondition(i >= 0 && i < count, "reply element out of range")
        return BorrowedReply(pointer.pointee.element![i]!)
    }
}

extension RedisReply {
    /// Copies a borrowed reply.
    public init(_ r: BorrowedReply) {
        let p = r.pointer.pointee
        switch p.type {
        case REDIS_REPLY_STRING: self = .string(r.bytes.map { Array($0) } ?? [])
        case REDIS_REPLY_STATUS:
            self = .status(String(decoding: r.bytes ?? UnsafeRawBufferPointer(start: nil, count: 0), as: UTF8.self))
        case REDIS_REPLY_ERROR:
            self = .error(String(decoding: r.bytes ?? UnsafeRawBufferPointer(start: nil, count: 0), as: UTF8.self))
        case REDIS_REPLY_INTEGER: self = .integer(p.integer)
        case REDIS_REPLY_ARRAY: self = .array((0..<r.count).map { RedisReply(r[$0]) })
        default: self = .null
        }
    }
}

extension RedisConnection {
    /// Deletes (UNLINK) every key matching the glob `pattern`, walking the keyspace with SCAN so
    /// the server is never blocked; returns how many keys were deleted.
    @discardableResult
    public func deleteKeys(matching pattern: String) throws(RedisError) -> Int {
        var cursor = "0"
        var deleted = 0
        repeat {
            let reply = try run(["SCAN", cursor, "MATCH", pattern, "COUNT", "1000"])
            guard let parts = reply.array, parts.count == 2, let next = parts[0].text else {
                throw RedisError(.unexpectedReply, endpoint: endpoint.description, "SCAN replied \(reply)")
            }
            cursor = next
            let found = (parts[1].array ?? []).compactMap(\.text)
            if !found.isEmpty { deleted += Int(try run(RedisCommand(strings: ["UNLINK"] + found)).integer ?? 0) }
        } while cursor != "0"
        return deleted
    }
}

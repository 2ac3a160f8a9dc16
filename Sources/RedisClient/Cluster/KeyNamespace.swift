/// The key prefix of a cluster lane (`{TAG}`): every key a lane connection sends gets it, so all
/// of a lane's keys hash to one slot (docs/wire-format.md, "Redis Cluster").
///
/// The prefix goes in front of each key argument, found from the command's name with a fixed
/// table of the commands SMLT sends; a command outside the table is refused on a lane rather
/// than sent with an unprefixed key. Replies that name keys (SCAN, BLPOP, XREAD) lose the
/// prefix again, so callers see the same key names as on a plain server.
struct KeyNamespace: Sendable, Equatable {
    /// `{TAG}`, as bytes.
    let prefix: [UInt8]

    init(tag: String) { prefix = Array("{\(tag)}".utf8) }

    /// Where a command's keys are.
    enum Keys {
        case noKeys
        /// The argument after the name.
        case first
        /// Every argument after the name.
        case all
        /// Every argument after the name but the last (a timeout).
        case allButLast
        /// The argument at this position (the name is 0).
        case at(Int)
        /// XREAD/XREADGROUP: the first half of the arguments after `STREAMS`.
        case streams
        /// SCAN: the pattern after `MATCH` (one is added when the command has none).
        case scanPattern
    }

    /// The key positions of `name` (upper case), or nil for a command a lane does not send.
    static func keys(of name: String) -> Keys? {
        switch name {
        case "PING", "ECHO", "INFO", "MULTI", "EXEC", "DISCARD", "UNWATCH", "AUTH", "HELLO", "CLIENT", "CLUSTER",
            "WAIT", "ASKING", "TIME", "READONLY", "READWRITE", "COMMAND", "ROLE":
            .noKeys
        case "GET", "SET", "SETEX", "PSETEX", "SETNX", "STRLEN", "GETRANGE", "SETRANGE", "APPEND", "GETDEL", "GETEX",
            "INCR", "INCRBY", "DECR", "DECRBY", "SADD", "SREM", "SMEMBERS", "SISMEMBER", "SCARD", "EXPIRE", "PEXPIRE",
            "TTL", "PTTL", "PERSIST", "TYPE", "LTRIM", "RPUSH", "LPUSH", "LRANGE", "LLEN", "LPOP", "RPOP", "LINDEX",
            "XADD", "XRANGE", "XREVRANGE", "XLEN", "XTRIM", "XDEL", "HSET", "HSETNX", "HGET", "HMGET", "HGETALL",
            "HDEL", "HLEN", "HINCRBY", "DUMP", "RESTORE":
            .first
        case "MGET", "DEL", "UNLINK", "EXISTS", "WATCH", "TOUCH": .all
        case "BLPOP", "BRPOP": .allButLast
        case "MEMORY", "OBJECT", "XINFO": .at(2)
        case "XREAD": .streams
        case "SCAN": .scanPattern
        default: nil
        }
    }

    /// Whether `name` (upper case) changes data, so that a lane waits for its replica after it.
    static func writes(_ name: String) -> Bool {
        switch name {
        case "SET", "SETEX", "PSETEX", "SETNX", "SETRANGE", "APPEND", "GETDEL", "GETEX", "INCR", "INCRBY", "DECR",
            "DECRBY", "SADD", "SREM", "EXPIRE", "PEXPIRE", "PERSIST", "LTRIM", "RPUSH", "LPUSH", "LPOP", "RPOP", "XADD",
            "XTRIM", "XDEL", "HSET", "HSETNX", "HDEL", "HINCRBY", "RESTORE", "DEL", "UNLINK", "EXEC":
            true
        default: false
        }
    }

    /// `arguments` with the prefix on every key; throws for a command outside the table.
    func apply(_ arguments: [[UInt8]], endpoint: String) throws(RedisError) -> [[UInt8]] {
        guard let first = arguments.first else { return arguments }
        let name = String(decoding: first, as: UTF8.self).uppercased()
        guard let keys = Self.keys(of: name) else {
            throw RedisError(
                .serverError, endpoint: endpoint,
                "\(name) is not supported on a cluster lane (its keys could not be given the lane's hash tag)")
        }
        var out = arguments
        func prefix(_ i: Int) { if i < out.count { out[i] = self.prefix + out[i] } }
        let tagPrefix = self.prefix
        switch keys {
        case .noKeys: break
        case .first: prefix(1)
        case .all: for i in out.indices.dropFirst() { prefix(i) }
        case .allButLast: for i in out.indices.dropFirst().dropLast() { prefix(i) }
        case .at(let i): prefix(i)
        case .streams:
            if let s = out.firstIndex(where: { String(decoding: $0, as: UTF8.self).uppercased() == "STREAMS" }) {
                let count = (out.count - s - 1) / 2
                for i in (s + 1)..<(s + 1 + count) { prefix(i) }
            }
        case .scanPattern:
            if let m = out.firstIndex(where: { String(decoding: $0, as: UTF8.self).uppercased() == "MATCH" }),
                m + 1 < out.count
            {
                prefix(m + 1)
            } else {
                out += [Array("MATCH".utf8), tagPrefix + Array("*".utf8)]
            }
        }
        return out
    }

    /// `reply` to `name` (upper case) with the prefix taken off the keys it names.
    func strip(_ reply: RedisReply, command name: String) -> RedisReply {
        switch name {
        case "SCAN":
            guard case .array(let parts) = reply, parts.count == 2, case .array(let found) = parts[1] else {
                return reply
            }
            return .array([parts[0], .array(found.map(strip))])
        case "BLPOP", "BRPOP":
            guard case .array(let parts) = reply, let key = parts.first else { return reply }
            return .array([strip(key)] + parts.dropFirst())
        case "XREAD":
            guard case .array(let streams) = reply else { return reply }
            return .array(
                streams.map { s in
                    guard case .array(let parts) = s, let key = parts.first else { return s }
                    return .array([strip(key)] + parts.dropFirst())
                })
        default: return reply
        }
    }

    private func strip(_ key: RedisReply) -> RedisReply {
        guard case .string(let bytes) = key, bytes.starts(with: prefix) else { return key }
        return .string(Array(bytes.dropFirst(prefix.count)))
    }
}

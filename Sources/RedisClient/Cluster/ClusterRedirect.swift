/// What a cluster node's error reply asks of the client: go to another node for the slot
/// (`MOVED`, for good; `ASK`, for one command during a migration), or try again shortly
/// (`TRYAGAIN` during a migration, `CLUSTERDOWN` while a failover runs).
enum ClusterRedirect: Equatable, Sendable {
    case moved(HashSlot, RedisEndpoint)
    case ask(HashSlot, RedisEndpoint)
    case tryAgain

    /// The redirect in an error reply's text (`MOVED 3999 127.0.0.1:6381`), or nil for any other
    /// error. An empty host (`MOVED 3999 :6381`) is the host of `node`, which sent the reply.
    init?(_ message: some StringProtocol, from node: RedisEndpoint) {
        if message.hasPrefix("TRYAGAIN") || message.hasPrefix("CLUSTERDOWN") {
            self = .tryAgain
            return
        }
        let parts = message.split(separator: " ")
        guard parts.count == 3, parts[0] == "MOVED" || parts[0] == "ASK", let n = Int(parts[1]),
            let slot = HashSlot(n), let colon = parts[2].lastIndex(of: ":"),
            let port = Int(parts[2][parts[2].index(after: colon)...]), (1...65535).contains(port)
        else { return nil }
        var host = String(parts[2][..<colon])
        if host.isEmpty, case .tcp(let h, _) = node.address { host = h }
        guard !host.isEmpty else { return nil }
        let target = RedisEndpoint(host: host, port: port)
        self = parts[0] == "MOVED" ? .moved(slot, target) : .ask(slot, target)
    }

    /// The redirect in a borrowed error reply, if it is one.
    init?(_ reply: BorrowedReply, from node: RedisEndpoint) {
        guard reply.isError, let bytes = reply.bytes else { return nil }
        self.init(String(decoding: bytes, as: UTF8.self), from: node)
    }
}

extension RedisConnection {
    /// The keys matching a glob `pattern`, found with SCAN (never KEYS, so the server is never
    /// blocked).
    public func scanKeys(matching pattern: String) throws(RedisError) -> [String] {
        var cursor = "0"
        var keys: [String] = []
        repeat {
            let reply = try run(["SCAN", cursor, "MATCH", pattern, "COUNT", "1000"])
            guard let parts = reply.array, parts.count == 2, let next = parts[0].text else {
                throw RedisError(.unexpectedReply, endpoint: endpoint.description, "SCAN replied \(reply)")
            }
            cursor = next
            keys += (parts[1].array ?? []).compactMap(\.text)
        } while cursor != "0"
        return keys
    }
}

/// Where a Redis server listens: a TCP host and port, or a unix socket path; or a Redis
/// Cluster, given by seed nodes, and optionally one lane of it (the keys with one hash tag).
public struct RedisEndpoint: Hashable, Sendable, Codable, CustomStringConvertible {
    public enum Address: Hashable, Sendable {
        case tcp(host: String, port: Int)
        case unix(path: String)
        /// A Redis Cluster reached through `seeds` (TCP nodes); with a `tag`, the cluster lane
        /// whose keys all carry the hash tag `{tag}` (`cluster://HOST:PORT,…/TAG`).
        indirect case cluster(seeds: [RedisEndpoint], tag: String?)
    }

    public let address: Address

    public init(host: String, port: Int) {
        address = .tcp(host: host, port: port)
    }

    public init(unixSocket path: String) {
        address = .unix(path: path)
    }

    /// A cluster given by its seed nodes, or one lane of it.
    public init(cluster seeds: [RedisEndpoint], tag: String? = nil) {
        address = .cluster(seeds: seeds, tag: tag)
    }

    /// The longest lane tag.
    public static let maxTagLength = 64

    /// Parses `host:port`, `[v6addr]:port`, `unix:/path`, an absolute socket path, or
    /// `cluster://HOST:PORT[,HOST:PORT…][/TAG]`.
    public init(parsing text: String) throws(RedisError) {
        let s = text.trimmingWhitespace()
        if s.hasPrefix("cluster://") {
            var rest = Substring(s.dropFirst("cluster://".count))
            var tag: String?
            if let slash = rest.firstIndex(of: "/") {
                let t = String(rest[rest.index(after: slash)...])
                guard !t.isEmpty, t.count <= Self.maxTagLength,
                    t.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) })
                else {
                    throw RedisError(
                        .invalidEndpoint, endpoint: text,
                        "a cluster lane tag is 1 to \(Self.maxTagLength) characters from A-Z a-z 0-9 . _ -")
                }
                tag = t
                rest = rest[..<slash]
            }
            var seeds: [RedisEndpoint] = []
            for part in rest.split(separator: ",", omittingEmptySubsequences: false) {
                let seed = try RedisEndpoint(parsing: String(part))
                guard case .tcp = seed.address else {
                    throw RedisError(.invalidEndpoint, endpoint: text, "cluster seed nodes are host:port")
                }
                seeds.append(seed)
            }
            guard !seeds.isEmpty else {
                throw RedisError(.invalidEndpoint, endpoint: text, "expected cluster://HOST:PORT[,HOST:PORT…]")
            }
            address = .cluster(seeds: seeds, tag: tag)
            return
        }
        if s.hasPrefix("unix:") || s.hasPrefix("/") {
            let path = s.hasPrefix("unix:") ? String(s.dropFirst(5)) : s
            guard !path.isEmpty else { throw RedisError(.invalidEndpoint, endpoint: text, "empty unix socket path") }
            address = .unix(path: path)
            return
        }
        var host: Substring
        var portText: Substring
        if s.hasPrefix("[") {
            guard let close = s.firstIndex(of: "]"), s[s.index(after: close)...].hasPrefix(":") else {
                throw RedisError(.invalidEndpoint, endpoint: text, "expected [address]:port")
            }
            host = s[s.index(after: s.startIndex)..<close]
            portText = s[s.index(close, offsetBy: 2)...]
        } else {
            guard let colon = s.lastIndex(of: ":") else {
                throw RedisError(.invalidEndpoint, endpoint: text, "expected host:port")
            }
            host = s[..<colon]
            portText = s[s.index(after: colon)...]
        }
        guard !host.isEmpty else { throw RedisError(.invalidEndpoint, endpoint: text, "missing host") }
        guard let port = Int(portText), (1...65535).contains(port) else {
            throw RedisError(.invalidEndpoint, endpoint: text, "port must be a number from 1 to 65535")
        }
        address = .tcp(host: String(host), port: port)
    }

    /// Parses a comma-separated list such as `127.0.0.1:7001,127.0.0.1:7002`. Inside a
    /// `cluster://` item, commas separate its seed nodes: the item goes on to its `/TAG`, or to
    /// the end of the text when it has none.
    public static func list(parsing text: String) throws(RedisError) -> [RedisEndpoint] {
        var result: [RedisEndpoint] = []
        var cluster: [Substring] = []
        for part in text.split(separator: ",") where !part.trimmingWhitespace().isEmpty {
            if cluster.isEmpty && !part.trimmingWhitespace().hasPrefix("cluster://") {
                result.append(try RedisEndpoint(parsing: String(part)))
                continue
            }
            cluster.append(part)
            let item = part.trimmingWhitespace()
            // The tag's `/` (the one in `cluster://` does not count).
            if (cluster.count == 1 ? item.dropFirst("cluster://".count) : Substring(item)).contains("/") {
                result.append(try RedisEndpoint(parsing: cluster.joined(separator: ",")))
                cluster = []
            }
        }
        if !cluster.isEmpty { result.append(try RedisEndpoint(parsing: cluster.joined(separator: ","))) }
        guard !result.isEmpty else { throw RedisError(.invalidEndpoint, endpoint: text, "no endpoint given") }
        return result
    }

    public var description: String {
        switch address {
        case .tcp(let host, let port): host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        case .unix(let path): "unix:\(path)"
        case .cluster(let seeds, let tag):
            "cluster://" + seeds.map(\.description).joined(separator: ",") + (tag.map { "/\($0)" } ?? "")
        }
    }

    /// Whether this names a Redis Cluster (or a lane of one).
    public var isCluster: Bool {
        if case .cluster = address { true } else { false }
    }

    /// The lane's tag, for a cluster lane.
    public var laneTag: String? {
        if case .cluster(_, let tag) = address { tag } else { nil }
    }

    /// The seed nodes, for a cluster.
    public var clusterSeeds: [RedisEndpoint] {
        if case .cluster(let seeds, _) = address { seeds } else { [] }
    }

    /// The lane `tag` of this cluster.
    public func lane(_ tag: String) -> RedisEndpoint { RedisEndpoint(cluster: clusterSeeds, tag: tag) }

    /// Whether `self` and `other` name the same shard: equal endpoints, or the same lane tag of
    /// a cluster (whatever seed nodes each was reached through).
    public func sameShard(as other: RedisEndpoint) -> Bool {
        if let a = laneTag, let b = other.laneTag { return a == b }
        return self == other
    }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        do { try self.init(parsing: text) } catch {
            throw DecodingError.dataCorrupted(
                .init(codingPath: decoder.codingPath, debugDescription: error.description))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }
}

extension StringProtocol {
    func trimmingWhitespace() -> String {
        var s = Substring(self)
        while let f = s.first, f.isWhitespace { s.removeFirst() }
        while let l = s.last, l.isWhitespace { s.removeLast() }
        return String(s)
    }
}

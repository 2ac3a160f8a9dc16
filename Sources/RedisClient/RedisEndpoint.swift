/// Where a Redis server listens: a TCP host and port, or a unix socket path.
public struct RedisEndpoint: Hashable, Sendable, Codable, CustomStringConvertible {
    public enum Address: Hashable, Sendable {
        case tcp(host: String, port: Int)
        case unix(path: String)
    }

    public let address: Address

    public init(host: String, port: Int) {
        address = .tcp(host: host, port: port)
    }

    public init(unixSocket path: String) {
        address = .unix(path: path)
    }

    /// Parses `host:port`, `[v6addr]:port`, `unix:/path` or an absolute socket path.
    public init(parsing text: String) throws(RedisError) {
        let s = text.trimmingWhitespace()
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

    /// Parses a comma-separated list such as `127.0.0.1:7001,127.0.0.1:7002`.
    public static func list(parsing text: String) throws(RedisError) -> [RedisEndpoint] {
        var result: [RedisEndpoint] = []
        for part in text.split(separator: ",") where !part.trimmingWhitespace().isEmpty {
            result.append(try RedisEndpoint(parsing: String(part)))
        }
        guard !result.isEmpty else { throw RedisError(.invalidEndpoint, endpoint: text, "no endpoint given") }
        return result
    }

    public var description: String {
        switch address {
        case .tcp(let host, let port): host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        case .unix(let path): "unix:\(path)"
        }
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

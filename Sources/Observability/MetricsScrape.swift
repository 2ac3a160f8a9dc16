import Foundation

/// Fetches a page over plain HTTP/1.1 as a scraper would (one blocking request on a new
/// connection): what the tests and the benchmark use to read `/metrics`.
public enum MetricsScrape {
    /// GETs `path` from `host:port` (IPv4); returns the status code and the body.
    public static func get(
        host: String = "127.0.0.1", port: Int, path: String = "/metrics", timeoutSeconds: Int = 10
    ) throws(MetricsEndpointError) -> (status: Int, body: String) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw MetricsEndpointError("socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        for option in [SO_RCVTIMEO, SO_SNDTIMEO] {
            setsockopt(fd, SOL_SOCKET, option, &timeout, socklen_t(MemoryLayout<timeval>.size))
        }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = UInt16(port).bigEndian
        guard inet_pton(AF_INET, host, &addr.sin_addr) == 1 else {
            throw MetricsEndpointError("'\(host)' is not an IPv4 address")
        }
        let connected = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard connected == 0 else {
            throw MetricsEndpointError("cannot connect to \(host):\(port): \(String(cString: strerror(errno)))")
        }
        let request = Array("GET \(path) HTTP/1.1\r\nHost: \(host):\(port)\r\nConnection: close\r\n\r\n".utf8)
        guard request.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, 0) }) == request.count else {
            throw MetricsEndpointError("cannot send to \(host):\(port): \(String(cString: strerror(errno)))")
        }
        var response: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 { throw MetricsEndpointError("reading from \(host):\(port): \(String(cString: strerror(errno)))") }
            if n == 0 { break }
            response += buffer[0..<n]
        }
        let text = String(decoding: response, as: UTF8.self)
        guard let end = text.range(of: "\r\n\r\n"), let statusLine = text.split(separator: "\r\n").first else {
            throw MetricsEndpointError("\(host):\(port) sent no HTTP response")
        }
        let parts = statusLine.split(separator: " ")
        guard parts.count >= 2, let status = Int(parts[1]) else {
            throw MetricsEndpointError("\(host):\(port) sent a bad status line: \(statusLine)")
        }
        let head = text[..<end.lowerBound].lowercased()
        var body = String(text[end.upperBound...])
        if head.contains("transfer-encoding: chunked") { body = dechunk(body) }
        return (status, body)
    }

    /// The body of a chunked transfer: each chunk's size line and its trailing CRLF removed.
    static func dechunk(_ s: String) -> String {
        var out = Substring()
        var rest = Substring(s)
        while let line = rest.range(of: "\r\n"), let size = Int(rest[..<line.lowerBound], radix: 16), size > 0 {
            let start = line.upperBound
            let bytes = rest.utf8[start...].prefix(size)
            out += Substring(bytes)
            rest = rest[bytes.endIndex...].dropFirst(2)
        }
        return String(out)
    }
}

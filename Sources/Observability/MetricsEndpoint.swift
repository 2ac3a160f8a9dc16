import Dispatch
import FlyingFox
import FlyingSocks
import Foundation
import Prometheus
import Synchronization

/// Serves a Prometheus registry as text at `http://HOST:PORT/metrics` (FlyingFox: a small HTTP
/// server on non-blocking sockets, run by Swift concurrency on its own tasks, away from the
/// threads that block on Redis).
public final class MetricsEndpoint: Sendable {
    /// Where it listens, as `HOST:PORT` (the port the system chose when given 0).
    public let address: String
    private let server: HTTPServer
    private let task: Task<Void, Never>

    /// Starts listening on `host` (an IPv4 or IPv6 address) and `port`; returns once it listens.
    public init(registry: PrometheusCollectorRegistry, host: String, port: Int) throws(MetricsEndpointError) {
        guard (0...65535).contains(port) else { throw MetricsEndpointError("port \(port) is not from 0 to 65535") }
        var routes = RoutedHTTPHandler()
        routes.appendRoute("GET /metrics") { _ in
            HTTPResponse(
                statusCode: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: Data(registry.emitToBuffer()))
        }
        routes.appendRoute("GET /") { _ in
            HTTPResponse(statusCode: .ok, headers: [.contentType: "text/plain"], body: Data("see /metrics\n".utf8))
        }
        let server: HTTPServer
        do {
            let p = UInt16(port)
            if host.contains(":") {
                server = HTTPServer(address: try .inet6(ip6: host, port: p), logger: .disabled, handler: routes)
            } else {
                server = HTTPServer(address: try .inet(ip4: host, port: p), logger: .disabled, handler: routes)
            }
        } catch {
            throw MetricsEndpointError("'\(host)' is not an IPv4 or IPv6 address")
        }
        // The first of: listening (with the port bound), `run` failing (a port in use), or 5 s.
        let outcome = FirstOutcome<Result<Int?, MetricsEndpointError>>()
        let shown = host.contains(":") ? "[\(host)]" : host
        task = Task {
            do { try await server.run() } catch {
                outcome.settle(.failure(MetricsEndpointError("cannot listen on \(shown):\(port): \(error)")))
            }
        }
        Task {
            do {
                try await server.waitUntilListening(timeout: 5)
                switch await server.listeningAddress {
                case .ip4(_, let p)?, .ip6(_, let p)?: outcome.settle(.success(Int(p)))
                default: outcome.settle(.success(nil))
                }
            } catch {
                outcome.settle(.failure(MetricsEndpointError("not listening on \(shown):\(port) after 5 s: \(error)")))
            }
        }
        switch outcome.wait() {
        case .failure(let e):
            task.cancel()
            throw e
        case .success(let bound):
            address = "\(shown):\(bound ?? port)"
        }
        self.server = server
    }

    /// Stops listening and closes the connections.
    public func stop() {
        let done = DispatchSemaphore(value: 0)
        let (server, task) = (server, task)
        Task {
            await server.stop(timeout: 1)
            task.cancel()
            done.signal()
        }
        done.wait()
    }
}

/// The first value any of several tasks settles on, waited for by a thread.
private final class FirstOutcome<T: Sendable>: Sendable {
    private let value = Mutex<T?>(nil)
    private let ready = DispatchSemaphore(value: 0)

    /// Keeps `v` unless a value was settled before.
    func settle(_ v: T) {
        let first = value.withLock { current in
            guard current == nil else { return false }
            current = v
            return true
        }
        if first { ready.signal() }
    }

    func wait() -> T {
        ready.wait()
        return value.withLock { $0! }
    }
}

/// Why the metrics endpoint could not start.
public struct MetricsEndpointError: Error, CustomStringConvertible, Equatable {
    public let description: String
    init(_ description: String) { self.description = "metrics endpoint: \(description)" }
}

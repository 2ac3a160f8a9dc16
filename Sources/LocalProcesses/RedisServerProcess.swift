import RedisClient

#if canImport(Glibc)
    import Glibc
#endif

/// A throw-away `redis-server` child process on a free loopback port (or in a network namespace
/// of its own, on an address given), for tests, demos, benchmarks and `smlt train`. Persistence
/// is off unless `extraArguments` turn it on; `stop()` (also run on deinit) terminates it.
public final class RedisServerProcess: Sendable {
    public let endpoint: RedisEndpoint
    public let port: Int
    public let password: String?
    private let process: ChildProcess

    /// Starts `redis-server` and waits until it answers PING.
    /// - Parameters:
    ///   - password: sets `requirepass` when given.
    ///   - port: a fixed port (to restart a server in place); a free one when nil.
    ///   - extraArguments: more `--option value` pairs for redis-server.
    ///   - networkNamespace: the network namespace (`ip netns` name) to run in; it listens on
    ///     `host` there, on `port` or 6379, and this process must reach `host` from where it runs.
    ///   - host: the address to listen on (protected mode is off unless it is 127.0.0.1).
    public init(
        password: String? = nil, port fixedPort: Int? = nil, extraArguments: [String] = [],
        networkNamespace: String? = nil, host: String = "127.0.0.1"
    ) throws {
        var lastError: any Error = RedisError(.connectionFailed, endpoint: host, "redis-server did not start")
        let fixedPort = fixedPort ?? (networkNamespace == nil ? nil : 6379)
        for _ in 0..<(fixedPort == nil ? 5 : 1) {
            let port = try fixedPort ?? freeLoopbackPort()
            var args = [
                "--port", "\(port)", "--bind", host, "--save", "", "--appendonly", "no",
                "--daemonize", "no", "--loglevel", "warning", "--dir", "/tmp",
            ]
            if host != "127.0.0.1" { args += ["--protected-mode", "no"] }
            if let password { args += ["--requirepass", password] }
            args += extraArguments
            let process: ChildProcess
            do {
                process = try ChildProcess(
                    "redis-server", arguments: args, stdout: .discard, networkNamespace: networkNamespace)
            } catch {
                // The hint only where it helps: not when the process is shutting down.
                let hint =
                    ChildProcess.resolve("redis-server") == nil
                    ? " (install it with apt-get install redis-server, or run make test / make demo)" : ""
                throw RedisError(.connectionFailed, endpoint: "redis-server", "\(error)\(hint)")
            }
            let endpoint = RedisEndpoint(host: host, port: port)
            let deadline = ContinuousClock.now + .seconds(5)
            while ContinuousClock.now < deadline && process.isRunning {
                do {
                    let c = try RedisConnection(endpoint, options: RedisOptions(password: password))
                    if try c.send(["PING"]) == .status("PONG") {
                        self.endpoint = endpoint
                        self.port = port
                        self.password = password
                        self.process = process
                        return
                    }
                } catch { lastError = error }
                sleepFor(.milliseconds(10))
            }
            process.terminate(grace: .seconds(1))
        }
        throw lastError
    }

    deinit { stop() }

    /// The process id, for tests that kill it.
    public var pid: Int32 { process.pid }

    public var isRunning: Bool { process.isRunning }

    /// Terminates the server and waits for it to exit (SIGKILL after 5 s).
    public func stop() {
        if process.isRunning { process.terminate() }
    }

    /// Kills the server with SIGKILL, as a crash would.
    public func kill() {
        process.send(SIGKILL)
        _ = process.wait()
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it; never 6379).
public func freeLoopbackPort() throws -> Int {
    for _ in 0..<20 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { break }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sp in
                bind(fd, sp, len) == 0 && getsockname(fd, sp, &len) == 0
            }
        }
        guard ok else { continue }
        let port = Int(UInt16(bigEndian: addr.sin_port))
        if port != 6379 { return port }
    }
    throw RedisError(.connectionFailed, endpoint: "127.0.0.1", "no free loopback port")
}

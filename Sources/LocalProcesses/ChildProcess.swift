import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// How a child process ended.
public struct ExitStatus: Sendable, Equatable, CustomStringConvertible {
    /// The exit code, or nil when a signal ended the process.
    public let code: Int32?
    /// The signal that ended the process, or nil.
    public let signal: Int32?
    /// Peak resident memory in KiB, from the kernel's accounting.
    public let maxResidentKiB: Int

    public var succeeded: Bool { code == 0 }

    public var description: String {
        if let code { return "exit code \(code)" }
        return "signal \(signal ?? 0)\(signal == SIGKILL ? " (SIGKILL)" : signal == SIGTERM ? " (SIGTERM)" : "")"
    }
}

/// Where a child's output goes.
public enum ChildOutput: Sendable {
    case inherit
    case discard
    /// Appends to a file, created if needed.
    case file(String)
}

/// An error starting a process.
public struct SpawnError: Error, Sendable, CustomStringConvertible {
    public let executable: String
    public let message: String
    public var description: String { "cannot start \(executable): \(message)" }
}

/// A child process started with posix_spawn in its own process group, reaped with wait4.
///
/// Owning code must stop what it starts: `terminate()` sends SIGTERM, waits, then SIGKILL. Once
/// the process is shutting down (`ChildRegistry.isStopping`), starting a child throws.
public final class ChildProcess: Sendable {
    public let pid: pid_t
    public let executable: String
    private let status = Mutex<ExitStatus?>(nil)

    private let table: ChildTable

    /// Starts `executable` (an absolute path or a name looked up in PATH) with `arguments`.
    /// - Throws: `SpawnError` when it cannot be started, or once the process is shutting down.
    public convenience init(
        _ executable: String, arguments: [String], environment: [String: String]? = nil,
        stdout: ChildOutput = .inherit, stderr: ChildOutput = .inherit
    ) throws(SpawnError) {
        try self.init(
            executable, arguments: arguments, environment: environment, stdout: stdout, stderr: stderr,
            table: .shared)
    }

    /// Starts a child registered in `table` (tests use a table of their own).
    init(
        _ executable: String, arguments: [String], environment: [String: String]?, stdout: ChildOutput,
        stderr: ChildOutput, table: ChildTable
    ) throws(SpawnError) {
        guard let path = Self.resolve(executable) else {
            throw SpawnError(executable: executable, message: "not found in PATH")
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for (fd, out) in [(Int32(1), stdout), (Int32(2), stderr)] {
            switch out {
            case .inherit: break
            case .discard: posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", O_WRONLY, 0)
            case .file(let p): posix_spawn_file_actions_addopen(&actions, fd, p, O_WRONLY | O_CREAT | O_APPEND, 0o644)
            }
        }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        // Its own process group: Ctrl-C reaches only us, and we stop children in order.
        posix_spawnattr_setpgroup(&attr, 0)
        var mask = sigset_t()
        sigemptyset(&mask)
        posix_spawnattr_setsigmask(&attr, &mask)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for s in [SIGINT, SIGTERM, SIGPIPE, SIGCHLD] { sigaddset(&defaults, s) }
        posix_spawnattr_setsigdefault(&attr, &defaults)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        var env = environment.map { $0.map { "\($0.key)=\($0.value)" } }
        if env == nil {
            env = []
            var p = environ
            while let s = p.pointee {
                env!.append(String(cString: s))
                p += 1
            }
        }
        let argv = [path] + arguments
        var cArgs = argv.map { strdup($0) } + [nil]
        var cEnv = env!.map { strdup($0) } + [nil]
        defer {
            for p in cArgs { free(p) }
            for p in cEnv { free(p) }
        }
        try table.reserve(executable)
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, path, &actions, &attr, &cArgs, &cEnv)
        guard rc == 0 else {
            table.cancelReservation()
            throw SpawnError(executable: executable, message: String(cString: strerror(rc)))
        }
        self.pid = pid
        self.executable = executable
        self.table = table
        table.add(self)
    }

    deinit {
        if status.withLock({ $0 == nil }) { _ = terminate(grace: .seconds(2)) }
    }

    /// The exit status if the process has ended, without blocking.
    public func poll() -> ExitStatus? {
        status.withLock { s in
            if let s { return s }
            var raw: Int32 = 0
            var usage = rusage()
            let r = wait4(pid, &raw, WNOHANG, &usage)
            guard r == pid else { return nil }
            let termSig = raw & 0x7F
            let result = ExitStatus(
                code: termSig == 0 ? (raw >> 8) & 0xFF : nil, signal: termSig == 0 ? nil : termSig,
                maxResidentKiB: Int(usage.ru_maxrss))
            s = result
            table.remove(pid)
            return result
        }
    }

    public var isRunning: Bool { poll() == nil }

    /// Waits for the process to end, at most `timeout` (forever when nil).
    public func wait(timeout: Duration? = nil) -> ExitStatus? {
        let deadline = timeout.map { ContinuousClock.now + $0 }
        var pause = Duration.milliseconds(1)
        while true {
            if let s = poll() { return s }
            if let deadline, ContinuousClock.now >= deadline { return nil }
            sleepFor(pause)
            pause = min(pause * 2, .milliseconds(20))
        }
    }

    /// Sends `sig` to the process if it is still running.
    public func send(_ sig: Int32) {
        if poll() == nil { kill(pid, sig) }
    }

    /// SIGTERM, then SIGKILL after `grace`; returns how it ended.
    @discardableResult
    public func terminate(grace: Duration = .seconds(5)) -> ExitStatus {
        send(SIGTERM)
        if let s = wait(timeout: grace) { return s }
        send(SIGKILL)
        return wait()!
    }

    static func resolve(_ name: String) -> String? {
        if name.contains("/") { return access(name, X_OK) == 0 ? name : nil }
        let path = getenv("PATH").map { String(cString: $0) } ?? "/usr/local/bin:/usr/bin:/bin"
        for dir in path.split(separator: ":") + ["/usr/sbin", "/usr/bin"] {
            let candidate = "\(dir)/\(name)"
            if access(candidate, X_OK) == 0 { return candidate }
        }
        return nil
    }
}

/// Sleeps the calling thread.
public func sleepFor(_ d: Duration) {
    let (s, atto) = d.components
    var request = timespec(tv_sec: Int(s), tv_nsec: Int(atto / 1_000_000_000))
    var remaining = timespec()
    while nanosleep(&request, &remaining) != 0 && errno == EINTR { request = remaining }
}

extension Duration {
    /// The duration in seconds, as a Double.
    public var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

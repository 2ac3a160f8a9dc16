import CProcessSpawn
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

extension ChildOutput {
    /// The file to open for this output and the flags to open it with; nil to inherit.
    var file: (String?, Int32) {
        switch self {
        case .inherit: (nil, 0)
        case .discard: ("/dev/null", O_WRONLY)
        case .file(let path): (path, O_WRONLY | O_CREAT | O_APPEND)
        }
    }
}

/// An error starting a process.
public struct SpawnError: Error, Sendable, CustomStringConvertible {
    public let executable: String
    public let message: String
    public var description: String { "cannot start \(executable): \(message)" }
}

/// A child process in its own process group, reaped with wait4, that cannot outlive this process.
///
/// It is started with fork and execve (not posix_spawn, which cannot) with the parent-death
/// signal set to SIGKILL: when this process dies, even by SIGKILL, the kernel kills the child.
/// The kernel sends that signal when the *thread* that forked exits, not the process; so every
/// child is forked by one spawner thread that lives as long as the process (see
/// `cprocess_spawn`), and a child started from a short-lived thread (a `Thread`, a Dispatch or
/// Swift Testing worker that its pool retires) lives on after that thread. The signal is kept
/// across execve (of binaries that are not set-user-ID), so it also covers `prlimit -- smlt
/// worker`, which execs; a child's own children are the child's to stop.
///
/// Owning code must stop what it starts: `terminate()` sends SIGTERM, waits, then SIGKILL. Once
/// the process is shutting down (`ChildRegistry.isStopping`), starting a child throws.
public final class ChildProcess: Sendable {
    public let pid: pid_t
    public let executable: String
    private let status = Mutex<ExitStatus?>(nil)
    private let table: ChildTable

    /// Starts `executable` (a path, or a name looked up in PATH) with `arguments`.
    /// - Parameters:
    ///   - environment: the whole environment; this process's when nil.
    ///   - stdout: where standard output goes (standard input is always /dev/null).
    ///   - stderr: where standard error goes.
    ///   - networkNamespace: the name of a network namespace (`ip netns`, a file in /run/netns)
    ///     the child runs in; nil for the namespace this process started in.
    /// - Throws: `SpawnError` when the executable is missing or cannot be executed, a file for
    ///   the output cannot be opened, the namespace cannot be entered, or the process is shutting
    ///   down.
    public convenience init(
        _ executable: String, arguments: [String], environment: [String: String]? = nil,
        stdout: ChildOutput = .inherit, stderr: ChildOutput = .inherit, networkNamespace: String? = nil
    ) throws(SpawnError) {
        try self.init(
            executable, arguments: arguments, environment: environment, stdout: stdout, stderr: stderr,
            networkNamespace: networkNamespace, table: .shared)
    }

    /// Starts a child registered in `table` (tests use a table of their own).
    init(
        _ executable: String, arguments: [String], environment: [String: String]?, stdout: ChildOutput,
        stderr: ChildOutput, networkNamespace: String? = nil, table: ChildTable
    ) throws(SpawnError) {
        guard let path = Self.resolve(executable) else {
            throw SpawnError(executable: executable, message: "not found in PATH")
        }
        var env = environment.map { $0.map { "\($0.key)=\($0.value)" } }
        if env == nil {
            env = []
            var p = environ
            while let s = p.pointee {
                env!.append(String(cString: s))
                p += 1
            }
        }
        try table.reserve(executable)
        let pid: pid_t
        do throws(SpawnError) {
            pid = try Self.spawn(
                executable, path: path, argv: [path] + arguments, env: env!, stdout: stdout, stderr: stderr,
                netns: networkNamespace.map(NetworkNamespace.path(of:)))
        } catch {
            table.cancelReservation()
            throw error
        }
        self.pid = pid
        self.executable = executable
        self.table = table
        table.add(self)
    }

    /// Forks and execs through `cprocess_spawn`; returns the pid.
    private static func spawn(
        _ executable: String, path: String, argv: [String], env: [String], stdout: ChildOutput, stderr: ChildOutput,
        netns: String?
    ) throws(SpawnError) -> pid_t {
        let (outFile, outFlags) = stdout.file
        let (errFile, errFlags) = stderr.file
        var cArgs = argv.map { strdup($0) } + [nil]
        var cEnv = env.map { strdup($0) } + [nil]
        let strings = [path, "/dev/null", outFile, errFile, netns].map { $0.map { strdup($0) } ?? nil }
        defer {
            for p in cArgs + cEnv + strings { free(p) }
        }
        var result = cprocess_spawn_result()
        let rc = cArgs.withUnsafeMutableBufferPointer { a in
            cEnv.withUnsafeMutableBufferPointer { e in
                var request = cprocess_spawn_request(
                    path: strings[0], argv: a.baseAddress, envp: e.baseAddress, stdin_path: strings[1],
                    stdin_flags: O_RDONLY, stdout_path: strings[2], stdout_flags: outFlags, stderr_path: strings[3],
                    stderr_flags: errFlags, netns_path: strings[4])
                return cprocess_spawn(&request, &result)
            }
        }
        guard rc != 0 else { return result.pid }
        let reason = String(cString: strerror(result.error))
        let message: String
        switch Int(result.stage) {
        case Int(CPROCESS_STAGE_EXEC): message = "execve \(path): \(reason)"
        case Int(CPROCESS_STAGE_STDOUT): message = "cannot open \(outFile ?? "") for its output: \(reason)"
        case Int(CPROCESS_STAGE_STDERR): message = "cannot open \(errFile ?? "") for its errors: \(reason)"
        case Int(CPROCESS_STAGE_STDIN): message = "cannot open /dev/null for its input: \(reason)"
        case Int(CPROCESS_STAGE_THREAD): message = "cannot start the spawner thread: \(reason)"
        case Int(CPROCESS_STAGE_PIPE): message = "cannot create a pipe: \(reason)"
        case Int(CPROCESS_STAGE_FORK): message = "fork: \(reason)"
        case Int(CPROCESS_STAGE_NETNS): message = "cannot enter the network namespace \(netns ?? ""): \(reason)"
        case Int(CPROCESS_STAGE_PDEATHSIG): message = "prctl(PR_SET_PDEATHSIG): \(reason)"
        case Int(CPROCESS_STAGE_SETPGID): message = "setpgid: \(reason)"
        default: message = reason
        }
        throw SpawnError(executable: executable, message: message)
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

    /// Sends `sig` to the process's group if the process is still running: it leads a group of
    /// its own (it calls `setpgid(0, 0)` before exec), so processes it started and did not move
    /// elsewhere get the signal too. Once the process has ended nothing is sent (its group id may
    /// belong to another process by then).
    public func sendToGroup(_ sig: Int32) {
        if poll() == nil { kill(-pid, sig) }
    }

    /// SIGTERM, then SIGKILL after `grace`; returns how it ended.
    @discardableResult
    public func terminate(grace: Duration = .seconds(5)) -> ExitStatus {
        send(SIGTERM)
        if let s = wait(timeout: grace) { return s }
        send(SIGKILL)
        return wait()!
    }

    /// The path to exec: `name` itself when it holds a slash (execve reports what is wrong with
    /// it), else the first executable `name` in PATH.
    static func resolve(_ name: String) -> String? {
        if name.contains("/") { return name }
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

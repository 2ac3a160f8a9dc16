import Dispatch
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Every child process this process has started and not yet reaped, so that Ctrl-C (SIGINT) or
/// SIGTERM stops them all before exiting.
public enum ChildRegistry {
    private static let children = Mutex<[pid_t: ChildProcess]>([:])
    private static let sources = Mutex<[any DispatchSourceSignal]>([])
    private static let stopping = Atomic<Bool>(false)

    /// True once a signal handler has started stopping everything: failures seen after that are
    /// the shutdown's doing, not errors to report.
    public static var isStopping: Bool { stopping.load(ordering: .relaxed) }

    static func add(_ c: ChildProcess) { children.withLock { $0[c.pid] = c } }
    static func remove(_ pid: pid_t) { _ = children.withLock { $0.removeValue(forKey: pid) } }

    /// Terminates every registered child, newest first (SIGTERM, then SIGKILL after `grace`).
    public static func terminateAll(grace: Duration = .seconds(3)) {
        let all = children.withLock { $0.values.sorted { $0.pid > $1.pid } }
        for c in all { c.send(SIGTERM) }
        for c in all where c.wait(timeout: grace) == nil {
            c.send(SIGKILL)
            _ = c.wait()
        }
    }

    /// On SIGINT or SIGTERM: run `beforeExit`, stop all children and exit with 128 + signal.
    public static func installSignalHandlers(beforeExit: @escaping @Sendable (Int32) -> Void = { _ in }) {
        sources.withLock { list in
            guard list.isEmpty else { return }
            for sig in [SIGINT, SIGTERM] {
                signal(sig, SIG_IGN)
                let s = DispatchSource.makeSignalSource(signal: sig, queue: .global())
                s.setEventHandler {
                    stopping.store(true, ordering: .relaxed)
                    beforeExit(sig)
                    terminateAll()
                    exit(128 + sig)
                }
                s.resume()
                list.append(s)
            }
        }
    }
}

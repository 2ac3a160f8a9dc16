import Dispatch
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Every child process this process has started and not yet reaped, so that Ctrl-C (SIGINT) or
/// SIGTERM stops them all before exiting.
///
/// Shutdown is one-way: once it has begun (`isStopping`), starting a `ChildProcess` throws, so a
/// supervisor that sees its children die during the shutdown cannot start them again. (SIGKILL
/// of this process is covered by the children's parent-death signal; see `ChildProcess`.)
public enum ChildRegistry {
    private static let sources = Mutex<[any DispatchSourceSignal]>([])
    /// What to undo once the children are stopped, by token (see `addCleanup`).
    private static let cleanups = Mutex<(next: Int, bodies: [Int: @Sendable () -> Void])>((0, [:]))

    /// True once shutdown has begun (a signal handler or `terminateAll`): failures seen after
    /// that are the shutdown's doing, not errors to report, and no child can be started.
    public static var isStopping: Bool { ChildTable.shared.isStopping }

    /// Begins the shutdown and terminates every registered child, newest first (SIGTERM, then
    /// SIGKILL after `grace`). A child being started meanwhile is waited for and stopped too;
    /// afterwards no child can be started.
    public static func terminateAll(grace: Duration = .seconds(3)) {
        ChildTable.shared.terminateAll(grace: grace)
    }

    /// Registers `body` to run on SIGINT or SIGTERM after every child has stopped (for what the
    /// children used: network namespaces, say); the owner runs it itself on the normal path and
    /// then removes it with `removeCleanup`. Cleanups run newest first.
    /// - Returns: the token to remove it with.
    public static func addCleanup(_ body: @escaping @Sendable () -> Void) -> Int {
        cleanups.withLock { c in
            c.next += 1
            c.bodies[c.next] = body
            return c.next
        }
    }

    /// Forgets the cleanup registered under `token`.
    public static func removeCleanup(_ token: Int) {
        _ = cleanups.withLock { $0.bodies.removeValue(forKey: token) }
    }

    /// Runs and forgets every registered cleanup, newest first.
    static func runCleanups() {
        let bodies = cleanups.withLock { c in
            defer { c.bodies = [:] }
            return c.bodies.sorted { $0.key > $1.key }.map(\.value)
        }
        for body in bodies { body() }
    }

    /// On SIGINT or SIGTERM: begin the shutdown (no child starts any more), run `beforeExit`, stop
    /// all children, run the cleanups (`addCleanup`) and exit with 128 + signal.
    public static func installSignalHandlers(beforeExit: @escaping @Sendable (Int32) -> Void = { _ in }) {
        sources.withLock { list in
            guard list.isEmpty else { return }
            for sig in [SIGINT, SIGTERM] {
                signal(sig, SIG_IGN)
                let s = DispatchSource.makeSignalSource(signal: sig, queue: .global())
                s.setEventHandler {
                    ChildTable.shared.beginStopping()
                    beforeExit(sig)
                    terminateAll()
                    runCleanups()
                    exit(128 + sig)
                }
                s.resume()
                list.append(s)
            }
        }
    }
}

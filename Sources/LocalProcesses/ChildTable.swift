import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The children one process has started and not yet reaped, and whether it is shutting down.
///
/// `ChildRegistry` uses the process-wide `shared` table; a test makes its own to shut it down
/// without ending the test process. Starting a child reserves a place first (refused once
/// stopping), so a start that races the shutdown is either refused or registered before
/// `stopping()` returns the children to stop.
final class ChildTable: Sendable {
    static let shared = ChildTable()

    private struct State {
        var children: [pid_t: ChildProcess] = [:]
        var stopping = false
        /// Starts reserved and not yet registered or cancelled.
        var starting = 0
    }

    private let state = Mutex(State())

    var isStopping: Bool { state.withLock { $0.stopping } }

    /// Reserves a place for a child about to be started; follow with `add` or `cancelReservation`.
    /// - Throws: `SpawnError` once shutdown has started.
    func reserve(_ executable: String) throws(SpawnError) {
        let refused = state.withLock { s in
            if s.stopping { return true }
            s.starting += 1
            return false
        }
        if refused {
            throw SpawnError(
                executable: executable,
                message: "this process is shutting down (it was interrupted), so it starts no new processes")
        }
    }

    /// Registers a child started after `reserve`.
    func add(_ c: ChildProcess) {
        state.withLock { s in
            s.children[c.pid] = c
            s.starting -= 1
        }
    }

    /// Gives back the place of a start that failed.
    func cancelReservation() { state.withLock { $0.starting -= 1 } }

    /// Forgets a child that was reaped.
    func remove(_ pid: pid_t) { _ = state.withLock { $0.children.removeValue(forKey: pid) } }

    /// Marks the table stopping, so that no child starts any more.
    func beginStopping() { state.withLock { $0.stopping = true } }

    /// Marks the table stopping and returns every child, after the starts under way have
    /// finished (each takes a fork and an execve).
    func stopping() -> [ChildProcess] {
        while true {
            let (all, busy) = state.withLock { s in
                s.stopping = true
                return (Array(s.children.values), s.starting > 0)
            }
            if !busy { return all }
            sleepFor(.milliseconds(1))
        }
    }

    /// Stops every child, newest first (SIGTERM, then SIGKILL after `grace`); no child starts
    /// after this has begun.
    func terminateAll(grace: Duration) {
        let all = stopping().sorted { $0.pid > $1.pid }
        for c in all { c.send(SIGTERM) }
        for c in all where c.wait(timeout: grace) == nil {
            c.send(SIGKILL)
            _ = c.wait()
        }
    }
}

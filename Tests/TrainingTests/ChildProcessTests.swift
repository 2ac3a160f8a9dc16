import Foundation
import Synchronization
import Testing

@testable import LocalProcesses

#if canImport(Glibc)
    import Glibc
#endif

/// How a shutdown refuses new children. Each test that shuts down uses a `ChildTable` of its own,
/// not the process's.
@Suite struct ChildProcessTests {
    /// `sleep 30` in `table`, its output discarded.
    func sleeper(in table: ChildTable = .shared) throws(SpawnError) -> ChildProcess {
        try ChildProcess("sleep", arguments: ["30"], environment: nil, stdout: .discard, stderr: .discard, table: table)
    }

    @Test func startingIsRefusedOnceShutdownHasBegun() throws {
        let table = ChildTable()
        let before = try sleeper(in: table)
        table.terminateAll(grace: .seconds(2))
        #expect(table.isStopping)
        #expect(!before.isRunning)
        #expect(!ChildRegistry.isStopping, "the process's own registry is not affected")
        do {
            let late = try sleeper(in: table)
            late.terminate()
            Issue.record("a child was started after the shutdown began")
        } catch {
            #expect(error.description.contains("shutting down"), "\(error)")
        }
    }

    /// A start racing the shutdown is either refused or registered in time to be stopped.
    @Test func aStartRacingTheShutdownIsRefusedOrStopped() throws {
        let table = ChildTable()
        let started = Locked<[ChildProcess]>([])
        let refused = Locked(0)
        let done = DispatchGroup()
        for _ in 0..<4 {
            done.enter()
            Thread {
                defer { done.leave() }
                while true {
                    do {
                        let c = try sleeper(in: table)
                        started.withLock { $0.append(c) }
                    } catch {
                        refused.withLock { $0 += 1 }
                        return
                    }
                }
            }.start()
        }
        sleepFor(.milliseconds(200))
        table.terminateAll(grace: .seconds(2))
        #expect(done.wait(timeout: .now() + 30) == .success)
        let children = started.withLock { $0 }
        let running = children.filter { $0.wait(timeout: .seconds(5)) == nil }
        for c in running { c.terminate() }
        #expect(!children.isEmpty)
        #expect(refused.withLock { $0 } == 4)
        #expect(running.isEmpty, "started but not stopped: \(running.map(\.pid))")
    }
}

/// A value behind a lock that threads can share.
final class Locked<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>
    init(_ value: Value) { mutex = Mutex(value) }
    func withLock<R: Sendable>(_ body: (inout Value) -> R) -> R { mutex.withLock { body(&$0) } }
}

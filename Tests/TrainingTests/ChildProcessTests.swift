import Foundation
import Synchronization
import Testing

@testable import LocalProcesses

#if canImport(Glibc)
    import Glibc
#endif

/// How children start (fork and execve with a parent-death signal) and how a shutdown refuses
/// new ones. Each test that shuts down uses a `ChildTable` of its own, not the process's.
@Suite struct ChildProcessTests {
    /// `sleep 30` in `table`, its output discarded.
    func sleeper(in table: ChildTable = .shared) throws(SpawnError) -> ChildProcess {
        try ChildProcess("sleep", arguments: ["30"], environment: nil, stdout: .discard, stderr: .discard, table: table)
    }

    /// A child in a network namespace that does not exist is not started, and the error says
    /// which namespace it could not enter.
    @Test func aMissingNetworkNamespaceIsReported() throws {
        let name = "smlt-test-missing-\(UUID().uuidString.prefix(8))"
        do {
            let p = try ChildProcess("true", arguments: [], stdout: .discard, networkNamespace: name)
            p.terminate()
            Issue.record("a child started in a namespace that does not exist")
        } catch {
            #expect(error.description.contains("cannot enter the network namespace /run/netns/\(name)"), "\(error)")
        }
    }

    /// As root: a child runs in the namespace it is given, which `ip netns identify` names.
    @Test(.enabled(if: NetworkNamespace.isPermitted, "network namespaces need root"))
    func aChildRunsInItsNetworkNamespace() throws {
        let network = try RateLimitedNetwork(hosts: ["a"], rate: LinkRate(parsing: "100mbit"))
        defer { network.remove() }
        let ns = network.layout.namespace(of: "a")
        #expect(NetworkNamespace.list().contains(ns))
        let out = NSTemporaryDirectory() + "smlt-netns-\(UUID().uuidString)"
        defer { unlink(out) }
        let p = try ChildProcess(
            "ip", arguments: ["netns", "identify"], stdout: .file(out), stderr: .discard, networkNamespace: ns)
        #expect(p.wait(timeout: .seconds(10))?.succeeded == true)
        #expect((try? String(contentsOfFile: out, encoding: .utf8))?.contains(ns) == true)
        network.remove()
        #expect(!NetworkNamespace.list().contains(where: { $0.hasPrefix(network.layout.prefix) }))
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

    /// The kernel sends the parent-death signal when the thread that forked exits: children are
    /// forked by a thread that lives as long as the process, not by the caller's.
    @Test func aChildOutlivesTheThreadThatStartedIt() throws {
        let child = Locked<Result<ChildProcess, SpawnError>?>(nil)
        let thread = Thread { child.withLock { $0 = Result { () throws(SpawnError) in try sleeper() } } }
        thread.start()
        while !thread.isFinished { sleepFor(.milliseconds(5)) }
        let c = try #require(child.withLock { $0 }).get()
        defer { c.terminate(grace: .seconds(1)) }
        sleepFor(.milliseconds(500))
        #expect(c.isRunning, "\(c.poll().map { "\($0)" } ?? "")")
    }

    /// Its own process group, no descriptor but 0-2, nothing blocked, and SIGINT, SIGTERM,
    /// SIGPIPE and SIGCHLD at their defaults whatever this process does with them.
    @Test func aChildStartsCleanInItsOwnGroup() throws {
        let old = signal(SIGPIPE, SIG_IGN)
        let path = NSTemporaryDirectory() + "smlt-inherited-\(UUID().uuidString)"
        let open = Glibc.open(path, O_WRONLY | O_CREAT, 0o600)  // without O_CLOEXEC
        defer { unlink(path) }
        let c: ChildProcess
        do {
            defer {
                signal(SIGPIPE, old)
                close(open)
            }
            c = try sleeper()
        }
        defer { c.terminate(grace: .seconds(1)) }
        #expect(getpgid(c.pid) == c.pid)
        let fds = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(c.pid)/fd")
        let files = fds.compactMap {
            try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(c.pid)/fd/\($0)")
        }
        #expect(open >= 0 && !files.contains(path), "\(files)")
        let status = try String(contentsOfFile: "/proc/\(c.pid)/status", encoding: .utf8)
        func mask(_ name: String) -> UInt64? {
            status.split(separator: "\n").first { $0.hasPrefix(name + ":") }
                .flatMap { UInt64($0.split(separator: "\t").last ?? "", radix: 16) }
        }
        #expect(mask("SigBlk") == 0)
        let ignored = try #require(mask("SigIgn"))
        for sig in [SIGINT, SIGTERM, SIGPIPE, SIGCHLD] { #expect(ignored & (1 << (sig - 1)) == 0, "signal \(sig)") }
    }

    @Test func whatCannotBeExecutedIsAClearError() throws {
        let dir = NSTemporaryDirectory() + "smlt-spawn-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        _ = FileManager.default.createFile(atPath: "\(dir)/plain", contents: Data("#!/bin/sh\n".utf8))
        _ = FileManager.default.createFile(
            atPath: "\(dir)/garbage", contents: Data([0, 1, 2, 3]), attributes: [.posixPermissions: 0o755])
        let cases: [(String, ChildOutput, String)] = [
            ("\(dir)/missing", .inherit, "No such file or directory"),
            ("\(dir)/plain", .inherit, "Permission denied"),
            ("\(dir)/garbage", .inherit, "Exec format error"),
            ("no-such-program-\(UUID().uuidString)", .inherit, "not found in PATH"),
            ("sleep", .file("\(dir)/no/such/dir/log"), "cannot open \(dir)/no/such/dir/log for its errors"),
        ]
        for (executable, stderr, expected) in cases {
            do {
                let c = try ChildProcess(executable, arguments: ["1"], stderr: stderr)
                c.terminate()
                Issue.record("\(executable) started")
            } catch {
                #expect(error.description.hasPrefix("cannot start \(executable): "))
                #expect(error.description.contains(expected), "\(error)")
            }
        }
    }
}

/// A value behind a lock that threads can share.
final class Locked<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>
    init(_ value: Value) { mutex = Mutex(value) }
    func withLock<R: Sendable>(_ body: (inout Value) -> R) -> R { mutex.withLock { body(&$0) } }
}

import Foundation
import LocalProcesses
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// A process seen in /proc: its pid and start time (so that a reused pid is not mistaken for it).
struct ProcEntry: Hashable, CustomStringConvertible {
    let pid: pid_t
    let parent: pid_t
    let startTime: UInt64

    /// The entry of `pid`, or nil when it is gone or a zombie (dead, waiting to be reaped).
    init?(_ pid: pid_t) {
        guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/stat"),
            let stat = String(data: data, encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return nil }
        // After "pid (comm) ": state ppid pgrp session tty tpgid flags minflt cminflt majflt
        // cmajflt utime stime cutime cstime priority nice threads itrealvalue starttime.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 19, fields[0] != "Z", let parent = pid_t(fields[1]), let start = UInt64(fields[19])
        else { return nil }
        self.pid = pid
        self.parent = parent
        self.startTime = start
    }

    /// Every live process.
    static func all() -> [ProcEntry] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { pid_t($0) }
            .compactMap { ProcEntry($0) }
    }

    /// Every live descendant of `pid` (children, their children, ...).
    static func descendants(of pid: pid_t) -> Set<ProcEntry> {
        let children = Dictionary(grouping: all(), by: \.parent)
        var found: Set<ProcEntry> = []
        var next = [pid]
        while let p = next.popLast() {
            for c in children[p] ?? [] where found.insert(c).inserted { next.append(c.pid) }
        }
        return found
    }

    /// Live processes whose environment holds `variable=value` (ours to read: same user).
    static func carrying(_ variable: String, _ value: String) -> Set<ProcEntry> {
        let needle = Data("\(variable)=\(value)".utf8)
        return Set(
            all().filter { FileManager.default.contents(atPath: "/proc/\($0.pid)/environ")?.range(of: needle) != nil })
    }

    /// True while this very process (same pid and start time) runs and is not a zombie.
    var isAlive: Bool { ProcEntry(pid) == self }

    /// The same process, whoever its parent is now (an orphan is re-parented).
    static func == (a: ProcEntry, b: ProcEntry) -> Bool { a.pid == b.pid && a.startTime == b.startTime }

    func hash(into hasher: inout Hasher) {
        hasher.combine(pid)
        hasher.combine(startTime)
    }

    var commandLine: String {
        let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") ?? Data()
        return String(decoding: data.map { $0 == 0 ? 32 : $0 }, as: UTF8.self).trimmingCharacters(in: .whitespaces)
    }

    var description: String { "\(pid) \(commandLine)" }
}

extension EndToEnd {
    /// Nothing `smlt train` starts may outlive it: not after Ctrl-C or SIGTERM (its signal handler
    /// stops everything, and the supervisor must not restart a parameter server meanwhile), and not
    /// after SIGKILL (the children's parent-death signal ends them).
    @Suite(.serialized) struct ShutdownTests {
        static let markerVariable = "SMLT_SHUTDOWN_TEST"

        @Test(arguments: [SIGINT, SIGTERM, SIGKILL])
        func trainLeavesNoProcessBehind(signal: Int32) throws {
            let dir = NSTemporaryDirectory() + "smlt-shutdown-\(UUID().uuidString)"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: dir) }
            // Every descendant inherits the marker, so a server restarted during the shutdown (and
            // re-parented to init) is found too. (redis-server overwrites its environment with its
            // process title: those are found as descendants.)
            let marker = UUID().uuidString
            var env = ProcessInfo.processInfo.environment
            env["SMLT_DATA_DIR"] = packageRoot() + "/data"
            env[Self.markerVariable] = marker
            let train = try ChildProcess(
                smltBinary(),
                arguments: [
                    "train", "--dataset", "digits", "--workers", "4", "--shards", "2", "--steps", "20000", "--json",
                ],
                environment: env, stdout: .discard, stderr: .file("\(dir)/err"))
            var seen: Set<ProcEntry> = []
            func survivors() -> [ProcEntry] {
                seen.formUnion(ProcEntry.carrying(Self.markerVariable, marker))
                return seen.filter(\.isAlive).sorted { $0.pid < $1.pid }
            }
            defer {
                // Whatever this test started and left running is stopped, so that it does not load
                // the rest of the run.
                if train.isRunning { train.send(SIGKILL) }
                _ = train.wait(timeout: .seconds(10))
                for p in survivors() { kill(p.pid, SIGKILL) }
            }
            let errors = { (try? String(contentsOfFile: "\(dir)/err", encoding: .utf8)) ?? "" }

            // Running: 2 redis-servers, 2 parameter servers and 4 workers (prlimit execs smlt worker).
            let deadline = ContinuousClock.now + .seconds(60)
            while ProcEntry.descendants(of: train.pid).count < 8 {
                guard train.isRunning, ContinuousClock.now < deadline else {
                    Issue.record(
                        "smlt train did not start its 8 processes: \(train.poll().map { "\($0)" } ?? "running")\n\(errors())"
                    )
                    return
                }
                sleepFor(.milliseconds(50))
            }
            sleepFor(.seconds(2))
            seen = ProcEntry.descendants(of: train.pid)
            #expect(seen.count >= 8, "\(seen)")

            kill(train.pid, signal)
            // Children it starts while it shuts down are collected as well.
            let exitDeadline = ContinuousClock.now + .seconds(30)
            var status: LocalProcesses.ExitStatus?
            while status == nil && ContinuousClock.now < exitDeadline {
                seen.formUnion(ProcEntry.descendants(of: train.pid))
                status = train.poll()
                sleepFor(.milliseconds(20))
            }
            if signal == SIGKILL {
                #expect(status?.signal == SIGKILL)
            } else {
                #expect(status?.code == 128 + signal, "\(errors())")
                #expect(!errors().contains("restarted it"), "\(errors())")
            }

            var left = survivors()
            let settle = ContinuousClock.now + .seconds(10)
            while !left.isEmpty && ContinuousClock.now < settle {
                sleepFor(.milliseconds(100))
                left = survivors()
            }
            let ended = status.map { "\($0)" } ?? "still running"
            let list = left.map(\.description).joined(separator: "\n")
            #expect(left.isEmpty, "running 10 s after smlt train ended (\(ended)):\n\(list)\n\(errors().suffix(600))")
        }
    }
}

import Foundation
import KeySchema
import LocalProcesses
import Logging
import ParamServer
import RedisClient
import ShardManager
import Synchronization
import TestSupport
import Testing
import TrainingProtocol

/// A ParamServer on a background thread whose log lines a test reads.
final class LoggedServer: Sendable {
    let server: ParamServer
    private let done = DispatchSemaphore(value: 0)
    private let lines = LogLines()

    private final class LogLines: Sendable {
        let lines = Mutex<[String]>([])
    }

    init(_ endpoints: [RedisEndpoint], options: RedisOptions = RedisOptions()) {
        let lines = self.lines
        server = ParamServer(
            endpoints: endpoints, options: options,
            logger: Logger(label: "test") { _ in LineCapture { line in lines.lines.withLock { $0.append(line) } } })
        let (s, d) = (server, done)
        Thread {
            s.run()
            d.signal()
        }.start()
    }

    var log: [String] { lines.lines.withLock { $0 } }

    /// The lines that contain every one of `parts`.
    func lines(containing parts: String...) -> [String] { log.filter { l in parts.allSatisfy { l.contains($0) } } }

    /// Waits (bounded) until a line contains every one of `parts`; false if none did.
    func waitForLine(containing parts: String...) -> Bool {
        for _ in 0..<400 {
            if log.contains(where: { l in parts.allSatisfy { l.contains($0) } }) { return true }
            usleep(25_000)
        }
        return false
    }

    func stop() {
        server.stop()
        done.wait()
    }
}

/// A log handler that hands each message to a closure.
struct LineCapture: LogHandler {
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace
    let line: @Sendable (String) -> Void

    init(_ line: @escaping @Sendable (String) -> Void) { self.line = line }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) { line("\(event.message)") }
}

/// Commands a redis-server has processed so far.
func commandsProcessed(_ c: RedisConnection) throws -> Int {
    let info = try c.run(["INFO", "stats"]).text ?? ""
    let line = info.split(whereSeparator: \.isNewline).first { $0.hasPrefix("total_commands_processed:") }
    return Int(line?.split(separator: ":")[1] ?? "0") ?? 0
}

/// How often a redis-server has run `command` (INFO commandstats).
func calls(of command: String, _ c: RedisConnection) throws -> Int {
    let info = try c.run(["INFO", "commandstats"]).text ?? ""
    guard let line = info.split(whereSeparator: \.isNewline).first(where: { $0.hasPrefix("cmdstat_\(command):") }),
        let field = line.split(separator: ",").first(where: { $0.contains("calls=") })
    else { return 0 }
    return Int(field.split(separator: "=")[1]) ?? 0
}

@Suite struct ServeRefreshTests {
    /// A job the server cannot serve is logged once, with the job, the shard and what is wrong,
    /// however many refreshes pass; so is a job whose config goes bad while it is served.
    @Test func skippedAndDroppedJobsAreLoggedOnceWithTheReason() throws {
        try withRedisServers(2) { servers in
            let eps = servers.map(\.endpoint)
            _ = try makeJob("cfg", servers, workers: 1)
            _ = try makeJob("later", servers, workers: 1)
            let c1 = try RedisConnection(eps[1])
            // Job cfg's config on shard 1 is damaged before the server starts.
            try c1.run(["SET", JobKeys(job: "cfg").config, "{\"workers\": 1, \"steps\": "])
            // Job huge's map on shard 1 is larger than a server reads.
            try c1.run(["SADD", JobKeys.jobs, "huge"])
            try c1.run(
                RedisCommand("SET", JobKeys(job: "huge").map).appending(bytes: [UInt8](repeating: 32, count: 5 << 20)))

            let server = LoggedServer(eps)
            defer { server.stop() }
            let ep1 = eps[1].description
            #expect(
                server.waitForLine(containing: ep1, "job cfg", "smlt:{cfg}:train", "is not valid JSON"), "\(server.log)"
            )
            #expect(server.waitForLine(containing: ep1, "job huge", "5242880 bytes, over the limit"), "\(server.log)")
            #expect(server.waitForLine(containing: eps[0].description, "serving job cfg"), "\(server.log)")

            // Job later's config goes bad while it is served; a new epoch makes the server look.
            #expect(server.waitForLine(containing: ep1, "serving job later"), "\(server.log)")
            try c1.run([
                "SET", JobKeys(job: "later").config,
                "{\"workers\": 0, \"steps\": 3, \"learning_rate\": 0.1, \"momentum\": 0, \"weight_decay\": 0}",
            ])
            try c1.run(["INCR", JobKeys(job: "later").epoch])
            #expect(
                server.waitForLine(containing: ep1, "job later", "stopped serving it", "workers must be at least 1"),
                "\(server.log)")

            // Several refreshes later, still one line each.
            usleep(2_500_000)
            #expect(server.lines(containing: "job cfg:", "not valid JSON").count == 1, "\(server.log)")
            #expect(server.lines(containing: "job huge:").count == 1, "\(server.log)")
            #expect(server.lines(containing: "job later:", "stopped serving it").count == 1, "\(server.log)")
            // The oversized map was never read.
            #expect(try c1.run(["INFO", "commandstats"]).text?.contains("cmdstat_strlen") == true)
        }
    }

    /// An idle server with many finished jobs reads almost nothing: no per-second map and config
    /// reads, no BLPOP on finished jobs' inboxes.
    @Test func finishedJobsCostNoCommandsWhileIdle() throws {
        try withRedisServers(1) { servers in
            let ep = servers[0].endpoint
            let c = try RedisConnection(ep)
            let jobs = 2000
            let config = #"{"workers": 1, "steps": 1, "learning_rate": 0.1, "momentum": 0, "weight_decay": 0}"#
            for start in stride(from: 0, to: jobs, by: 250) {
                var commands: [RedisCommand] = []
                for j in start..<(start + 250) {
                    let job = "done-\(j)"
                    let map = ShardMap(
                        spec: JobSpec(job: job, tensors: [TensorSpec(name: "w", shape: [4])], chunkElements: 16),
                        shards: [ep.description])
                    commands += [
                        RedisCommand("SET", JobKeys(job: job).map).appending(
                            bytes: Array(try JSONEncoder().encode(map))),
                        ["SET", JobKeys(job: job).epoch, "1"], ["SADD", JobKeys.jobs, job],
                        ["SET", JobKeys(job: job).config, config],
                        ["XADD", JobKeys(job: job).versions(shard: 0), "1-1", "version", "1"],
                    ]
                }
                for r in try c.pipeline(commands) { if case .error(let m) = r { Issue.record("\(m)") } }
            }
            let server = LoggedServer([ep])
            defer { server.stop() }
            // (Counting lines, not matching them: matching 2,000 lines 40 times a second would
            // take the CPU the server needs.)
            for _ in 0..<600 where server.log.count < jobs { usleep(100_000) }
            #expect(server.lines(containing: "serving job done-").count == jobs)
            // Past the first round (each job's version read once), then three idle seconds.
            usleep(1_500_000)
            let (before, getsBefore) = (try commandsProcessed(c), try calls(of: "get", c))
            usleep(3_000_000)
            let (after, getsAfter) = (try commandsProcessed(c), try calls(of: "get", c))
            // About one SMEMBERS and one BLPOP a second; the old server read 4,000 keys a second.
            #expect(after - before < 40, "\(after - before) commands in 3 s")
            #expect(getsAfter == getsBefore)
        }
    }

    /// A job whose keys the server's ACL user may not read, or may read but not write, is not
    /// served, and says so once; the shard's other jobs train on. Granting the permission brings
    /// the job back, and says so once a step of it commits.
    @Test func aJobTheACLRefusesDoesNotStopTheOthers() throws {
        try withRedisServers(1) { servers in
            let ep = servers[0].endpoint
            let admin = try RedisConnection(ep)
            for job in ["open", "shut", "half", "part"] { _ = try makeJob(job, servers, workers: 1, steps: 3) }
            // Job shut's keys (smlt:{shut}:… and smlt:{shut/CHUNK}:…) are out of reach; job half's
            // may be read, not written; job part's gradient chunks may not be read.
            try admin.run([
                "ACL", "SETUSER", "server", "on", ">pw", "~smlt:jobs", "~smlt:serve:*", "~smlt:{open[}/]*",
                "%R~smlt:{half[}/]*", "~smlt:{part}:*", "~smlt:{part/*}:params", "~smlt:{part/*}:opt", "&*",
                "+@all",
            ])
            let server = LoggedServer([ep], options: RedisOptions(password: "pw", username: "server"))
            defer { server.stop() }
            let refused = "not serving it: the ACL user may not use its keys on this shard: NOPERM"
            #expect(server.waitForLine(containing: "job shut", refused), "\(server.log)")

            // Job half is served until its first commit, which may not write.
            let half = try WorkerSession(job: "half", worker: 0, endpoints: [ep])
            try half.push(gradient: gradient(3, half.parameterCount), step: 0)
            #expect(server.waitForLine(containing: "job half", refused), "\(server.log)")

            // Job open trains all its steps meanwhile.
            let open = try WorkerSession(job: "open", worker: 0, endpoints: [ep])
            for step in 0..<3 {
                try open.push(gradient: gradient(UInt64(step), open.parameterCount), step: step)
                do { _ = try open.pull(step: step + 1, timeout: .seconds(20)) } catch {
                    Issue.record("job open, step \(step): \(error); server log: \(server.log)")
                    return
                }
            }
            usleep(2_500_000)
            #expect(server.lines(containing: "job shut", "NOPERM").count == 1, "\(server.log)")
            #expect(server.lines(containing: "job half", "NOPERM").count == 1, "\(server.log)")
            #expect(server.lines(containing: "serving job half").count == 1, "\(server.log)")
            #expect(server.lines(containing: "retrying").isEmpty, "\(server.log)")
            // Job part's push is not rejected: the server may not read it, the worker did nothing wrong.
            let part = try WorkerSession(job: "part", worker: 0, endpoints: [ep])
            try part.push(gradient: gradient(5, part.parameterCount), step: 0)
            #expect(server.waitForLine(containing: "job part", refused), "\(server.log)")
            #expect(try admin.run(["LLEN", JobKeys(job: "part").rejected]).integer == 0)
            #expect(server.lines(containing: "job part", "rejected").isEmpty, "\(server.log)")

            // Once the ACL allows it, job shut trains (its epoch now reads differently).
            try admin.run(["ACL", "SETUSER", "server", "~smlt:{shut[}/]*"])
            let shut = try WorkerSession(job: "shut", worker: 0, endpoints: [ep])
            try shut.push(gradient: gradient(4, shut.parameterCount), step: 0)
            _ = try shut.pull(step: 1, timeout: .seconds(20))
            #expect(server.waitForLine(containing: "serving job shut", "again"), "\(server.log)")
        }
    }

    /// A permission the ACL user lacks is logged once, and retried with a growing pause instead of
    /// alternating "retrying" and "reachable again".
    @Test func permissionErrorIsLoggedOnceAndRetriedWithBackoff() throws {
        try withRedisServers(1) { servers in
            let ep = servers[0].endpoint
            let admin = try RedisConnection(ep)
            _ = try makeJob("acl", servers, workers: 1)
            try admin.run(["ACL", "SETUSER", "server", "on", ">pw", "~*", "&*", "+@all", "-blpop"])
            let authBefore = try calls(of: "auth", admin)
            let server = LoggedServer([ep], options: RedisOptions(password: "pw", username: "server"))
            defer { server.stop() }
            #expect(server.waitForLine(containing: "lacks a permission for BLPOP"), "\(server.log)")
            usleep(3_000_000)
            #expect(server.lines(containing: "NOPERM").count == 1, "\(server.log)")
            #expect(server.lines(containing: "reachable again").isEmpty, "\(server.log)")
            #expect(server.log.count <= 3, "\(server.log)")
            // Backoff: 0.2 + 0.4 + 0.8 + 1.6 s... about five attempts in three seconds, not fifteen.
            let attempts = try calls(of: "auth", admin) - authBefore
            #expect(attempts <= 8, "\(attempts) logins")

            // Once the ACL allows it, the server recovers and says so once.
            try admin.run(["ACL", "SETUSER", "server", "+blpop"])
            #expect(server.waitForLine(containing: "reachable again"), "\(server.log)")
        }
    }
}

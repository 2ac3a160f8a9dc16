import Foundation
import LocalProcesses
import Testing

extension EndToEnd {
    /// `smlt train` through time limits, crashes, frozen workers and killed servers, against real
    /// processes: every run must end with the parameters of the same run without faults.
    @Suite(.serialized) struct FaultToleranceTests {
        static let base = [
            "train", "--dataset", "digits", "--model", "softmax", "--workers", "4", "--shards", "2", "--steps", "300",
            "--seed", "7", "--json",
        ]

        /// The digest of the same training without faults, from the single-process reference.
        static let cleanDigest: String? = {
            let r = try? smlt(base + ["--reference"])
            return r.flatMap { json($0.stdout)["param_digest"] as? String }
        }()

        func run(_ extra: [String]) throws -> [String: Any] {
            let job = "ft-\(UUID().uuidString.prefix(8))"
            let r = try smlt(Self.base + extra + ["--job", job])
            #expect(r.status.succeeded, "\(r.stderr)")
            #expect(processes(containing: job).isEmpty, "processes of \(job) left running")
            let out = json(r.stdout)
            #expect(Self.cleanDigest != nil)
            #expect(out["param_digest"] as? String == Self.cleanDigest, "\(r.stderr.suffix(2000))")
            return out
        }

        @Test func workersStoppedByTheirTimeLimitContinueExactly() throws {
            // 300 steps do not fit in 1 s: every worker saves its progress and is continued. (With
            // 400 ms, a cold start of four workers beside two booting servers on a loaded 2-core
            // machine took up to 0.3 s and left no room for a step.)
            let out = try run(["--function-timeout", "1s"])
            let continuations = out["continuations"] as? Int ?? 0
            let relaunches = out["worker_relaunches"] as? Int ?? -1
            #expect(continuations >= 4)
            // Workers stop themselves before the limit; on a badly loaded machine one may still be
            // killed at it, and is then relaunched like any crashed worker.
            #expect(relaunches >= 0 && relaunches <= 2)
            #expect(out["restarts"] as? Int == continuations + relaunches)
            #expect(out["invocations"] as? Int == 4 + continuations + relaunches)
            // Later generations find their data partition in the function cache.
            let starts = out["starts"] as? [String: Any] ?? [:]
            #expect(starts["cold"] as? Int == 4)
            #expect((starts["warm"] as? Int ?? 0) >= continuations)
        }

        @Test func killedWorkersAreRelaunchedAndTheirRepushCountsOnce() throws {
            let out = try run(["--inject-faults", "worker-kill=3"])
            // A kill whose worker is between invocations at that moment is skipped and not counted.
            let injected = out["faults_injected"] as? Int ?? 0
            #expect(injected >= 2)
            #expect(out["worker_relaunches"] as? Int == injected)
            #expect(out["restarts"] as? Int == injected)
        }

        @Test func frozenWorkerIsFoundByItsExpiredLease() throws {
            // SIGSTOP: the process exists but stops renewing its lease; the default function
            // timeout (900 s) would never end it.
            let out = try run(["--inject-faults", "worker-hang=1", "--lease-timeout", "1s"])
            #expect(out["faults_injected"] as? Int == 1)
            #expect(out["expired_leases"] as? Int == 1)
            #expect(out["worker_relaunches"] as? Int == 1)
        }

        @Test func killedParameterServerIsRestartedAndResumesFromRedis() throws {
            let out = try run(["--inject-faults", "server-kill=2"])
            let injected = out["faults_injected"] as? Int ?? 0
            #expect(injected >= 1)
            #expect(out["server_restarts"] as? Int == injected)
        }

        @Test func shardThatRestartsEmptyRollsBackToTheLastCheckpoint() throws {
            let dir = NSTemporaryDirectory() + "smlt-ft-\(UUID().uuidString)"
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let out = try run(["--inject-faults", "shard-wipe=1", "--checkpoint-every", "50", "--checkpoint-dir", dir])
            #expect(out["faults_injected"] as? Int == 1)
            #expect(out["rollbacks"] as? Int == 1)
            // Every 50th version was saved (the last one, 300, too), as safetensors files.
            let files = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
            #expect(files.contains("step-00000300.safetensors"))
            #expect(files.contains("latest"))
            #expect((out["checkpoints_saved"] as? Int ?? 0) >= 1)
        }

        @Test func allFaultsTogether() throws {
            // The command of the "done when", plus a frozen worker and a shard that restarts empty.
            let out = try run([
                "--function-timeout", "3s", "--inject-faults", "worker-kill=3,server-kill=1,worker-hang=1,shard-wipe=1",
                "--lease-timeout", "1s",
            ])
            #expect((out["faults_injected"] as? Int ?? 0) >= 4)
            #expect(out["rollbacks"] as? Int == 1)
            // Two faults may hit the same invocation (a kill of a frozen worker): one relaunch.
            #expect((out["worker_relaunches"] as? Int ?? 0) >= 2)
            #expect((out["server_restarts"] as? Int ?? 0) >= 1)
            let restarts = out["restarts"] as? Int ?? -1
            let parts = ["continuations", "worker_relaunches", "server_restarts"].map { out[$0] as? Int ?? 0 }
            #expect(restarts == parts.reduce(0, +))
        }

        @Test func faultSpecErrorsNameTheProblem() throws {
            let bad = try smlt(Self.base + ["--inject-faults", "worker-explode=1"])
            #expect(!bad.status.succeeded)
            #expect(bad.stderr.contains("invalid fault 'worker-explode=1'"))
            let external = try smlt(Self.base + ["--inject-faults", "server-kill=1", "--redis", "127.0.0.1:1"])
            #expect(!external.status.succeeded)
            #expect(
                external.stderr.contains("server-kill and shard-wipe need the shards and servers smlt train starts"))
        }
    }
}

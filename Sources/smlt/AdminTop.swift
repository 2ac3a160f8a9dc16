import ArgumentParser
import Coordinator
import Foundation
import ShardManager
import TrainingProtocol

extension AdminCommand {
    struct Top: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "A live view of every job: version, steps/s, slowest shard, stragglers, bytes per step, cost.",
            discussion: """
                Refreshes every second until Ctrl-C (or --count times); --json prints one snapshot. \
                Stragglers are the workers that have not pushed the current step on a shard still at it. \
                The cost so far is estimated from the job's run state (memory and prices of smlt train): \
                every worker billed since the first push, plus a request per invocation.
                """)

        @OptionGroup var redis: RedisOptionGroup
        @Flag(help: "Print one snapshot as JSON and exit.") var json = false
        @Option(help: "Refresh this many times, then exit (default: until interrupted).") var count: Int?

        func validate() throws {
            if let count, count < 1 { throw ValidationError("--count must be at least 1") }
        }

        func run() throws {
            let endpoints = try redis.endpoints()
            var shown = 0
            while true {
                let jobs: [JobActivity]
                do {
                    jobs = try JobActivity.snapshot(
                        endpoints, options: redis.options, allowed: redis.allowedEndpoints, annotate: estimateCost)
                } catch {
                    printError(error.description)
                    throw ExitCode(1)
                }
                if json { return try printJSON(jobs) }
                // Home the cursor and clear the screen on a terminal; plain blocks otherwise.
                let clear = isatty(STDOUT_FILENO) == 1 ? "\u{1B}[H\u{1B}[2J" : (shown > 0 ? "\n" : "")
                // One write per refresh, so a terminal never shows half a table.
                FileHandle.standardOutput.write(Data((clear + topTable(jobs, at: Date()) + "\n").utf8))
                shown += 1
                if let count, shown >= count { return }
                Thread.sleep(forTimeInterval: 1)
            }
        }
    }
}

/// Functions billed as `smlt train` bills them: every worker's memory for the elapsed time, and a
/// request per invocation. Nil without a run state (a job not run by `smlt train`).
private func estimateCost(_ m: ShardManager, _ a: inout JobActivity) {
    guard let state = try? RunState.load(from: m), let elapsed = a.elapsedSeconds, let workers = a.workers else {
        return
    }
    let r = state.request
    let gbSeconds = Double(workers) * Double(r.memoryMiB) / 1024 * elapsed
    a.estimatedCostUSD = gbSeconds * r.priceGBSecond + Double(a.invocations ?? 0) * r.priceRequest
}

/// The `smlt admin top` table.
func topTable(_ jobs: [JobActivity], at now: Date) -> String {
    var t = TextTable(
        "JOB", "VERSION", "STEPS/S", "SLOWEST SHARD", "LAST STEP", "STRAGGLERS", "BYTES/STEP", "ELAPSED", "COST")
    for a in jobs {
        if let error = a.error {
            t.add(a.job, "-", "-", "-", "-", "-", "-", "-", error)
            continue
        }
        let version = a.version.map { "\($0)/\(a.steps ?? 0)\(a.finished ? " done" : "")" } ?? "-"
        let stragglers =
            a.stragglers.isEmpty
            ? "-"
            : a.stragglers.prefix(8).map(String.init).joined(separator: ",")
                + (a.stragglers.count > 8 ? " (+\(a.stragglers.count - 8))" : "")
        t.add(
            a.job, version, a.stepsPerSecond.map { String(format: "%.1f", $0) } ?? "-", a.slowestShard ?? "-",
            a.slowestStepSeconds.map { String(format: "%.1f ms", $0 * 1000) } ?? "-", stragglers,
            byteCount(a.bytesPerStep), a.elapsedSeconds.map { String(format: "%.0f s", $0) } ?? "-",
            a.estimatedCostUSD.map { String(format: "$%.6f", $0) } ?? "-")
    }
    let time = ISO8601DateFormatter().string(from: now)
    return "smlt admin top  \(time)  \(jobs.count) jobs\n" + t.render()
}

import ArgumentParser
import Coordinator
import Foundation
import RedisClient
import ShardManager

extension AdminCommand {
    struct Reshard: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "reshard",
            abstract: "Move a running job to another set of shards at its next step.",
            discussion: """
                Holds the job's workers before the next step, waits until every shard has published it, \
                copies the chunks that must move (fewest possible) with their optimizer state, verifies them, \
                switches the map to a new epoch and lifts the hold. The first shard of the job stays (it holds \
                the job's control keys). Run `smlt serve` for new endpoints. New endpoints are checked before \
                anything moves; if the move fails, the job stays on its old shards.
                """)

        @OptionGroup var redis: RedisOptionGroup
        @Option(help: "The job id.") var job: String
        @Option(help: "The new shard endpoints, host:port,host:port (the job's first shard included).") var to: String
        @Option(help: "How long to wait for the job to reach its next step.") var timeout = "60s"
        @Flag(help: "Print JSON instead of a line.") var json = false

        func run() throws {
            do {
                let targets = try RedisEndpoint.list(parsing: to)
                let wait = try TrainingRequest.milliseconds(timeout, flag: "--timeout", limit: 86_400_000)
                let (outcome, step) = try Resharder.live(
                    job: job, endpoints: try redis.endpoints(), targets: targets, options: redis.options,
                    allowed: redis.allowedEndpoints, timeout: .milliseconds(wait))
                if json {
                    try printJSON([
                        "step": "\(step)", "epoch": "\(outcome.manager.map.epoch)",
                        "shards": outcome.manager.map.shards.joined(separator: ","),
                        "chunks_moved": "\(outcome.chunksMoved)", "bytes_moved": "\(outcome.bytesMoved)",
                    ])
                } else {
                    print(
                        "job \(job) re-sharded at step \(step) to \(outcome.manager.map.shards.joined(separator: ",")) (epoch \(outcome.manager.map.epoch)): \(outcome.chunksMoved) chunks, \(outcome.bytesMoved) bytes moved"
                    )
                }
            } catch let e as ExitCode {
                throw e
            } catch {
                printError("\(error)")
                throw ExitCode(1)
            }
        }
    }

    struct Delete: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "delete",
            abstract: "Delete a job: every key of it on every shard, and its entry in the job list.",
            discussion: "Stop the job's workers first. Servers stop serving it by themselves.")

        @OptionGroup var redis: RedisOptionGroup
        @Option(help: "The job id.") var job: String

        func run() throws {
            do {
                let m = try ShardManager.open(
                    job: job, endpoints: try redis.endpoints(), options: redis.options, allowed: redis.allowedEndpoints)
                try m.deleteJob()
                print("deleted job \(job) from \(m.map.shards.joined(separator: ","))")
            } catch let e as ExitCode {
                throw e
            } catch {
                printError("\(error)")
                throw ExitCode(1)
            }
        }
    }
}

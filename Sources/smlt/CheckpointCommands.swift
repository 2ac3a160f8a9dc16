import ArgumentParser
import Checkpoints
import Coordinator
import Foundation
import LocalProcesses
import RedisClient
import ShardManager
import TrainingProtocol

extension AdminCommand {
    struct Checkpoint: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "checkpoint",
            abstract: "Save a job's parameters and optimizer state to DIR/step-NNNNNNNN.safetensors.",
            discussion: """
                Reads the job's current version from Redis; while the job is training, it retries until \
                every chunk is at one version. The file loads with safetensors in PyTorch or NumPy.
                """)

        @OptionGroup var redis: RedisOptionGroup
        @Option(help: "The job id.") var job: String
        @Option(help: "The checkpoint directory.") var dir: String
        @Option(help: "Give up after this long if the job never holds still.") var timeout = "30s"

        func run() throws {
            do {
                let endpoints = try redis.endpoints()
                let m = try ShardManager.open(
                    job: job, endpoints: endpoints, options: redis.options, allowed: redis.allowedEndpoints)
                let config = try TrainingConfig.load(from: m)
                let deadline =
                    ContinuousClock.now
                    + .milliseconds(try TrainingRequest.milliseconds(timeout, flag: "--timeout", limit: 86_400_000))
                while true {
                    if let c = try Checkpoints.Checkpoint.capture(m, config: config, snapshot: false) {
                        let path = try c.write(to: dir)
                        print("saved job \(job) at step \(c.step) to \(path)")
                        return
                    }
                    guard ContinuousClock.now < deadline else {
                        throw CheckpointError(
                            .notFound, "job '\(job)' never had all chunks at one version within \(timeout)")
                    }
                    sleepFor(.milliseconds(5))
                }
            } catch let e as ExitCode {
                throw e
            } catch {
                printError("\(error)")
                throw ExitCode(1)
            }
        }
    }

    struct Restore: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "restore",
            abstract: "Put a job back at a checkpoint saved in DIR (the latest, or --step).",
            discussion: """
                Writes the parameters and optimizer state at the checkpoint's version to every chunk, \
                restarts the version streams there, drops pending gradients and sets every worker's saved \
                progress to that step. Stop the job's workers first; running parameter servers follow.
                """)

        @OptionGroup var redis: RedisOptionGroup
        @Option(help: "The job id.") var job: String
        @Option(help: "The checkpoint directory.") var dir: String
        @Option(help: "The step to restore (default: the latest checkpoint).") var step: Int?

        func run() throws {
            do {
                let c = try Checkpoints.Checkpoint.read(from: dir, step: step)
                guard c.job == job else {
                    throw CheckpointError(.invalid, "the checkpoint in \(dir) is of job '\(c.job)', not '\(job)'")
                }
                let m = try ShardManager.open(
                    job: job, endpoints: try redis.endpoints(), options: redis.options, allowed: redis.allowedEndpoints)
                try c.restore(to: m)
                print("restored job \(job) to step \(c.step)")
            } catch let e as ExitCode {
                throw e
            } catch {
                printError("\(error)")
                throw ExitCode(1)
            }
        }
    }
}

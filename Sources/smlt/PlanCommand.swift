import ArgumentParser
import Coordinator
import Foundation

struct PlanCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan",
        abstract: "Print the plan smlt train would start with for a deadline or a budget, without training.",
        discussion: """
            Takes the same flags as smlt train and needs --deadline, --budget or both. It loads the data, times \
            the model's gradient in this process, and chooses workers × shards × memory with the planner; a goal \
            no plan can meet exits with status 1 and the least time or cost a plan would need. A training run \
            re-plans as it measures itself, so its final configuration can differ.
            """)

    @OptionGroup var redis: RedisOptionGroup
    @OptionGroup var training: TrainingOptionGroup
    @Flag(help: "Print the plan as one JSON object.") var json = false

    func validate() throws {
        do { _ = try training.request() } catch let e as RequestError { throw ValidationError(e.description) }
    }

    func run() throws {
        let preview: PlanPreview
        do {
            preview = try Coordinator.preview(try training.request(), shards: try redis.endpointsIfGiven()?.count)
        } catch {
            printError("\(error)")
            throw ExitCode(1)
        }
        if json { try printJSON(preview) } else { print(preview.text) }
    }
}

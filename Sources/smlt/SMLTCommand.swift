import ArgumentParser

@main
struct SMLTCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "smlt",
        abstract: "SMLT: a storage-centric parameter server for training on serverless functions.",
        subcommands: [TrainCommand.self, PlanCommand.self, ServeCommand.self, WorkerCommand.self, AdminCommand.self])
}

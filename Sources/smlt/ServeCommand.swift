import ArgumentParser
import LocalProcesses
import ParamServer

struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run a parameter server that aggregates every job on the given shards (BSP).",
        discussion: "Runs until SIGINT or SIGTERM. One thread per shard; it blocks in BLPOP between steps.")

    @OptionGroup var redis: RedisOptionGroup

    func run() throws {
        let endpoints = try redis.endpoints()
        let server = ParamServer(endpoints: endpoints, options: redis.options)
        ChildRegistry.installSignalHandlers()
        server.run()
    }
}

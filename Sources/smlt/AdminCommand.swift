import ArgumentParser
import Foundation
import RedisClient
import ShardManager
import TensorBlob

struct AdminCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "admin", abstract: "Inspect and operate shards.",
        subcommands: [
            Shards.self, Jobs.self, Chunks.self, Top.self, Checkpoint.self, Restore.self, Reshard.self, Delete.self,
            Blob.self,
        ])

    struct Shards: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Per shard: reachability, chunks, bytes, Redis memory and parameter versions.",
            discussion: "Exits non-zero when any shard is unreachable.")

        @OptionGroup var redis: RedisOptionGroup
        @Flag(help: "Print JSON instead of a table.") var json = false

        func run() throws {
            let endpoints = try redis.endpoints()
            if endpoints.count == 1, endpoints[0].isCluster, endpoints[0].laneTag == nil {
                return try cluster(endpoints[0])
            }
            let statuses = ShardInspector.shards(endpoints, options: redis.options)
            if json {
                try printJSON(statuses)
            } else {
                print(shardsTable(statuses))
            }
            let down = statuses.filter { !$0.reachable }
            for s in down { printError("shard \(s.endpoint) is unreachable: \(s.error ?? "unknown error")") }
            if !down.isEmpty { throw ExitCode(1) }
        }

        /// A Redis Cluster: its nodes (role, slots, lanes, replication lag), then its lanes.
        private func cluster(_ cluster: RedisEndpoint) throws {
            let status = try ClusterInspector.status(of: cluster, options: redis.options)
            if json {
                try printJSON(status)
            } else {
                print(clusterNodesTable(status.nodes))
                print("")
                print(shardsTable(status.lanes))
            }
            let down = status.nodes.filter { !$0.reachable }
            for n in down { printError("node \(n.endpoint) is unreachable: \(n.error ?? "unknown error")") }
            if !down.isEmpty { throw ExitCode(1) }
        }
    }

    struct Jobs: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the jobs registered on the shards.")

        @OptionGroup var redis: RedisOptionGroup
        @Flag(help: "Print JSON instead of a table.") var json = false

        struct JobRow: Codable {
            var job: String
            var epoch: Int?
            var shards: [String]
            var tensors: Int?
            var parameters: Int?
            var chunks: Int?
            var codec: String?
            var error: String?
        }

        func run() throws {
            let endpoints = try redis.endpoints()
            let names: [String]
            do { names = try ShardManager.jobs(on: endpoints, options: redis.options) } catch {
                printError(error.description)
                throw ExitCode(1)
            }
            let rows = names.map { name -> JobRow in
                do {
                    let m = try ShardManager.load(
                        job: name, from: endpoints, options: redis.options, allowed: redis.allowedEndpoints)
                    return JobRow(
                        job: name, epoch: m.epoch, shards: m.shards, tensors: m.tensors.count,
                        parameters: m.layout.totalElements, chunks: m.layout.chunkCount, codec: m.codec.description)
                } catch {
                    return JobRow(job: name, shards: [], error: "\(error)")
                }
            }
            if json { return try printJSON(rows) }
            var t = TextTable("JOB", "EPOCH", "TENSORS", "PARAMETERS", "CHUNKS", "CODEC", "SHARDS")
            func text(_ v: Int?) -> String { v.map { String($0) } ?? "-" }
            for r in rows {
                let where_: String = r.error ?? r.shards.joined(separator: ",")
                t.add(r.job, text(r.epoch), text(r.tensors), text(r.parameters), text(r.chunks), r.codec ?? "-", where_)
            }
            print(t.render())
        }
    }

    struct Chunks: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Per chunk of a job: shard, tensors, size, version, codec and compression ratio.")

        @OptionGroup var redis: RedisOptionGroup
        @Option(help: "The job id.") var job: String
        @Flag(help: "Print JSON instead of a table.") var json = false

        func run() throws {
            let chunks: [ChunkStatus]
            do {
                chunks = try ShardInspector.chunks(
                    job: job, endpoints: try redis.endpoints(), options: redis.options, allowed: redis.allowedEndpoints)
            } catch let e as ShardError {
                printError(e.description)
                throw ExitCode(1)
            }
            if json { return try printJSON(chunks) }
            print(chunksTable(chunks))
            if chunks.contains(where: { $0.error != nil }) { throw ExitCode(1) }
        }
    }
}

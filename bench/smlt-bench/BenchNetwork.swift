import Foundation
import LocalProcesses
import RedisClient
import Scheduler

/// Where the processes of one `aggregate --link-rate` run live: worker `w` in namespace
/// `PREFIX-wW`, shard `s` (its redis-server and the parameter server's thread for it) in
/// `PREFIX-sS`, and the benchmark process itself in the bridge's namespace, from which it reaches
/// every shard. Each namespace has its own rate-limited link (`RateLimitedNetwork`).
///
/// The outer `smlt-bench aggregate` makes the network and starts itself again inside the bridge's
/// namespace with `--network-prefix`; that inner process rebuilds this value from the prefix, the
/// counts and the rate, so the whole measuring process, every thread of it, sees the shards
/// through their links.
struct BenchNetwork: Sendable {
    let layout: RateLimitedNetwork.Layout
    let rate: LinkRate
    let workers: Int
    let shards: Int

    /// The hosts of a network for `workers` workers and `shards` shards.
    static func hosts(workers: Int, shards: Int) -> [String] {
        (0..<workers).map { "w\($0)" } + (0..<shards).map { "s\($0)" }
    }

    init(prefix: String, workers: Int, shards: Int, rate: LinkRate) throws(NetworkError) {
        layout = try RateLimitedNetwork.Layout(prefix: prefix, hosts: Self.hosts(workers: workers, shards: shards))
        self.rate = rate
        self.workers = workers
        self.shards = shards
    }

    func workerNamespace(_ w: Int) -> String { layout.namespace(of: "w\(w)") }
    func shardNamespace(_ s: Int) -> String { layout.namespace(of: "s\(s)") }
    func shardAddress(_ s: Int) -> String { layout.address(of: "s\(s)") }

    /// Makes the network and runs this benchmark again inside the bridge's namespace, with the
    /// same arguments and `--network-prefix`; removes the network when it ends, also on SIGINT
    /// or SIGTERM (after the inner run and its children stopped).
    /// - Returns: the inner run's exit status.
    static func runInside(workers: Int, shards: Int, rate: LinkRate) throws -> ExitStatus {
        for name in RateLimitedNetwork.removeStale() {
            FileHandle.standardError.write(Data("removed stale network namespace \(name) (its process is gone)\n".utf8))
        }
        let network = try RateLimitedNetwork(hosts: hosts(workers: workers, shards: shards), rate: rate)
        defer { network.remove() }
        let inner = try ChildProcess(
            currentExecutable(),
            arguments: Array(CommandLine.arguments.dropFirst()) + ["--network-prefix", network.layout.prefix],
            networkNamespace: network.layout.bridgeNamespace)
        return inner.wait()!
    }
}

import ArgumentParser
import Foundation
import RedisClient

/// `--redis`, `--password` and `--user`, with SMLT_REDIS / SMLT_REDIS_PASSWORD / SMLT_REDIS_USER.
struct RedisOptionGroup: ParsableArguments {
    @Option(
        name: .customLong("redis"),
        help:
            "Shard endpoints, host:port,host:port, or a Redis Cluster, cluster://host:port[,...] (default: $SMLT_REDIS)."
    )
    var redis: String?

    @Option(help: "Redis password (default: $SMLT_REDIS_PASSWORD).")
    var password: String?

    @Option(help: "Redis ACL user name (default: $SMLT_REDIS_USER).")
    var user: String?

    @Option(
        help:
            "Endpoints besides --redis that a job's shard map may name and the password may go to (default: $SMLT_ALLOWED_ENDPOINTS)."
    )
    var allowEndpoints: String?

    var environment: [String: String] { ProcessInfo.processInfo.environment }

    /// The endpoints given, or nil when neither --redis nor SMLT_REDIS is set. Servers given
    /// as `host:port` that turn out to be nodes of a Redis Cluster (`cluster_enabled:1`) are
    /// taken as that cluster (`cluster://` with them as seeds).
    func endpointsIfGiven() throws -> [RedisEndpoint]? {
        guard let text = redis ?? environment["SMLT_REDIS"], !text.isEmpty else { return nil }
        let given: [RedisEndpoint]
        do { given = try RedisEndpoint.list(parsing: text) } catch { throw ValidationError(error.description) }
        guard given.allSatisfy({ if case .tcp = $0.address { true } else { false } }),
            let probe = try? RedisConnection(given[0], options: options),
            let info = try? probe.run(["INFO", "cluster"]).text, info.contains("cluster_enabled:1")
        else { return given }
        return [RedisEndpoint(cluster: given)]
    }

    func endpoints() throws -> [RedisEndpoint] {
        guard let e = try endpointsIfGiven() else {
            throw ValidationError("no shards given: use --redis host:port,... or set SMLT_REDIS")
        }
        return e
    }

    /// Endpoints besides `--redis` that may receive the credentials.
    var allowedEndpoints: [String] {
        let text = allowEndpoints ?? environment["SMLT_ALLOWED_ENDPOINTS"] ?? ""
        if let parsed = try? RedisEndpoint.list(parsing: text) { return parsed.map(\.description) }
        return text.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    /// Runs when any command parses these options.
    func validate() throws { warnAboutPasswordFlag() }

    /// A password on the command line shows in `ps` to every local user: say so.
    func warnAboutPasswordFlag() {
        if password != nil {
            FileHandle.standardError.write(
                Data(
                    "warning: --password is visible to other users in the process list; set SMLT_REDIS_PASSWORD instead\n"
                        .utf8))
        }
    }

    var options: RedisOptions {
        RedisOptions(
            password: password ?? environment["SMLT_REDIS_PASSWORD"], username: user ?? environment["SMLT_REDIS_USER"])
    }
}

/// Prints to standard error.
func printError(_ message: String) {
    FileHandle.standardError.write(Data("error: \(message)\n".utf8))
}

/// Prints a value as pretty, key-sorted JSON.
func printJSON<T: Encodable>(_ value: T) throws {
    let e = JSONEncoder()
    e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    print(String(decoding: try e.encode(value), as: UTF8.self))
}

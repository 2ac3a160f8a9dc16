internal import Foundation
internal import RedisClient
internal import TrainingProtocol

/// What a platform told one invocation through its environment (`FunctionEnvironment`): the
/// event, the password, the time limit, when it started and where its local cache is.
struct Invocation: Sendable {
    let event: WorkerEvent
    let options: RedisOptions
    /// The platform's maximum duration for this invocation, if it has one.
    let timeLimit: Duration?
    /// `CLOCK_MONOTONIC` in nanoseconds when the platform started the invocation, if it says.
    let invokedAt: Int64?
    /// A directory that survives between invocations on the same machine.
    let cacheDirectory: String?

    init(environment: [String: String]) throws(FunctionClientError) {
        guard let text = environment[FunctionEnvironment.event] else {
            throw FunctionClientError(
                .invalidInvocation,
                "\(FunctionEnvironment.event) is not set: this program is an SMLT worker function, run by a scheduler (smlt train --function \"PROGRAM\")"
            )
        }
        do { event = try JSONDecoder().decode(WorkerEvent.self, from: Data(text.utf8)) } catch {
            throw FunctionClientError(
                .invalidInvocation, "\(FunctionEnvironment.event) is not a valid worker event: \(error)")
        }
        guard event.leaseMilliseconds > 0 else {
            throw FunctionClientError(
                .invalidInvocation, "the event's lease_ms is \(event.leaseMilliseconds); it must be positive")
        }
        options = RedisOptions(password: environment[FunctionEnvironment.password], username: event.user)
        timeLimit = try Self.number(FunctionEnvironment.timeLimit, in: environment).map { .milliseconds($0) }
        invokedAt = try Self.number(FunctionEnvironment.invokedAt, in: environment)
        cacheDirectory = environment[FunctionEnvironment.cache].flatMap { $0.isEmpty ? nil : $0 }
    }

    private static func number(_ name: String, in environment: [String: String]) throws(FunctionClientError) -> Int64? {
        guard let text = environment[name] else { return nil }
        guard let n = Int64(text), n >= 0 else {
            throw FunctionClientError(.invalidInvocation, "\(name) is '\(text)'; it must be a non-negative integer")
        }
        return n
    }

    /// How long ago the platform started this invocation (exec, runtime and loading included),
    /// when it says when that was.
    var sinceInvoked: Duration? {
        guard let invokedAt else { return nil }
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return .nanoseconds(Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec) - invokedAt)
    }

    /// The endpoints the event allows, parsed.
    func endpoints() throws(FunctionClientError) -> [RedisEndpoint] {
        var endpoints: [RedisEndpoint] = []
        for e in event.redis {
            do { endpoints.append(try RedisEndpoint(parsing: e)) } catch {
                throw FunctionClientError(.invalidInvocation, "the event's endpoint '\(e)' is not valid: \(error)")
            }
        }
        return endpoints
    }
}

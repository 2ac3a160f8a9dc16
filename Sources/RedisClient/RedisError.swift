/// An error talking to Redis. The message names the endpoint and what went wrong.
public struct RedisError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Code: Sendable, Equatable {
        /// The endpoint text could not be parsed.
        case invalidEndpoint
        /// No connection could be made (refused, unknown host, connect timeout).
        case connectionFailed
        /// An established connection broke, or a reply did not arrive in time.
        case connectionLost
        /// The server refused the credentials, or wants credentials that were not given.
        case authenticationFailed
        /// The credentials were accepted, but the ACL user may not run a command or touch a key
        /// (a `NOPERM` reply). Retrying does not help until an operator changes the ACL.
        case permissionDenied
        /// The server answered a command with an error reply.
        case serverError
        /// The reply had a type the caller did not expect.
        case unexpectedReply
        /// A wait for something to appear in Redis (a version, a list entry) ran out of time;
        /// the connection is fine.
        case timedOut
    }

    public let code: Code
    /// The endpoint the error concerns, as given by the user.
    public let endpoint: String
    public let message: String

    public init(_ code: Code, endpoint: String, _ message: String) {
        self.code = code
        self.endpoint = endpoint
        self.message = message
    }

    public var description: String {
        switch code {
        case .invalidEndpoint: "invalid Redis endpoint '\(endpoint)': \(message)"
        case .connectionFailed: "cannot connect to \(endpoint): \(message)"
        case .connectionLost: "connection to \(endpoint) lost: \(message)"
        case .authenticationFailed: "authentication to \(endpoint) failed: \(message)"
        case .permissionDenied: "permission denied on \(endpoint): \(message)"
        case .serverError: "\(endpoint) replied with an error: \(message)"
        case .unexpectedReply: "unexpected reply from \(endpoint): \(message)"
        case .timedOut: "waited too long on \(endpoint): \(message)"
        }
    }
}

import RedisClient
import TensorBlob

/// An error from placing, storing or loading a job's chunks.
public struct ShardError: Error, Sendable, CustomStringConvertible {
    public enum Code: Sendable, Equatable {
        case invalidSpec
        case jobNotFound
        case redis
        case corruptChunk
        case sizeMismatch
        case unknownTensor
        case staleMap
        case missingChunk
        /// A shard map names an endpoint the credentials must not be sent to.
        case untrustedEndpoint
    }

    public let code: Code
    public let message: String
    /// The underlying Redis error, when there is one.
    public let redisError: RedisError?

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
        redisError = nil
    }

    public init(_ error: RedisError) {
        code = .redis
        message = error.description
        redisError = error
    }

    public var description: String { message }
}

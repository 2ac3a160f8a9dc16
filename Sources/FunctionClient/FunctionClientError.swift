internal import RedisClient
internal import ShardManager
internal import TensorBlob

/// An error from the FunctionClient SDK: what went wrong, and where.
///
/// Match on `code` (a new code may be added in a later release, so a `switch` over codes needs a
/// `default`); `message` is for people.
public struct FunctionClientError: Error, Sendable, CustomStringConvertible {
    /// What kind of failure this is.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        fileprivate enum Value: String, Hashable, Sendable {
            case invalidInvocation = "invalid invocation"
            case storage
            case timeLimit = "time limit"
            case invalidTensor = "invalid tensor"
            case missingObject = "missing object"
            case corruptObject = "corrupt object"
            case lostPush = "lost push"
            case functionFailed = "function failed"
        }

        fileprivate let value: Value

        /// The invocation's environment is not that of an SMLT worker function (no event, or a
        /// malformed one; a time limit that is not a number).
        public static var invalidInvocation: Code { Code(value: .invalidInvocation) }
        /// Redis could not be reached, refused a command or holds something the job cannot use
        /// (a damaged chunk, a map naming an endpoint the credentials must not go to).
        public static var storage: Code { Code(value: .storage) }
        /// The invocation's time limit leaves no room for a step.
        public static var timeLimit: Code { Code(value: .timeLimit) }
        /// A tensor whose values do not fill its shape, or gradients that are not the job's
        /// tensors (a name missing or unknown, a shape that differs).
        public static var invalidTensor: Code { Code(value: .invalidTensor) }
        /// The job has no object of the name asked for.
        public static var missingObject: Code { Code(value: .missingObject) }
        /// A staged object is not a valid tensor blob (bad checksum, truncated, wrong sizes).
        public static var corruptObject: Code { Code(value: .corruptObject) }
        /// A step that an earlier invocation half pushed cannot be completed: its gradient is gone
        /// from Redis.
        public static var lostPush: Code { Code(value: .lostPush) }
        /// The function's own `prepare` or `step` threw; the message includes its error.
        public static var functionFailed: Code { Code(value: .functionFailed) }

        /// The code's name, such as "missing object".
        public var description: String { value.rawValue }
    }

    /// What kind of failure this is.
    public let code: Code
    /// What happened, naming the job, worker, step, object or endpoint concerned.
    public let message: String

    init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    /// The message.
    public var description: String { message }
}

extension FunctionClientError {
    /// A failure of the protocol layer, mapped to a code of this SDK.
    init(_ error: ShardError) { self.init(.storage, error.message) }

    init(_ error: RedisError) { self.init(.storage, error.description) }

    init(_ error: TensorBlobError, object: String) {
        self.init(.corruptObject, "object '\(object)' is not a valid tensor blob: \(error)")
    }
}

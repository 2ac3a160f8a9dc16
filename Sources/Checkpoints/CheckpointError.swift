/// An error saving, reading or restoring a checkpoint.
public struct CheckpointError: Error, Sendable, CustomStringConvertible {
    public enum Code: Sendable, Equatable {
        /// The file is damaged or not a safetensors file.
        case corrupt
        /// A valid file SMLT cannot use (another dtype, another job's tensors).
        case unsupported
        /// Nothing to read: no checkpoint in the directory, or a job in flux.
        case notFound
        /// The checkpoint does not fit the job it is restored to.
        case invalid
        /// Reading or writing Redis or the file system failed.
        case io
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}

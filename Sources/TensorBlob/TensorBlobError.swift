/// Why a blob could not be decoded. Blobs come from Redis and are treated as untrusted input.
public struct TensorBlobError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Code: Sendable, Equatable {
        case truncated
        case badMagic
        case unsupportedVersion
        case unsupportedDType
        case unknownCodec
        case badHeader
        case tooLarge
        case lengthMismatch
        case checksumMismatch
        case corruptPayload
        case countMismatch
        /// A sparse blob's index is out of range, repeated, not increasing, or badly encoded.
        case invalidIndex
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "invalid tensor blob: \(message)" }
}

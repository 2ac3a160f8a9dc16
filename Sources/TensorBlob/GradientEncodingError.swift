/// Why a gradient encoding or a top-k selection was refused: a spec string that names no known
/// encoding, or a top-k fraction outside (0, 1]. The message names the bad value.
public struct GradientEncodingError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Code: Sendable, Equatable {
        /// The spec names no dtype, codec or `topk` that exists.
        case unknownEncoding
        /// A top-k fraction that is not a number in (0, 1].
        case invalidFraction
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}

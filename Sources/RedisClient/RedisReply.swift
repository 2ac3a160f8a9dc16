/// A reply from Redis, copied out of hiredis's buffers.
public enum RedisReply: Sendable, Equatable {
    case string([UInt8])
    case status(String)
    case integer(Int64)
    case array([RedisReply])
    case null
    case error(String)

    /// The bulk or status string as text, if this reply is one.
    public var text: String? {
        switch self {
        case .string(let b): String(decoding: b, as: UTF8.self)
        case .status(let s): s
        default: nil
        }
    }

    public var bytes: [UInt8]? {
        if case .string(let b) = self { return b }
        return nil
    }

    public var integer: Int64? {
        switch self {
        case .integer(let i): i
        case .string(let b): Int64(String(decoding: b, as: UTF8.self))
        default: nil
        }
    }

    public var array: [RedisReply]? {
        if case .array(let a) = self { return a }
        return nil
    }
}

/// A command and its arguments, binary safe.
public struct RedisCommand: Sendable, ExpressibleByArrayLiteral {
    public var arguments: [[UInt8]]

    public init(_ name: String, _ args: String...) {
        arguments = [Array(name.utf8)] + args.map { Array($0.utf8) }
    }

    public init(arrayLiteral elements: String...) {
        arguments = elements.map { Array($0.utf8) }
    }

    public init(strings: [String]) {
        arguments = strings.map { Array($0.utf8) }
    }

    public mutating func append(_ s: String) { arguments.append(Array(s.utf8)) }
    public mutating func append(_ i: Int) { arguments.append(Array(String(i).utf8)) }
    public mutating func append(bytes: [UInt8]) { arguments.append(bytes) }

    public func appending(bytes: [UInt8]) -> RedisCommand {
        var c = self
        c.append(bytes: bytes)
        return c
    }

    /// This command with more string arguments.
    public func appending(_ strings: String...) -> RedisCommand {
        var c = self
        for s in strings { c.append(s) }
        return c
    }

    /// The command's name, for error messages.
    var name: String { arguments.first.map { String(decoding: $0, as: UTF8.self) } ?? "" }
}

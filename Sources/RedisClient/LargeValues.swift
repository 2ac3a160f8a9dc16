import CHiredis

#if canImport(Glibc)
    import Glibc
#endif

/// A command whose one large argument is given as memory the caller owns (for example a blob
/// header followed by a tensor's own bytes), so it reaches the socket without being copied.
/// The memory must stay valid for the call that sends the command.
public struct BorrowedCommand {
    /// The arguments before the large one (all of them for a plain command).
    var arguments: [[UInt8]]
    var payload: [UnsafeRawBufferPointer]
    /// Whether the command has the large argument (made of `payload`).
    var hasPayload: Bool
    /// The arguments after the large one.
    var trailing: [[UInt8]]
    let name: String

    /// A plain command.
    public init(_ command: RedisCommand) {
        arguments = command.arguments
        payload = []
        hasPayload = false
        trailing = []
        name = command.name
    }

    /// `arguments`, then one argument made of `payload`'s segments in order, then `trailing`.
    public init(_ arguments: [String], payload: [UnsafeRawBufferPointer], trailing: [String] = []) {
        self.arguments = arguments.map { Array($0.utf8) }
        self.payload = payload
        hasPayload = true
        self.trailing = trailing.map { Array($0.utf8) }
        name = arguments.first ?? ""
    }

    /// This command with its key arguments in `namespace`.
    func prefixed(_ namespace: KeyNamespace, endpoint: String) throws(RedisError) -> BorrowedCommand {
        var c = self
        guard hasPayload else {
            c.arguments = try namespace.apply(arguments, endpoint: endpoint)
            return c
        }
        // Keys are never the large argument; an empty one holds its place while prefixing.
        let all = try namespace.apply(arguments + [[]] + trailing, endpoint: endpoint)
        c.arguments = Array(all[0..<arguments.count])
        c.trailing = Array(all[(arguments.count + 1)...])
        return c
    }

    /// RESP bytes up to and including the large argument's `$LENGTH\r\n` (or the whole
    /// command), and the bytes after the large argument.
    var framing: (head: [UInt8], tail: [UInt8]) {
        guard hasPayload else { return (Self.frame(arguments, count: arguments.count), []) }
        let length = payload.reduce(0) { $0 + $1.count }
        var head = Self.frame(arguments, count: arguments.count + 1 + trailing.count)
        head += Array("$\(length)\r\n".utf8)
        return (head, Array("\r\n".utf8) + Self.frame(trailing, count: nil))
    }

    /// Whether `name` is `command` (case-insensitively).
    func isCommand(_ command: String) -> Bool { name.uppercased() == command }

    /// RESP framing of `args`, preceded by the array header when `count` is given.
    static func frame(_ args: [[UInt8]], count: Int?) -> [UInt8] {
        var out: [UInt8] = []
        if let count { out += Array("*\(count)\r\n".utf8) }
        for a in args {
            out += Array("$\(a.count)\r\n".utf8)
            out += a
            out += [13, 10]
        }
        return out
    }
}

/// How a reply read by `pipelineStreaming` ended.
public enum StreamedReply {
    /// A bulk string: its first bytes, and the rest where `target` asked for it
    /// (nil when `target` declined it and the bytes were skipped).
    case bulk(prefix: UnsafeRawBufferPointer, rest: UnsafeMutableRawBufferPointer?)
    case null
    /// A server error reply.
    case error(String)
    /// Any other reply type (status, integer, array): not expected from the command.
    case unexpected(String)
}

extension RedisConnection {
    /// Sends all commands with `writev`, large arguments straight from the caller's memory,
    /// then reads every reply in order. Server error replies come back as `.error`.
    public func pipeline(borrowing commands: [BorrowedCommand]) throws(RedisError) -> [RedisReply] {
        if let lane { return try lanePipeline(borrowing: commands, lane) }
        return try directPipeline(borrowing: commands)
    }

    /// `pipeline(borrowing:)` for commands that must all succeed: the first error reply is thrown
    /// as a typed error naming its command.
    @discardableResult
    public func checkedPipeline(borrowing commands: [BorrowedCommand]) throws(RedisError) -> [RedisReply] {
        let replies = try pipeline(borrowing: commands)
        try throwFirstError(replies, names: commands.map(\.name))
        return replies
    }

    func directPipeline(borrowing commands: [BorrowedCommand]) throws(RedisError) -> [RedisReply] {
        guard !commands.isEmpty else { return [] }
        let ctx = try liveContext()
        try writeAll(commands, ctx)
        var replies: [RedisReply] = []
        replies.reserveCapacity(commands.count)
        for command in commands {
            var raw: UnsafeMutableRawPointer?
            if redisGetReply(ctx, &raw) != REDIS_OK || raw == nil { throw lostError(ctx, command.name) }
            defer { freeReplyObject(raw) }
            replies.append(RedisReply(BorrowedReply(raw!.assumingMemoryBound(to: redisReply.self))))
        }
        return replies
    }

    /// Pipelines commands that answer with bulk strings (GET) and streams each value from the
    /// socket into memory chosen per reply, without intermediate copies.
    ///
    /// For each bulk reply of `length` bytes, the first `min(prefixLength, length)` bytes are read
    /// into a small buffer and passed to `target(index, prefix, length - prefix.count)`, which
    /// returns where the remaining bytes go (exactly that many), or nil to skip them. Then
    /// `done(index, outcome)` sees the result. Both closures run in reply order; the pointers
    /// they receive are valid only during the call.
    public func pipelineStreaming(
        _ commands: [RedisCommand], prefixLength: Int,
        target: (Int, UnsafeRawBufferPointer, Int) -> UnsafeMutableRawBufferPointer?,
        done: (Int, StreamedReply) -> Void
    ) throws(RedisError) {
        if let lane {
            return try lanePipelineStreaming(commands, lane, prefixLength: prefixLength, target: target, done: done)
        }
        try directPipelineStreaming(commands, prefixLength: prefixLength, target: target, done: done)
    }

    func directPipelineStreaming(
        _ commands: [RedisCommand], prefixLength: Int,
        target: (Int, UnsafeRawBufferPointer, Int) -> UnsafeMutableRawBufferPointer?,
        done: (Int, StreamedReply) -> Void
    ) throws(RedisError) {
        guard !commands.isEmpty else { return }
        let ctx = try liveContext()
        try writeAll(commands.map(BorrowedCommand.init), ctx)
        var reader = StreamReader(fd: ctx.pointee.fd, buffer: readBuffer())
        let prefix = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, prefixLength), alignment: 16)
        defer { prefix.deallocate() }
        for (i, command) in commands.enumerated() {
            do throws(StreamReader.Failure) {
                let line = try reader.line()
                guard let kind = line.first else { throw .protocolError("empty reply line") }
                let text = String(decoding: line.dropFirst(), as: UTF8.self)
                switch kind {
                case UInt8(ascii: "$"):
                    guard let length = Int(text), length >= -1 else {
                        throw .protocolError("bad bulk length '\(text)'")
                    }
                    if length == -1 {
                        done(i, .null)
                        continue
                    }
                    let head = UnsafeMutableRawBufferPointer(rebasing: prefix[0..<min(prefixLength, length)])
                    try reader.read(into: head)
                    let rest = length - head.count
                    let destination = target(i, UnsafeRawBufferPointer(head), rest)
                    if let destination {
                        precondition(destination.count == rest, "streaming target must hold exactly \(rest) bytes")
                        try reader.read(into: destination)
                    } else {
                        try reader.skip(rest)
                    }
                    try reader.expectCRLF()
                    done(i, .bulk(prefix: UnsafeRawBufferPointer(head), rest: destination))
                case UInt8(ascii: "-"): done(i, .error(text))
                case UInt8(ascii: "+"), UInt8(ascii: ":"): done(i, .unexpected(String(decoding: line, as: UTF8.self)))
                default:
                    throw .protocolError("reply type '\(Character(Unicode.Scalar(kind)))' is not supported here")
                }
            } catch {
                disconnect()
                throw RedisError(.connectionLost, endpoint: errorEndpoint, "\(command.name): \(error)")
            }
        }
        if reader.buffered > 0 {
            disconnect()
            throw RedisError(.unexpectedReply, endpoint: errorEndpoint, "data after the last reply")
        }
    }

    private func readBuffer() -> UnsafeMutableRawBufferPointer {
        if let streamBuffer { return streamBuffer }
        let b = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 << 10, alignment: 16)
        streamBuffer = b
        return b
    }

    /// Writes every command's bytes with writev, retrying partial writes.
    private func writeAll(_ commands: [BorrowedCommand], _ ctx: UnsafeMutablePointer<redisContext>) throws(RedisError) {
        // hiredis must have nothing buffered of its own, or the byte streams would interleave.
        guard chiredis_output_pending(ctx) == 0 else {
            disconnect()
            throw RedisError(.unexpectedReply, endpoint: errorEndpoint, "output buffer not empty")
        }
        var segments: [UnsafeRawBufferPointer] = []
        // Keeps the framing arrays alive while their pointers are in `segments`.
        let framing = commands.map(\.framing)
        var failure: Int32 = 0
        withExtendedLifetime(framing) {
            for (c, f) in zip(commands, framing) {
                f.0.withUnsafeBytes { segments.append($0) }
                segments += c.payload
                if !f.1.isEmpty { f.1.withUnsafeBytes { segments.append($0) } }
            }
            failure = writeSegments(ctx.pointee.fd, segments.filter { $0.count > 0 })
        }
        if failure != 0 {
            let message = failure == EAGAIN ? "no progress within the timeout" : String(cString: strerror(failure))
            disconnect()
            throw RedisError(.connectionLost, endpoint: errorEndpoint, "\(commands[0].name): \(message)")
        }
    }
}

/// writev of all segments; 0 or the errno of the failure.
private func writeSegments(_ fd: Int32, _ segments: [UnsafeRawBufferPointer]) -> Int32 {
    var iov = segments.map { iovec(iov_base: UnsafeMutableRawPointer(mutating: $0.baseAddress), iov_len: $0.count) }
    var first = 0
    while first < iov.count {
        let n = iov[first...].prefix(1024).count
        let written = iov.withUnsafeBufferPointer { writev(fd, $0.baseAddress! + first, Int32(n)) }
        if written < 0 {
            if errno == EINTR { continue }
            return errno
        }
        var left = written
        while left > 0 && first < iov.count {
            if left >= iov[first].iov_len {
                left -= iov[first].iov_len
                first += 1
            } else {
                iov[first].iov_base = iov[first].iov_base! + left
                iov[first].iov_len -= left
                left = 0
            }
        }
    }
    return 0
}

/// A minimal RESP reader straight on the socket, for bulk replies too large to copy twice.
struct StreamReader {
    enum Failure: Error, CustomStringConvertible {
        case closed
        case io(Int32)
        case protocolError(String)

        var description: String {
            switch self {
            case .closed: "connection closed by the server"
            case .io(let e): e == EAGAIN ? "no reply within the timeout" : String(cString: strerror(e))
            case .protocolError(let m): "protocol error: \(m)"
            }
        }
    }

    let fd: Int32
    let buffer: UnsafeMutableRawBufferPointer
    var start = 0
    var end = 0

    init(fd: Int32, buffer: UnsafeMutableRawBufferPointer) {
        self.fd = fd
        self.buffer = buffer
    }

    var buffered: Int { end - start }

    private mutating func fill() throws(Failure) {
        if start == end {
            start = 0
            end = 0
        } else if end == buffer.count {
            // Move the unread bytes to the front to make room.
            buffer.baseAddress!.copyMemory(from: buffer.baseAddress! + start, byteCount: end - start)
            end -= start
            start = 0
        }
        while true {
            let n = Glibc.read(fd, buffer.baseAddress! + end, buffer.count - end)
            if n > 0 {
                end += n
                return
            }
            if n == 0 { throw .closed }
            if errno == EINTR { continue }
            throw .io(errno)
        }
    }

    /// One line without its CRLF (at most the buffer's size).
    mutating func line() throws(Failure) -> [UInt8] {
        var scanned = start
        while true {
            while scanned + 1 < end {
                if buffer[scanned] == 13 && buffer[scanned + 1] == 10 {
                    let line = Array(UnsafeRawBufferPointer(rebasing: buffer[start..<scanned]))
                    start = scanned + 2
                    return line
                }
                scanned += 1
            }
            if end - start >= buffer.count { throw .protocolError("reply line longer than \(buffer.count) bytes") }
            let offset = scanned - start
            try fill()
            scanned = start + offset
        }
    }

    /// Exactly `destination.count` bytes: what is buffered, then straight from the socket.
    mutating func read(into destination: UnsafeMutableRawBufferPointer) throws(Failure) {
        var done = min(buffered, destination.count)
        if done > 0 {
            destination.baseAddress!.copyMemory(from: buffer.baseAddress! + start, byteCount: done)
            start += done
        }
        while done < destination.count {
            let n = Glibc.read(fd, destination.baseAddress! + done, destination.count - done)
            if n > 0 {
                done += n
            } else if n == 0 {
                throw .closed
            } else if errno != EINTR {
                throw .io(errno)
            }
        }
    }

    mutating func skip(_ count: Int) throws(Failure) {
        var left = count
        while left > 0 {
            if buffered == 0 { try fill() }
            let n = min(left, buffered)
            start += n
            left -= n
        }
    }

    mutating func expectCRLF() throws(Failure) {
        while buffered < 2 { try fill() }
        guard buffer[start] == 13, buffer[start + 1] == 10 else {
            throw .protocolError("bulk string not ended by CRLF")
        }
        start += 2
    }
}

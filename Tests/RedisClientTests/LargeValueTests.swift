import LocalProcesses
import RedisClient
import TestSupport
import Testing

/// The zero-copy paths for large values: writev from the caller's memory, replies streamed into it.
@Suite struct LargeValueTests {
    @Test func borrowedSegmentsArriveAsOneValue() throws {
        try withRedisServers(1) { servers in
            let c = try RedisConnection(servers[0].endpoint)
            let a: [UInt8] = Array(repeating: 1, count: 48)
            let b: [UInt8] = (0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31) }
            let replies = try a.withUnsafeBytes { pa in
                try b.withUnsafeBytes { pb in
                    try c.pipeline(borrowing: [
                        BorrowedCommand(["SET", "big"], payload: [pa, pb], trailing: ["EX", "100"]),
                        BorrowedCommand(["SET", "empty"], payload: []),
                        BorrowedCommand(["INCR", "n"]),
                        BorrowedCommand(["LPUSH", "big", "x"]),
                    ])
                }
            }
            #expect(replies[0] == .status("OK"))
            #expect(replies[2] == .integer(1))
            guard case .error(let m) = replies[3] else {
                Issue.record("expected WRONGTYPE, got \(replies[3])")
                return
            }
            #expect(m.hasPrefix("WRONGTYPE"))
            #expect(try c.run(["GET", "big"]).bytes == a + b)
            #expect(try c.run(["GET", "empty"]).bytes == [])
            #expect((try c.run(["TTL", "big"]).integer ?? -1) > 0)
        }
    }

    @Test func streamedRepliesLandInTheCallersMemoryAndKeepTheConnectionInSync() throws {
        try withRedisServers(1) { servers in
            let c = try RedisConnection(servers[0].endpoint)
            let big: [UInt8] = (0..<(2 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
            try c.run(RedisCommand("SET", "big").appending(bytes: big))
            try c.run(RedisCommand("SET", "skipped").appending(bytes: big))
            try c.run(["SET", "tiny", "abc"])
            try c.run(["LPUSH", "list", "x"])
            let keys = ["big", "missing", "tiny", "list", "skipped", "big"]
            var received = [UInt8](repeating: 0, count: big.count - 16)
            var outcomes: [String] = []
            try received.withUnsafeMutableBytes { dst in
                try c.pipelineStreaming(
                    keys.map { RedisCommand("GET", $0) }, prefixLength: 16,
                    target: { i, prefix, rest in
                        #expect(Array(prefix) == Array(big[0..<min(16, prefix.count + rest)]) || keys[i] == "tiny")
                        return keys[i] == "skipped" || rest != dst.count ? nil : dst
                    },
                    done: { i, reply in
                        switch reply {
                        case .bulk(let prefix, let rest):
                            outcomes.append("\(keys[i]):\(prefix.count)+\(rest?.count ?? -1)")
                        case .null: outcomes.append("\(keys[i]):null")
                        case .error(let m): outcomes.append("\(keys[i]):\(m.prefix(9))")
                        case .unexpected(let m): outcomes.append("\(keys[i]):unexpected \(m)")
                        }
                    })
            }
            #expect(
                outcomes == [
                    "big:16+\(big.count - 16)", "missing:null", "tiny:3+-1", "list:WRONGTYPE", "skipped:16+-1",
                    "big:16+\(big.count - 16)",
                ])
            #expect(received == Array(big[16...]))
            // The byte stream is still aligned on reply boundaries.
            #expect(try c.run(["PING"]) == .status("PONG"))
            #expect(try c.run(["GET", "tiny"]).text == "abc")
        }
    }

    @Test func serverGoneMidStreamIsAConnectionError() throws {
        let server = try startTestRedis()
        let c = try RedisConnection(server.endpoint)
        try c.run(["SET", "k", "v"])
        server.stop()
        #expect(throws: RedisError.self) {
            try c.pipelineStreaming(
                [RedisCommand("GET", "k")], prefixLength: 4, target: { _, _, _ in nil }, done: { _, _ in })
        }
    }
}

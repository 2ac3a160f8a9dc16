import Foundation
import LocalProcesses
import RedisClient
import TestSupport
import Testing

@Suite struct RedisConnectionTests {
    @Test func binarySafeSetGetAndPipeline() throws {
        try withRedisServers(1) { servers in
            let c = try RedisConnection(servers[0].endpoint)
            let value: [UInt8] = [0, 1, 2, 0, 255, 13, 10] + Array(repeating: 7, count: 1 << 20)
            try c.run(RedisCommand("SET", "k").appending(bytes: value))
            #expect(try c.run(["GET", "k"]).bytes == value)
            let replies = try c.pipeline([["INCR", "n"], ["INCR", "n"], ["GET", "missing"], ["LPUSH", "k", "x"]])
            #expect(replies[0] == .integer(1))
            #expect(replies[1] == .integer(2))
            #expect(replies[2] == .null)
            guard case .error(let m) = replies[3] else { Issue.record("expected WRONGTYPE"); return }
            #expect(m.hasPrefix("WRONGTYPE"))
            // The connection is still in sync after an error reply in a pipeline.
            #expect(try c.run(["GET", "n"]).integer == 2)
        }
    }

    /// A checked pipeline throws its first error reply, naming the command that got it, after
    /// reading every reply: the commands after it ran, and the connection is in sync.
    @Test func checkedPipelineThrowsTheFirstErrorNamingItsCommand() throws {
        try withRedisServers(1) { servers in
            let c = try RedisConnection(servers[0].endpoint)
            try c.run(["SET", "text", "abc"])
            #expect(try c.checkedPipeline([["SET", "a", "1"], ["INCR", "a"]]).last == .integer(2))
            #expect {
                try c.checkedPipeline([
                    ["SET", "b", "1"], ["INCR", "text"], ["LPUSH", "text", "x"], ["SET", "c", "3"],
                ])
            } throws: { error in
                let e = error as? RedisError
                return e?.code == .serverError && e?.message.hasPrefix("INCR: ERR value is not an integer") == true
            }
            #expect(try c.run(["GET", "c"]).text == "3")
            #expect(try c.run(["PING"]) == .status("PONG"))
            let payload: [UInt8] = Array(repeating: 9, count: 1 << 16)
            #expect {
                try payload.withUnsafeBytes { p in
                    try c.checkedPipeline(borrowing: [
                        BorrowedCommand(["SET", "big"], payload: [p]), BorrowedCommand(["LPUSH", "big", "x"]),
                    ])
                }
            } throws: { error in (error as? RedisError)?.message.hasPrefix("LPUSH: WRONGTYPE") == true }
            #expect(try c.run(["STRLEN", "big"]) == .integer(Int64(payload.count)))
        }
    }

    @Test func passwordAcceptedAndRefused() throws {
        try withRedisServers(1, password: "s3cret") { servers in
            let ep = servers[0].endpoint
            let ok = try RedisConnection(ep, options: RedisOptions(password: "s3cret"))
            #expect(try ok.run(["PING"]) == .status("PONG"))

            #expect { try RedisConnection(ep, options: RedisOptions(password: "wrong")) } throws: {
                ($0 as? RedisError)?.code == .authenticationFailed
            }
            let anonymous = try RedisConnection(ep)
            do {
                try anonymous.run(["GET", "x"])
                Issue.record("a command without AUTH succeeded")
            } catch let error as RedisError {
                #expect(error.code == .authenticationFailed)
                #expect(error.description.contains("SMLT_REDIS_PASSWORD"))
            }
        }
    }

    @Test func aclUserAndPassword() throws {
        try withRedisServers(1) { servers in
            let admin = try RedisConnection(servers[0].endpoint)
            try admin.run(["ACL", "SETUSER", "trainer", "on", ">pw1", "~smlt:*", "+@all"])
            let c = try RedisConnection(
                servers[0].endpoint, options: RedisOptions(password: "pw1", username: "trainer"))
            try c.run(["SET", "smlt:x", "1"])
            // The ACL limits the user to smlt:* keys.
            #expect { try c.run(["SET", "other", "1"]) } throws: { ($0 as? RedisError)?.code == .permissionDenied }
            #expect {
                try RedisConnection(servers[0].endpoint, options: RedisOptions(password: "nope", username: "trainer"))
            } throws: { ($0 as? RedisError)?.code == .authenticationFailed }
        }
    }

    @Test func unreachableEndpointErrorNamesIt() throws {
        let port = try freeLoopbackPort()
        let ep = RedisEndpoint(host: "127.0.0.1", port: port)
        do {
            _ = try RedisConnection(ep)
            Issue.record("connected to a port nobody listens on")
        } catch {
            #expect(error.code == .connectionFailed)
            #expect(error.description == "cannot connect to 127.0.0.1:\(port): Connection refused")
        }
    }

    @Test func reconnectsAfterDroppedConnection() throws {
        try withRedisServers(1) { servers in
            let c = try RedisConnection(servers[0].endpoint)
            try c.run(["CLIENT", "SETNAME", "victim"])
            let killer = try RedisConnection(servers[0].endpoint)
            try killer.run(["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"])
            #expect { try c.run(["PING"]) } throws: { ($0 as? RedisError)?.code == .connectionLost }
            #expect(try c.run(["PING"]) == .status("PONG"))
        }
    }

    @Test func unixSocketAndBlockingTimeout() throws {
        let path = NSTemporaryDirectory() + "smlt-test-\(UUID().uuidString.prefix(8)).sock"
        let server = try RedisServerProcess(extraArguments: ["--unixsocket", path, "--unixsocketperm", "700"])
        defer { server.stop() }
        let c = try RedisConnection(RedisEndpoint(parsing: "unix:\(path)"))
        let start = ContinuousClock.now
        #expect(try c.run(["BLPOP", "nothing", "0.2"], blockingFor: .seconds(1)) == .null)
        #expect(ContinuousClock.now - start >= .milliseconds(150))
    }

    @Test func commandTimeoutReportsLostConnection() throws {
        try withRedisServers(1) { servers in
            var options = RedisOptions()
            options.commandTimeout = .milliseconds(200)
            let c = try RedisConnection(servers[0].endpoint, options: options)
            #expect { try c.run(["BLPOP", "nothing", "2"]) } throws: { ($0 as? RedisError)?.code == .connectionLost }
            #expect(try c.run(["PING"]) == .status("PONG"))
        }
    }

    @Test func endpointParsing() throws {
        #expect(try RedisEndpoint(parsing: "10.0.0.1:7001").address == .tcp(host: "10.0.0.1", port: 7001))
        #expect(try RedisEndpoint(parsing: "[::1]:7002").description == "[::1]:7002")
        #expect(try RedisEndpoint(parsing: "unix:/tmp/r.sock").address == .unix(path: "/tmp/r.sock"))
        #expect(try RedisEndpoint.list(parsing: "a:1, b:2").count == 2)
        for bad in ["nohost", "h:0", "h:99999", ":1", "h:x", ""] {
            #expect(throws: RedisError.self, "\(bad)") { try RedisEndpoint.list(parsing: bad) }
        }
    }
}

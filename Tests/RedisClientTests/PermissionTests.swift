import Foundation
import LocalProcesses
import RedisClient
import TestSupport
import Testing

/// NOPERM replies (an ACL user without a permission) are their own kind of error, not a wrong
/// password.
@Suite struct PermissionTests {
    @Test func commandTheACLUserLacksIsAPermissionError() throws {
        try withRedisServers(1) { servers in
            let admin = try RedisConnection(servers[0].endpoint)
            try admin.run(["ACL", "SETUSER", "server", "on", ">pw", "~smlt:*", "+@all", "-blpop"])
            let c = try RedisConnection(servers[0].endpoint, options: RedisOptions(password: "pw", username: "server"))
            try c.run(["SET", "smlt:x", "1"])
            do {
                _ = try c.run(["BLPOP", "smlt:inbox", "1"], blockingFor: .seconds(1))
                Issue.record("BLPOP ran without the permission")
            } catch let error as RedisError {
                #expect(error.code == .permissionDenied)
                #expect(error.description.contains("permission denied on \(servers[0].endpoint)"), "\(error)")
                #expect(error.message.contains("the ACL user 'server' lacks a permission for BLPOP"), "\(error)")
                #expect(error.message.contains("NOPERM"), "\(error)")
                #expect(!error.description.contains("password"), "\(error)")
            }
            // A key outside the user's patterns.
            #expect { try c.run(["GET", "other"]) } throws: { error in
                guard let e = error as? RedisError else { return false }
                return e.code == .permissionDenied && e.message.contains("lacks a permission for GET")
            }
            // The connection is still usable.
            #expect(try c.run(["GET", "smlt:x"]).text == "1")
        }
    }
}

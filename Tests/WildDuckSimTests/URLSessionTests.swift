import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Testing
@testable import WildDuckSim

/// The client uses URLSession for REST: make sure it reads the sim's replies (chunked eml, keep-alive, errors).
@Suite struct URLSessionTests {
    @Test func restThroughURLSession() async throws {
        let h = try Harness()
        let raw = Array("Subject: via URLSession\r\n\r\n".utf8) + [UInt8](repeating: 0x41, count: 200_000) + [0x0D, 0x0A]
        let uid = try h.account.deliver(raw, to: h.inbox)
        let session = URLSession(configuration: .ephemeral)
        func get(_ path: String) async throws -> (Data, HTTPURLResponse) {
            let url = try #require(URL(string: h.server.baseURL + path))
            var req = URLRequest(url: url)
            req.setValue("Bearer \(h.token)", forHTTPHeaderField: "Authorization")
            let (data, resp) = try await session.data(for: req)
            return (data, try #require(resp as? HTTPURLResponse))
        }
        let (eml, r1) = try await get("/users/me/mailboxes/\(h.inbox)/messages/\(uid)/message.eml")
        #expect(r1.statusCode == 200)
        #expect([UInt8](eml) == raw)
        let (list, r2) = try await get("/users/me/mailboxes?counters=true")
        #expect(r2.statusCode == 200)
        #expect(JSONValue.parse([UInt8](list))?["results"]?[0]?["total"] == .int(1))
        let (err, r3) = try await get("/users/me/mailboxes/\(h.inbox)/messages/99/message.eml")
        #expect(r3.statusCode == 404)
        #expect(JSONValue.parse([UInt8](err))?["code"] == .string("MessageNotFound"))
        // a POST with a JSON body
        let url = try #require(URL(string: h.server.baseURL + "/authenticate"))
        var post = URLRequest(url: url)
        post.httpMethod = "POST"
        post.setValue("application/json", forHTTPHeaderField: "Content-Type")
        post.httpBody = Data(#"{"username":"demo","password":"demo","token":true}"#.utf8)
        let (auth, r4) = try await session.data(for: post)
        #expect((r4 as? HTTPURLResponse)?.statusCode == 200)
        #expect(JSONValue.parse([UInt8](auth))?["token"]?.stringValue?.count == 40)
        session.invalidateAndCancel()
    }
}

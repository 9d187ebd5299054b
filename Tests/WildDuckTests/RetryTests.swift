import Foundation
import Net
import Testing
import Failures
import WildDuckSim
@testable import WildDuck

/// The one retry policy, and the limits of a request, against the simulator's fault modes.
@Suite(.timeLimit(.minutes(2))) struct RetryTests {
    /// Retries without waiting, so the tests do not sleep through the real schedule.
    static let fast = Backoff.fixed([0, 0, 0, 0])

    func setUp(retry: Backoff = fast, limits: HTTPLimits = HTTPLimits(deadline: 120)) throws
        -> (SimAccount, SimServer, WildDuckClient) {
        let account = SimAccount()
        let server = SimServer(account: account)
        try server.start()
        let endpoint = try #require(HTTPEndpoint(url: server.baseURL))
        let session = Session(endpoint: endpoint, username: "demo", password: { "demo" },
                              connector: HTTPConnection.tcpConnector(timeout: 5), retry: retry, limits: limits)
        let client = WildDuckClient(session: session, timeout: 5)
        try client.authenticate()
        return (account, server, client)
    }

    @Test func transientFailuresAreTriedAgainThenTheCallSucceeds() throws {
        let (_, server, c) = try setUp()
        defer { server.stop() }
        server.injectFault(.status(503, body: #"{"error":"maintenance"}"#), on: "mailboxes", count: 1)
        server.injectFault(.status(502, body: "<html>bad gateway</html>"), on: "mailboxes", count: 1)
        server.injectFault(.dropConnection, on: "mailboxes", count: 1)
        server.injectFault(.status(500, body: #"{"error":"MongoDB Error: x","code":"InternalDatabaseError"}"#), on: "mailboxes", count: 1)
        #expect(try c.fetchMailboxes().first?.path == "INBOX")
        #expect(server.stats()["mailboxes"] == 5)
    }

    @Test func afterFiveTriesTheErrorIsPassedOn() throws {
        let (_, server, c) = try setUp()
        defer { server.stop() }
        server.injectFault(.status(503, body: #"{"error":"maintenance"}"#), on: "mailboxes", count: 100)
        #expect { _ = try c.fetchMailboxes() } throws: { error in
            guard case WildDuckError.server(_, 503, _, _) = error else { return false }
            return true
        }
        #expect(server.stats()["mailboxes"] == 5)
    }

    @Test func retryAfterIsHonoured() throws {
        let (_, server, c) = try setUp()
        defer { server.stop() }
        server.injectFault(.retryAfter(status: 429, seconds: 1), on: "user", count: 1)
        let start = ContinuousClock.now
        _ = try c.fetchUser()
        // The schedule says 0 s; only Retry-After can make it wait (a lower bound, never flaky).
        #expect(ContinuousClock.now - start >= .milliseconds(950))
        #expect(server.stats()["user"] == 2)

        // A Retry-After beyond what wdsync waits for fails at once.
        server.injectFault(.retryAfter(status: 503, seconds: 3600), on: "user", count: 1)
        #expect { _ = try c.fetchUser() } throws: { error in
            guard case WildDuckError.server(_, 503, _, _) = error else { return false }
            return true
        }
        #expect(server.stats()["user"] == 3)
    }

    @Test func wildDucksPermanent500sAreNotRetried() throws {
        let (_, server, c) = try setUp()
        defer { server.stop() }
        server.injectFault(.status(500, body: #"{"error":"Mailbox is missing"}"#), on: "mailboxes", count: 10)
        #expect(throws: WildDuckError.self) { _ = try c.fetchMailboxes() }
        #expect(server.stats()["mailboxes"] == 1)
        server.clearFaults()
        server.injectFault(.status(500, body: #"{"error":"Nothing was changed"}"#), on: "mailboxes", count: 10)
        #expect(throws: WildDuckError.self) { _ = try c.fetchMailboxes() }
        #expect(server.stats()["mailboxes"] == 2)
    }

    @Test func aPostIsNeverTriedAgainOnceItMayHaveArrived() throws {
        let (_, server, c) = try setUp()
        defer { server.stop() }
        server.injectFault(.status(503, body: #"{"error":"maintenance"}"#), on: "mailboxes", count: 10)
        #expect(throws: WildDuckError.self) {
            _ = try c.call("POST", "/users/\(c.session.userId ?? "")/mailboxes", body: .object([("path", .string("New"))]))
        }
        #expect(server.stats()["mailboxes"] == 1)
        server.clearFaults()
        server.injectFault(.dropConnection, on: "mailboxes", count: 10)
        #expect(throws: WildDuckError.self) {
            _ = try c.call("POST", "/users/\(c.session.userId ?? "")/mailboxes", body: .object([("path", .string("New"))]))
        }
        #expect(server.stats()["mailboxes"] == 2)
    }

    @Test func aDownloadCutMidBodyStartsAgainFromNothing() throws {
        let (account, server, c) = try setUp()
        defer { server.stop() }
        let inbox = try #require(account.mailboxId(path: "INBOX"))
        try account.generate(count: 3, mailboxIds: [inbox], seed: 4, sizeMix: .small)
        let messages = account.messages(mailboxId: inbox)
        // Keep the connection alive with one download, then cut the next ones halfway.
        var bytes: [UInt8] = []
        try c.downloadMessage(mailbox: inbox, uid: messages[0].uid, begin: { bytes = [] }) { bytes += $0 }
        #expect(bytes == messages[0].raw)
        server.injectFault(.closeMidBody(reset: false), on: "message.eml", count: 1)
        server.injectFault(.closeMidBody(reset: true), on: "message.eml", count: 1)
        var begins = 0
        try c.downloadMessage(mailbox: inbox, uid: messages[1].uid, begin: { begins += 1; bytes = [] }) { bytes += $0 }
        #expect(bytes == messages[1].raw)
        #expect(begins >= 2)
        #expect(server.stats()["message.eml"] == 4)
    }

    @Test func anEndlessBodyStopsAtTheSizeCap() throws {
        let (account, server, c) = try setUp()
        defer { server.stop() }
        let inbox = try #require(account.mailboxId(path: "INBOX"))
        try account.generate(count: 1, mailboxIds: [inbox], seed: 4, sizeMix: .small)
        let message = try #require(account.messages(mailboxId: inbox).first)
        server.injectFault(.endlessBody, on: "message.eml", count: 1)
        var received = 0
        let cap = WildDuckClient.messageSizeCap(listedSize: message.raw.count)
        #expect(cap < 2 << 20)
        #expect {
            try c.downloadMessage(mailbox: inbox, uid: message.uid, maxBytes: cap, begin: { received = 0 }) { received += $0.count }
        } throws: { error in
            guard case WildDuckError.badMessage(_, let detail) = error else { return false }
            return detail.contains("size cap")
        }
        #expect(received <= cap)
        #expect(server.stats()["message.eml"] == 1)   // refused, not retried
        // The connection was given up; the next request works.
        var bytes: [UInt8] = []
        try c.downloadMessage(mailbox: inbox, uid: message.uid, begin: { bytes = [] }) { bytes += $0 }
        #expect(bytes == message.raw)
    }

    @Test func sizeCapFollowsTheListingWithSlackAndAHardMaximum() {
        #expect(WildDuckClient.messageSizeCap(listedSize: 0) == 1 << 30)
        #expect(WildDuckClient.messageSizeCap(listedSize: 10_000) == 20_000 + (1 << 20))
        #expect(WildDuckClient.messageSizeCap(listedSize: 900 << 20) == 1 << 30)
        #expect(WildDuckClient.messageSizeCap(listedSize: Int.max) == 1 << 30)
    }

    @Test func aDripFedResponseHitsTheDeadline() throws {
        let (_, server, c) = try setUp(retry: .oneTry, limits: HTTPLimits(deadline: 1, minimumRate: 1 << 20))
        defer { server.stop() }
        // ~300 bytes, one every 50 ms: 15 s in all, far past the 1 s deadline, while every single
        // read comes well within the 5 s read timeout.
        server.injectFault(.drip(milliseconds: 50), on: "user", count: 1)
        #expect { _ = try c.fetchUser() } throws: { error in
            guard case WildDuckError.network(_, let detail) = error else { return false }
            return detail.contains("timed out")
        }
        _ = try c.fetchUser()   // the next request gets a fresh connection and its own deadline
    }

    @Test func floodsOfInterimResponsesAndTrailersAreBounded() throws {
        let (account, server, c) = try setUp(retry: .oneTry)
        defer { server.stop() }
        server.injectFault(.interimFlood, on: "user", count: 1)
        #expect { _ = try c.fetchUser() } throws: { error in
            guard case WildDuckError.malformed(_, let detail) = error else { return false }
            return detail.contains("interim")
        }
        let inbox = try #require(account.mailboxId(path: "INBOX"))
        try account.generate(count: 1, mailboxIds: [inbox], seed: 4, sizeMix: .small)
        let message = try #require(account.messages(mailboxId: inbox).first)
        server.injectFault(.trailerFlood, on: "message.eml", count: 1)
        #expect {
            try c.downloadMessage(mailbox: inbox, uid: message.uid, begin: {}) { _ in }
        } throws: { error in
            guard case WildDuckError.malformed(_, let detail) = error else { return false }
            return detail.contains("trailer")
        }
    }
}

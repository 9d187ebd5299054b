import Foundation
import Net
import Testing
import Failures
import WildDuckSim
@testable import WildDuck

/// The REST client against the simulator (the two share no code).
@Suite struct ClientTests {
    func client(_ server: SimServer, password: String = "demo", retry: Backoff = .oneTry,
                limits: HTTPLimits = HTTPLimits(deadline: 120)) throws -> WildDuckClient {
        let endpoint = try #require(HTTPEndpoint(url: server.baseURL))
        let session = Session(endpoint: endpoint, username: "demo", password: { password },
                              connector: HTTPConnection.tcpConnector(timeout: 5), retry: retry, limits: limits)
        return WildDuckClient(session: session, timeout: 5)
    }

    func started(_ account: SimAccount) throws -> SimServer {
        let server = SimServer(account: account)
        try server.start()
        return server
    }

    @Test func authenticatesAndListsEverything() throws {
        let account = SimAccount()
        let server = try started(account)
        defer { server.stop() }
        let inbox = try #require(account.mailboxId(path: "INBOX"))
        try account.generate(count: 600, mailboxIds: [inbox], seed: 2, sizeMix: .small)
        let c = try client(server)
        try c.authenticate()
        #expect(c.session.userId == account.userId)
        #expect(c.session.token?.count == 40)
        let mailboxes = try c.fetchMailboxes()
        #expect(mailboxes.first?.path == "INBOX")
        #expect(mailboxes.contains { $0.specialUse == "\\Sent" })
        // Cursor paging: 600 messages in pages of 250, every uid once.
        var uids: [Int] = []
        var cursor: String?
        repeat {
            let page = try c.listMessages(mailbox: inbox, cursor: cursor)
            uids += page.items.map(\.uid)
            cursor = page.nextCursor
        } while cursor != nil
        #expect(uids.count == 600 && Set(uids).count == 600)
        // New since a uid, and exact uids.
        #expect(try c.searchNew(mailbox: inbox, fromUid: 590, cursor: nil).items.map(\.uid).sorted() == Array(590...600))
        #expect(try c.searchUids(mailbox: inbox, uids: "3,7", cursor: nil).items.map(\.uid).sorted() == [3, 7])
        // message.eml streams the exact bytes (chunked, no Content-Length).
        let original = try #require(account.messages(mailboxId: inbox).first)
        var bytes: [UInt8] = []
        try c.downloadMessage(mailbox: inbox, uid: original.uid, begin: { bytes = [] }) { bytes += $0 }
        #expect(bytes == original.raw)
        _ = try c.fetchUser()
        _ = try c.fetchAutoreply()
        #expect(try c.fetchFilters().filters.isEmpty)
    }

    /// Uid lists are cut where a request would pass `maxRequestHead`, under a URL prefix too,
    /// and together they hold every uid once, in order; the server takes each (never 431).
    @Test func uidListsFitTheRequestHeadLimit() throws {
        let account = SimAccount()
        let server = try started(account)
        defer { server.stop() }
        let inbox = try #require(account.mailboxId(path: "INBOX"))
        try account.generate(count: 10, mailboxIds: [inbox], seed: 2, sizeMix: .small)
        let endpoint = try #require(HTTPEndpoint(url: server.baseURL + "/" + String(repeating: "p", count: 500)))
        let session = Session(endpoint: endpoint, username: "demo", password: { "demo" },
                              connector: HTTPConnection.tcpConnector(timeout: 5), retry: .oneTry)
        let prefixed = WildDuckClient(session: session, timeout: 5)
        let uids = Array(4_294_957_295...4_294_967_295)
        let lists = prefixed.uidLists(mailbox: inbox, uids)
        #expect(lists.count > 1)
        #expect(lists.flatMap { $0.split(separator: ",").compactMap { Int($0) } } == uids)
        for (i, list) in lists.enumerated() {
            let target = "/users/me/search?mailbox=\(inbox)&id=\(list.replacingOccurrences(of: ",", with: "%2C"))&limit=250&next=" + String(repeating: "x", count: 256)
            let head = prefixed.connection.headSize("GET", target, headers: [("X-Access-Token", String(repeating: "0", count: 40)), ("Accept", "application/json")])
            #expect(head <= WildDuckClient.maxRequestHead)
            // full: one more uid (10 digits and an escaped comma) would not have fitted
            if i < lists.count - 1 { #expect(head + 13 > WildDuckClient.maxRequestHead) }
        }
        let c = try client(server)
        try c.authenticate()
        for list in c.uidLists(mailbox: inbox, Array(1...3000)) {
            #expect(try c.searchUids(mailbox: inbox, uids: list, cursor: nil).items.count <= 10)
        }
        #expect(server.stats()["431"] == 0)
    }

    @Test func aRevokedTokenIsReplacedOnceThenTheErrorIsClear() throws {
        let account = SimAccount()
        let server = try started(account)
        defer { server.stop() }
        let c = try client(server)
        _ = try c.fetchMailboxes()                      // authenticates on first use
        account.revokeTokens()
        _ = try c.fetchMailboxes()                      // 403 InvalidToken → authenticate again
        #expect(server.stats().perRoute["authenticate"] == 2)
        // A server that keeps refusing the fresh token: one retry, then invalidToken.
        server.injectFault(.status(403, body: #"{"code":"InvalidToken","message":"Invalid accessToken value"}"#), on: "mailboxes", count: 2)
        #expect {
            _ = try c.fetchMailboxes()
        } throws: { error in
            guard case WildDuckError.invalidToken = error else { return false }
            return !"\(error)".contains(c.session.token ?? "-")
        }
    }

    @Test func pipelinedDownloadsSayWhichAnswersAreFinal() throws {
        let account = SimAccount()
        let server = try started(account)
        defer { server.stop() }
        let inbox = try #require(account.mailboxId(path: "INBOX"))
        try account.generate(count: 4, mailboxIds: [inbox], seed: 5, sizeMix: .small)
        let messages = account.messages(mailboxId: inbox)
        let c = try client(server)
        func pipeline(_ uids: [Int], cap: Int = WildDuckClient.maxMessageBytes) -> (bodies: [[UInt8]], done: Int, stoppedBy: Error?) {
            var bodies: [[UInt8]] = []
            let (done, stoppedBy) = c.downloadMessages(uids.map { (inbox, $0, cap) }, begin: { _ in bodies.append([]) },
                                                       sink: { i, chunk in bodies[i] += chunk }, end: { _ in })
            return (bodies, done, stoppedBy)
        }
        // No token yet: nothing is sent, `downloadMessage` authenticates.
        #expect(pipeline([messages[0].uid]).done == 0)
        #expect(server.stats().perRoute["message.eml"] == nil)
        try c.authenticate()
        // Whole answers in order, exact bytes; a message that is gone is a final answer. (Last
        // in the pipeline: a request behind it would still reach the server after the pipeline
        // closed, and count against the fault set up next.)
        let gone = pipeline([messages[0].uid, messages[1].uid, 999])
        #expect(gone.done == 2 && gone.bodies.prefix(2).elementsEqual(messages.prefix(2).map(\.raw)))
        #expect((gone.stoppedBy as? WildDuckError)?.isNotFound == true)
        // A busy server is not: that one is asked again.
        server.injectFault(.status(503, body: #"{"error":"busy"}"#), on: "message.eml", count: 1, after: 1)
        let busy = pipeline(messages.map(\.uid))
        #expect(busy.done == 1 && (busy.stoppedBy as? WildDuckError)?.isNotFound == false)
        // A body over its cap is refused, final too.
        let capped = pipeline([messages[3].uid], cap: messages[3].raw.count - 1)
        #expect(capped.done == 0 && (capped.stoppedBy as? WildDuckError)?.failure == Failure(.message, .skip, .server))
    }

    @Test func errorShapes() throws {
        let account = SimAccount()
        let server = try started(account)
        defer { server.stop() }
        #expect {
            try client(server, password: "wrong-secret").authenticate()
        } throws: { error in
            guard case WildDuckError.authenticationFailed = error else { return false }
            return !"\(error)".contains("wrong-secret")
        }
        let c = try client(server)
        let inbox = try #require(account.mailboxId(path: "INBOX"))
        // 404 with a code, 404 without, 500, HTTP 200 with an error body: all errors, classified.
        #expect { try c.downloadMessage(mailbox: inbox, uid: 999, begin: {}) { _ in } } throws: { ($0 as? WildDuckError)?.isNotFound == true }
        server.injectFault(.status(404, body: #"{"error":"Message was not found"}"#), on: "mailboxes")
        #expect { _ = try c.fetchMailboxes() } throws: { ($0 as? WildDuckError)?.isNotFound == true }
        server.injectFault(.status(500, body: #"{"error":"MongoDB Error: x","code":"InternalDatabaseError"}"#), on: "mailboxes")
        #expect { _ = try c.fetchMailboxes() } throws: { ($0 as? WildDuckError)?.isTemporary == true }
        server.injectFault(.status(200, body: #"{"error":"thrown without a status"}"#), on: "mailboxes")
        #expect { _ = try c.fetchMailboxes() } throws: { error in
            guard case WildDuckError.server(_, 200, _, let message) = error else { return false }
            return message == "thrown without a status"
        }
        server.injectFault(.malformedJSON, on: "mailboxes")
        #expect { _ = try c.fetchMailboxes() } throws: { error in
            if case WildDuckError.malformed = error { return true }
            return false
        }
        server.injectFault(.rejectCursor, on: "messages")
        try account.generate(count: 300, mailboxIds: [inbox], seed: 1, sizeMix: .small)
        let first = try c.listMessages(mailbox: inbox, cursor: nil)
        #expect { _ = try c.listMessages(mailbox: inbox, cursor: first.nextCursor) } throws: { ($0 as? WildDuckError)?.isInputValidation == true }
    }

    @Test func unreachableServer() throws {
        let endpoint = try #require(HTTPEndpoint(url: "http://127.0.0.1:1"))
        let session = Session(endpoint: endpoint, username: "demo", password: { "x" }, connector: HTTPConnection.tcpConnector(timeout: 1),
                              retry: .fixed([0, 0]))
        #expect { try WildDuckClient(session: session).authenticate() } throws: { error in
            if case WildDuckError.unreachable = error { return true }
            return false
        }
    }
}

import Testing
import Failures
@testable import Net
@testable import WildDuck

/// Each of the server's errors is classified once (`WildDuckError.failure`); the client's
/// retries, the push, the export, the daemon and the exit codes read that.
@Suite struct ErrorClassificationTests {
    func server(_ status: Int, _ code: String? = nil, _ message: String = "x", route: String = "PUT /users/:user/mailboxes/:mailbox/messages") -> Failure {
        WildDuckError.server(route: route, status: status, code: code, message: message).failure
    }

    @Test func theServersAnswers() {
        #expect(server(404) == Failure(.message, .gone, .server))
        #expect(server(400, "MessageNotFound") == Failure(.message, .gone, .server))
        #expect(server(400, "NoSuchMailbox").remedy == .gone)
        #expect(server(429) == Failure(.message, .retry, .server))
        #expect(server(502) == Failure(.message, .retry, .server))
        #expect(server(500, nil, "Nothing was changed").remedy == .skip)
        #expect(server(500, nil, "Mailbox is missing").remedy == .skip)
        #expect(server(500, "InternalDatabaseError", "Mailbox is missing").remedy == .retry)
        #expect(server(501).remedy == .skip)
        #expect(server(400, "InputValidationError") == Failure(.message, .skip, .server))
        #expect(server(431).remedy == .skip)
        // POST /authenticate: a 403 that is not a refusal of the password (rate limited, a
        // database error) waits; it concerns every request.
        #expect(server(403, "RateLimitedError", route: "POST /authenticate") == Failure(.account, .retry, .server))
        #expect(server(403, "Forbidden").remedy == .skip)
    }

    @Test func theOtherCases() {
        #expect(WildDuckError.authenticationFailed("no").failure == Failure(.account, .stop, .credentials))
        #expect(WildDuckError.invalidToken.failure.remedy == .stop)
        #expect(WildDuckError.unreachable(server: "h", detail: "d").failure == Failure(.account, .retry, .network))
        #expect(WildDuckError.network(route: "r", detail: "d").failure == Failure(.message, .retry, .network))
        #expect(WildDuckError.malformed(route: "r", detail: "d").failure == Failure(.account, .retry, .server))
        #expect(WildDuckError.badMessage(route: "r", detail: "d").failure == Failure(.message, .skip, .server))
        struct Stray: Error {}
        #expect(Failure(of: Stray()) == Failure(.account, .stop, .unknown))
    }

    @Test func theClientRetriesWhatTheRuleCallsRetry() {
        func response(_ status: Int, _ body: String) -> HTTPResponse {
            HTTPResponse(head: HTTPResponseHead(status: status, headers: []), body: Array(body.utf8))
        }
        #expect(Session.isTransient(response(503, "")))
        #expect(Session.isTransient(response(429, "")))
        #expect(Session.isTransient(response(500, #"{"error":"boom"}"#)))
        #expect(!Session.isTransient(response(500, #"{"error":"Nothing was changed"}"#)))
        #expect(!Session.isTransient(response(501, "")))
        #expect(!Session.isTransient(response(404, "")))
        #expect(!Session.isTransient(response(400, #"{"error":"bad","code":"InputValidationError"}"#)))
    }
}

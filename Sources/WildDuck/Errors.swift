import Net
import Failures

/// What went wrong talking to the server. Descriptions say what happened and what to do,
/// and never contain the password or the token.
public enum WildDuckError: Error, CustomStringConvertible, Sendable {
    /// The server refused the username/password themselves (403 `AuthFailed` or
    /// `InvalidAuthScope`; see `Session.refusesCredentials`). Another 403 from
    /// `POST /authenticate` (rate limited, a database error) is a temporary `.server` error.
    case authenticationFailed(String)
    /// The token was refused even after authenticating again.
    case invalidToken
    /// The server could not be reached at all.
    case unreachable(server: String, detail: String)
    /// The connection broke during an exchange.
    case network(route: String, detail: String)
    /// The server answered with an error.
    case server(route: String, status: Int, code: String?, message: String)
    /// The answer could not be understood.
    case malformed(route: String, detail: String)
    /// One message's body was refused (larger than its size cap, or cut off undetectably); the
    /// message gets no file and the rest of the sync goes on.
    case badMessage(route: String, detail: String)

    public var description: String { summary + "; " + advice }

    /// What happened, without advice: the daemon adds "will retry" instead.
    public var summary: String {
        switch self {
        case .authenticationFailed(let message): return "authentication failed: \(message)"
        case .invalidToken: return "the server rejected the access token right after issuing it"
        case .unreachable(let server, let detail): return "cannot reach \(server): \(detail)"
        case .network(let route, let detail): return "connection lost during \(route): \(detail)"
        case .server(let route, let status, let code, let message):
            return "server error on \(route) (HTTP \(status), \(code.map { "\($0): \(message)" } ?? message))"
        case .malformed(let route, let detail): return "unexpected answer from the server on \(route): \(detail)"
        case .badMessage(let route, let detail): return "refused \(route): \(detail)"
        }
    }

    /// What the user can do about it.
    public var advice: String {
        switch self {
        case .authenticationFailed: return "check the username and the password file or command"
        case .invalidToken: return "check the server's access-control settings"
        case .unreachable: return "check --server and the network, then re-run"
        case .network: return "re-run to continue where this run stopped"
        case .server(let route, let status, _, _):
            // No /authenticate at that URL: most often --server lacks the API's base path.
            if status == 404 && route.hasSuffix("/authenticate") {
                return "is --server the WildDuck API base URL (often ending in /api)?"
            }
            return status == 431 ? "the request was larger than the server accepts; please report it"
                : status == 403 && isTemporary ? "the server cannot authenticate now; re-run later (the daemon tries again by itself)"
                : isTemporary ? "the server had a problem; re-run later" : "re-run; if it persists, report it"
        case .malformed(let route, _):
            return route.hasSuffix("/authenticate") ? "is --server the WildDuck API base URL (often ending in /api)?"
                : "is --server a WildDuck API URL?"
        case .badMessage: return "no file was written, the next run tries again"
        }
    }

    /// 404-style errors: the thing asked for is gone (a message expunged mid-sync, a mailbox deleted).
    public var isNotFound: Bool { failure.remedy == .gone }

    /// A rejected paging cursor (400 on a request that carried one).
    public var isInputValidation: Bool {
        if case .server(_, let status, let code, _) = self { return status == 400 || code == "InputValidationError" }
        return false
    }

    /// Whether this answer to a request that changes the server proves the change was not
    /// made: WildDuck's own JSON refusal (a 4xx other than 429; `decode` turns a 4xx without
    /// JSON into `.malformed`), or a refused token or password (nothing reached the route).
    /// Everything else leaves it unknown and the caller must look on the server before sending
    /// again: a reverse proxy (nginx in front of WildDuck) answers 502 or 504 when WildDuck was
    /// slow, possibly after it stored the request; a 429 or 5xx may come from the proxy too; a
    /// broken connection or an answer that is not JSON says nothing of what the server did.
    public var provesNotDone: Bool {
        switch self {
        case .server(_, let status, _, _): return status >= 400 && status < 500 && status != 429
        case .authenticationFailed, .invalidToken: return true
        default: return false
        }
    }

    /// Whether retrying later might help (`failure.remedy == .retry`).
    public var isTemporary: Bool { failure.remedy == .retry }

}

extension WildDuckError: ClassifiedError {
    /// Every error of the server classified, here and only here (the client's retries read the
    /// same rule for an answer, `WildDuckError.remedy(status:code:message:route:)`).
    public var failure: Failure {
        switch self {
        case .authenticationFailed, .invalidToken:
            return Failure(.account, .stop, .credentials)
        case .unreachable:
            return Failure(.account, .retry, .network)
        case .network:
            // One exchange broke; the server was there.
            return Failure(.message, .retry, .network)
        case .server(let route, let status, let code, let message):
            let remedy = Self.remedy(status: status, code: code, message: message, route: route)
            // Authentication that cannot be done now concerns every request.
            return Failure(route == "POST /authenticate" ? .account : .message, remedy, .server)
        case .malformed:
            // Not WildDuck's language: probably not a WildDuck API URL at all.
            return Failure(.account, .retry, .server)
        case .badMessage:
            return Failure(.message, .skip, .server)
        }
    }

    /// What an error answer of WildDuck calls for:
    /// - gone: 404, `MessageNotFound`, `NoSuchMailbox` (expunged or deleted meanwhile);
    /// - retry: 429, and 5xx except 501 and WildDuck's permanent 500s "Nothing was changed"
    ///   and "Mailbox is missing" (lib/api/messages.js at
    ///   https://github.com/nodemailer/wildduck/blob/08c5804798e7ffe1b281859c4edcec2465d058c2/lib/api/messages.js),
    ///   and a 403 from `POST /authenticate` that does not refuse the credentials (rate
    ///   limited, a database error: `Session.refusesCredentials`);
    /// - skip: any other 4xx, which sending again will not change.
    public static func remedy(status: Int, code: String?, message: String?, route: String) -> Failure.Remedy {
        if status == 404 || code == "MessageNotFound" || code == "NoSuchMailbox" { return .gone }
        if status == 429 { return .retry }
        if status == 403 && route == "POST /authenticate" { return .retry }
        if status >= 500 {
            if status == 501 { return .skip }
            if status == 500 && code == nil && (message == "Nothing was changed" || message == "Mailbox is missing") { return .skip }
            return .retry
        }
        return .skip
    }
}

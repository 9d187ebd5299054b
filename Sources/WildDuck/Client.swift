#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Net
import Failures
import Lock

/// The account's credentials and current access token, shared by every connection of one
/// account. The password is obtained from `password` each time wdsync must authenticate
/// (a password command therefore runs again after a token expires) and is never stored.
public final class Session: Sendable {
    public let endpoint: HTTPEndpoint
    public let username: String
    let password: @Sendable () throws -> String
    public let connector: HTTPConnection.Connector
    /// How requests that failed for a passing reason are tried again (see `retrying`).
    public let retry: Backoff
    /// Limits of every REST request (not of the SSE stream): deadline, interim responses, trailers.
    public let limits: HTTPLimits
    private struct State { var token: String?; var userId: String?; var generation = 0 }
    private let state = Mutex(State())
    private struct Hooks {
        var isCancelled: @Sendable () -> Bool = { false }
        var log: @Sendable (String) -> Void = { _ in }
    }
    private let hooks = Mutex(Hooks())

    public init(endpoint: HTTPEndpoint, username: String, password: @escaping @Sendable () throws -> String,
                connector: @escaping HTTPConnection.Connector, retry: Backoff = .requests,
                limits: HTTPLimits = HTTPLimits(deadline: 120)) {
        self.endpoint = endpoint
        self.username = username
        self.password = password
        self.connector = connector
        self.retry = retry
        self.limits = limits
    }

    /// Checked while waiting to try a request again: when it says true the wait ends and the
    /// last failure is passed on (the daemon's SIGTERM).
    public var isCancelled: @Sendable () -> Bool {
        get { hooks.withLock { $0.isCancelled } }
        set { hooks.withLock { $0.isCancelled = newValue } }
    }

    /// Told about every retry, with its reason and delay (wdsync logs it with -v).
    public var retryLog: @Sendable (String) -> Void {
        get { hooks.withLock { $0.log } }
        set { hooks.withLock { $0.log = newValue } }
    }

    /// The user id from the last authentication.
    public var userId: String? { state.withLock { $0.userId } }
    /// The current token, for protocols that carry it in their messages (WebSocket subscribe).
    public var token: String? { state.withLock { $0.token } }

    fileprivate func current() -> (token: String?, generation: Int) {
        state.withLock { ($0.token, $0.generation) }
    }

    /// Authenticates unless another connection already did so since `generation`.
    fileprivate func reauthenticate(after generation: Int, using connection: HTTPConnection) throws {
        // Serialised by the caller being rare; two threads may both authenticate, which is harmless.
        if state.withLock({ $0.generation > generation && $0.token != nil }) { return }
        try authenticate(using: connection)
    }

    /// `POST /authenticate` with scope master and token true.
    public func authenticate(using connection: HTTPConnection) throws {
        // A failure to obtain the password (unsafe file, failing command) is passed on as is.
        let secret = try password()
        let body = JSON.object([("username", .string(username)), ("password", .string(secret)),
                                ("scope", .string("master")), ("token", .bool(true))]).text
        let route = "POST /authenticate"
        let response: HTTPResponse
        do {
            // Safe to repeat although it is a POST: a second token is harmless. (The HTTP layer
            // still never resends it by itself; this is the one retry policy deciding.)
            response = try retrying(route: route, idempotent: true, transient: Session.isTransientRefusal) {
                try connection.request("POST", "/authenticate",
                                       headers: [("Content-Type", "application/json"), ("Accept", "application/json")],
                                       body: Array(body.utf8))
            }
        } catch let error as NetError {
            throw WildDuckClient.classify(error, route: route, endpoint: endpoint)
        } catch let error as HTTPError {
            throw WildDuckError.malformed(route: route, detail: error.description)
        }
        let json = try WildDuckClient.decode(response, route: route)
        guard json["success"]?.bool == true else {
            let message = json["error"]?.string ?? json["message"]?.string ?? "HTTP \(response.status)"
            if Session.refusesCredentials(status: response.status, code: json["code"]?.string) {
                throw WildDuckError.authenticationFailed(message)
            }
            throw WildDuckError.server(route: route, status: response.status, code: json["code"]?.string, message: message)
        }
        guard let token = json["token"]?.string, let id = json["id"]?.string else {
            throw WildDuckError.malformed(route: "POST /authenticate", detail: "no token or id in the answer")
        }
        guard ServerID.isObjectId(id) else {
            throw WildDuckError.malformed(route: "POST /authenticate", detail: "the user id \(ServerID.describe(.string(id))) is not an ObjectId")
        }
        state.withLock { $0.token = token; $0.userId = id; $0.generation += 1 }
    }

    /// Whether a refused `POST /authenticate` refuses the credentials themselves, which no
    /// retry changes. WildDuck answers every failure with 403 and tells them apart by `code`
    /// (lib/api/auth.js, lib/user-handler.js `asyncAuthenticate`): `AuthFailed` for a wrong
    /// password, an unknown, disabled or suspended user; `InvalidAuthScope` when the account may
    /// not use the master scope. The same 403 also carries passing trouble: `RateLimitedError`
    /// (12 failures for the user within 2 minutes lock it out, the right password included),
    /// `InternalDatabaseError`, `HashError`, `TempPasswordNotYetValid`. A 403 without a code is
    /// not WildDuck's and is taken as a refusal, as before codes were read.
    static func refusesCredentials(status: Int, code: String?) -> Bool {
        guard let code else { return status == 403 }
        return code == "AuthFailed" || code == "InvalidAuthScope"
    }

    /// What `authenticate` tries again: what any request tries again, and a 403 that does not
    /// refuse the credentials (see `refusesCredentials`).
    static func isTransientRefusal(_ response: HTTPResponse) -> Bool {
        if isTransient(response) { return true }
        guard response.status == 403, let json = try? JSON.parse(response.body), json["success"]?.bool != true else { return false }
        return !refusesCredentials(status: 403, code: json["code"]?.string)
    }

    // MARK: Retries

    /// THE retry policy of REST requests (every call, download and authentication goes through
    /// here; nothing else retries, except the HTTP layer's resend on a stale keep-alive
    /// connection, see `HTTPConnection`). `attempt` is one try; it is tried again, after the
    /// policy's delay, when it fails for a reason that may pass:
    /// - the connection could not be made, timed out, or broke (closed or reset; a TLS error is
    ///   not retried: a certificate does not fix itself within a minute);
    /// - HTTP 429, or 5xx except 501 and WildDuck's permanent 500s "Nothing was changed" and
    ///   "Mailbox is missing". A `Retry-After` (seconds) replaces the delay; one longer than
    ///   `maxRetryAfter` is not waited for. (`transient` says which answers are tried again;
    ///   `authenticate` adds the 403s that do not refuse the credentials.)
    /// Only an `idempotent` request is tried again after it may have reached the server; any
    /// request is tried again when no connection could be made at all (it was never sent).
    /// A try that streams a body must start its sink over (see `downloadMessage`).
    public func retrying(route: String, idempotent: Bool, transient: (HTTPResponse) -> Bool = Session.isTransient,
                         _ attempt: () throws -> HTTPResponse) throws -> HTTPResponse {
        var tries = 1
        while true {
            var delay: Double
            let reason: String
            let giveUp: () throws -> HTTPResponse
            do {
                let response = try attempt()
                guard idempotent, transient(response) else { return response }
                reason = "HTTP \(response.status)"
                delay = retry.delay(beforeTry: tries + 1)
                if let after = response.head.header("retry-after").flatMap({ Double(String($0.filter { !$0.isWhitespace })) }), after >= 0 {
                    guard after <= retry.maxRetryAfter else { return response }
                    delay = after
                }
                giveUp = { response }
            } catch let error as NetError {
                guard Session.isTransient(error), idempotent || Session.neverSent(error) else { throw error }
                reason = error.description
                delay = retry.delay(beforeTry: tries + 1)
                giveUp = { throw error }
            }
            guard retry.allows(try: tries + 1), !isCancelled() else { return try giveUp() }
            tries += 1
            retryLog("\(route): \(reason); trying again in \(Session.seconds(delay)) (try \(tries)\(retry.tries.map { " of \($0)" } ?? ""))")
            guard pause(delay) else { return try giveUp() }
        }
    }

    /// An answer that may pass (`WildDuckError.remedy`, the one rule for the server's errors).
    public static func isTransient(_ response: HTTPResponse) -> Bool {
        var code: String?, message: String?
        if response.status == 500, let json = try? JSON.parse(response.body) {
            code = json["code"]?.string
            message = json["error"]?.string ?? json["message"]?.string
        }
        return WildDuckError.remedy(status: response.status, code: code, message: message, route: "") == .retry
    }

    static func isTransient(_ error: NetError) -> Bool {
        switch error {
        case .resolve, .connect, .timedOut, .closed, .io: return true
        case .tls, .protocolViolation, .unknownHost: return false
        }
    }

    /// No connection could be made, so the request cannot have reached the server.
    static func neverSent(_ error: NetError) -> Bool {
        switch error {
        case .resolve, .unknownHost, .connect: return true
        default: return false
        }
    }

    /// Waits, waking early (and returning false) when the run is cancelled.
    private func pause(_ seconds: Double) -> Bool {
        let end = ContinuousClock.now + .seconds(seconds)
        while ContinuousClock.now < end {
            if isCancelled() { return false }
            let left = ContinuousClock.now.duration(to: end)
            let micro = Double(left.components.seconds) * 1e6 + Double(left.components.attoseconds) / 1e12
            usleep(UInt32(min(50_000, max(0, micro))))
        }
        return !isCancelled()
    }

    static func seconds(_ value: Double) -> String {
        value == value.rounded() ? "\(Int(value)) s" : "\((value * 100).rounded() / 100) s"
    }
}

/// A REST client on one keep-alive connection. Use one per thread.
public final class WildDuckClient {
    public let session: Session
    public let connection: HTTPConnection
    /// The server's clock (its `Date` header, whole seconds) when it sent its last JSON answer;
    /// read only when asked (downloads, a message each, never keep it).
    public var serverTime: Int? { lastDate.flatMap(HTTPResponseHead.parseDate) }
    private var lastDate: String?

    public init(session: Session, timeout: Double = 60) {
        self.session = session
        connection = HTTPConnection(endpoint: session.endpoint, timeout: timeout, connector: session.connector)
        connection.limits = session.limits
    }

    public func close() { connection.close() }

    /// The user id as a path segment (an ObjectId after authentication, so it needs no escaping;
    /// escaped anyway).
    var user: String { pathSegment(session.userId ?? "me") }

    // MARK: Calls

    public func authenticate() throws { try session.authenticate(using: connection) }

    public func fetchUser() throws -> JSON { try call("GET", "/users/\(user)") }

    public func fetchAutoreply() throws -> JSON { try call("GET", "/users/\(user)/autoreply") }

    public func fetchFilters() throws -> (limits: JSON?, filters: [(id: String, json: JSON)]) {
        let json = try call("GET", "/users/\(user)/filters")
        guard let results = json["results"]?.array else {
            throw WildDuckError.malformed(route: "GET filters", detail: "no results array")
        }
        return (json["limits"], results.compactMap { item in item["id"]?.string.map { ($0, item) } })
    }

    /// One filter whole: `query` and `action` as objects, as `POST …/filters` takes them
    /// (https://github.com/nodemailer/wildduck/blob/08c5804798e7ffe1b281859c4edcec2465d058c2/lib/api/filters.js#L382-L536).
    public func fetchFilter(id: String) throws -> JSON {
        try call("GET", "/users/\(user)/filters/\(pathSegment(id))")
    }

    /// Creates a filter (`POST /users/:user/filters`: name, query, action, disabled). Not
    /// idempotent: the caller lists the filters before ever sending it again.
    public func createFilter(_ fields: [(String, JSON)]) throws {
        _ = try call("POST", "/users/\(user)/filters", body: .object(fields), idempotent: false)
    }

    /// Told about every object of a listing that is left out because it is not valid
    /// (a mailbox id that is not an ObjectId, a uid that is not an IMAP uid, …).
    public var onSkipped: (String) -> Void = { _ in }

    /// The mailboxes, hidden ones included: WildDuck leaves them out unless asked
    /// (lib/api/mailboxes.js, `showHidden`), and a backup without them is not complete, nor may
    /// hiding a mailbox look like deleting it. One that is not valid (see `Mailbox.init`) is
    /// reported to `onSkipped` and left out: it cannot be mirrored safely, and the others still can.
    public func fetchMailboxes() throws -> [Mailbox] {
        let json = try call("GET", "/users/\(user)/mailboxes", query: [("counters", "true"), ("showHidden", "true")])
        guard let results = json["results"]?.array else {
            throw WildDuckError.malformed(route: "GET mailboxes", detail: "no results array")
        }
        var seen = Set<String>()
        return results.compactMap { item -> Mailbox? in
            guard let mailbox = Mailbox(item) else {
                onSkipped("skipped a mailbox the server listed with an invalid id or path (id \(ServerID.describe(item["id"])), path \(ServerID.describe(item["path"])))")
                return nil
            }
            guard seen.insert(mailbox.id).inserted else {
                onSkipped("skipped a second mailbox with the id \(mailbox.id)")
                return nil
            }
            return mailbox
        }
    }

    /// One page of a mailbox listing, oldest first, up to 250 items.
    public func listMessages(mailbox: String, cursor: String?, limit: Int = 250) throws -> MessagePage {
        var query = [("limit", String(limit)), ("order", "asc")]
        if let cursor { query.append(("next", cursor)) }
        return try page(try call("GET", "/users/\(user)/mailboxes/\(pathSegment(mailbox))/messages", query: query), route: "GET messages")
    }

    /// One page of messages with uid ≥ `fromUid`.
    public func searchNew(mailbox: String, fromUid: Int, cursor: String?, limit: Int = 250) throws -> MessagePage {
        var query = [("mailbox", mailbox), ("id", "\(fromUid):*"), ("limit", String(limit)), ("order", "asc")]
        if let cursor { query.append(("next", cursor)) }
        return try page(try call("GET", "/users/\(user)/search", query: query), route: "GET search")
    }

    /// Messages with exactly these uids (a comma-separated list, one of `uidLists`).
    public func searchUids(mailbox: String, uids: String, cursor: String?, limit: Int = 250) throws -> MessagePage {
        try page(try call("GET", "/users/\(user)/search", query: searchUidsQuery(mailbox, uids, cursor, limit)), route: "GET search")
    }

    private func searchUidsQuery(_ mailbox: String, _ uids: String, _ cursor: String?, _ limit: Int) -> [(String, String)] {
        var query = [("mailbox", mailbox), ("id", uids), ("limit", String(limit))]
        if let cursor { query.append(("next", cursor)) }
        return query
    }

    /// `uids` as comma-separated lists for `searchUids`, as few as fit in requests of at most
    /// `maxRequestHead` bytes (with room for a paging cursor).
    public func uidLists(mailbox: String, _ uids: [Int]) -> [String] {
        let cursor = String(repeating: "x", count: Self.cursorAllowance)
        return fitting(uids.map(String.init), path: "/users/\(user)/search") { searchUidsQuery(mailbox, $0, cursor, 250) }
            .map { $0.joined(separator: ",") }
    }

    /// The most bytes of one request's head (request line and headers) wdsync sends when it
    /// splits a list. Node, which WildDuck's API runs on, refuses a request whose URL and headers
    /// reach 16 KiB (its default `--max-http-header-size`; WildDuck does not change it) with 431
    /// and closes the connection, before WildDuck sees it (see docs/wildduck-api.md). Half of it
    /// leaves room for the headers a proxy in front may add, and fits a proxy with 8 KiB lines.
    public static let maxRequestHead = 8 * 1024
    /// Bytes kept free for a `next` cursor (WildDuck's are far shorter; the 8 KiB kept below
    /// Node's limit would absorb a longer one too).
    static let cursorAllowance = 256

    /// `items` split into runs that each go into one request: `query(list)` is the query of a
    /// GET of `path` whose parameter carries the comma-separated `list`; each run's request has a head of
    /// at most `maxRequestHead` bytes, counted with this connection's headers and current
    /// token. An item too long to fit at all goes alone (and the server says what it thinks).
    func fitting(_ items: [String], path: String, query: (String) -> [(String, String)]) -> [[String]] {
        let base = headSize(target(path, query("")))
        let comma = percentEncode(",").utf8.count
        var runs: [[String]] = []
        var run: [String] = []
        var size = base
        for item in items {
            let bytes = percentEncode(item).utf8.count
            if !run.isEmpty, size + comma + bytes > Self.maxRequestHead {
                runs.append(run)
                run = []
                size = base
            }
            size += (run.isEmpty ? 0 : comma) + bytes
            run.append(item)
        }
        if !run.isEmpty { runs.append(run) }
        return runs
    }

    /// The bytes of a JSON GET's head as `call` sends it.
    private func headSize(_ target: String) -> Int {
        let token = session.current().token ?? String(repeating: "0", count: 40)
        return connection.headSize("GET", target, headers: [("X-Access-Token", token), ("Accept", "application/json")])
    }

    /// One page of the user's messages in every mailbox, newest first: without `order` the
    /// search pages by the message's `_id`, which a delivery, an upload and a move all make
    /// anew (https://github.com/nodemailer/wildduck/blob/08c5804798e7ffe1b281859c4edcec2465d058c2/lib/api/messages.js, the
    /// `search` route: `paginatedField: '_id', sortAscending: false`).
    public func searchNewest(cursor: String?, limit: Int = 250) throws -> MessagePage {
        var query = [("limit", String(limit))]
        if let cursor { query.append(("next", cursor)) }
        return try page(try call("GET", "/users/\(user)/search", query: query), route: "GET search")
    }

    // MARK: Writing (two-way sync)

    /// Sets `seen`/`flagged`/`deleted` on the messages `uids` ("1,2,3" or "3:15", never a mix)
    /// with one bulk `PUT`. Idempotent. Returns how many messages the server matched.
    @discardableResult
    public func setFlags(mailbox: String, uids: String, _ update: FlagUpdate) throws -> Int {
        var body: [(String, JSON)] = [("message", .string(uids))]
        for (name, value) in update.fields { body.append((name, .bool(value))) }
        let json = try call("PUT", "/users/\(user)/mailboxes/\(pathSegment(mailbox))/messages", body: .object(body))
        return json["updated"]?.int ?? 0
    }

    /// Moves the messages `uids` to `target` (with flag changes applied to the moved copies) by
    /// one bulk `PUT` with `moveTo`. Returns the server's (old uid, new uid) pairs. Sending it
    /// again is harmless: a message no longer in `mailbox` is not matched (404 when none is).
    public func moveMessages(mailbox: String, uids: String, to target: String, _ update: FlagUpdate = FlagUpdate()) throws -> [(Int, Int)] {
        var body: [(String, JSON)] = [("message", .string(uids)), ("moveTo", .string(target))]
        for (name, value) in update.fields { body.append((name, .bool(value))) }
        let json = try call("PUT", "/users/\(user)/mailboxes/\(pathSegment(mailbox))/messages", body: .object(body))
        guard let pairs = json["id"]?.array else {
            throw WildDuckError.malformed(route: "PUT messages (moveTo)", detail: "no id pairs in the answer")
        }
        return pairs.compactMap { pair in
            guard let a = pair.array, a.count == 2, let old = a[0].int, let new = a[1].int else { return nil }
            return (old, new)
        }
    }

    /// `DELETE` one message (WildDuck archives non-drafts). Idempotent: 404 means already gone.
    public func deleteMessage(mailbox: String, uid: Int) throws {
        _ = try call("DELETE", "/users/\(user)/mailboxes/\(pathSegment(mailbox))/messages/\(uid)")
    }

    /// Uploads a message: the raw bytes as a `message/rfc822` body, flags and internal date in
    /// the query string. Returns the new uid and the server's size (of its rebuilt copy, so not
    /// the file's). Not idempotent: the request goes out at most once (neither the HTTP layer
    /// nor the retry policy sends a POST twice), on a fresh connection (so it does not fail on
    /// one the server closed while idle); the caller records its intent first and looks for the
    /// message before ever sending it again.
    public func uploadMessage(mailbox: String, raw: [UInt8], seen: Bool, flagged: Bool, draft: Bool,
                              date: Int) throws -> (uid: Int, size: Int) {
        var query = [("unseen", seen ? "false" : "true")]
        if flagged { query.append(("flagged", "true")) }
        if draft { query.append(("draft", "true")) }
        query.append(("date", isoDate(date)))
        let target = "/users/\(user)/mailboxes/\(pathSegment(mailbox))/messages?"
            + query.map { "\(percentEncode($0.0))=\(percentEncode($0.1))" }.joined(separator: "&")
        let route = "POST /users/:user/mailboxes/:mailbox/messages"
        connection.close()
        let json = try withToken(route: route, idempotent: false) { token in
            try connection.request("POST", target, headers: [
                ("X-Access-Token", token), ("Accept", "application/json"), ("Content-Type", "message/rfc822"),
            ], body: raw)
        }
        guard let uid = json["message"]?["id"]?.int, uid > 0 else {
            throw WildDuckError.malformed(route: route, detail: "no message id in the answer")
        }
        return (uid, json["message"]?["size"]?.int ?? raw.count)
    }

    /// Creates the mailbox `path` (`POST /users/:user/mailboxes`: `path`, `hidden`, `retention`
    /// in ms; a special use cannot be given, https://github.com/nodemailer/wildduck/blob/08c5804798e7ffe1b281859c4edcec2465d058c2/lib/api/mailboxes.js#L278-L300).
    /// Returns its id. Not idempotent (a second one is refused, the path exists): the caller
    /// lists the mailboxes before ever sending it again.
    public func createMailbox(path: String, hidden: Bool, retention: Int?) throws -> String {
        var body: [(String, JSON)] = [("path", .string(path))]
        if hidden { body.append(("hidden", .bool(true))) }
        if let retention, retention > 0 { body.append(("retention", .number(Double(retention)))) }
        let json = try call("POST", "/users/\(user)/mailboxes", body: .object(body), idempotent: false)
        guard let id = ServerID.objectId(json["id"]) else {
            throw WildDuckError.malformed(route: "POST mailboxes", detail: "no mailbox id in the answer")
        }
        return id
    }

    /// Changes the user's settings (`PUT /users/:user`; the fields of
    /// https://github.com/nodemailer/wildduck/blob/08c5804798e7ffe1b281859c4edcec2465d058c2/lib/api/users.js#L1150-L1260). Idempotent.
    public func updateSettings(_ fields: [(String, JSON)]) throws {
        _ = try call("PUT", "/users/\(user)", body: .object(fields))
    }

    /// Sets the autoreply (`PUT /users/:user/autoreply`: status, name, subject, text, html, start,
    /// end; https://github.com/nodemailer/wildduck/blob/08c5804798e7ffe1b281859c4edcec2465d058c2/lib/api/autoreply.js). Idempotent.
    public func updateAutoreply(_ fields: [(String, JSON)]) throws {
        _ = try call("PUT", "/users/\(user)/autoreply", body: .object(fields))
    }

    /// Changes a mailbox's subscription (`PUT /users/:user/mailboxes/:mailbox`). Idempotent.
    public func setSubscribed(mailbox: String, _ subscribed: Bool) throws {
        _ = try call("PUT", "/users/\(user)/mailboxes/\(pathSegment(mailbox))", body: .object([("subscribed", .bool(subscribed))]))
    }

    /// One page of the messages of `mailbox` (nil: of every mailbox) whose internal date is
    /// within [from, to] (Unix seconds), for finding an upload whose answer was lost or a
    /// message another client moved.
    public func searchByDate(mailbox: String?, from: Int, to: Int, cursor: String?, limit: Int = 250) throws -> MessagePage {
        var query = [("datestart", isoDate(from)), ("dateend", isoDate(to)), ("limit", String(limit)), ("order", "asc")]
        if let mailbox { query.insert(("mailbox", mailbox), at: 0) }
        if let cursor { query.append(("next", cursor)) }
        return try page(try call("GET", "/users/\(user)/search", query: query), route: "GET search")
    }

    private func page(_ json: JSON, route: String) throws -> MessagePage {
        guard let results = json["results"]?.array else {
            throw WildDuckError.malformed(route: route, detail: "no results array")
        }
        var skipped = 0
        let items = results.compactMap { item -> MessageItem? in
            guard let message = MessageItem(item) else {
                skipped += 1
                onSkipped("skipped a message the server listed with an invalid uid (\(ServerID.describe(item["id"])))")
                return nil
            }
            return message
        }
        let next = json["nextCursor"]?.string.flatMap { $0.isEmpty ? nil : $0 }
        return MessagePage(items: items, nextCursor: next, total: json["total"]?.int, skipped: skipped)
    }

    /// The most bytes accepted for one `message.eml`, whatever the listing says.
    public static let maxMessageBytes = 1 << 30

    /// The size cap of a message whose listing says `size` bytes (0: unknown).
    ///
    /// The listing's `size` is what WildDuck recorded when it stored the message, but
    /// `message.eml` is rebuilt from the stored MIME tree (line endings become CRLF, re-encoded
    /// parts are "not 100% lossless", an encrypting account stores the encrypted form), so the
    /// download may legitimately differ from it and it cannot be an exact check. It bounds the
    /// download instead: CRLF line endings can at most double a message, so twice the size plus
    /// 1 MiB of slack, and never more than `maxMessageBytes`.
    public static func messageSizeCap(listedSize size: Int) -> Int {
        guard size > 0, size < maxMessageBytes else { return maxMessageBytes }
        return min(maxMessageBytes, 2 * size + (1 << 20))
    }

    /// Streams `message.eml` to `sink`. The body has no Content-Length on real servers.
    ///
    /// A try that fails after part of the body arrived (the connection broke) is tried again
    /// by the retry policy; every try that gets a 200 first calls `begin`, which must throw away
    /// whatever an earlier try wrote, so the bytes handed to `sink` after the last `begin` are
    /// exactly one complete body. A body larger than `maxBytes`, or one whose end cannot be
    /// told from a broken connection, fails with `WildDuckError.badMessage`.
    public func downloadMessage(mailbox: String, uid: Int, maxBytes: Int = WildDuckClient.maxMessageBytes,
                                begin: () throws -> Void,
                                sink: (UnsafeRawBufferPointer) throws -> Void) throws {
        _ = try withToken(route: Self.emlRoute, idempotent: true) { token in
            var errorBody = [UInt8]()
            var failed = false
            var received = 0
            let head = try connection.stream("GET", emlPath(mailbox, uid), headers: [("X-Access-Token", token)], onHead: { head in
                failed = head.status != 200
                guard !failed else { return }
                try checkBody(head, uid: uid)
                try begin()
            }, sink: { chunk in
                if failed {
                    if errorBody.count < 65536 { errorBody.append(contentsOf: chunk) }
                    return
                }
                received += chunk.count
                try checkSize(received, cap: maxBytes, uid: uid)
                try sink(chunk)
            })
            return HTTPResponse(head: head, body: failed ? errorBody : Array(#"{"success":true}"#.utf8))
        }
    }

    /// The fast path of a bulk download: `messages` in one HTTP/1.1 pipeline on this client's
    /// connection. Message `i` is handed to `begin(i)`, `sink(i, chunk)`… and `end(i)`, in order.
    /// Returns how many were delivered whole, and what stopped it short.
    ///
    /// Everything after them is left to `downloadMessage`, one at a time, which tries again,
    /// authenticates again and tells the errors apart; so the pipeline stops at anything out of
    /// the ordinary: no token yet, a status other than 200 (an expired token, a busy server),
    /// a broken connection, a callback that throws. Two answers are final for message `done`
    /// itself, and `stoppedBy` is then a `WildDuckError` that says so: the message is gone
    /// (`isNotFound`: a 404 as `downloadMessage` reads it), or its body is refused
    /// (`.badMessage`: over its size cap, or without a length over plain http://). Asking again
    /// would only download it again to the same end.
    public func downloadMessages(_ messages: [(mailbox: String, uid: Int, maxBytes: Int)],
                                 begin: (Int) throws -> Void,
                                 sink: (Int, UnsafeRawBufferPointer) throws -> Void,
                                 end: (Int) throws -> Void) -> (done: Int, stoppedBy: Error?) {
        guard let token = session.current().token else { return (0, nil) }
        var received = 0
        var refusal: (status: Int, body: [UInt8])?
        return connection.pipeline(messages.map { emlPath($0.mailbox, $0.uid) }, headers: [("X-Access-Token", token)],
                                   onHead: { i, head in
            received = 0
            guard head.status == 200 else { refusal = (head.status, []); return }
            try checkBody(head, uid: messages[i].uid)
            try begin(i)
        }, sink: { i, chunk in
            received += chunk.count
            if refusal != nil {
                if received <= 65536 { refusal?.body.append(contentsOf: chunk) }
                return
            }
            try checkSize(received, cap: messages[i].maxBytes, uid: messages[i].uid)
            try sink(i, chunk)
        }, onEnd: { i in
            guard let (status, body) = refusal else { return try end(i) }
            // Read as `downloadMessage` reads it, which asks again in every case but a JSON
            // "not found" (`isNotFound`: the caller takes that one as final).
            guard let json = try? JSON.parse(body) else {
                throw WildDuckError.malformed(route: Self.emlRoute, detail: "HTTP \(status) without a JSON body")
            }
            throw WildDuckError.server(route: Self.emlRoute, status: status, code: json["code"]?.string,
                                       message: json["error"]?.string ?? json["message"]?.string ?? "HTTP \(status)")
        })
    }

    private static let emlRoute = "GET message.eml"

    private func emlPath(_ mailbox: String, _ uid: Int) -> String {
        "/users/\(user)/mailboxes/\(pathSegment(mailbox))/messages/\(uid)/message.eml"
    }

    /// Over plain TCP, a body without a length or chunked encoding ends wherever the connection
    /// happens to end: refused.
    private func checkBody(_ head: HTTPResponseHead, uid: Int) throws {
        if !session.endpoint.tls && head.header("content-length") == nil
            && !head.header("transfer-encoding", contains: "chunked") {
            throw WildDuckError.badMessage(route: Self.emlRoute, detail: "message \(uid) came without a length or chunked encoding over plain http://, so a cut-off copy cannot be told from a whole one")
        }
    }

    private func checkSize(_ received: Int, cap: Int, uid: Int) throws {
        guard received <= cap else {
            throw WildDuckError.badMessage(route: Self.emlRoute, detail: "message \(uid) is larger than its size cap of \(cap) bytes")
        }
    }

    /// A JSON call with the token; checks `success === true`. Only `idempotent` calls are tried
    /// again after a failure that may have reached the server (see `Session.retrying`); a
    /// non-idempotent one (a POST that creates something) fails instead, for its caller to check
    /// what happened.
    public func call(_ method: String, _ path: String, query: [(String, String)] = [], body: JSON? = nil,
                     idempotent: Bool? = nil) throws -> JSON {
        let target = target(path, query)
        let route = "\(method) \(path.replacingUserSegment())"
        let payload = body.map { Array($0.text.utf8) }
        var date: String?
        defer { if let date { lastDate = date } }
        return try withToken(route: route, idempotent: idempotent ?? HTTPConnection.isIdempotent(method)) { token in
            var headers = [("X-Access-Token", token), ("Accept", "application/json")]
            if payload != nil { headers.append(("Content-Type", "application/json")) }
            let response = try connection.request(method, target, headers: headers, body: payload)
            date = response.head.header("date") ?? date
            return response
        }
    }

    private func target(_ path: String, _ query: [(String, String)]) -> String {
        query.isEmpty ? path : path + "?" + query.map { "\(percentEncode($0.0))=\(percentEncode($0.1))" }.joined(separator: "&")
    }

    /// Runs an exchange with the current token, tried again by the session's retry policy; on
    /// 403 InvalidToken authenticates again once.
    private func withToken(route: String, idempotent: Bool, _ exchange: (String) throws -> HTTPResponse) throws -> JSON {
        var (token, generation) = session.current()
        if token == nil {
            try session.authenticate(using: connection)
            (token, generation) = session.current()
        }
        for attempt in 0..<2 {
            let response: HTTPResponse
            do {
                let current = token ?? ""
                response = try session.retrying(route: route, idempotent: idempotent) { try exchange(current) }
            } catch let error as NetError {
                throw WildDuckClient.classify(error, route: route, endpoint: session.endpoint)
            } catch let error as HTTPError {
                throw WildDuckError.malformed(route: route, detail: error.description)
            }
            let json = try WildDuckClient.decode(response, route: route)
            if json["success"]?.bool == true { return json }
            let code = json["code"]?.string
            if code == "InvalidToken" {
                if attempt == 0 {
                    try session.reauthenticate(after: generation, using: connection)
                    (token, generation) = session.current()
                    continue
                }
                throw WildDuckError.invalidToken
            }
            let message = json["error"]?.string ?? json["message"]?.string ?? "no success flag in the answer"
            throw WildDuckError.server(route: route, status: response.status, code: code, message: message)
        }
        throw WildDuckError.invalidToken
    }

    static func decode(_ response: HTTPResponse, route: String) throws -> JSON {
        do { return try JSON.parse(response.body) } catch {
            if response.status >= 500 || response.status == 429 {
                throw WildDuckError.server(route: route, status: response.status, code: nil,
                                           message: "non-JSON error body")
            }
            // Node's own answer, before WildDuck sees the request (see `maxRequestHead`).
            if response.status == 431 {
                throw WildDuckError.server(route: route, status: 431, code: nil, message: "Request Header Fields Too Large")
            }
            throw WildDuckError.malformed(route: route, detail: "HTTP \(response.status), \(error)")
        }
    }

    static func classify(_ error: NetError, route: String, endpoint: HTTPEndpoint) -> WildDuckError {
        switch error {
        case .resolve, .unknownHost, .connect, .tls:
            return .unreachable(server: "\(endpoint.host):\(endpoint.port)", detail: error.description)
        default:
            return .network(route: route, detail: error.description)
        }
    }
}

extension String {
    /// Routes in messages name the endpoint, not the user id.
    fileprivate func replacingUserSegment() -> String {
        var parts = split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        if parts.count > 2, parts[1] == "users" { parts[2] = ":user" }
        if parts.count > 4, parts[3] == "mailboxes" { parts[4] = ":mailbox" }
        return parts.joined(separator: "/")
    }
}

/// Unix seconds as ISO 8601 in UTC with milliseconds (`2025-10-16T12:34:56.000Z`).
public func isoDate(_ seconds: Int) -> String {
    // Days to civil (Howard Hinnant's algorithm).
    let days = seconds >= 0 ? seconds / 86400 : (seconds - 86399) / 86400
    let secs = seconds - days * 86400
    let z = days + 719468
    let era = (z >= 0 ? z : z - 146096) / 146097
    let doe = z - era * 146097
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
    let mp = (5 * doy + 2) / 153
    let d = doy - (153 * mp + 2) / 5 + 1
    let m = mp < 10 ? mp + 3 : mp - 9
    let y = yoe + era * 400 + (m <= 2 ? 1 : 0)
    func two(_ v: Int) -> String { v < 10 ? "0\(v)" : "\(v)" }
    let year = String(repeating: "0", count: max(0, 4 - String(y).count)) + String(y)
    return "\(year)-\(two(m))-\(two(d))T\(two(secs / 3600)):\(two(secs / 60 % 60)):\(two(secs % 60)).000Z"
}

/// A server-given id as one path segment: ids are validated where JSON becomes models, and
/// escaped here as well so that no id can ever add a segment or a query to a request.
func pathSegment(_ s: String) -> String { percentEncode(s) }

func percentEncode(_ s: String) -> String {
    var out = ""
    for byte in s.utf8 {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
             UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: "~"):
            out.unicodeScalars.append(Unicode.Scalar(byte))
        default:
            let hex = String(byte, radix: 16, uppercase: true)
            out += "%" + (hex.count == 1 ? "0" : "") + hex
        }
    }
    return out
}

import Foundation

/// REST routes (docs/wildduck-api.md).
struct Routes {
    let server: SimServer
    /// `truncateBody` on the updates route: end the stream after the replay.
    var truncateStream = false
    /// The update stream's replay pauses this long after this many entries (see `SSE.run`).
    var replayStall: (entries: Int, seconds: Double) = SSE.cursorBatch
    var account: SimAccount { server.account }

    // MARK: error helpers

    static func error(_ status: Int, _ message: String, code: String?) -> HTTPResponse {
        var pairs: [(String, JSONValue)] = [("error", .string(message))]
        if let c = code { pairs.append(("code", .string(c))) }
        return .json(status, .object(pairs))
    }

    static func validation(_ field: String, _ message: String) -> HTTPResponse {
        .json(400, .object([("error", .string(message)), ("code", .string("InputValidationError")),
                            ("details", .object([(field, .string(message))]))]))
    }

    static let invalidToken = HTTPResponse.json(403, .object([("code", .string("InvalidToken")), ("message", .string("Invalid accessToken value"))]))
    static let noSuchMailbox = error(404, "This mailbox does not exist", code: "NoSuchMailbox")
    static let messageNotFound = error(404, "This message does not exist", code: "MessageNotFound")

    static func notFound(_ req: HTTPRequest) -> HTTPResponse {
        let path = req.target.split(separator: "?", maxSplits: 1).first.map(String.init) ?? req.target
        return .json(404, .object([("code", .string("ResourceNotFound")), ("message", .string("\(path) does not exist"))]))
    }

    static func methodNotAllowed(_ req: HTTPRequest) -> HTTPResponse {
        .json(405, .object([("code", .string("MethodNotAllowed")), ("message", .string("\(req.method) is not allowed"))]))
    }

    static func fromAccountError(_ e: Error) -> HTTPResponse {
        guard let ae = e as? SimAccountError else { return error(500, "Internal error: \(e)", code: "InternalDatabaseError") }
        switch ae {
        case .noSuchMailbox: return noSuchMailbox
        // A path that is taken: 400 ALREADYEXISTS, for a creation and for a rename
        // (https://github.com/nodemailer/wildduck/blob/08c5804798e7ffe1b281859c4edcec2465d058c2/lib/mailbox-handler.js#L64-L70, #L184-L189).
        case .mailboxExists, .renameTargetExists: return error(400, ae.description, code: "ALREADYEXISTS")
        case let .disallowed(m): return error(400, m, code: "DisallowedMailboxMethod")
        case let .invalidPath(m): return validation("path", m)
        case .messageNotFound: return messageNotFound
        case let .io(m): return error(500, m, code: "InternalDatabaseError")
        }
    }

    static let success = HTTPResponse.json(200, .object([("success", .bool(true))]))

    // MARK: parameter helpers

    static func parseBool(_ s: String) -> Bool? {
        switch s.lowercased() {
        case "true", "1", "yes", "on", "y": return true
        case "false", "0", "no", "off", "n": return false
        default: return nil
        }
    }

    /// Query boolean; `.failure` carries the 400 response.
    static func boolParam(_ req: HTTPRequest, _ name: String) -> Result<Bool?, ResponseError> {
        guard let v = req.query[name] else { return .success(nil) }
        guard let b = parseBool(v) else { return .failure(ResponseError(validation(name, "\"\(name)\" must be a boolean"))) }
        return .success(b)
    }

    /// Body value as a boolean (accepts JSON booleans and the truthy strings).
    static func bodyBool(_ v: JSONValue?) -> Bool? {
        guard let v else { return nil }
        if let b = v.boolValue { return b }
        if let s = v.stringValue { return parseBool(s) }
        if let i = v.intValue { return i != 0 }
        return nil
    }

    struct ResponseError: Error { let response: HTTPResponse; init(_ r: HTTPResponse) { response = r } }

    /// Body as a JSON object (empty body = empty object). Form-encoded bodies are accepted too.
    static func bodyObject(_ req: HTTPRequest) -> Result<JSONValue, ResponseError> {
        if req.body.isEmpty { return .success(.object([])) }
        let ct = req.header("content-type")?.lowercased() ?? ""
        if ct.hasPrefix("application/x-www-form-urlencoded") {
            let (_, q) = HTTPRequestParser.splitTarget("/?" + String(decoding: req.body, as: UTF8.self))
            return .success(.object(q.sorted { $0.key < $1.key }.map { ($0.key, .string($0.value)) }))
        }
        guard let v = JSONValue.parse(req.body), case .object = v else {
            return .failure(ResponseError(error(400, "Invalid JSON body", code: "InputValidationError")))
        }
        return .success(v)
    }

    // MARK: routing

    func route(_ req: HTTPRequest) -> RouteResult {
        do {
            return try routeThrowing(req)
        } catch let e as ResponseError {
            return .response(e.response)
        } catch {
            return .response(Routes.fromAccountError(error))
        }
    }

    private func token(_ req: HTTPRequest) -> String? {
        if let t = req.query["accessToken"], !t.isEmpty { return t }
        if let t = req.header("x-access-token"), !t.isEmpty { return t }
        if let a = req.header("authorization") {
            let parts = a.split(separator: " ", maxSplits: 1)
            if parts.count == 2, parts[0].lowercased() == "bearer" { return parts[1].trimmedWS }
        }
        return nil
    }

    /// Validates the token and the `:user` parameter.
    private func authorize(_ req: HTTPRequest) throws {
        guard let t = token(req), account.isValid(token: t) else { throw ResponseError(Routes.invalidToken) }
        let user = req.segments.count > 1 ? req.segments[1] : ""
        if user == "me" || user == account.userId { return }
        guard Hex.isHex(user, count: 24) else { throw ResponseError(Routes.validation("user", "\"user\" must be a valid hex")) }
        throw ResponseError(Routes.error(403, "Not enough privileges", code: "MissingPrivileges"))
    }

    private func routeThrowing(_ req: HTTPRequest) throws -> RouteResult {
        let s = req.segments
        let m = req.method
        if s == ["ws"] && m == "GET" { return webSocketRoute(req) }
        if s == ["authenticate"] {
            switch m {
            case "POST": return .response(authenticate(req))
            case "DELETE":
                guard let t = token(req), account.isValid(token: t) else { return .response(Routes.invalidToken) }
                account.revoke(token: t)
                return .response(Routes.success)
            default: return .response(Routes.methodNotAllowed(req))
            }
        }
        guard s.count >= 2, s[0] == "users" else { return .response(Routes.notFound(req)) }
        // find the route first (unknown → 404 before auth, like restify)
        enum R { case user, mailboxes, mailbox(String), messages(String), message(String, String), eml(String, String)
                 case search, filters, filter(String), autoreply, updates }
        let r: R
        switch s.count {
        case 2: r = .user
        case 3:
            switch s[2] {
            case "mailboxes": r = .mailboxes
            case "search": r = .search
            case "filters": r = .filters
            case "autoreply": r = .autoreply
            case "updates": r = .updates
            default: return .response(Routes.notFound(req))
            }
        case 4:
            switch s[2] {
            case "mailboxes": r = .mailbox(s[3])
            case "filters": r = .filter(s[3])
            default: return .response(Routes.notFound(req))
            }
        case 5 where s[2] == "mailboxes" && s[4] == "messages": r = .messages(s[3])
        case 6 where s[2] == "mailboxes" && s[4] == "messages": r = .message(s[3], s[5])
        case 7 where s[2] == "mailboxes" && s[4] == "messages" && s[6] == "message.eml": r = .eml(s[3], s[5])
        default: return .response(Routes.notFound(req))
        }
        let allowed: [String]
        switch r {
        case .user: allowed = ["GET", "PUT"]
        case .mailboxes: allowed = ["GET", "POST"]
        case .mailbox: allowed = ["GET", "PUT", "DELETE"]
        case .messages: allowed = ["GET", "POST", "PUT"]
        case .message: allowed = ["GET", "PUT", "DELETE"]
        case .eml, .search, .updates: allowed = ["GET"]
        case .filters: allowed = ["GET", "POST"]
        case .filter: allowed = ["GET", "PUT", "DELETE"]
        case .autoreply: allowed = ["GET", "PUT", "DELETE"]
        }
        guard allowed.contains(m) else { return .response(Routes.methodNotAllowed(req)) }
        try authorize(req)
        switch r {
        case .user: return .response(m == "GET" ? userInfo() : try updateUser(req))
        case .mailboxes: return .response(m == "GET" ? try listMailboxes(req) : try createMailbox(req))
        case let .mailbox(id):
            switch m {
            case "GET": return .response(try getMailbox(req, id))
            case "PUT": return .response(try updateMailbox(req, try mailboxParam(id)))
            default:
                try account.deleteMailbox(id: try mailboxParam(id), process: .api)
                return .response(Routes.success)
            }
        case let .messages(id):
            let mb = try mailboxParam(id)
            switch m {
            case "GET": return .response(try listMessages(req, mb))
            case "POST": return .response(try upload(req, mb))
            default: return .response(try updateMessages(req, mb, selector: nil))
            }
        case let .message(id, uidText):
            let mb = try mailboxParam(id)
            switch m {
            case "GET": return .response(try getMessage(req, mb, try uidParam(uidText)))
            case "PUT": return .response(try updateMessages(req, mb, selector: uidText))
            default: return .response(try deleteMessage(req, mb, uidText))
            }
        case let .eml(id, uidText):
            return .response(try eml(try mailboxParam(id), try uidParam(uidText)))
        case .search: return .response(try search(req))
        case .filters: return .response(m == "GET" ? filterList() : try createFilter(req))
        case let .filter(id):
            guard Hex.isHex(id, count: 24) else { throw ResponseError(Routes.validation("filter", "\"filter\" must be a valid hex")) }
            switch m {
            case "GET": return .response(filter(id))
            case "DELETE":
                let existed = account.state.withLock { s in s.filters.contains { $0.id == id } }
                guard existed else { return .response(Routes.error(404, "Filter was not found", code: "FilterNotFound")) }
                account.deleteFilter(id: id)
                return .response(Routes.success)
            default: return .response(try updateFilter(req, id))
            }
        case .autoreply:
            switch m {
            case "GET": return .response(autoreplyInfo())
            case "PUT": return .response(try updateAutoreply(req))
            default:
                account.mutate { $0.autoreply = AutoreplyState() }
                return .response(Routes.success)
            }
        case .updates:
            return try updatesStream(req)
        }
    }

    func mailboxParam(_ id: String) throws -> String {
        guard Hex.isHex(id, count: 24) else { throw ResponseError(Routes.validation("mailbox", "\"mailbox\" must be a valid hex")) }
        return id.lowercased()
    }

    func uidParam(_ s: String) throws -> Int {
        guard let n = Int(s), n >= 1 else { throw ResponseError(Routes.validation("message", "\"message\" must be a number")) }
        return n
    }

    // MARK: authenticate

    func authenticate(_ req: HTTPRequest) -> HTTPResponse {
        let body: JSONValue
        switch Routes.bodyObject(req) {
        case let .success(b): body = b
        case let .failure(e): return e.response
        }
        let known: Set<String> = ["username", "password", "emailDomain", "signature", "message", "signer", "protocol", "scope",
                                  "appId", "token", "sess", "ip"]
        for (k, _) in body.objectValue ?? [] where !known.contains(k) {
            return Routes.validation(k, "\"\(k)\" is not allowed")
        }
        guard let username = body["username"]?.stringValue, !username.isEmpty else {
            return Routes.validation("username", "\"username\" is required")
        }
        let password = body["password"]?.stringValue ?? ""
        let scope = body["scope"]?.stringValue ?? "master"
        guard ["master", "imap", "smtp", "pop3"].contains(scope) else {
            return Routes.validation("scope", "\"scope\" must be one of [master, imap, smtp, pop3]")
        }
        let wantToken = Routes.bodyBool(body["token"]) ?? false
        if wantToken && scope != "master" { return Routes.validation("scope", "\"scope\" must be [master]") }
        let (uname, uid, addr) = account.state.withLock { ($0.username, $0.userId, $0.user["address"] ?? "") }
        let given = username.split(separator: "@").first.map(String.init) ?? username
        guard given == uname || username == addr else {
            return Routes.error(403, "Authentication failed", code: "AuthFailed")
        }
        // Every refusal is a 403; `code` tells them apart (lib/api/auth.js#L222-L248).
        switch account.authenticate(password: password) {
        case .accepted: break
        case .refused: return Routes.error(403, "Authentication failed", code: "AuthFailed")
        case .rateLimited: return Routes.error(403, "Authentication was rate limited", code: "RateLimitedError")
        }
        var pairs: [(String, JSONValue)] = [("success", .bool(true)), ("id", .string(uid)), ("username", .string(uname)),
                                            ("address", .string(addr)), ("scope", .string(scope)), ("require2fa", .array([])),
                                            ("requirePasswordChange", .bool(false))]
        if wantToken { pairs.append(("token", .string(account.issueToken()))) }
        return .json(200, .object(pairs))
    }

    // MARK: user

    func userInfo() -> HTTPResponse {
        let (s, used) = account.state.withLock { s -> (AccountState, Int) in
            var copy = s
            copy.mailboxes = [:]
            copy.journal = []
            return (copy, s.storageUsed)
        }
        func lim(_ allowed: Int, _ used: Int, ttl: Int?) -> JSONValue {
            var p: [(String, JSONValue)] = [("allowed", .int(allowed)), ("used", .int(used))]
            if let t = ttl { p.append(("ttl", t > 0 ? .int(t) : .bool(false))) }
            return .object(p)
        }
        var pairs: [(String, JSONValue)] = [
            ("success", .bool(true)), ("id", .string(s.userId)), ("username", .string(s.username)),
            ("name", .string(s.user["name"] ?? "")), ("address", .string(s.user["address"] ?? "")),
        ]
        if let l = s.user["language"] { pairs.append(("language", .string(l))) }
        if let r = s.user["retention"], let n = Int(r) { pairs.append(("retention", .int(n))) }
        pairs += [
            ("enabled2fa", .array([])), ("autoreply", .bool(s.autoreply.status)),
            ("encryptMessages", .bool(s.user["encryptMessages"] == "true")), ("encryptForwarded", .bool(s.user["encryptForwarded"] == "true")),
            ("pubKey", .string(s.user["pubKey"] ?? "")),
            ("spamLevel", .int(Int(s.user["spamLevel"] ?? "") ?? 50)),
            ("metaData", .object([])),
            ("targets", .array((s.user["targets"] ?? "").split(separator: ",").map { .string(String($0)) })),
            ("limits", .object([
                ("quota", lim(s.quota, used, ttl: nil)),
                ("recipients", lim(2000, 0, ttl: 0)),
                ("forwards", lim(2000, 0, ttl: 0)),
                ("received", lim(60, 0, ttl: 0)),
                ("filters", lim(400, s.filters.count, ttl: nil)),
                ("imapUpload", lim(10_737_418_240, 0, ttl: 0)),
                ("imapDownload", lim(10_737_418_240, 0, ttl: 0)),
                ("pop3Download", lim(10_737_418_240, 0, ttl: 0)),
                ("pop3MaxMessages", .object([("allowed", .int(250))])),
                ("imapMaxConnections", lim(15, 0, ttl: nil)),
            ])),
            ("fromWhitelist", .array([])), ("featureFlags", .object([])),
            ("hasPasswordSet", .bool(true)), ("activated", .bool(true)), ("disabled", .bool(false)), ("suspended", .bool(false)),
        ]
        return .json(200, .object(pairs))
    }

    /// `PUT /users/:user`: the settings a restore sets back (name, language, retention,
    /// spamLevel, targets, fromWhitelist) among others (https://github.com/nodemailer/wildduck/blob/08c5804798e7ffe1b281859c4edcec2465d058c2/lib/api/users.js#L1150-L1260).
    func updateUser(_ req: HTTPRequest) throws -> HTTPResponse {
        let body = try Routes.bodyObject(req).get()
        var fields: [String: String] = [:]
        for (k, v) in body.objectValue ?? [] {
            switch v {
            case let .string(s): fields[k] = s
            case let .int(i): fields[k] = String(i)
            case let .bool(b): fields[k] = b ? "true" : "false"
            case let .array(a): fields[k] = a.compactMap { $0.stringValue }.joined(separator: ",")
            default: continue
            }
        }
        fields["sess"] = nil
        fields["ip"] = nil
        if fields.isEmpty { return Routes.error(400, "Nothing was changed", code: nil) }
        account.updateUser(fields)
        return Routes.success
    }

    // MARK: mailboxes

    func mailboxJSON(_ mb: MailboxState, counters: Bool, total: Int, unseen: Int, size: Int?) -> JSONValue {
        var p: [(String, JSONValue)] = [("id", .string(mb.id)), ("name", .string(mb.path.split(separator: "/").last.map(String.init) ?? mb.path)),
                                        ("path", .string(mb.path))]
        if let su = mb.specialUse { p.append(("specialUse", .string(su))) }
        p += [("modifyIndex", .int(mb.modifyIndex)), ("subscribed", .bool(mb.subscribed)), ("hidden", .bool(mb.hidden)),
              ("encryptMessages", .bool(mb.encryptMessages))]
        if let r = mb.retention { p.append(("retention", .int(r))) }
        if counters { p += [("total", .int(total)), ("unseen", .int(unseen))] }
        if let sz = size { p.append(("size", .int(sz))) }
        return .object(p)
    }

    func listMailboxes(_ req: HTTPRequest) throws -> HTTPResponse {
        let counters = try Routes.boolParam(req, "counters").get() ?? false
        let showHidden = try Routes.boolParam(req, "showHidden").get() ?? false
        let specialOnly = try Routes.boolParam(req, "specialUse").get() ?? false
        let sizes = try Routes.boolParam(req, "sizes").get() ?? false
        let rows = account.state.withLock { s -> [(MailboxState, Int, Int, Int?)] in
            SimAccount.sorted(s.mailboxes.values.map { m in var c = m; c.byDate = []; c.idateByUid = [:]; c.uids = []; return c })
                .compactMap { light in
                    guard let mb = s.mailboxes[light.id] else { return nil }
                    // Hidden mailboxes only with showHidden (https://github.com/nodemailer/wildduck/blob/08c5804798e7ffe1b281859c4edcec2465d058c2/lib/api/mailboxes.js#L178-L180).
                    if mb.hidden && !showHidden { return nil }
                    if specialOnly && !(mb.path == "INBOX" || mb.specialUse != nil) { return nil }
                    let size = sizes ? mb.byDate.reduce(0) { $0 + $1.content.size } : nil
                    return (light, mb.byDate.count, mb.unseen, size)
                }
        }
        let results = rows.map { mailboxJSON($0.0, counters: counters, total: $0.1, unseen: $0.2, size: $0.3) }
        return .json(200, .object([("success", .bool(true)), ("results", .array(results))]))
    }

    func getMailbox(_ req: HTTPRequest, _ idParam: String) throws -> HTTPResponse {
        let id: String
        if idParam == "resolve" {
            guard let p = req.query["path"], !p.isEmpty else { throw ResponseError(Routes.validation("path", "\"path\" is required")) }
            guard let found = account.mailboxId(path: p) else { return Routes.noSuchMailbox }
            id = found
        } else { id = try mailboxParam(idParam) }
        let row = account.state.withLock { s -> (MailboxState, Int, Int)? in
            guard let mb = s.mailboxes[id] else { return nil }
            var light = mb
            light.byDate = []; light.idateByUid = [:]; light.uids = []
            return (light, mb.byDate.count, mb.unseen)
        }
        guard let (mb, total, unseen) = row else { return Routes.noSuchMailbox }
        var json = mailboxJSON(mb, counters: true, total: total, unseen: unseen, size: nil)
        if case let .object(p) = json { json = .object([("success", .bool(true))] + p) }
        return .json(200, json)
    }

    /// `POST /users/:user/mailboxes`: path, hidden, retention, encryptMessages, and no special use
    /// (https://github.com/nodemailer/wildduck/blob/08c5804798e7ffe1b281859c4edcec2465d058c2/lib/api/mailboxes.js#L278-L300).
    func createMailbox(_ req: HTTPRequest) throws -> HTTPResponse {
        let body = try Routes.bodyObject(req).get()
        guard let path = body["path"]?.stringValue, !path.isEmpty else { throw ResponseError(Routes.validation("path", "\"path\" is required")) }
        let id = try account.createMailbox(path: path, specialUse: nil, hidden: Routes.bodyBool(body["hidden"]) ?? false,
                                           retention: body["retention"]?.intValue, encryptMessages: Routes.bodyBool(body["encryptMessages"]) ?? false,
                                           process: .api)
        return .json(200, .object([("success", .bool(true)), ("id", .string(id))]))
    }

    /// `PUT /users/:user/mailboxes/:mailbox`: path, retention, subscribed, encryptMessages, hidden
    /// (https://github.com/nodemailer/wildduck/blob/08c5804798e7ffe1b281859c4edcec2465d058c2/lib/api/mailboxes.js#L544-L570).
    func updateMailbox(_ req: HTTPRequest, _ id: String) throws -> HTTPResponse {
        let body = try Routes.bodyObject(req).get()
        let path = body["path"]?.stringValue
        let subscribed = Routes.bodyBool(body["subscribed"])
        let hidden = Routes.bodyBool(body["hidden"])
        let enc = Routes.bodyBool(body["encryptMessages"])
        let retention = body["retention"]?.intValue
        guard path != nil || subscribed != nil || hidden != nil || enc != nil || retention != nil else {
            return Routes.error(400, "Nothing was changed", code: nil)
        }
        guard account.state.withLock({ $0.mailboxes[id] != nil }) else { return Routes.noSuchMailbox }
        if let p = path { try account.renameMailbox(id: id, to: p, process: .api) }
        try account.updateMailbox(id: id, subscribed: subscribed, hidden: hidden, encryptMessages: enc, retention: retention)
        return Routes.success
    }

    // MARK: messages

    static func listItem(_ m: ListedMessage, to out: inout [UInt8]) {
        let r = m.record
        out.append(contentsOf: "{\"id\":".utf8)
        JSONWriter.int(r.uid, to: &out)
        out.append(contentsOf: ",\"mailbox\":\"".utf8)
        out.append(contentsOf: m.mailbox.utf8)
        out.append(contentsOf: "\",\"idate\":\"".utf8)
        out.append(contentsOf: ISODate.format(ms: r.idate).utf8)
        out.append(contentsOf: "\",\"date\":\"".utf8)
        out.append(contentsOf: ISODate.format(ms: r.content.dateMs ?? r.idate).utf8)
        out.append(contentsOf: "\",".utf8)
        out.append(contentsOf: r.content.staticJSON)
        let f = r.flags
        out.append(contentsOf: ",\"seen\":\(f.seen),\"deleted\":\(f.deleted),\"flagged\":\(f.listedFlagged),\"draft\":\(f.listedDraft),\"answered\":\(f.answered && !f.forwarded),\"forwarded\":\(f.forwarded)}".utf8)
    }

    struct PagingParams { var limit: Int; var ascending: Bool; var orderGiven: Bool; var cursor: PageCursor? }

    static func pagingParams(_ req: HTTPRequest) throws -> PagingParams {
        var limit = 20
        if let l = req.query["limit"] {
            guard let n = Int(l) else { throw ResponseError(validation("limit", "\"limit\" must be a number")) }
            guard n >= 1 else { throw ResponseError(validation("limit", "\"limit\" must be greater than or equal to 1")) }
            guard n <= 250 else { throw ResponseError(validation("limit", "\"limit\" must be less than or equal to 250")) }
            limit = n
        }
        // `Joi.any().allow('asc', 'desc')` accepts any value: only "asc" is ascending
        let order = req.query["order"].flatMap { $0.isEmpty ? nil : $0 }
        let orderGiven = order != nil
        let asc = order == "asc"
        var cursor: PageCursor?
        for name in ["next", "previous"] {
            guard let c = req.query[name], !c.isEmpty else { continue }
            guard var pc = PageCursor.decode(c) else { throw ResponseError(validation(name, "\"\(name)\" must be a valid cursor")) }
            pc.forward = name == "next"
            cursor = pc
            break
        }
        return PagingParams(limit: limit, ascending: asc, orderGiven: orderGiven, cursor: cursor)
    }

    static func pageEnvelope(prefix: [(String, JSONValue)], total: Int, result: PageResult, items: [ListedMessage], specialUse: String??) -> HTTPResponse {
        var out: [UInt8] = []
        out.reserveCapacity(256 + items.count * 900)
        out.append(contentsOf: "{\"success\":true".utf8)
        for (k, v) in prefix {
            out.append(UInt8(ascii: ","))
            JSONWriter.string(k, to: &out)
            out.append(UInt8(ascii: ":"))
            v.write(to: &out)
        }
        out.append(contentsOf: ",\"total\":".utf8)
        JSONWriter.int(total, to: &out)
        out.append(contentsOf: ",\"page\":".utf8)
        JSONWriter.int(result.page, to: &out)
        out.append(contentsOf: ",\"previousCursor\":".utf8)
        if let c = result.previousCursor { JSONWriter.string(c.encoded, to: &out) } else { out.append(contentsOf: "false".utf8) }
        out.append(contentsOf: ",\"nextCursor\":".utf8)
        if let c = result.nextCursor { JSONWriter.string(c.encoded, to: &out) } else { out.append(contentsOf: "false".utf8) }
        if case let .some(su) = specialUse, let value = su {
            out.append(contentsOf: ",\"specialUse\":".utf8)
            JSONWriter.string(value, to: &out)
        }
        out.append(contentsOf: ",\"results\":[".utf8)
        for (i, m) in items.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            listItem(m, to: &out)
        }
        out.append(contentsOf: "]}".utf8)
        return .jsonBytes(200, out)
    }

    func listMessages(_ req: HTTPRequest, _ mb: String) throws -> HTTPResponse {
        let p = try Routes.pagingParams(req)
        let unseen = try Routes.boolParam(req, "unseen").get() ?? false
        let (total, su, items, result) = try account.listPage(mailboxId: mb, ascending: p.ascending, cursor: p.cursor, limit: p.limit, unseenOnly: unseen)
        return Routes.pageEnvelope(prefix: [], total: total, result: result, items: items, specialUse: .some(su))
    }

    func search(_ req: HTTPRequest) throws -> HTTPResponse {
        let p = try Routes.pagingParams(req)
        var q = SearchQuery()
        if let m = req.query["mailbox"], !m.isEmpty { q.mailbox = try mailboxParam(m) }
        if let ids = req.query["id"]?.trimmingCharacters(in: .whitespaces), !ids.isEmpty {
            guard let set = UidSet.parseSelector(ids) else {
                throw ResponseError(Routes.validation("id", "\"id\" with value \"\(ids)\" fails to match the required pattern: \(Routes.selectorPattern)"))
            }
            // only applies together with `mailbox`
            if q.mailbox != nil { q.uids = set }
        }
        if let t = req.query["thread"], !t.isEmpty { q.thread = t }
        q.flagged = try Routes.boolParam(req, "flagged").get()
        q.unseen = try Routes.boolParam(req, "unseen").get()
        q.attachments = try Routes.boolParam(req, "attachments").get()
        q.searchable = try Routes.boolParam(req, "searchable").get() ?? false
        func text(_ k: String) -> String? { req.query[k].map { $0.trimmingCharacters(in: .whitespaces) }.flatMap { $0.isEmpty ? nil : $0 } }
        q.from = text("from")
        q.to = text("to")
        q.subject = text("subject")
        q.text = text("q") ?? text("query")
        // both on the internal date, inclusive
        q.dateStart = try Routes.dateValue(req.query["datestart"].map { .string($0) }, "datestart")
        q.dateEnd = try Routes.dateValue(req.query["dateend"].map { .string($0) }, "dateend")
        q.minSize = req.query["minSize"].flatMap { Int($0) }
        q.maxSize = req.query["maxSize"].flatMap { Int($0) }
        let (total, items, result) = account.search(q, ascending: p.ascending, byInsertion: !p.orderGiven, cursor: p.cursor, limit: p.limit)
        // `query` echoes the text query (`q` or `query`) and is absent without one
        return Routes.pageEnvelope(prefix: q.text.map { [("query", .string($0))] } ?? [], total: total, result: result, items: items, specialUse: .none)
    }

    func eml(_ mb: String, _ uid: Int) throws -> HTTPResponse {
        guard let r = account.record(mailboxId: mb, uid: uid) else { return Routes.messageNotFound }
        var body: [UInt8] = []
        body.reserveCapacity(r.content.size)
        r.content.source.write(to: &body)
        return HTTPResponse(status: 200, headers: [("Content-Type", "message/rfc822")], body: body, chunked: true)
    }

    func getMessage(_ req: HTTPRequest, _ mb: String, _ uid: Int) throws -> HTTPResponse {
        guard account.state.withLock({ $0.mailboxes[mb] != nil }) else { return Routes.noSuchMailbox }
        if try Routes.boolParam(req, "markAsSeen").get() == true, account.record(mailboxId: mb, uid: uid)?.flags.seen == false {
            _ = try? account.updateMessages(mailboxId: mb, uids: UidSet(ranges: [uid...uid]), changes: [(.seen, true)])
        }
        guard let r = account.record(mailboxId: mb, uid: uid) else { return Routes.messageNotFound }
        let c = r.content
        let p = c.parsed
        let f = r.flags
        var pairs: [(String, JSONValue)] = [
            ("success", .bool(true)), ("id", .int(r.uid)), ("mailbox", .string(mb)), ("thread", .string(c.thread)),
            ("user", .string(account.userId)),
            ("envelope", .object([("from", .string(p.from?.address ?? "")),
                                  ("rcpt", .array((p.to + p.cc + p.bcc).map { .object([("value", .string($0.address)), ("formatted", .string($0.address))]) }))])),
            ("from", p.from.map { $0.json } ?? .null),
        ]
        if !p.replyTo.isEmpty { pairs.append(("replyTo", .array(p.replyTo.map { $0.json }))) }
        pairs += [
            ("to", .array(p.to.map { $0.json })), ("cc", .array(p.cc.map { $0.json })), ("bcc", .array(p.bcc.map { $0.json })),
            ("subject", .string(c.subject)), ("messageId", .string(c.messageId)),
            ("date", .string(ISODate.format(ms: c.dateMs ?? r.idate))), ("idate", .string(ISODate.format(ms: r.idate))),
            ("size", .int(c.size)), ("seen", .bool(f.seen)), ("deleted", .bool(f.deleted)), ("flagged", .bool(f.listedFlagged)),
            ("draft", .bool(f.listedDraft)), ("answered", .bool(f.answered && !f.forwarded)), ("forwarded", .bool(f.forwarded)),
            ("html", .array(p.html.map { .string($0) })), ("text", .string(p.text)),
            ("attachments", .array(p.attachmentNames.enumerated().map { i, a in
                .object([("id", .string("ATT" + String(repeating: "0", count: max(0, 5 - String(i + 1).count)) + String(i + 1))),
                         ("filename", .string(a.filename)), ("contentType", .string(a.contentType)), ("disposition", .string("attachment")),
                         ("transferEncoding", .string("base64")), ("related", .bool(false)), ("sizeKb", .int((a.size + 1023) / 1024))])
            })),
            ("verificationResults", .object([("tls", .bool(false)), ("spf", .bool(false)), ("dkim", .bool(false))])),
            ("encrypted", .bool(p.contentType == "multipart/encrypted")),
            ("metaData", .object([])),
            ("references", .array(p.references.map { .string($0) })),
        ]
        if let ct = p.contentType {
            pairs.append(("contentType", .object([("value", .string(ct)), ("params", .object(p.contentTypeParams.map { ($0.0, .string($0.1)) }))])))
        }
        return .json(200, .object(pairs))
    }

    // MARK: filters, autoreply

    static func filterStrings(_ v: JSONValue, action: Bool) -> JSONValue {
        var out: [JSONValue] = []
        for (k, val) in v.objectValue ?? [] {
            let text: String
            switch val {
            case let .string(s): text = s
            case let .int(i): text = String(i)
            case let .bool(b): text = b ? "yes" : "no"
            default: text = val.text
            }
            if action {
                switch k {
                case "seen": out.append(.array([.string(val.boolValue == false ? "mark as unread" : "mark as read")]))
                case "flag": out.append(.array([.string(val.boolValue == false ? "unflag it" : "flag it")]))
                case "delete": out.append(.array([.string("delete it")]))
                case "spam": out.append(.array([.string("mark as spam")]))
                case "mailbox": out.append(.array([.string("move to folder"), .string(text)]))
                default: out.append(.array([.string(k), .string(text)]))
                }
            } else {
                out.append(.array([.string(k), .string("(\(text))")]))
            }
        }
        return .array(out)
    }

    func filterList() -> HTTPResponse {
        let filters = account.state.withLock { $0.filters }
        let results: [JSONValue] = filters.map { f in
            // A filter without a name has none in the listing (`name: undefined`).
            .object([("id", .string(f.id))] + (f.name.isEmpty ? [] : [("name", .string(f.name))]) + [("query", Routes.filterStrings(f.query, action: false)),
                     ("action", Routes.filterStrings(f.action, action: true)), ("disabled", .bool(f.disabled)),
                     ("created", .string(ISODate.format(ms: f.created)))])
        }
        return .json(200, .object([("success", .bool(true)), ("limits", .object([("allowed", .int(400)), ("used", .int(filters.count))])),
                                   ("results", .array(results))]))
    }

    /// `GET /users/:user/filters/:filter`: the filter whole, `query` and `action` as the objects
    /// `POST` takes, a name only when it has one, 404 FilterNotFound "This filter does not exist"
    /// (https://github.com/nodemailer/wildduck/blob/08c5804798e7ffe1b281859c4edcec2465d058c2/lib/api/filters.js#L382-L538).
    func filter(_ id: String) -> HTTPResponse {
        guard let f = account.state.withLock({ s in s.filters.first { $0.id == id } }) else {
            return Routes.error(404, "This filter does not exist", code: "FilterNotFound")
        }
        var pairs: [(String, JSONValue)] = [("success", .bool(true)), ("id", .string(f.id))]
        if !f.name.isEmpty { pairs.append(("name", .string(f.name))) }
        pairs += [("query", f.query), ("action", f.action), ("disabled", .bool(f.disabled)),
                  ("created", .string(ISODate.format(ms: f.created)))]
        if let metaData = f.metaData { pairs.append(("metaData", metaData)) }
        return .json(200, .object(pairs))
    }

    /// `POST /users/:user/filters` as WildDuck checks and stores it
    /// (https://github.com/nodemailer/wildduck/blob/08c5804798e7ffe1b281859c4edcec2465d058c2/lib/api/filters.js#L636-L934,
    /// schemas in lib/schemas/request/filters-schemas.js): only the known fields (anything else is
    /// 400 `"x" is not allowed`), strings trimmed and at most 255, an empty one unset, the query's
    /// whitespace folded to one space; `query` and `action` required; 403 TooMany at the limit
    /// (400); a `mailbox` that is not the user's is 404 NoSuchMailbox. Nothing is stored on a refusal.
    func createFilter(_ req: HTTPRequest) throws -> HTTPResponse {
        let body = try Routes.bodyObject(req).get()
        func refuse(_ field: String, _ message: String) -> ResponseError { ResponseError(Routes.validation(field, message)) }
        func string(_ field: String, _ value: JSONValue) throws -> String? {
            guard let text = value.stringValue else { throw refuse(field, "\"\(field)\" must be a string") }
            let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
            guard trimmed.count <= 255 else { throw refuse(field, "\"\(field)\" length must be less than or equal to 255 characters long") }
            return trimmed.isEmpty ? nil : trimmed
        }
        func bool(_ field: String, _ value: JSONValue) throws -> Bool {
            guard let b = Routes.bodyBool(value) else { throw refuse(field, "\"\(field)\" must be a boolean") }
            return b
        }
        func object(_ field: String) throws -> [(String, JSONValue)] {
            guard let value = body[field] else { throw refuse(field, "\"\(field)\" is required") }
            guard let pairs = value.objectValue else { throw refuse(field, "\"\(field)\" must be of type object") }
            return pairs
        }
        for (key, _) in body.objectValue ?? [] where !["name", "query", "action", "disabled", "metaData", "sess", "ip"].contains(key) {
            throw refuse(key, "\"\(key)\" is not allowed")
        }
        let name = try body["name"].flatMap { try string("name", $0) } ?? ""
        let disabled = try body["disabled"].map { try bool("disabled", $0) } ?? false
        // The query as WildDuck keeps it: the headers first, then text, ha, size (the order GET gives).
        var given: [String: JSONValue] = [:]
        for (key, value) in try object("query") {
            switch key {
            case "from", "to", "subject", "listId", "text":
                given[key] = try string("query.\(key)", value).map { .string($0.split(whereSeparator: \.isWhitespace).joined(separator: " ")) }
            case "ha": given[key] = .bool(try bool("query.ha", value))
            case "size":
                if value.stringValue == "" { continue }
                guard let n = value.intValue ?? value.stringValue.flatMap({ Int($0) }) else { throw refuse("query.size", "\"query.size\" must be a number") }
                if n != 0 { given[key] = .int(n) }
            default: throw refuse("query.\(key)", "\"query.\(key)\" is not allowed")
            }
        }
        let query = ["from", "to", "subject", "listId", "text", "ha", "size"].compactMap { key in given[key].map { (key, $0) } }
        var actions: [String: JSONValue] = [:]
        for (key, value) in try object("action") {
            switch key {
            case "seen", "flag", "delete", "spam": actions[key] = .bool(try bool("action.\(key)", value))
            case "mailbox":
                guard let id = try string("action.mailbox", value)?.lowercased() else { continue }
                guard Hex.isHex(id, count: 24) else { throw refuse("action.mailbox", "\"action.mailbox\" must only contain hexadecimal characters") }
                actions[key] = .string(id)
            case "targets":
                if value.stringValue == "" { continue }
                guard let items = value.arrayValue else { throw refuse("action.targets", "\"action.targets\" must be an array") }
                var targets: [JSONValue] = []
                for (i, item) in items.enumerated() {
                    guard let target = item.stringValue,
                          target.range(of: "^(smtps?|https?)://[^\\s]+$|^[^@\\s]+@[^@\\s]+$", options: [.regularExpression, .caseInsensitive]) != nil else {
                        throw refuse("action.targets[\(i)]", "\"action.targets[\(i)]\" does not match any of the allowed types")
                    }
                    targets.append(.string(target))
                }
                actions[key] = .array(targets)
            default: throw refuse("action.\(key)", "\"action.\(key)\" is not allowed")
            }
        }
        let action = ["seen", "flag", "delete", "spam", "targets", "mailbox"].compactMap { key in actions[key].map { (key, $0) } }
        let metaData = body["metaData"].flatMap { $0.stringValue.map { JSONValue.parse($0) } ?? $0 }
        let result = account.mutate { s -> HTTPResponse in
            guard s.filters.count < 400 else {
                return .json(403, .object([("error", .string("Maximum filters limit reached")), ("code", .string("TooMany")), ("allowed", .int(400))]))
            }
            if let mailbox = actions["mailbox"]?.stringValue, s.mailboxes[mailbox] == nil { return Routes.noSuchMailbox }
            let id = s.newId()
            s.filters.append(FilterState(id: id, name: name, created: nowMillis(), disabled: disabled,
                                         query: .object(query), action: .object(action), metaData: metaData))
            return .json(200, .object([("success", .bool(true)), ("id", .string(id))]))
        }
        return result
    }

    func updateFilter(_ req: HTTPRequest, _ id: String) throws -> HTTPResponse {
        let body = try Routes.bodyObject(req).get()
        let found = account.mutate { s -> Bool in
            guard let i = s.filters.firstIndex(where: { $0.id == id }) else { return false }
            if let n = body["name"]?.stringValue { s.filters[i].name = n }
            if let q = body["query"], case .object = q { s.filters[i].query = q }
            if let a = body["action"], case .object = a { s.filters[i].action = a }
            if let d = Routes.bodyBool(body["disabled"]) { s.filters[i].disabled = d }
            return true
        }
        return found ? Routes.success : Routes.error(404, "Filter was not found", code: "FilterNotFound")
    }

    func autoreplyInfo() -> HTTPResponse {
        let a = account.state.withLock { $0.autoreply }
        var p: [(String, JSONValue)] = [("success", .bool(true)), ("status", .bool(a.status)), ("name", .string(a.name)),
                                        ("subject", .string(a.subject)), ("text", .string(a.text)), ("html", .string(a.html))]
        if let s = a.start { p.append(("start", .string(ISODate.format(ms: s)))) }
        if let e = a.end { p.append(("end", .string(ISODate.format(ms: e)))) }
        if let c = a.created { p.append(("created", .string(ISODate.format(ms: c)))) }
        return .json(200, .object(p))
    }

    /// `PUT /users/:user/autoreply`: status, name, subject, text, html, start, end
    /// (https://github.com/nodemailer/wildduck/blob/08c5804798e7ffe1b281859c4edcec2465d058c2/lib/api/autoreply.js).
    func updateAutoreply(_ req: HTTPRequest) throws -> HTTPResponse {
        let body = try Routes.bodyObject(req).get()
        let id = account.mutate { s -> String in
            if let v = Routes.bodyBool(body["status"]) { s.autoreply.status = v }
            if let v = body["name"]?.stringValue { s.autoreply.name = v }
            if let v = body["subject"]?.stringValue { s.autoreply.subject = v }
            if let v = body["text"]?.stringValue { s.autoreply.text = v }
            if let v = body["html"]?.stringValue { s.autoreply.html = v }
            if let v = body["start"] { s.autoreply.start = v.stringValue.flatMap { ISODate.parse($0) } }
            if let v = body["end"] { s.autoreply.end = v.stringValue.flatMap { ISODate.parse($0) } }
            if s.autoreply.created == nil { s.autoreply.created = nowMillis() }
            return s.userId
        }
        return .json(200, .object([("success", .bool(true)), ("id", .string(id))]))
    }
}

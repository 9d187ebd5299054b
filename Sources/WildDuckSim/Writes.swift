import Foundation

// The REST routes that write messages — upload, flag update, move, delete — with WildDuck's rules, read in
// https://github.com/nodemailer/wildduck/blob/08c5804798e7ffe1b281859c4edcec2465d058c2/lib/api/messages.js and lib/message-handler.js.
// A two-way client is tested against these, so they must be no friendlier than the real server.

/// What WildDuck does to a message it stores: it keeps a parsed MIME tree and serves the message rebuilt
/// from it (lib/indexer in imap-core). The simulator imitates the visible part for plain messages:
/// - every line break becomes CRLF (a bare LF gets a CR; a lone CR stays);
/// - the header block always ends with CRLF, so a message with no blank line gains a final CRLF;
/// - a blank line followed by an empty body is dropped (an empty body node writes nothing).
/// WildDuck may also re-encode parts of multipart messages; that is not imitated.
enum Rebuild {
    static func message(_ raw: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(raw.count + raw.count / 32 + 2)
        var prev: UInt8 = 0
        for b in raw {
            if b == 0x0A && prev != 0x0D { out.append(0x0D) }
            out.append(b)
            prev = b
        }
        guard !out.isEmpty else { return out }
        let crlf: [UInt8] = [0x0D, 0x0A]
        if out.starts(with: crlf) { return out }
        if let sep = out.firstIndex(of: crlf + crlf) {
            // header, blank line, nothing: the blank line goes
            if sep + 4 == out.count { out.removeLast(2) }
        } else if !out.reversed().starts(with: [0x0A, 0x0D]) {
            out += crlf
        }
        return out
    }
}

/// A message built from JSON fields when an upload has no `raw` (WildDuck composes one with Nodemailer's
/// MailComposer). Only the fields a mail client would use are honoured: from, to, cc, bcc, subject,
/// text, html; attachments, files, headers, reference and bimi are accepted and not simulated.
enum Compose {
    static func address(_ v: JSONValue?) -> String? {
        guard let address = v?["address"]?.stringValue, !address.isEmpty else { return nil }
        guard let name = v?["name"]?.stringValue, !name.isEmpty else { return address }
        return "\(encodeWord(name)) <\(address)>"
    }

    static func encodeWord(_ s: String) -> String {
        s.utf8.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) ? s : "=?UTF-8?B?\(Data(s.utf8).base64EncodedString())?="
    }

    static func body(_ text: String, type: String) -> String {
        if text.utf8.allSatisfy({ $0 < 0x80 }) {
            return "Content-Type: \(type); charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
                + text.replacingOccurrences(of: "\r\n", with: "\n").replacingOccurrences(of: "\n", with: "\r\n")
        }
        let b64 = Data(text.utf8).base64EncodedString(options: [.lineLength76Characters, .endLineWithCarriageReturn, .endLineWithLineFeed])
        return "Content-Type: \(type); charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n" + b64
    }

    static func message(params: (String) -> JSONValue?, userName: String, userAddress: String, dateMs: Int64) -> [UInt8] {
        var head: [String] = []
        head.append("From: " + (address(params("from")) ?? (userName.isEmpty ? userAddress : "\(encodeWord(userName)) <\(userAddress)>")))
        for (key, name) in [("to", "To"), ("cc", "Cc"), ("bcc", "Bcc")] {
            let list = (params(key)?.arrayValue ?? []).compactMap { address($0) }
            if !list.isEmpty { head.append("\(name): " + list.joined(separator: ", ")) }
        }
        if let s = params("subject")?.stringValue, !s.isEmpty { head.append("Subject: " + encodeWord(s)) }
        let domain = userAddress.split(separator: "@").last.map(String.init) ?? "localhost"
        head.append("Message-ID: <\(uuidString())@\(domain)>")
        head.append("Date: " + rfc2822(ms: dateMs))
        head.append("MIME-Version: 1.0")
        let text = params("text")?.stringValue ?? ""
        let html = params("html")?.stringValue ?? ""
        var tail: String
        if !html.isEmpty {
            let boundary = "--_NmP-" + randomHex(bytes: 8)
            tail = "Content-Type: multipart/alternative; boundary=\"\(boundary)\"\r\n\r\n"
            for (part, type) in [(text, "text/plain"), (html, "text/html")] where !part.isEmpty || type == "text/html" {
                tail += "--\(boundary)\r\n" + body(part, type: type) + "\r\n"
            }
            tail += "--\(boundary)--\r\n"
        } else {
            tail = body(text, type: "text/plain")
        }
        return Array((head.joined(separator: "\r\n") + "\r\n" + tail).utf8)
    }

    static func rfc2822(ms: Int64) -> String {
        let iso = ISODate.format(ms: ms)   // YYYY-MM-DDTHH:MM:SS.mmmZ
        let c = Array(iso)
        guard c.count >= 19, let y = Int(String(c[0..<4])), let m = Int(String(c[5..<7])), let d = Int(String(c[8..<10])) else { return iso }
        let days = ISODate.daysFromCivil(y, m, d)
        let wd = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][Int(((days % 7) + 7) % 7)]
        let mon = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"][m - 1]
        return "\(wd), \(String(c[8..<10])) \(mon) \(String(c[0..<4])) \(String(c[11..<19])) +0000"
    }
}

extension UidSet {
    /// WildDuck's message selector (`uidRangeStringToQuery`): `^\d+(,\d+)*$` or `^\d+:(\d+|\*)$`. A range's
    /// ends may come in either order; `n:*` is everything from n. Uid 0 is valid syntax and matches nothing.
    static func parseSelector(_ s: String) -> UidSet? {
        let u = Array(s.utf8)
        func isDigits(_ x: ArraySlice<UInt8>) -> Bool { !x.isEmpty && x.allSatisfy { $0 >= 0x30 && $0 <= 0x39 } }
        func value(_ x: ArraySlice<UInt8>) -> Int { Int(String(decoding: x, as: UTF8.self)) ?? Int.max }
        if let colon = u.firstIndex(of: UInt8(ascii: ":")) {
            let a = u[..<colon], b = u[(colon + 1)...]
            guard isDigits(a) else { return nil }
            if b.elementsEqual([UInt8(ascii: "*")]) { return UidSet(ranges: [value(a)...Int.max]) }
            guard isDigits(b) else { return nil }
            let x = value(a), y = value(b)
            return UidSet(ranges: [min(x, y)...max(x, y)])
        }
        let parts = u.split(separator: UInt8(ascii: ","), omittingEmptySubsequences: false)
        guard parts.allSatisfy(isDigits) else { return nil }
        return UidSet(ranges: parts.map { value($0)...value($0) })
    }
}

extension Routes {
    static let selectorPattern = #"/^\d+(,\d+)*$|^\d+:(\d+|\*)$/i"#

    /// The request's parameters as WildDuck validates them: query parameters and body fields in one set
    /// (restify maps both into `req.params`; a body field does not replace a query parameter), without
    /// `accessToken`. Joi rejects keys its schema does not name, so an unknown key is a 400.
    static func writeParams(_ req: HTTPRequest, body: JSONValue, allowed: Set<String>) throws -> [(String, JSONValue)] {
        var out: [(String, JSONValue)] = []
        var have = Set<String>()
        for k in req.query.keys.sorted() where k != "accessToken" {
            out.append((k, .string(req.query[k] ?? "")))
            have.insert(k)
        }
        for (k, v) in body.objectValue ?? [] where !have.contains(k) {
            out.append((k, v))
            have.insert(k)
        }
        for (k, _) in out where !allowed.contains(k) { throw ResponseError(validation(k, "\"\(k)\" is not allowed")) }
        return out
    }

    /// WildDuck's `booleanSchema`: booleans, 1/0, and true/false/yes/no/on/off/y/n/1/0 strings; "" is absent.
    static func strictBool(_ v: JSONValue?, _ name: String) throws -> Bool? {
        guard let v else { return nil }
        switch v {
        case let .bool(b): return b
        case let .int(i) where i == 0 || i == 1: return i == 1
        case let .string(s):
            if s.isEmpty { return nil }
            switch s.lowercased() {
            case "true", "yes", "on", "y", "1": return true
            case "false", "no", "off", "n", "0": return false
            default: break
            }
        default: break
        }
        throw ResponseError(validation(name, "\"\(name)\" must be a boolean"))
    }

    /// `Joi.date()`: a number or numeric string is epoch milliseconds; otherwise an ISO 8601 or RFC 2822 date.
    static func dateValue(_ v: JSONValue?, _ name: String) throws -> Int64? {
        guard let v else { return nil }
        switch v {
        case let .int(i): return Int64(i)
        case let .double(d) where d.isFinite: return Int64(d)
        case let .string(s):
            let t = s.trimmingCharacters(in: .whitespaces)
            if t.isEmpty { break }
            if let d = Double(t), d.isFinite, t.allSatisfy({ $0.isNumber || $0 == "." || $0 == "-" || $0 == "+" }) { return Int64(d) }
            if let ms = ISODate.parse(t) ?? MailParser.rfc2822Date(t) { return ms }
        default: break
        }
        throw ResponseError(validation(name, "\"\(name)\" must be a valid date"))
    }

    static func mailboxMissing() -> HTTPResponse { .json(500, .object([("error", .string("Mailbox is missing"))])) }

    // MARK: PUT .../messages[/:message]

    /// Flag update and move. `selector` is the path's `:message`; nil for the bulk form (body `message`).
    func updateMessages(_ req: HTTPRequest, _ mb: String, selector: String?) throws -> HTTPResponse {
        let body = try Routes.bodyObject(req).get()
        let allowed: Set<String> = ["seen", "deleted", "flagged", "draft", "moveTo", "expires", "metaData", "sess", "ip",
                                    "message", "user", "mailbox"]
        let params = try Routes.writeParams(req, body: body, allowed: allowed)
        func param(_ k: String) -> JSONValue? { params.first { $0.0 == k }?.1 }
        let text: String
        if let s = selector {
            text = s
        } else {
            guard let v = param("message") else { throw ResponseError(Routes.validation("message", "\"message\" is required")) }
            guard let s = v.stringValue else { throw ResponseError(Routes.validation("message", "\"message\" must be a string")) }
            text = s
        }
        guard let set = UidSet.parseSelector(text) else {
            throw ResponseError(Routes.validation("message", "\"message\" with value \"\(text)\" fails to match the required pattern: \(Routes.selectorPattern)"))
        }
        var changes: [(FlagKey, Bool)] = []
        var otherChange = false
        var moveTo: String?
        for (k, v) in params {
            if let key = FlagKey(rawValue: k) {
                if let b = try Routes.strictBool(v, k) { changes.append((key, b)) }
                continue
            }
            switch k {
            case "moveTo":
                guard let t = v.stringValue else { throw ResponseError(Routes.validation(k, "\"moveTo\" must be a string")) }
                guard t.utf8.allSatisfy({ $0 < 0x80 && Character(Unicode.Scalar($0)).isHexDigit }) else {
                    throw ResponseError(Routes.validation(k, "\"moveTo\" must only contain hexadecimal characters"))
                }
                guard t.utf8.count == 24 else { throw ResponseError(Routes.validation(k, "\"moveTo\" length must be 24 characters long")) }
                moveTo = t.lowercased()
            case "expires":
                // a date, or false to stop expiry; either way it counts as a change
                if (try? Routes.strictBool(v, k)) != nil { otherChange = true } else if try Routes.dateValue(v, k) != nil { otherChange = true }
            case "metaData":
                switch v {
                case .object: otherChange = true
                case let .string(s):
                    guard let parsed = JSONValue.parse(Array(s.utf8)), case .object = parsed else {
                        return Routes.error(400, "metaData value must be valid JSON object string", code: "InputValidationError")
                    }
                    otherChange = true
                default:
                    return Routes.error(400, "metaData value must be valid JSON object string", code: "InputValidationError")
                }
            case "sess", "ip":
                guard v.stringValue != nil else { throw ResponseError(Routes.validation(k, "\"\(k)\" must be a string")) }
            default:
                continue
            }
        }
        if let target = moveTo {
            let pairs: [(old: Int, new: Int)]
            do { pairs = try account.moveMessages(mailboxId: mb, uids: set, to: target, changes: changes) } catch SimAccountError.noSuchMailbox {
                return Routes.mailboxMissing()
            }
            guard !pairs.isEmpty else { return Routes.error(404, "Could not move message, check if message exists", code: "MessageNotFound") }
            return .json(200, .object([("success", .bool(true)), ("mailbox", .string(target)),
                                       ("id", .array(pairs.map { .array([.int($0.old), .int($0.new)]) }))]))
        }
        guard !changes.isEmpty || otherChange else { return .json(500, .object([("error", .string("Nothing was changed"))])) }
        let updated: Int
        do { updated = try account.updateMessages(mailboxId: mb, uids: set, changes: changes) } catch SimAccountError.noSuchMailbox {
            return Routes.mailboxMissing()
        }
        guard updated > 0 else { return Routes.error(404, "No message matched query", code: "MessageNotFound") }
        return .json(200, .object([("success", .bool(true)), ("updated", .int(updated))]))
    }

    // MARK: DELETE .../messages/:message

    func deleteMessage(_ req: HTTPRequest, _ mb: String, _ uidText: String) throws -> HTTPResponse {
        _ = try Routes.writeParams(req, body: .object([]), allowed: ["sess", "ip"])
        guard let uid = Int(uidText), uid >= 1 else {
            throw ResponseError(Routes.validation("message", Int(uidText) == nil ? "\"message\" must be a number" : "\"message\" must be greater than or equal to 1"))
        }
        // WildDuck looks the message up by (mailbox, uid): a missing mailbox is a missing message.
        do { try account.expunge(mailboxId: mb, uid: uid, process: .api) } catch {
            return .json(404, .object([("error", .string("Message was not found"))]))
        }
        return Routes.success
    }

    // MARK: POST .../messages

    static let uploadKeys: Set<String> = ["date", "unseen", "flagged", "draft", "raw", "from", "replyTo", "to", "cc", "bcc", "headers",
                                          "subject", "text", "html", "files", "attachments", "metaData", "reference", "replacePrevious",
                                          "bimi", "sess", "ip", "user", "mailbox"]

    /// Upload. The message is the request body (any type but JSON and form data; `message/rfc822` is the
    /// documented one) with the other fields in the query string, or JSON whose `raw` is taken as UTF-8
    /// text — WildDuck's `Joi.binary()` has no encoding, so a base64 string is stored as base64 text.
    func upload(_ req: HTTPRequest, _ mb: String) throws -> HTTPResponse {
        let ct = req.header("content-type")?.lowercased() ?? ""
        let structured = ct.isEmpty || ct.contains("json") || ct.hasPrefix("application/x-www-form-urlencoded")
        let body = structured ? try Routes.bodyObject(req).get() : .object([])
        let params = try Routes.writeParams(req, body: body, allowed: Routes.uploadKeys)
        func param(_ k: String) -> JSONValue? { params.first { $0.0 == k }?.1 }
        var raw: [UInt8]?
        if let r = param("raw") {
            guard case let .string(text) = r else { throw ResponseError(Routes.validation("raw", "\"raw\" must be a buffer or a string")) }
            if !text.isEmpty { raw = Array(text.utf8) }
        }
        if raw == nil && !structured { raw = req.body }
        let limit = account.maxMessageSize
        if let r = raw, r.count > limit {
            throw ResponseError(Routes.validation("raw", "\"raw\" must be less than or equal to \(limit) bytes"))
        }
        let unseen = try Routes.strictBool(param("unseen"), "unseen") ?? false
        let flagged = try Routes.strictBool(param("flagged"), "flagged") ?? false
        let draft = try Routes.strictBool(param("draft"), "draft") ?? false
        let date = try Routes.dateValue(param("date"), "date")
        for k in ["sess", "ip"] where param(k).map({ $0.stringValue == nil }) == true {
            throw ResponseError(Routes.validation(k, "\"\(k)\" must be a string"))
        }
        let (exists, overQuota, now, name, address) = account.state.withLock { s in
            (s.mailboxes[mb] != nil, s.quota > 0 && s.storageUsed > s.quota, s.clock(), s.user["name"] ?? "", s.user["address"] ?? "")
        }
        guard exists else { return Routes.noSuchMailbox }
        // checked before storing: the upload that crosses the quota is still accepted
        guard !overQuota else { return Routes.error(400, "User is over quota", code: "OverQuotaError") }
        let idate = date ?? now
        let message = raw ?? Compose.message(params: param, userName: name, userAddress: address, dateMs: idate)
        guard !message.isEmpty else { return Routes.error(400, "Empty message provided", code: "EmptyMessage") }
        let stored = Rebuild.message(message)
        let (uid, size): (Int, Int)
        do {
            (uid, size) = try account.deliver(source: .bytes(stored), parsed: MailParser.parse(stored), to: mb,
                                              flags: MsgFlags(seen: !unseen, flagged: flagged, draft: draft), idateMs: idate, process: .api)
        } catch SimAccountError.noSuchMailbox {
            // deleted between the check and the store: what `add` reports
            return .json(500, .object([("error", .string("Mailbox is missing")), ("code", .string("TRYCREATE"))]))
        }
        return .json(200, .object([("success", .bool(true)),
                                   ("message", .object([("id", .int(uid)), ("mailbox", .string(mb)), ("size", .int(size))]))]))
    }
}

import Foundation

/// `{name, address}` as in the WildDuck list item.
public struct SimAddress: Sendable, Equatable {
    public var name: String
    public var address: String
    public init(name: String, address: String) { self.name = name; self.address = address }

    var json: JSONValue { .object([("name", .string(name)), ("address", .string(address))]) }
}

/// What the simulator extracts from a raw message. Parsing never fails: malformed input gives empty fields.
struct ParsedMail: Sendable {
    var subject = ""
    var from: SimAddress?
    var replyTo: [SimAddress] = []
    var to: [SimAddress] = []
    var cc: [SimAddress] = []
    var bcc: [SimAddress] = []
    var dateMs: Int64?
    var messageId: String?
    var inReplyTo: String?
    var references: [String] = []
    var contentType: String?
    var contentTypeParams: [(String, String)] = []
    var text = ""
    var html: [String] = []
    var intro = ""
    var hasAttachments = false
    var attachmentNames: [(filename: String, contentType: String, size: Int)] = []
}

enum MailParser {
    static let maxDepth = 8

    /// Splits raw bytes into unfolded header fields (lower-cased names) and the body offset.
    static func headers(_ raw: [UInt8], limit: Int = 256 * 1024) -> (fields: [(String, String)], bodyStart: Int) {
        var fields: [(String, String)] = []
        var i = 0
        let n = raw.count
        var current: [UInt8] = []
        func flush() {
            guard !current.isEmpty else { return }
            if let colon = current.firstIndex(of: UInt8(ascii: ":")), colon > 0 {
                let name = String(decoding: current[0..<colon], as: UTF8.self).trimmedWS.lowercased()
                let value = String(decoding: current[(colon + 1)...], as: UTF8.self).trimmedWS
                if !name.isEmpty { fields.append((name, value)) }
            }
            current.removeAll(keepingCapacity: true)
        }
        while i < n {
            // find end of line
            var j = i
            while j < n, raw[j] != 0x0A { j += 1 }
            var lineEnd = j
            if lineEnd > i, raw[lineEnd - 1] == 0x0D { lineEnd -= 1 }
            let next = j < n ? j + 1 : n
            if lineEnd == i {
                flush()
                return (fields, next)
            }
            if i > limit { flush(); return (fields, i) }
            if raw[i] == 0x20 || raw[i] == 0x09 {
                if !current.isEmpty { current.append(0x20) }
                var k = i
                while k < lineEnd, raw[k] == 0x20 || raw[k] == 0x09 { k += 1 }
                current.append(contentsOf: raw[k..<lineEnd])
            } else {
                flush()
                current.append(contentsOf: raw[i..<lineEnd])
            }
            i = next
        }
        flush()
        return (fields, n)
    }

    static func parse(_ raw: [UInt8]) -> ParsedMail {
        var m = ParsedMail()
        let (fields, bodyStart) = headers(raw)
        func first(_ name: String) -> String? { fields.first(where: { $0.0 == name })?.1 }
        // WildDuck stores the last Subject field, its encoded words decoded, every run of
        // whitespace folded into one space and trimmed (`prepareMessage` and `normalizeSubject`
        // in https://github.com/nodemailer/wildduck/blob/08c5804798e7ffe1b281859c4edcec2465d058c2/lib/message-handler.js).
        m.subject = decodeWords(fields.last(where: { $0.0 == "subject" })?.1 ?? "")
            .split(whereSeparator: \.isWhitespace).joined(separator: " ")
        m.from = addresses(first("from") ?? "").first ?? addresses(first("sender") ?? "").first
        m.replyTo = addresses(first("reply-to") ?? "")
        m.to = fields.filter { $0.0 == "to" }.flatMap { addresses($0.1) }
        m.cc = fields.filter { $0.0 == "cc" }.flatMap { addresses($0.1) }
        m.bcc = fields.filter { $0.0 == "bcc" }.flatMap { addresses($0.1) }
        if let d = first("date") { m.dateMs = rfc2822Date(d) }
        if let mid = first("message-id") {
            let t = mid.trimmedWS
            if !t.isEmpty { m.messageId = t }
        }
        m.inReplyTo = first("in-reply-to")
        if let r = first("references") {
            m.references = r.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        }
        if let ct = first("content-type") {
            let (v, p) = parameterised(ct)
            m.contentType = v
            m.contentTypeParams = p
        }
        var texts: [String] = []
        var htmls: [String] = []
        var att = false
        var names: [(filename: String, contentType: String, size: Int)] = []
        walk(fields: fields, raw: raw, start: bodyStart, end: raw.count, depth: 0, texts: &texts, htmls: &htmls, attachments: &att, names: &names)
        m.text = texts.joined(separator: "\n")
        m.html = htmls
        m.hasAttachments = att
        m.attachmentNames = names
        var introSource = m.text
        if introSource.trimmedWS.isEmpty, let h = htmls.first { introSource = stripTags(h) }
        m.intro = intro(introSource)
        return m
    }

    static func intro(_ s: String) -> String {
        var out = ""
        var count = 0
        var lastSpace = true
        for ch in s {
            if ch.isWhitespace {
                if !lastSpace { out.append(" "); count += 1; lastSpace = true }
            } else {
                out.append(ch); count += 1; lastSpace = false
            }
            if count >= 128 { break }
        }
        return out.trimmedWS
    }

    static func stripTags(_ s: String) -> String {
        var out = ""
        var inTag = false
        for ch in s {
            if ch == "<" { inTag = true; continue }
            if ch == ">" { inTag = false; out.append(" "); continue }
            if !inTag { out.append(ch) }
        }
        return out.replacingOccurrences(of: "&nbsp;", with: " ").replacingOccurrences(of: "&amp;", with: "&")
            .replacingOccurrences(of: "&lt;", with: "<").replacingOccurrences(of: "&gt;", with: ">")
    }

    private static func walk(fields: [(String, String)], raw: [UInt8], start: Int, end: Int, depth: Int,
                             texts: inout [String], htmls: inout [String], attachments: inout Bool,
                             names: inout [(filename: String, contentType: String, size: Int)]) {
        guard depth < maxDepth, start <= end else { return }
        func first(_ name: String) -> String? { fields.first(where: { $0.0 == name })?.1 }
        let (ctValue, ctParams) = parameterised(first("content-type") ?? "text/plain")
        let ct = ctValue.isEmpty ? "text/plain" : ctValue
        let (disp, dispParams) = parameterised(first("content-disposition") ?? "")
        let filename = dispParams.first(where: { $0.0 == "filename" })?.1 ?? ctParams.first(where: { $0.0 == "name" })?.1

        if ct.hasPrefix("multipart/") {
            guard let boundary = ctParams.first(where: { $0.0 == "boundary" })?.1, !boundary.isEmpty else { return }
            for (ps, pe) in splitMultipart(raw, start: start, end: end, boundary: boundary) {
                let slice = Array(raw[ps..<pe])
                let (pf, pb) = headers(slice)
                walk(fields: pf, raw: slice, start: pb, end: slice.count, depth: depth + 1, texts: &texts, htmls: &htmls, attachments: &attachments, names: &names)
            }
            return
        }
        if ct == "message/rfc822" {
            attachments = true
            names.append((filename ?? "message.eml", ct, end - start))
            return
        }
        let isAttachment = disp == "attachment" || (filename != nil && !ct.hasPrefix("text/")) || !(ct.hasPrefix("text/"))
        if isAttachment {
            attachments = true
            names.append((decodeWords(filename ?? "attachment"), ct, end - start))
            return
        }
        let cte = (first("content-transfer-encoding") ?? "").lowercased().trimmedWS
        let bodyBytes = Array(raw[start..<end])
        let decoded: [UInt8]
        switch cte {
        case "base64": decoded = base64Decode(bodyBytes)
        case "quoted-printable": decoded = qpDecode(bodyBytes)
        default: decoded = bodyBytes
        }
        let charset = ctParams.first(where: { $0.0 == "charset" })?.1 ?? "utf-8"
        let text = decodeCharset(decoded, charset)
        if ct == "text/html" { htmls.append(text) } else { texts.append(text) }
    }

    static func splitMultipart(_ raw: [UInt8], start: Int, end: Int, boundary: String) -> [(Int, Int)] {
        let marker = Array(("--" + boundary).utf8)
        var parts: [(Int, Int)] = []
        var positions: [(lineStart: Int, after: Int, closing: Bool)] = []
        var i = start
        while i < end {
            // at line start
            if i + marker.count <= end, raw[i] == 0x2D {
                var match = true
                for k in 0..<marker.count where raw[i + k] != marker[k] { match = false; break }
                if match {
                    var j = i + marker.count
                    let closing = j + 1 < end && raw[j] == 0x2D && raw[j + 1] == 0x2D
                    while j < end, raw[j] != 0x0A { j += 1 }
                    positions.append((i, min(j + 1, end), closing))
                    if closing { break }
                    i = min(j + 1, end)
                    continue
                }
            }
            while i < end, raw[i] != 0x0A { i += 1 }
            i += 1
        }
        guard positions.count >= 1 else { return [] }
        for idx in 0..<positions.count {
            if positions[idx].closing { break }
            let ps = positions[idx].after
            var pe = idx + 1 < positions.count ? positions[idx + 1].lineStart : end
            // drop the CRLF that belongs to the boundary line
            if pe > ps, raw[pe - 1] == 0x0A { pe -= 1; if pe > ps, raw[pe - 1] == 0x0D { pe -= 1 } }
            if pe >= ps { parts.append((ps, pe)) }
        }
        return parts
    }

    /// `type/sub; a=b; c="d"` → ("type/sub", [("a","b"),("c","d")]); names lower-cased.
    static func parameterised(_ value: String) -> (String, [(String, String)]) {
        var parts: [String] = []
        var cur = ""
        var inQuote = false
        for ch in value {
            if ch == "\"" { inQuote.toggle(); cur.append(ch); continue }
            if ch == ";" && !inQuote { parts.append(cur); cur = ""; continue }
            cur.append(ch)
        }
        parts.append(cur)
        let main = (parts.first ?? "").trimmedWS.lowercased()
        var params: [(String, String)] = []
        for p in parts.dropFirst() {
            guard let eq = p.firstIndex(of: "=") else { continue }
            var name = p[..<eq].trimmedWS.lowercased()
            var v = p[p.index(after: eq)...].trimmedWS
            if v.hasPrefix("\"") && v.hasSuffix("\"") && v.count >= 2 { v = String(v.dropFirst().dropLast()) }
            if name.hasSuffix("*") { // RFC 2231 (simplified)
                name.removeLast()
                if let q = v.range(of: "''") { v = String(v[q.upperBound...]).removingPercentEncoding ?? v }
            }
            params.append((name, v))
        }
        return (main, params)
    }

    static func base64Decode(_ bytes: [UInt8]) -> [UInt8] {
        var clean: [UInt8] = []
        clean.reserveCapacity(bytes.count)
        for b in bytes where (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || (b >= 0x30 && b <= 0x39) || b == 0x2B || b == 0x2F {
            clean.append(b)
        }
        let usable = clean.count - clean.count % 4
        let rem = clean.count % 4
        var s = String(decoding: clean[0..<usable], as: UTF8.self)
        if rem >= 2 { s += String(decoding: clean[usable...], as: UTF8.self) + String(repeating: "=", count: 4 - rem) }
        return Data(base64Encoded: s).map { [UInt8]($0) } ?? []
    }

    static func qpDecode(_ bytes: [UInt8], underscoreIsSpace: Bool = false) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var i = 0
        func hv(_ c: UInt8) -> UInt8? {
            switch c {
            case 0x30...0x39: return c - 0x30
            case 0x41...0x46: return c - 0x41 + 10
            case 0x61...0x66: return c - 0x61 + 10
            default: return nil
            }
        }
        while i < bytes.count {
            let c = bytes[i]
            if c == UInt8(ascii: "=") {
                if i + 2 < bytes.count {
                    if let a = hv(bytes[i + 1]), let b = hv(bytes[i + 2]) { out.append(a << 4 | b); i += 3; continue }
                }
                // soft line break
                var j = i + 1
                while j < bytes.count, bytes[j] == 0x20 || bytes[j] == 0x09 { j += 1 }
                if j < bytes.count, bytes[j] == 0x0D { j += 1 }
                if j < bytes.count, bytes[j] == 0x0A { i = j + 1; continue }
                if j >= bytes.count { break }
                out.append(c); i += 1; continue
            }
            if underscoreIsSpace && c == UInt8(ascii: "_") { out.append(0x20); i += 1; continue }
            out.append(c)
            i += 1
        }
        return out
    }

    static func decodeCharset(_ bytes: [UInt8], _ charset: String) -> String {
        let cs = charset.lowercased().trimmedWS
        switch cs {
        case "utf-8", "utf8", "us-ascii", "ascii", "":
            return String(decoding: bytes, as: UTF8.self)
        case "iso-8859-1", "latin1", "latin-1", "iso8859-1", "windows-1252", "cp1252":
            var s = String.UnicodeScalarView()
            for b in bytes { s.append(Unicode.Scalar(b)) }
            return String(s)
        default:
            let enc: String.Encoding?
            switch cs {
            case "iso-8859-2": enc = .isoLatin2
            case "windows-1251", "cp1251": enc = .windowsCP1251
            case "windows-1250": enc = .windowsCP1250
            case "shift_jis", "shift-jis", "sjis": enc = .shiftJIS
            case "euc-jp": enc = .japaneseEUC
            case "iso-2022-jp": enc = .iso2022JP
            case "utf-16": enc = .utf16
            default: enc = nil
            }
            if let e = enc, let s = String(data: Data(bytes), encoding: e) { return s }
            return String(decoding: bytes, as: UTF8.self)
        }
    }

    /// RFC 2047 encoded words.
    static func decodeWords(_ s: String) -> String {
        guard s.contains("=?") else { return s }
        var out = ""
        var rest = Substring(s)
        var lastWasWord = false
        while let r = rest.range(of: "=?") {
            let before = rest[..<r.lowerBound]
            let after = rest[r.upperBound...]
            // charset?enc?text?=
            let pieces = after.split(separator: "?", maxSplits: 2, omittingEmptySubsequences: false)
            guard pieces.count == 3, let endR = pieces[2].range(of: "?=") else {
                out += before + "=?"
                rest = after
                lastWasWord = false
                continue
            }
            let charset = String(pieces[0]).split(separator: "*").first.map(String.init) ?? ""
            let enc = pieces[1].lowercased()
            let payload = pieces[2][..<endR.lowerBound]
            let decoded: [UInt8]?
            if enc == "b" { decoded = base64Decode(Array(payload.utf8)) } else if enc == "q" { decoded = qpDecode(Array(payload.utf8), underscoreIsSpace: true) } else { decoded = nil }
            guard let bytes = decoded else {
                out += before + "=?"
                rest = after
                lastWasWord = false
                continue
            }
            if !(lastWasWord && before.allSatisfy({ $0 == " " || $0 == "\t" })) { out += before }
            out += decodeCharset(bytes, charset)
            rest = pieces[2][endR.upperBound...]
            lastWasWord = true
        }
        out += rest
        return out
    }

    /// Address lists; tolerant of groups, comments and garbage.
    static func addresses(_ value: String) -> [SimAddress] {
        var pieces: [String] = []
        var cur = ""
        var inQuote = false, angle = 0, paren = 0
        var escaped = false
        for ch in value {
            if escaped { cur.append(ch); escaped = false; continue }
            if ch == "\\" && inQuote { escaped = true; cur.append(ch); continue }
            switch ch {
            case "\"" where paren == 0: inQuote.toggle()
            case "<" where !inQuote && paren == 0: angle += 1
            case ">" where !inQuote && paren == 0: angle = max(0, angle - 1)
            case "(" where !inQuote: paren += 1
            case ")" where !inQuote: paren = max(0, paren - 1)
            case "," where !inQuote && angle == 0 && paren == 0:
                pieces.append(cur); cur = ""; continue
            case ";" where !inQuote && angle == 0 && paren == 0:
                pieces.append(cur); cur = ""; continue
            case ":" where !inQuote && angle == 0 && paren == 0 && !cur.contains("@"):
                cur = ""; continue // group name
            default: break
            }
            cur.append(ch)
        }
        pieces.append(cur)
        var out: [SimAddress] = []
        for raw in pieces {
            let p = raw.trimmedWS
            if p.isEmpty { continue }
            if let lt = p.lastIndex(of: "<") {
                let addrPart = p[p.index(after: lt)...]
                let addr = String(addrPart.prefix { $0 != ">" }).trimmedWS
                var name = String(p[..<lt]).trimmedWS
                if name.hasPrefix("\"") && name.hasSuffix("\"") && name.count >= 2 {
                    name = String(name.dropFirst().dropLast()).replacingOccurrences(of: "\\\"", with: "\"").replacingOccurrences(of: "\\\\", with: "\\")
                }
                out.append(SimAddress(name: decodeWords(name), address: addr))
            } else {
                var addr = ""
                var comment = ""
                var depth = 0
                for ch in p {
                    if ch == "(" { depth += 1; if depth == 1 { continue } }
                    if ch == ")" && depth > 0 { depth -= 1; if depth == 0 { continue } }
                    if depth > 0 { comment.append(ch) } else { addr.append(ch) }
                }
                addr = addr.trimmedWS.trimmingCharacters(in: CharacterSet(charactersIn: "\""))
                if addr.isEmpty && comment.isEmpty { continue }
                out.append(SimAddress(name: decodeWords(comment.trimmedWS), address: addr))
            }
        }
        return out
    }

    static let months = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
    static let zones: [String: Int] = ["ut": 0, "utc": 0, "gmt": 0, "z": 0, "est": -300, "edt": -240, "cst": -360, "cdt": -300,
                                       "mst": -420, "mdt": -360, "pst": -480, "pdt": -420]

    /// RFC 2822 date (tolerant); nil when it cannot be read.
    static func rfc2822Date(_ value: String) -> Int64? {
        var cleaned = ""
        var depth = 0
        for ch in value {
            if ch == "(" { depth += 1; continue }
            if ch == ")" { depth = max(0, depth - 1); continue }
            if depth == 0 { cleaned.append(ch == "," ? " " : ch) }
        }
        let tokens = cleaned.split(whereSeparator: { $0 == " " || $0 == "\t" }).map { String($0) }
        var day: Int?, month: Int?, year: Int?
        var h = 0, mi = 0, s = 0, haveTime = false
        var offsetMin = 0
        for t in tokens {
            let lt = t.lowercased()
            if t.contains(":") && !haveTime {
                let parts = t.split(separator: ":").map { Int($0) }
                guard parts.count >= 2, let hh = parts[0], let mm = parts[1] else { continue }
                h = hh; mi = mm; s = parts.count > 2 ? (parts[2] ?? 0) : 0
                haveTime = true
                continue
            }
            if (t.hasPrefix("+") || t.hasPrefix("-")) && t.count == 5, let z = Int(t.dropFirst()) {
                offsetMin = (t.hasPrefix("-") ? -1 : 1) * ((z / 100) * 60 + z % 100)
                continue
            }
            if let z = zones[lt] { offsetMin = z; continue }
            if month == nil, lt.count >= 3, let mIdx = months.firstIndex(of: String(lt.prefix(3))) { month = mIdx + 1; continue }
            if let n = Int(t) {
                if day == nil && n >= 1 && n <= 31 && t.count <= 2 { day = n; continue }
                if year == nil {
                    year = t.count <= 2 ? (n < 50 ? 2000 + n : 1900 + n) : n
                    continue
                }
            }
        }
        guard let d = day, let m = month, let y = year, y >= 1900, y < 10000, h < 24, mi < 60, s <= 60 else { return nil }
        let days = ISODate.daysFromCivil(y, m, d)
        let secs = days * 86400 + Int64(h * 3600 + mi * 60 + min(s, 59)) - Int64(offsetMin * 60)
        return secs * 1000
    }
}

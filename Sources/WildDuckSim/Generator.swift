import Foundation

/// Shared byte blocks from which generated bodies are sliced (immutable, built once).
enum SynthBlock: Sendable {
    case text
    case base64

    var bytes: [UInt8] {
        switch self {
        case .text: return SynthBlocks.text
        case .base64: return SynthBlocks.base64
        }
    }
}

enum SynthBlocks {
    static let words = ["lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit", "sed", "do", "eiusmod",
                        "tempor", "incididunt", "ut", "labore", "et", "dolore", "magna", "aliqua", "enim", "ad", "minim",
                        "veniam", "quis", "nostrud", "exercitation", "ullamco", "laboris", "nisi", "aliquip", "ex", "ea",
                        "commodo", "consequat", "meeting", "report", "invoice", "schedule", "server", "mailbox", "sync",
                        "release", "budget", "quarterly", "review", "draft", "project", "deadline", "tõnu", "päev", "naïve"]

    /// 256 KiB of CRLF text lines (≤ 76 bytes each).
    static let text: [UInt8] = {
        var g = SplitMix64(seed: 42)
        var out: [UInt8] = []
        out.reserveCapacity(262_144 + 100)
        var line: [UInt8] = []
        while out.count < 262_144 {
            let w = Array(words[Int(g.next() % UInt64(words.count))].utf8)
            if line.count + w.count + 1 > 74 {
                out.append(contentsOf: line); out.append(0x0D); out.append(0x0A)
                line.removeAll(keepingCapacity: true)
                if g.next() % 9 == 0 { out.append(0x0D); out.append(0x0A) }
            }
            if !line.isEmpty { line.append(0x20) }
            line.append(contentsOf: w)
        }
        return out
    }()

    /// 2.2 MB of base64 lines (76 chars + CRLF).
    static let base64: [UInt8] = {
        var g = SplitMix64(seed: 7)
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
        var out: [UInt8] = []
        let lines = 2_200_000 / 78 + 1
        out.reserveCapacity(lines * 78)
        for _ in 0..<lines {
            var r = g.next()
            for i in 0..<76 {
                if i % 10 == 0 { r = g.next() }
                out.append(alphabet[Int(r & 63)]); r >>= 6
            }
            out.append(0x0D); out.append(0x0A)
        }
        return out
    }()
}

extension SimAccount {
    static let firstNames = ["Alice", "Bob", "Carol", "Dave", "Eve", "Mallory", "Trent", "Peggy", "Victor", "Walter", "Mari", "Jüri"]
    static let domains = ["example.com", "example.org", "corp.example", "mail.example.net"]
    static let subjects = ["Quarterly report", "Lunch on Friday?", "Re: server migration", "Invoice", "Release notes", "Meeting notes",
                           "Fwd: travel plans", "Build failed", "Welcome aboard", "Õhtusöök", "Weekly digest", "Re: Re: budget"]

    static func rfc2822(ms: Int64) -> String {
        let iso = ISODate.format(ms: ms) // 2024-01-02T03:04:05.000Z
        let c = Array(iso.utf8)
        func s(_ a: Int, _ b: Int) -> String { String(decoding: c[a..<b], as: UTF8.self) }
        let y = Int(s(0, 4)) ?? 1970, m = Int(s(5, 7)) ?? 1, d = Int(s(8, 10)) ?? 1
        let days = ISODate.daysFromCivil(y, m, d)
        let dow = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][Int(((days % 7) + 7) % 7)]
        let mon = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"][max(0, min(11, m - 1))]
        return "\(dow), \(d) \(mon) \(y) \(s(11, 19)) +0000"
    }

    /// Deterministic bulk generator. Messages get unique Message-IDs, idates spread over the year 2025
    /// (increasing with the index), and a mix of seen (≈70 %) and flagged (≈8 %).
    /// With `corpus`, bodies are corpus files (their Message-ID replaced by a unique one).
    @discardableResult
    public func generate(count: Int, mailboxIds: [String], seed: UInt64 = 1, sizeMix: SimSizeMix = .realistic, corpus: String? = nil) throws -> Int {
        guard count > 0, !mailboxIds.isEmpty else { return 0 }
        let existing = Set(state.withLock { Array($0.mailboxes.keys) })
        for m in mailboxIds where !existing.contains(m) { throw SimAccountError.noSuchMailbox }
        var corpusFiles: [[UInt8]] = []
        if let dir = corpus {
            corpusFiles = try SimAccount.regularFiles(under: dir).compactMap { FileManager.default.contents(atPath: $0).map { [UInt8]($0) } }
        }
        var g = SplitMix64(seed: seed)
        let user = username
        let addr = address
        // fixed window (2025) so that output does not depend on the clock
        let end: Int64 = 1_767_225_600_000
        let start = end - 365 * 24 * 3600 * 1000
        let step = max(1, (end - start) / Int64(count))
        let textBlock = SynthBlocks.text
        let b64Block = SynthBlocks.base64
        for i in 0..<count {
            let mailbox = mailboxIds[Int(g.next() % UInt64(mailboxIds.count))]
            let idate = start + Int64(i) * step + Int64(g.next() % UInt64(max(1, step / 2)))
            let seen = g.next() % 100 < 70
            let flagged = g.next() % 100 < 8
            let msgId = "<gen.\(seed).\(i).\(Hex.fixed(g.next() & 0xFFFF_FFFF, width: 8))@wdsync.sim>"
            let name = SimAccount.firstNames[Int(g.next() % UInt64(SimAccount.firstNames.count))]
            let domain = SimAccount.domains[Int(g.next() % UInt64(SimAccount.domains.count))]
            let subject = SimAccount.subjects[Int(g.next() % UInt64(SimAccount.subjects.count))] + " #\(i + 1)"
            let source: RawSource
            let parsed: ParsedMail
            if !corpusFiles.isEmpty {
                let file = corpusFiles[Int(g.next() % UInt64(corpusFiles.count))]
                let raw = SimAccount.replacingMessageId(file, with: msgId)
                source = .bytes(raw)
                parsed = MailParser.parse(raw)
            } else {
                let big: Bool
                let bodyLen: Int
                switch sizeMix {
                case .small:
                    big = false
                    bodyLen = 1500 + Int(g.next() % 800)
                case .realistic:
                    big = g.next() % 100 < 3
                    if big {
                        bodyLen = 200_000 + Int(g.next() % 1_800_000)
                    } else {
                        // log-uniform-ish between 2 and 30 KB
                        let u = Double(g.next() % 10_000) / 10_000
                        bodyLen = Int(1500 * pow(15.0, u))
                    }
                }
                let dateMs = (idate - 60_000) / 1000 * 1000
                let cc = g.next() % 4 == 0
                let refs = subject.hasPrefix("Re:") ? ["<thread.\(i % 97)@wdsync.sim>"] : []
                var h = "Return-Path: <\(name.lowercased())@\(domain)>\r\n"
                h += "Message-ID: \(msgId)\r\n"
                h += "Date: \(SimAccount.rfc2822(ms: dateMs))\r\n"
                h += "From: \(name) <\(name.lowercased())@\(domain)>\r\n"
                h += "To: \(user) <\(addr)>\r\n"
                if cc { h += "Cc: team@\(domain)\r\n" }
                h += "Subject: \(subject)\r\n"
                if let r = refs.first { h += "References: \(r)\r\nIn-Reply-To: \(r)\r\n" }
                h += "MIME-Version: 1.0\r\n"
                if big {
                    let boundary = "----=_sim_\(i)"
                    h += "Content-Type: multipart/mixed; boundary=\"\(boundary)\"\r\n\r\n"
                    h += "--\(boundary)\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
                    let off = Int(g.next() % UInt64(textBlock.count - 2000))
                    var prefix = Array(h.utf8)
                    prefix.append(contentsOf: textBlock[off..<(off + 1200)])
                    prefix.append(contentsOf: Array("\r\n--\(boundary)\r\nContent-Type: application/octet-stream; name=\"data\(i).bin\"\r\nContent-Disposition: attachment; filename=\"data\(i).bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n".utf8))
                    let len = min(b64Block.count, bodyLen) / 78 * 78
                    let suffix = Array("--\(boundary)--\r\n".utf8)
                    source = .composed(prefix: prefix, block: .base64, offset: 0, length: len, suffix: suffix)
                    parsed = SimAccount.synthParsed(name: name, domain: domain, user: user, addr: addr, cc: cc, subject: subject,
                                                    msgId: msgId, refs: refs, dateMs: dateMs, contentType: "multipart/mixed",
                                                    params: [("boundary", boundary)], introBytes: textBlock[off..<(off + 400)],
                                                    attachment: (filename: "data\(i).bin", contentType: "application/octet-stream", size: len))
                } else {
                    h += "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
                    let len = min(bodyLen, textBlock.count - 1)
                    let off = Int(g.next() % UInt64(textBlock.count - len))
                    let prefix = Array(h.utf8)
                    source = .composed(prefix: prefix, block: .text, offset: off, length: len, suffix: [0x0D, 0x0A])
                    parsed = SimAccount.synthParsed(name: name, domain: domain, user: user, addr: addr, cc: cc, subject: subject,
                                                    msgId: msgId, refs: refs, dateMs: dateMs, contentType: "text/plain",
                                                    params: [("charset", "utf-8")], introBytes: textBlock[off..<min(off + 400, off + len)],
                                                    attachment: nil)
                }
            }
            _ = try deliver(source: source, parsed: parsed, to: mailbox, flags: MsgFlags(seen: seen, flagged: flagged), idateMs: idate)
        }
        return count
    }

    static func synthParsed(name: String, domain: String, user: String, addr: String, cc: Bool, subject: String, msgId: String,
                            refs: [String], dateMs: Int64, contentType: String, params: [(String, String)], introBytes: ArraySlice<UInt8>,
                            attachment: (filename: String, contentType: String, size: Int)?) -> ParsedMail {
        var p = ParsedMail()
        p.subject = subject
        p.from = SimAddress(name: name, address: "\(name.lowercased())@\(domain)")
        p.to = [SimAddress(name: user, address: addr)]
        if cc { p.cc = [SimAddress(name: "", address: "team@\(domain)")] }
        p.dateMs = dateMs
        p.messageId = msgId
        p.references = refs
        p.inReplyTo = refs.first
        p.contentType = contentType
        p.contentTypeParams = params
        p.text = String(decoding: introBytes, as: UTF8.self)
        p.intro = MailParser.intro(p.text)
        if let a = attachment {
            p.hasAttachments = true
            p.attachmentNames = [a]
        }
        return p
    }

    /// Removes Message-ID header lines and prepends a new one (keeps the file's line ending style).
    static func replacingMessageId(_ raw: [UInt8], with id: String) -> [UInt8] {
        let crlf = raw.firstIndex(of: [0x0D, 0x0A]) != nil
        let (_, bodyStart) = MailParser.headers(raw)
        var out = Array("Message-ID: \(id)\(crlf ? "\r\n" : "\n")".utf8)
        var i = 0
        var skipping = false
        while i < bodyStart {
            var j = i
            while j < bodyStart, raw[j] != 0x0A { j += 1 }
            let line = raw[i..<min(j + 1, bodyStart)]
            let isCont = line.first == 0x20 || line.first == 0x09
            if !isCont {
                let lower = String(decoding: line.prefix(11), as: UTF8.self).lowercased()
                skipping = lower == "message-id:"
            }
            if !skipping { out.append(contentsOf: line) }
            i = j + 1
        }
        if bodyStart < raw.count { out.append(contentsOf: raw[bodyStart...]) }
        return out
    }
}

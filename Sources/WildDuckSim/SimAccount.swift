import Foundation
import Lock
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - public value types

public struct SimMailbox: Sendable, Equatable {
    public var id: String
    public var path: String
    public var specialUse: String?
    public var modifyIndex: Int
    public var total: Int
    public var unseen: Int
    public var subscribed: Bool
    public var hidden: Bool
    public var name: String { path.split(separator: "/", omittingEmptySubsequences: false).last.map(String.init) ?? path }
}

public struct SimMessage: Sendable {
    public var uid: Int
    public var messageId: String
    public var size: Int
    public var raw: [UInt8]
    public var seen: Bool
    public var flagged: Bool
    public var draft: Bool
    public var deleted: Bool
    public var answered: Bool
    public var forwarded: Bool
    public var idate: Date
    public var subject: String
    public var thread: String
    /// The flag list (what IMAP and SSE FETCH events show). `flagged` and `draft` above are what
    /// listings show, which a REST update with `draft` makes differ from this list.
    public var flags: [String]
}

public enum SimSizeMix: Sendable {
    /// mostly 2–30 KB, about 3 % between 200 KB and 2 MB
    case realistic
    /// about 2 KB each
    case small
}

public enum SimAccountError: Error, Sendable, Equatable, CustomStringConvertible {
    case noSuchMailbox
    case mailboxExists
    case renameTargetExists
    case disallowed(String)
    case invalidPath(String)
    case messageNotFound
    case io(String)

    public var description: String {
        switch self {
        case .noSuchMailbox: return "Mailbox update failed with code NoSuchMailbox"
        case .mailboxExists: return "Mailbox creation failed with code MailboxAlreadyExists"
        case .renameTargetExists: return "Mailbox rename failed with code MailboxAlreadyExists"
        case let .disallowed(m): return m
        case let .invalidPath(m): return m
        case .messageNotFound: return "Message was not found"
        case let .io(m): return m
        }
    }
}

// MARK: - internal storage

/// Where the bytes of a message come from. Generated messages are composed from shared blocks, so that
/// 100 000 of them cost little memory.
enum RawSource: Sendable {
    case bytes([UInt8])
    case composed(prefix: [UInt8], block: SynthBlock, offset: Int, length: Int, suffix: [UInt8])

    var count: Int {
        switch self {
        case let .bytes(b): return b.count
        case let .composed(p, _, _, l, s): return p.count + l + s.count
        }
    }

    func write(to out: inout [UInt8]) {
        switch self {
        case let .bytes(b): out.append(contentsOf: b)
        case let .composed(p, block, o, l, s):
            out.append(contentsOf: p)
            let data = block.bytes
            out.append(contentsOf: data[o..<(o + l)])
            out.append(contentsOf: s)
        }
    }

    var bytes: [UInt8] {
        if case let .bytes(b) = self { return b }
        var out: [UInt8] = []
        out.reserveCapacity(count)
        write(to: &out)
        return out
    }
}

/// Immutable per-message content, shared between the source and target of a move.
final class MessageContent: Sendable {
    let source: RawSource
    let size: Int
    let messageId: String
    let thread: String
    let subject: String
    let parsed: ParsedMail
    let dateMs: Int64?
    /// The list-item fields that never change, serialised once: `"thread":...,"size":N` (no braces).
    let staticJSON: [UInt8]

    init(source: RawSource, parsed: ParsedMail, messageId: String, thread: String) {
        self.source = source
        self.size = source.count
        self.messageId = messageId
        self.thread = thread
        self.subject = parsed.subject
        self.parsed = parsed
        self.dateMs = parsed.dateMs
        var pairs: [(String, JSONValue)] = [
            ("thread", .string(thread)),
            ("from", parsed.from.map { $0.json } ?? .null),
            ("to", .array(parsed.to.map { $0.json })),
            ("cc", .array(parsed.cc.map { $0.json })),
            ("bcc", .array(parsed.bcc.map { $0.json })),
            ("messageId", .string(messageId)),
            ("subject", .string(parsed.subject)),
            ("intro", .string(parsed.intro)),
            ("attachments", .bool(parsed.hasAttachments)),
            ("size", .int(source.count)),
            ("references", .array(parsed.references.map { .string($0) })),
            ("encrypted", .bool(parsed.contentType == "multipart/encrypted")),
        ]
        if let ct = parsed.contentType {
            var ctPairs: [(String, JSONValue)] = [("value", .string(ct))]
            if !parsed.contentTypeParams.isEmpty {
                ctPairs.append(("params", .object(parsed.contentTypeParams.map { ($0.0, .string($0.1)) })))
            }
            pairs.append(("contentType", .object(ctPairs)))
        }
        var out: [UInt8] = []
        JSONValue.object(pairs).write(to: &out)
        // strip the braces
        staticJSON = Array(out.dropFirst().dropLast())
    }
}

struct MsgFlags: Sendable, Equatable {
    var seen = false, flagged = false, draft = false, deleted = false, answered = false, forwarded = false
    /// WildDuck keeps `flagged` and `draft` booleans beside the flag list, and listings and search read the
    /// booleans. A REST flag update with `draft` writes the `flagged` boolean and never the `draft` one
    /// (https://github.com/nodemailer/wildduck/blob/08c5804798e7ffe1b281859c4edcec2465d058c2/lib/message-handler.js, `update`), so they can
    /// disagree with the list; nil means "agrees with the list".
    var flaggedField: Bool? = nil, draftField: Bool? = nil

    /// What listings, search and the single-message view report.
    var listedFlagged: Bool { flaggedField ?? flagged }
    var listedDraft: Bool { draftField ?? draft }

    var list: [String] {
        var f: [String] = []
        if answered { f.append("\\Answered") }
        if deleted { f.append("\\Deleted") }
        if draft { f.append("\\Draft") }
        if flagged { f.append("\\Flagged") }
        if seen { f.append("\\Seen") }
        if forwarded { f.append("$Forwarded") }
        return f
    }
}

struct MsgRecord: Sendable {
    var uid: Int
    var idate: Int64
    var seq: Int64
    var flags: MsgFlags
    let content: MessageContent
    /// The stored message's `_id`; a move stores a new copy with a new one.
    var objectId: String
    /// Set when the message was stored in (or moved into) Junk.
    var junk = false
    /// Set when the message was stored (or moved) without \Deleted; search's `unseen` and `searchable`
    /// filters need it. Later flag changes leave it alone, as in WildDuck.
    var searchable = true

    var key: SortKey { SortKey(a: idate, b: Int64(uid)) }
}

struct SortKey: Comparable, Sendable {
    var a: Int64
    var b: Int64
    static func < (l: SortKey, r: SortKey) -> Bool { l.a != r.a ? l.a < r.a : l.b < r.b }
}

struct MailboxState: Sendable {
    let id: String
    var path: String
    var specialUse: String?
    var modifyIndex = 0
    var uidNext = 1
    var subscribed = true
    var hidden = false
    var encryptMessages = false
    var retention: Int?
    /// sorted by (idate, uid)
    var byDate: [MsgRecord] = []
    /// uid → idate, to find a record in `byDate`
    var idateByUid: [Int: Int64] = [:]
    /// ascending
    var uids: [Int] = []
    var unseen = 0

    func index(ofUid uid: Int) -> Int? {
        guard let d = idateByUid[uid] else { return nil }
        let k = SortKey(a: d, b: Int64(uid))
        let i = Paging.lowerBound(byDate.count) { byDate[$0].key < k }
        return i < byDate.count && byDate[i].uid == uid ? i : nil
    }

    mutating func insert(_ r: MsgRecord) {
        let k = r.key
        if let last = byDate.last, last.key < k { byDate.append(r) } else {
            let i = Paging.lowerBound(byDate.count) { byDate[$0].key < k }
            byDate.insert(r, at: i)
        }
        idateByUid[r.uid] = r.idate
        if let l = uids.last, l > r.uid {
            let i = Paging.lowerBound(uids.count) { uids[$0] < r.uid }
            uids.insert(r.uid, at: i)
        } else { uids.append(r.uid) }
        if !r.flags.seen { unseen += 1 }
    }

    mutating func remove(uid: Int) -> MsgRecord? {
        guard let i = index(ofUid: uid) else { return nil }
        let r = byDate.remove(at: i)
        idateByUid[uid] = nil
        let j = Paging.lowerBound(uids.count) { uids[$0] < uid }
        if j < uids.count, uids[j] == uid { uids.remove(at: j) }
        if !r.flags.seen { unseen -= 1 }
        return r
    }

    var publicValue: SimMailbox {
        SimMailbox(id: id, path: path, specialUse: specialUse, modifyIndex: modifyIndex, total: byDate.count, unseen: unseen,
                   subscribed: subscribed, hidden: hidden)
    }
}

struct FilterState: Sendable {
    let id: String
    var name: String
    var created: Int64
    var disabled = false
    var query: JSONValue = .object([("from", .string("alerts@example.com"))])
    var action: JSONValue = .object([("seen", .bool(true))])
    var metaData: JSONValue?
}

struct AutoreplyState: Sendable {
    var status = false
    var name = ""
    var subject = ""
    var text = ""
    var html = ""
    var start: Int64?
    var end: Int64?
    var created: Int64?
}

/// One journal entry, as WildDuck's notifier writes it.
struct JournalEntry: Sendable {
    let id: String
    let created: Int64
    let command: String
    let mailbox: String?
    /// the payload without `command`, in the order the server sends it
    let fields: [(String, JSONValue)]
    /// FETCH: the update touched `seen`; EXISTS/EXPUNGE: the message was unseen
    let unseenChange: Bool
}

/// The ObjectIds one server process makes: 4-byte timestamp (seconds), 5 random bytes per process,
/// 3-byte counter.
struct IdSource: Sendable {
    var time: UInt32 = 0
    var random: UInt64
    var counter: UInt32 = 0
}

/// The server process that writes a change, and so makes its journal entries' ids. WildDuck runs its
/// API, IMAP and LMTP servers as separate processes (and usually several of each); the MongoDB driver
/// in each makes the `_id` of every journal entry it inserts (`insertMany` without `_id`,
/// https://github.com/nodemailer/wildduck/blob/08c5804798e7ffe1b281859c4edcec2465d058c2/lib/imap-notifier.js#L223-L226),
/// so ids are ordered by second, and within a second by process, not by the order of the writes.
public enum SimProcess: Int, Sendable {
    /// The REST API: what wdsync itself sends.
    case api = 0
    /// Another client (IMAP STORE, MOVE, APPEND, CREATE…) or a delivery (LMTP): every change the
    /// simulator's own methods make. Its ids sort after the API's within the same second, so an entry
    /// the API writes after one of its own in that second lands behind it.
    case other = 1
}

struct AccountState: Sendable {
    var idSources: [IdSource]
    var seq: Int64 = 0
    var userId = ""
    var username: String
    var password: String
    var user: [String: String] = [:]
    var quota = 1_073_741_824
    /// Bytes stored (the user's `storageUsed`), kept up to date by add and expunge.
    var storageUsed = 0
    var mailboxes: [String: MailboxState] = [:]
    var pathIndex: [String: String] = [:]
    var tokens: Set<String> = []
    var filters: [FilterState] = []
    var autoreply = AutoreplyState()
    var journal: [JournalEntry] = []
    var journalTTLms: Int64 = 3 * 3600 * 1000
    var journalGeneration: UInt64 = 0
    /// Largest accepted upload (WildDuck's MAX_ALLOWED_MESSAGE_SIZE, 64 MiB).
    var maxMessageSize = 64 * 1024 * 1024
    /// Milliseconds since the epoch; replaceable so tests can age the journal.
    var clock: @Sendable () -> Int64 = { nowMillis() }
    /// The user's failed authentications and when their count expires (`authenticate`).
    var authFailures = 0
    var authFailuresExpire: Int64 = 0

    init(username: String, password: String) {
        self.username = username
        self.password = password
        var g = SystemRandomNumberGenerator()
        let random = UInt64.random(in: 0...0x7F_FFFF_FFFF, using: &g)
        // Which of two processes sorts first within a second is fixed per pair; here the API's (see SimProcess).
        idSources = [IdSource(random: random), IdSource(random: random | 0x80_0000_0000)]
    }

    /// 24-hex ids shaped like Mongo ObjectIds from `process`: the first 4 bytes are the creation time in
    /// seconds. One process's ids only go up (a clock that steps back keeps the last second); two processes'
    /// ids made in the same second sort by process, not by creation.
    mutating func newId(_ process: SimProcess = .api) -> String {
        var source = idSources[process.rawValue]
        defer { idSources[process.rawValue] = source }
        let secs = UInt32(clamping: max(0, clock() / 1000))
        if secs > source.time { source.time = secs }
        source.counter += 1
        if source.counter > 0xFF_FFFF { source.counter = 0; source.time &+= 1 }
        return Hex.fixed(UInt64(source.time), width: 8) + Hex.fixed(source.random, width: 10) + Hex.fixed(UInt64(source.counter), width: 6)
    }

    /// Adds a journal entry written by `process`. The journal is kept in `_id` order, as WildDuck's
    /// replay reads it (`sort({_id: 1})` in lib/api/updates.js), so an entry can land behind ids a reader
    /// already passed.
    mutating func publish(_ command: String, mailbox: String?, _ fields: [(String, JSONValue)], unseenChange: Bool = false,
                          process: SimProcess = .other) {
        let now = clock()
        let entry = JournalEntry(id: newId(process), created: now, command: command, mailbox: mailbox, fields: fields, unseenChange: unseenChange)
        if let last = journal.last, last.id > entry.id {
            journal.insert(entry, at: Paging.lowerBound(journal.count) { journal[$0].id < entry.id })
        } else {
            journal.append(entry)
        }
        journalGeneration &+= 1
        expireJournal(now: now)
    }

    /// Drops entries older than the TTL (the server's TTL index on `created`).
    mutating func expireJournal(now: Int64) {
        guard let first = journal.first, now - first.created > journalTTLms else { return }
        let cut = journal.firstIndex(where: { now - $0.created <= journalTTLms }) ?? journal.count
        journal.removeFirst(cut)
    }
}

/// A copy of a whole account (`SimAccount.snapshot`, `observeChanges`).
public struct SimSnapshot: Sendable {
    let state: AccountState
}

// MARK: - SimAccount

/// An in-memory WildDuck account. All methods are thread-safe.
public final class SimAccount: Sendable {
    let state: Mutex<AccountState>
    /// Signalled (broadcast) after every journal append; used by the SSE stream.
    let journalSignal = JournalSignal()
    /// Told of every step of a write, outside the lock (see `onWriteStep`).
    let stepHook = Mutex<(@Sendable (SimWriteStep) -> Void)?>(nil)

    /// `clock`: the server's time from the start (see `setClock`), for a server whose clock is
    /// off the client's: ids never go back in time, so a clock set later can only move on.
    public init(username: String = "demo", password: String = "demo", clock: (@Sendable () -> Date)? = nil) {
        var s = AccountState(username: username, password: password)
        if let clock { s.clock = { millis(clock()) } }
        s.userId = s.newId()
        s.user = ["name": username.prefix(1).uppercased() + username.dropFirst(), "address": "\(username)@example.com"]
        state = Mutex(s)
        for (path, su) in [("INBOX", nil), ("Sent Mail", "\\Sent"), ("Trash", "\\Trash"), ("Drafts", "\\Drafts"), ("Junk", "\\Junk")] as [(String, String?)] {
            _ = try? createMailbox(path: path, specialUse: su)
        }
        // default folders are not announced on the journal
        state.withLock { $0.journal.removeAll() }
    }

    /// Called with a copy of the account after every change (`observeChanges`).
    let changeObserver = Mutex<(@Sendable (SimSnapshot) -> Void)?>(nil)

    /// Calls `body` with a copy of the whole account after every change, before the change is
    /// answered or announced (nil stops it). For the crash-state tests, which put the account
    /// back as it was at a point of a recorded run (`restore`); not a WildDuck behaviour.
    public func observeChanges(_ body: (@Sendable (SimSnapshot) -> Void)?) {
        changeObserver.withLock { $0 = body }
    }

    /// The whole account as it is now (messages, mailboxes, journal, counters).
    public func snapshot() -> SimSnapshot { state.withLock { SimSnapshot(state: $0) } }

    /// Puts the whole account back as it was at `snapshot`.
    public func restore(_ snapshot: SimSnapshot) { mutate { $0 = snapshot.state } }

    public var userId: String { state.withLock { $0.userId } }
    public var username: String { state.withLock { $0.username } }
    public var password: String { state.withLock { $0.password } }
    public var address: String { state.withLock { $0.user["address"] ?? "" } }

    func mutate<R>(_ body: (inout AccountState) throws -> R) rethrows -> R {
        let r = try state.withLock { s in
            let r = try body(&s)
            // Under the account's lock, so each snapshot is exactly one change later than the last.
            if let observe = changeObserver.withLock({ $0 }) { observe(SimSnapshot(state: s)) }
            return r
        }
        // Every change wakes the streams: SSE reads the journal, /ws also watches settings,
        // filters, autoreply and tokens, which are not journaled.
        journalSignal.broadcast()
        return r
    }

    // MARK: mailboxes

    static func validate(path: String) throws {
        guard !path.isEmpty, !path.hasPrefix("/"), !path.hasSuffix("/"), !path.contains("//") else {
            throw SimAccountError.invalidPath("\"path\" contains an invalid value")
        }
        let segs = path.split(separator: "/", omittingEmptySubsequences: false)
        guard segs.count <= 128 else { throw SimAccountError.disallowed("Mailbox path is too deep") }
        guard segs.allSatisfy({ $0.utf8.count <= 512 }) else { throw SimAccountError.disallowed("Mailbox name is too long") }
    }

    static func normalise(_ path: String) -> String {
        if path.uppercased() == "INBOX" { return "INBOX" }
        if path.uppercased().hasPrefix("INBOX/") { return "INBOX" + path.dropFirst(5) }
        return path
    }

    @discardableResult
    public func createMailbox(path: String, specialUse: String? = nil) throws -> String {
        try createMailbox(path: path, specialUse: specialUse, hidden: false, retention: nil, encryptMessages: false)
    }

    @discardableResult
    public func createMailbox(path rawPath: String, specialUse: String?, hidden: Bool, retention: Int?, encryptMessages: Bool,
                              process: SimProcess = .other) throws -> String {
        try SimAccount.validate(path: rawPath)
        let path = SimAccount.normalise(rawPath)
        return try mutate { s in
            guard s.pathIndex[path] == nil else { throw SimAccountError.mailboxExists }
            guard s.mailboxes.count < 1500 else { throw SimAccountError.disallowed("Mailbox limit reached") }
            let id = s.newId()
            var mb = MailboxState(id: id, path: path, specialUse: specialUse)
            mb.hidden = hidden
            mb.retention = retention ?? ((specialUse == "\\Trash" || specialUse == "\\Junk") ? 30 * 24 * 3600 * 1000 : nil)
            mb.encryptMessages = encryptMessages
            s.mailboxes[id] = mb
            s.pathIndex[path] = id
            s.publish("CREATE", mailbox: id, [("mailbox", .string(id)), ("path", .string(path))], process: process)
            return id
        }
    }

    public func renameMailbox(id: String, to rawPath: String, process: SimProcess = .other) throws {
        try SimAccount.validate(path: rawPath)
        let path = SimAccount.normalise(rawPath)
        try mutate { s in
            guard let mb = s.mailboxes[id] else { throw SimAccountError.noSuchMailbox }
            guard mb.path != "INBOX" else { throw SimAccountError.disallowed("INBOX can not be renamed") }
            guard !mb.hidden else { throw SimAccountError.disallowed("Hidden mailboxes can not be renamed") }
            if mb.path == path { return }
            guard s.pathIndex[path] == nil else { throw SimAccountError.renameTargetExists }
            guard path != "INBOX" else { throw SimAccountError.renameTargetExists }
            let old = mb.path
            // the mailbox itself and its children
            let affected = s.mailboxes.values.filter { $0.path == old || $0.path.hasPrefix(old + "/") }
                .sorted { $0.path.count < $1.path.count }
            for m in affected {
                let newPath = path + m.path.dropFirst(old.count)
                s.pathIndex[m.path] = nil
                s.pathIndex[newPath] = m.id
                s.mailboxes[m.id]?.path = newPath
                s.publish("RENAME", mailbox: m.id, [("mailbox", .string(m.id)), ("path", .string(newPath))], process: process)
            }
        }
    }

    /// A plain update: no journal entry, no modifyIndex step, hiding included
    /// (https://github.com/nodemailer/wildduck/blob/08c5804798e7ffe1b281859c4edcec2465d058c2/lib/mailbox-handler.js#L390-L450);
    /// a hidden mailbox cannot be renamed or deleted (#L169, #L266).
    public func updateMailbox(id: String, subscribed: Bool? = nil, hidden: Bool? = nil, encryptMessages: Bool? = nil, retention: Int? = nil) throws {
        try mutate { s in
            guard s.mailboxes[id] != nil else { throw SimAccountError.noSuchMailbox }
            if let v = subscribed { s.mailboxes[id]?.subscribed = v }
            if let v = hidden { s.mailboxes[id]?.hidden = v }
            if let v = encryptMessages { s.mailboxes[id]?.encryptMessages = v }
            if let v = retention { s.mailboxes[id]?.retention = v }
        }
    }

    public func deleteMailbox(id: String, process: SimProcess = .other) throws {
        try mutate { s in
            guard let mb = s.mailboxes[id] else { throw SimAccountError.noSuchMailbox }
            guard mb.path != "INBOX" else { throw SimAccountError.disallowed("INBOX can not be deleted") }
            guard mb.specialUse == nil else { throw SimAccountError.disallowed("Special use mailboxes can not be deleted") }
            guard !mb.hidden else { throw SimAccountError.disallowed("Hidden mailboxes can not be deleted") }
            s.mailboxes[id] = nil
            s.pathIndex[mb.path] = nil
            s.storageUsed -= mb.byDate.reduce(0) { $0 + $1.content.size }
            s.publish("DELETE", mailbox: id, [("mailbox", .string(id))], process: process)
        }
    }

    public func mailboxId(path: String) -> String? {
        state.withLock { $0.pathIndex[SimAccount.normalise(path)] }
    }

    /// All mailboxes, in the order of the REST list (hidden ones included).
    public func mailboxes() -> [SimMailbox] {
        state.withLock { s in SimAccount.sorted(Array(s.mailboxes.values)).map { $0.publicValue } }
    }

    func mailboxStates() -> [MailboxState] {
        state.withLock { s in SimAccount.sorted(s.mailboxes.values.map { m in var c = m; c.byDate = []; c.idateByUid = [:]; c.uids = []; return c }) }
    }

    /// INBOX first, then INBOX/…, then subscribed before unsubscribed, then by path (locale-like: case-insensitive first).
    static func sorted(_ list: [MailboxState]) -> [MailboxState] {
        list.sorted { a, b in
            func rank(_ m: MailboxState) -> Int { m.path == "INBOX" ? 0 : (m.path.hasPrefix("INBOX/") ? 1 : 2) }
            let ra = rank(a), rb = rank(b)
            if ra != rb { return ra < rb }
            if a.subscribed != b.subscribed { return a.subscribed }
            let la = a.path.lowercased(), lb = b.path.lowercased()
            if la != lb { return la < lb }
            return a.path < b.path
        }
    }

    // MARK: messages

    static func threadId(for parsed: ParsedMail, messageId: String) -> String {
        let root = parsed.references.first ?? parsed.inReplyTo?.trimmedWS ?? messageId
        let subj = parsed.subject.lowercased().replacingOccurrences(of: "re: ", with: "").replacingOccurrences(of: "fwd: ", with: "")
        let h1 = FNV.hash64(Array(root.utf8))
        let h2 = FNV.hash64(Array(subj.utf8))
        return Hex.fixed(h1, width: 16) + Hex.fixed(h2 >> 32, width: 8)
    }

    func makeContent(_ source: RawSource, parsed: ParsedMail) -> MessageContent {
        let mid = parsed.messageId ?? "<\(uuidString())@wildduck.email>"
        return MessageContent(source: source, parsed: parsed, messageId: mid, thread: SimAccount.threadId(for: parsed, messageId: mid))
    }

    /// Stores a message as a delivery or another client's APPEND would. Like WildDuck, the simulator keeps
    /// the message rebuilt (CRLF line endings, see `Rebuild`), so `raw` may not come back byte for byte.
    @discardableResult
    public func deliver(_ raw: [UInt8], to mailboxId: String, seen: Bool = false, flagged: Bool = false, draft: Bool = false, idate: Date? = nil) throws -> Int {
        let stored = Rebuild.message(raw)
        let parsed = MailParser.parse(stored)
        let ms = idate.map(millis)
        return try deliver(source: .bytes(stored), parsed: parsed, to: mailboxId, flags: MsgFlags(seen: seen, flagged: flagged, draft: draft), idateMs: ms).uid
    }

    public func expunge(mailboxId: String, uid: Int, process: SimProcess = .other) throws {
        try mutate { s in
            guard s.mailboxes[mailboxId] != nil else { throw SimAccountError.noSuchMailbox }
            guard s.expunge(mailboxId: mailboxId, uid: uid, process: process) else { throw SimAccountError.messageNotFound }
        }
    }

    /// Storage quota in bytes (default 1 GiB). Uploads are refused once the stored bytes exceed it.
    public var quota: Int {
        get { state.withLock { $0.quota } }
        set { state.withLock { $0.quota = newValue } }
    }

    /// Largest upload accepted, in bytes (default 64 MiB, WildDuck's MAX_ALLOWED_MESSAGE_SIZE).
    public var maxMessageSize: Int {
        get { state.withLock { $0.maxMessageSize } }
        set { state.withLock { $0.maxMessageSize = newValue } }
    }

    /// Replaces the clock used for journal times, ids and default internal dates (tests age the journal with it).
    public func setClock(_ clock: @escaping @Sendable () -> Date) {
        mutate { $0.clock = { millis(clock()) } }
    }

    /// The server's time (milliseconds since the epoch): journal ids and `Date` headers use it.
    var serverMillis: Int64 { state.withLock { $0.clock() } }

    public func messages(mailboxId: String) -> [SimMessage] {
        let records = state.withLock { s -> [MsgRecord] in
            guard let mb = s.mailboxes[mailboxId] else { return [] }
            return mb.uids.compactMap { uid in mb.index(ofUid: uid).map { mb.byDate[$0] } }
        }
        return records.map { r in
            SimMessage(uid: r.uid, messageId: r.content.messageId, size: r.content.size, raw: r.content.source.bytes,
                       seen: r.flags.seen, flagged: r.flags.listedFlagged, draft: r.flags.listedDraft, deleted: r.flags.deleted,
                       answered: r.flags.answered, forwarded: r.flags.forwarded,
                       idate: Date(timeIntervalSince1970: Double(r.idate) / 1000), subject: r.content.subject, thread: r.content.thread,
                       flags: r.flags.list)
        }
    }

    func record(mailboxId: String, uid: Int) -> MsgRecord? {
        state.withLock { s in
            guard let mb = s.mailboxes[mailboxId], let i = mb.index(ofUid: uid) else { return nil }
            return mb.byDate[i]
        }
    }

    // MARK: user, filters, autoreply, tokens

    public func updateUser(_ fields: [String: String]) {
        mutate { s in
            for (k, v) in fields {
                if k == "password" { s.password = v; s.tokens.removeAll(); continue }
                s.user[k] = v
            }
        }
    }

    func userField(_ k: String) -> String? { state.withLock { $0.user[k] } }

    @discardableResult
    public func addFilter(name: String) -> String {
        mutate { s in
            let id = s.newId()
            s.filters.append(FilterState(id: id, name: name, created: nowMillis()))
            return id
        }
    }

    public func deleteFilter(id: String) {
        mutate { s in s.filters.removeAll { $0.id == id } }
    }

    public func setAutoreply(status: Bool, subject: String, text: String) {
        mutate { s in
            s.autoreply.status = status
            s.autoreply.subject = subject
            s.autoreply.text = text
            if s.autoreply.created == nil { s.autoreply.created = nowMillis() }
        }
    }

    public func revokeTokens() { mutate { $0.tokens.removeAll() } }

    /// The tokens that are valid now (tests check that none of them leaks into a log).
    public var validTokens: Set<String> { state.withLock { $0.tokens } }

    public enum Authentication: Sendable { case accepted, refused, rateLimited }

    /// Checks a password for the user as WildDuck does, with its rate limit: 12 failures count
    /// in a window of 120 s that starts at the first (a TTL counter set to expire only when it
    /// is created), and once there are 12 every attempt is refused as rate limited, the right
    /// password included, until the window ends; a success clears the count
    /// (https://github.com/nodemailer/wildduck/blob/08c5804798e7ffe1b281859c4edcec2465d058c2/lib/user-handler.js#L586-L627,
    /// #L1038-L1047, #L3858-L3866; lib/consts.js#L51-L53, lib/lua/ttlcounter.lua). The clock is
    /// the account's (`setClock`).
    public func authenticate(password: String) -> Authentication {
        state.withLock { s in
            let now = s.clock()
            if s.authFailures > 0 && now >= s.authFailuresExpire { s.authFailures = 0 }
            if s.authFailures >= 12 { return .rateLimited }
            guard password == s.password else {
                if s.authFailures == 0 { s.authFailuresExpire = now + 120_000 }
                s.authFailures += 1
                return .refused
            }
            s.authFailures = 0
            return .accepted
        }
    }

    /// Issues a token as `POST /authenticate` would.
    public func issueToken() -> String {
        let t = randomHex(bytes: 20)
        mutate { _ = $0.tokens.insert(t) }
        return t
    }

    func isValid(token: String) -> Bool {
        guard Hex.isHex(token, count: 40) else { return false }
        return state.withLock { $0.tokens.contains(token.lowercased()) }
    }

    func revoke(token: String) { mutate { _ = $0.tokens.remove(token.lowercased()) } }

    /// Journal entries expire after this many seconds (default 3 hours, like the server's TTL index).
    public func setJournalTTL(seconds: Double) {
        mutate { $0.journalTTLms = Int64(seconds * 1000) }
    }

    /// A write that leaves no journal entry (a lost insert, another tool writing to the
    /// database): the message's flags change and its mailbox's `modifyIndex` moves, silently.
    public func setFlagsUnjournaled(mailboxId: String, uid: Int, seen: Bool? = nil, flagged: Bool? = nil) throws {
        try mutate { s in
            guard var mb = s.mailboxes[mailboxId] else { throw SimAccountError.noSuchMailbox }
            guard let i = mb.index(ofUid: uid) else { throw SimAccountError.messageNotFound }
            s.mailboxes[mailboxId] = nil
            defer { s.mailboxes[mailboxId] = mb }
            var f = mb.byDate[i].flags
            if let v = seen { if v != f.seen { mb.unseen += v ? -1 : 1 }; f.seen = v }
            if let v = flagged { f.flagged = v; f.flaggedField = nil }
            mb.byDate[i].flags = f
            mb.modifyIndex += 1
        }
    }

    // MARK: seeding

    /// Delivers every regular file under `directory` (recursively, sorted by path) into the mailbox.
    @discardableResult
    public func seed(directory: String, mailboxId: String) throws -> Int {
        let files = try SimAccount.regularFiles(under: directory)
        var n = 0
        for f in files {
            guard let data = FileManager.default.contents(atPath: f) else { continue }
            try deliver([UInt8](data), to: mailboxId)
            n += 1
        }
        return n
    }

    static func regularFiles(under directory: String) throws -> [String] {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDir), isDir.boolValue else {
            throw SimAccountError.io("not a directory: \(directory)")
        }
        guard let subs = try? FileManager.default.subpathsOfDirectory(atPath: directory) else {
            throw SimAccountError.io("cannot read \(directory)")
        }
        let base = directory.hasSuffix("/") ? String(directory.dropLast()) : directory
        return subs.sorted().map { base + "/" + $0 }.filter { p in
            var d: ObjCBool = false
            guard FileManager.default.fileExists(atPath: p, isDirectory: &d), !d.boolValue else { return false }
            let attrs = try? FileManager.default.attributesOfItem(atPath: p)
            return (attrs?[.type] as? FileAttributeType) == .typeRegular
        }
    }
}

// MARK: - mutations on the locked state

/// The flags a REST update can write.
enum FlagKey: String, Sendable {
    case seen, deleted, flagged, draft
}

extension MailboxState {
    /// Uids present in the mailbox that `set` selects, ascending.
    func uids(matching set: UidSet) -> [Int] {
        var out: [Int] = []
        for range in set.ranges {
            var i = Paging.lowerBound(uids.count) { uids[$0] < range.lowerBound }
            while i < uids.count, uids[i] <= range.upperBound { out.append(uids[i]); i += 1 }
        }
        return set.ranges.count > 1 ? Array(Set(out)).sorted() : out
    }
}

/// Journal entries for messages, with the keys in the order WildDuck's notifier writes them
/// (https://github.com/nodemailer/wildduck/blob/08c5804798e7ffe1b281859c4edcec2465d058c2/lib/message-handler.js).
enum Entry {
    static func exists(_ r: MsgRecord, mailbox: String, junk: Int? = nil) -> [(String, JSONValue)] {
        var f: [(String, JSONValue)] = [("uid", .int(r.uid)), ("message", .string(r.objectId)), ("idate", .string(ISODate.format(ms: r.idate))),
                                        ("thread", .string(r.content.thread))]
        if let junk { f.append(("junk", .int(junk))) }
        return f + [("mailbox", .string(mailbox))]
    }

    static func expunge(uid: Int, objectId: String, thread: String, mailbox: String) -> [(String, JSONValue)] {
        [("uid", .int(uid)), ("message", .string(objectId)), ("thread", .string(thread)), ("mailbox", .string(mailbox))]
    }

    static func fetch(_ r: MsgRecord, mailbox: String) -> [(String, JSONValue)] {
        [("uid", .int(r.uid)), ("flags", .array(r.flags.list.map { .string($0) })), ("thread", .string(r.content.thread)),
         ("message", .string(r.objectId)), ("mailbox", .string(mailbox))]
    }
}

extension AccountState {
    /// Journal entries are written in batches of this many (BULK_BATCH_SIZE); each batch of entries that
    /// needs a new modseq raises the mailbox's `modifyIndex` once.
    static let batchSize = 150

    /// Stores a message under a uid `reserve` took (the second step of `SimAccount.deliver`), with its EXISTS
    /// entry. No `modifyIndex` step: the reservation took it.
    mutating func add(content: MessageContent, uid: Int, to mailboxId: String, flags: MsgFlags, idate: Int64,
                      process: SimProcess) {
        guard var mb = mailboxes[mailboxId] else { return }
        mailboxes[mailboxId] = nil // avoid copy-on-write of the big arrays
        seq += 1
        let r = MsgRecord(uid: uid, idate: idate, seq: seq, flags: flags, content: content, objectId: newId(process),
                          junk: mb.specialUse == "\\Junk", searchable: !flags.deleted)
        mb.insert(r)
        mailboxes[mailboxId] = mb
        storageUsed += content.size
        publish("EXISTS", mailbox: mailboxId, Entry.exists(r, mailbox: mailboxId), unseenChange: !flags.seen, process: process)
    }

    mutating func expunge(mailboxId: String, uid: Int, process: SimProcess) -> Bool {
        guard var mb = mailboxes[mailboxId] else { return false }
        mailboxes[mailboxId] = nil
        let r = mb.remove(uid: uid)
        if r != nil { mb.modifyIndex += 1 }
        mailboxes[mailboxId] = mb
        guard let rec = r else { return false }
        storageUsed -= rec.content.size
        publish("EXPUNGE", mailbox: mailboxId, Entry.expunge(uid: uid, objectId: rec.objectId, thread: rec.content.thread, mailbox: mailboxId),
                unseenChange: !rec.flags.seen, process: process)
        return true
    }
}

/// Wakes SSE streams after journal appends: each listener owns a pipe; `broadcast` writes one byte to every pipe,
/// so a listener can `poll()` its client socket and its pipe together.
final class JournalSignal: Sendable {
    private let listeners = Mutex<[Int32: Int32]>([:])   // read fd → write fd

    /// Returns the read end of a new non-blocking pipe, or nil.
    func register() -> Int32? {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { return nil }
        for fd in fds { _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) }
        listeners.withLock { $0[fds[0]] = fds[1] }
        return fds[0]
    }

    func unregister(_ readFD: Int32) {
        let w = listeners.withLock { $0.removeValue(forKey: readFD) }
        if let w { close(w) }
        close(readFD)
    }

    func broadcast() {
        listeners.withLock { l in
            var b: UInt8 = 1
            for (_, w) in l { _ = write(w, &b, 1) }
        }
    }

    /// Empties a listener's pipe.
    static func drain(_ readFD: Int32) {
        var buf = [UInt8](repeating: 0, count: 256)
        while buf.withUnsafeMutableBytes({ read(readFD, $0.baseAddress, 256) }) > 0 {}
    }
}

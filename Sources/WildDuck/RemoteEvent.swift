/// A change on the server, as understood from any source (WebSocket, SSE, a REST poll).
/// The engine does not care where events come from: every source produces these, and anything
/// a source cannot express exactly becomes a "dirty" event that makes the engine ask REST.
public enum RemoteEvent: Sendable, Equatable {
    /// A message appeared (new mail, upload, arriving side of a move). Fetch its metadata.
    case messageAdded(mailbox: String, uid: Int)
    /// The message's complete flag list (IMAP names, e.g. `\Seen`).
    case messageFlags(mailbox: String, uid: Int, flags: [String])
    /// Something about this message changed; re-read it over REST.
    case messageChanged(mailbox: String, uid: Int)
    /// The message left the mailbox (expunge, delete, leaving side of a move).
    case messageRemoved(mailbox: String, uid: Int)
    /// Re-list this mailbox's messages over REST.
    case mailboxDirty(String)
    /// Mailboxes were created, renamed or deleted: re-list mailboxes.
    case mailboxesChanged
    case settingsChanged
    case filtersChanged
    case autoreplyChanged
    /// Anything could have changed: reconcile everything.
    case resync
}

/// A server-Sent Events parser (WHATWG rules, enough for WildDuck's `/updates` stream):
/// feed it bytes as they arrive, get whole events out.
public struct SSEParser: Sendable {
    public struct Event: Sendable, Equatable {
        public var id: String?
        public var event: String?
        public var data: String
        public init(id: String?, event: String?, data: String) { self.id = id; self.event = event; self.data = data }
    }

    private var line: [UInt8] = []
    private var data: [String] = []
    private var event: String?
    private var id: String?
    private var sawField = false
    private var lastWasCR = false
    /// Limit for one event's data, so a hostile stream cannot grow memory without bound.
    public var maxEventSize = 16 << 20
    private var size = 0
    /// Comment lines read so far (WildDuck's `: idling n` heartbeats).
    public private(set) var comments = 0

    public init() {}

    public mutating func feed(_ bytes: UnsafeRawBufferPointer) throws -> [Event] {
        var out: [Event] = []
        for byte in bytes {
            if byte == 10 && lastWasCR { lastWasCR = false; continue }
            lastWasCR = byte == 13
            if byte == 10 || byte == 13 {
                if let e = try endLine() { out.append(e) }
            } else {
                line.append(byte)
                size += 1
                if size > maxEventSize { throw SSEError.eventTooLarge }
            }
        }
        return out
    }

    private mutating func endLine() throws -> Event? {
        defer { line.removeAll(keepingCapacity: true) }
        if line.isEmpty {
            defer { data.removeAll(); event = nil; sawField = false; size = 0 }
            guard sawField, !data.isEmpty || id != nil else { return nil }
            return Event(id: id, event: event, data: data.joined(separator: "\n"))
        }
        // A comment (heartbeat) is dropped once read: it no longer counts towards the event's
        // size, so a stream of heartbeats between events never hits the limit.
        if line.first == UInt8(ascii: ":") { size -= line.count; comments += 1; return nil }
        let text = String(decoding: line, as: UTF8.self)
        let field: Substring, value: Substring
        if let colon = text.firstIndex(of: ":") {
            field = text[..<colon]
            var v = text[text.index(after: colon)...]
            if v.first == " " { v = v.dropFirst() }
            value = v
        } else {
            field = Substring(text); value = ""
        }
        switch field {
        case "data": data.append(String(value)); sawField = true
        case "event": event = String(value); sawField = true
        case "id": if !value.contains("\0") { id = String(value) }; sawField = true
        default: size -= line.count   // an unknown field is ignored (and not kept)
        }
        return nil
    }
}

public enum SSEError: Error, CustomStringConvertible, Sendable {
    case eventTooLarge
    public var description: String { "an update event is larger than the limit" }
}

/// One entry of WildDuck's journal as the `/updates` stream sends it: what it says (for the
/// replay's accounting, see `JournalReplay`) and the remote events it means.
///
/// Frames are written by `formatJournalData`
/// (https://github.com/nodemailer/wildduck/blob/08c5804798e7ffe1b281859c4edcec2465d058c2/lib/api/updates.js#L218-L236): no `event:`
/// line, the JSON without `_id`, `user`, `modseq`, `created`, then `id: <journal _id>`. A failed
/// replay is an `event: error` frame (updates.js#L189-L191).
public struct JournalEntry: Sendable, Equatable {
    public var id: String?
    /// `EXISTS`, `EXPUNGE`, `FETCH`, `COUNTERS`, …; nil when the payload does not decode.
    public var command: String?
    public var mailbox: String?
    public var uid: Int?
    public var isError: Bool
    public var events: [RemoteEvent]

    public init(_ event: SSEParser.Event) {
        id = event.id.flatMap { ServerID.isObjectId($0) ? $0.lowercased() : nil }
        isError = event.event == "error"
        guard !isError, let json = try? JSON.parse(event.data), let command = json["command"]?.string else {
            command = nil; mailbox = nil; uid = nil
            events = [.resync]
            return
        }
        self.command = command
        // Ids that are not valid (see `ServerID`) count as absent: the event then only makes
        // the mailbox, or everything, be re-read over REST.
        let mailbox = ServerID.objectId(json["mailbox"])
        let uid = ServerID.uid(json["uid"])
        self.mailbox = mailbox
        self.uid = uid
        switch (command, mailbox, uid) {
        case ("EXISTS", let m?, let u?): events = [.messageAdded(mailbox: m, uid: u)]
        case ("EXPUNGE", let m?, let u?): events = [.messageRemoved(mailbox: m, uid: u)]
        case ("FETCH", let m?, let u?):
            if let flags = json["flags"]?.array?.compactMap(\.string) {
                events = [.messageFlags(mailbox: m, uid: u, flags: flags)]
            } else {
                events = [.messageChanged(mailbox: m, uid: u)]
            }
        case ("CREATE", _, _), ("RENAME", _, _), ("DELETE", _, _): events = [.mailboxesChanged]
        case ("COUNTERS", _, _), ("LOGOUT", _, _): events = []
        case ("DROP", let m?, _): events = [.mailboxDirty(m)]
        case (_, let m?, _): events = [.mailboxDirty(m)]
        default: events = [.resync]
        }
    }
}

/// WildDuck's journal entries (the SSE `/updates` stream) as remote events.
public enum JournalEvents {
    /// Events for one SSE event. A payload that does not decode becomes `.resync`.
    public static func decode(_ event: SSEParser.Event) -> [RemoteEvent] { JournalEntry(event).events }
}

/// Journal ids are MongoDB ObjectIds: 4 bytes of creation time in seconds, then 5 bytes of
/// per-process randomness and a 3-byte counter (https://www.mongodb.com/docs/manual/reference/method/ObjectId/).
/// So an id also says *when*, and `_id > id(T)` asks the journal for everything since T.
public enum ObjectIdTime {
    /// The creation time (unix seconds) of an ObjectId, or nil when it is not one.
    public static func seconds(of id: String) -> Int? {
        guard ServerID.isObjectId(id) else { return nil }
        return Int(id.prefix(8), radix: 16)
    }

    /// The smallest ObjectId created at `seconds`: every id from that second on is greater.
    public static func id(atSeconds seconds: Int) -> String {
        let t = UInt32(clamping: max(0, seconds))
        let hex = String(t, radix: 16)
        return String(repeating: "0", count: 8 - hex.count) + hex + String(repeating: "0", count: 16)
    }
}

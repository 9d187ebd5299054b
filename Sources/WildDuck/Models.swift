/// A mailbox as listed by `GET /users/:user/mailboxes?counters=true`.
public struct Mailbox: Sendable, Equatable {
    public var id: String
    public var path: String
    public var specialUse: String?
    public var modifyIndex: Int
    public var total: Int?
    public var unseen: Int?
    /// The server's object, verbatim.
    public var json: JSON

    /// Nil unless the id is an ObjectId and the path a string without NUL (see `ServerID`).
    public init?(_ json: JSON) {
        guard let id = ServerID.objectId(json["id"]), let path = json["path"]?.string, ServerID.isName(path) else { return nil }
        self.id = id
        self.path = path
        specialUse = json["specialUse"]?.string
        modifyIndex = json["modifyIndex"]?.int ?? 0
        total = json["total"]?.int
        unseen = json["unseen"]?.int
        self.json = json
    }
}

/// A message list item (`GET …/messages`, `/search`).
public struct MessageItem: Sendable, Equatable {
    public var uid: Int
    public var mailbox: String?
    public var messageId: String?
    public var size: Int
    /// Internal date as Unix seconds.
    public var idate: Int?
    public var seen: Bool
    public var flagged: Bool
    public var draft: Bool
    public var deleted: Bool
    public var answered: Bool
    public var forwarded: Bool
    public var json: JSON

    /// Nil unless the id is a valid IMAP uid (see `ServerID`).
    public init?(_ json: JSON) {
        guard let uid = ServerID.uid(json["id"]) else { return nil }
        self.uid = uid
        mailbox = ServerID.objectId(json["mailbox"])
        messageId = json["messageId"]?.string
        size = json["size"]?.int ?? 0
        idate = (json["idate"]?.string).flatMap(parseISODate) ?? (json["date"]?.string).flatMap(parseISODate)
        seen = json["seen"]?.bool ?? false
        flagged = json["flagged"]?.bool ?? false
        draft = json["draft"]?.bool ?? false
        deleted = json["deleted"]?.bool ?? false
        answered = json["answered"]?.bool ?? false
        forwarded = json["forwarded"]?.bool ?? false
        self.json = json
    }
}

/// Parses `2025-10-16T12:34:56.789Z` / `…+02:00` into Unix seconds (UTC). Nil if malformed.
public func parseISODate(_ text: String) -> Int? {
    let b = Array(text.utf8)
    func num(_ from: Int, _ count: Int) -> Int? {
        guard from + count <= b.count else { return nil }
        var v = 0
        for i in from..<(from + count) {
            guard b[i] >= 0x30, b[i] <= 0x39 else { return nil }
            v = v * 10 + Int(b[i] - 0x30)
        }
        return v
    }
    guard b.count >= 19, let y = num(0, 4), let mo = num(5, 2), let d = num(8, 2),
          let h = num(11, 2), let mi = num(14, 2), let s = num(17, 2),
          (1...12).contains(mo), (1...31).contains(d), h < 24, mi < 60, s < 61 else { return nil }
    var i = 19
    if i < b.count, b[i] == UInt8(ascii: ".") { i += 1; while i < b.count, b[i] >= 0x30, b[i] <= 0x39 { i += 1 } }
    var offset = 0
    if i < b.count, b[i] == UInt8(ascii: "+") || b[i] == UInt8(ascii: "-") {
        guard let oh = num(i + 1, 2) else { return nil }
        let om = num(i + 4, 2) ?? num(i + 3, 2) ?? 0
        offset = (oh * 3600 + om * 60) * (b[i] == UInt8(ascii: "-") ? -1 : 1)
    }
    // Days from civil (Howard Hinnant's algorithm).
    let yy = mo <= 2 ? y - 1 : y
    let era = (yy >= 0 ? yy : yy - 399) / 400
    let yoe = yy - era * 400
    let doy = (153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
    let days = era * 146097 + doe - 719468
    return days * 86400 + h * 3600 + mi * 60 + s - offset
}

/// One page of a cursor listing.
public struct MessagePage: Sendable {
    public var items: [MessageItem]
    public var nextCursor: String?
    public var total: Int?
    /// Items left out because they were not valid (see `MessageItem.init`).
    public var skipped = 0

    /// Public for other implementations of `RemoteAccount`.
    public init(items: [MessageItem], nextCursor: String?, total: Int?, skipped: Int = 0) {
        self.items = items
        self.nextCursor = nextCursor
        self.total = total
        self.skipped = skipped
    }
}

/// The flags a REST push can set on messages (`seen`, `flagged`, `deleted` of
/// `PUT /users/:user/mailboxes/:mailbox/messages`); nil leaves one as it is.
public struct FlagUpdate: Sendable, Hashable {
    public var seen: Bool?
    public var flagged: Bool?
    public var deleted: Bool?

    public init(seen: Bool? = nil, flagged: Bool? = nil, deleted: Bool? = nil) {
        self.seen = seen
        self.flagged = flagged
        self.deleted = deleted
    }

    public var isEmpty: Bool { seen == nil && flagged == nil && deleted == nil }

    /// The request's fields, in this order.
    var fields: [(String, Bool)] {
        [("seen", seen), ("flagged", flagged), ("deleted", deleted)].compactMap { name, value in value.map { (name, $0) } }
    }

    /// The same text for the same update ("seen=true,flagged=false"): pushes are grouped and sent in its order.
    public var key: String { fields.map { "\($0.0)=\($0.1)" }.joined(separator: ",") }
}

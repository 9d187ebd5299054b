@testable import Sync
import WildDuck

/// A WildDuck account in memory, for running the engine's steps without sockets or a server:
/// mailboxes of messages with uids and flags, answered as WildDuck answers (a move or a
/// delete of a message that is not there is a 404), every call recorded. A fault scripted for
/// an operation fails its next call, before it changes anything or after (the answer lost).
final class InMemoryAccount: RemoteAccount {
    struct Message {
        var raw: [UInt8]
        var messageId: String?
        var subject: String
        var idate: Int
        var seen = false
        var flagged = false
        var draft = false
        var deleted = false
    }

    struct Box {
        var path: String
        var specialUse: String?
        var nextUid = 1
        /// Moves with every change to the mailbox's messages, as WildDuck's does.
        var modifyIndex = 0
        var messages: [Int: Message] = [:] { didSet { modifyIndex += 1 } }
    }

    /// The writes, as the push sends them; everything else by its name.
    enum Call: Equatable {
        case setFlags(mailbox: String, uids: String, FlagUpdate)
        case move(mailbox: String, uids: String, to: String, FlagUpdate)
        case delete(mailbox: String, uid: Int)
        case upload(mailbox: String)
        case other(String)
    }

    struct Fault {
        var error: WildDuckError
        /// The call does what it was asked, then fails: its answer is lost.
        var afterDoing: Bool
    }

    var boxes: [String: Box] = [:]
    private(set) var calls: [Call] = []
    /// Operation name ("setFlags", "moveMessages", "deleteMessage", "uploadMessage",
    /// "searchByDate", …) → the faults of its next calls, in order.
    var faults: [String: [Fault]] = [:]
    var serverTime: Int?
    var onSkipped: (String) -> Void = { _ in }

    func addMailbox(_ id: String, path: String, specialUse: String? = nil) {
        boxes[id] = Box(path: path, specialUse: specialUse)
    }

    /// Stores a message as a delivery does; returns its uid.
    @discardableResult
    func deliver(_ raw: [UInt8], to mailbox: String, date: Int, seen: Bool = false) -> Int {
        let headers = MessageHeaders(raw)
        return store(Message(raw: raw, messageId: headers.messageId, subject: StoredSubject.of(headers.subject),
                             idate: date, seen: seen), in: mailbox)
    }

    func fail(_ operation: String, with error: WildDuckError, afterDoing: Bool = false) {
        faults[operation, default: []].append(Fault(error: error, afterDoing: afterDoing))
    }

    /// WildDuck behind nginx: a 502 from the proxy.
    static let badGateway = WildDuckError.server(route: "test", status: 502, code: nil, message: "Bad Gateway")

    var uploads: Int { calls.filter { if case .upload = $0 { true } else { false } }.count }

    // MARK: RemoteAccount

    func close() { calls.append(.other("close")) }
    func authenticate() throws { calls.append(.other("authenticate")) }

    func fetchUser() throws -> JSON { calls.append(.other("fetchUser")); return .object([]) }
    func fetchAutoreply() throws -> JSON { calls.append(.other("fetchAutoreply")); return .object([]) }
    func fetchFilters() throws -> (limits: JSON?, filters: [(id: String, json: JSON)]) {
        calls.append(.other("fetchFilters"))
        return (nil, [])
    }
    func fetchFilter(id: String) throws -> JSON { calls.append(.other("fetchFilter")); throw Self.notFound("filter") }
    func createFilter(_ fields: [(String, JSON)]) throws { calls.append(.other("createFilter")) }
    func updateSettings(_ fields: [(String, JSON)]) throws { calls.append(.other("updateSettings")) }
    func updateAutoreply(_ fields: [(String, JSON)]) throws { calls.append(.other("updateAutoreply")) }

    func fetchMailboxes() throws -> [Mailbox] {
        calls.append(.other("fetchMailboxes"))
        return boxes.sorted { $0.key < $1.key }.compactMap { id, box in
            var fields: [(String, JSON)] = [("id", .string(id)), ("path", .string(box.path)),
                                            ("total", .number(Double(box.messages.count))),
                                            ("modifyIndex", .number(Double(box.modifyIndex)))]
            if let use = box.specialUse { fields.append(("specialUse", .string(use))) }
            return Mailbox(.object(fields))
        }
    }

    func createMailbox(path: String, hidden: Bool, retention: Int?) throws -> String {
        calls.append(.other("createMailbox"))
        let id = String(repeating: "f", count: 20) + String(1000 + boxes.count)
        addMailbox(id, path: path)
        return id
    }

    func setSubscribed(mailbox: String, _ subscribed: Bool) throws { calls.append(.other("setSubscribed")) }

    func listMessages(mailbox: String, cursor: String?, limit: Int) throws -> MessagePage {
        try listing("listMessages", mailbox: mailbox, cursor: cursor, limit: limit) { _, _ in true }
    }

    func searchNew(mailbox: String, fromUid: Int, cursor: String?, limit: Int) throws -> MessagePage {
        try listing("searchNew", mailbox: mailbox, cursor: cursor, limit: limit) { uid, _ in uid >= fromUid }
    }

    func searchUids(mailbox: String, uids: String, cursor: String?, limit: Int) throws -> MessagePage {
        let wanted = Set(uids.split(separator: ",").compactMap { Int($0) })
        return try listing("searchUids", mailbox: mailbox, cursor: cursor, limit: limit) { uid, _ in wanted.contains(uid) }
    }

    func uidLists(mailbox: String, _ uids: [Int]) -> [String] {
        uids.isEmpty ? [] : [uids.map(String.init).joined(separator: ",")]
    }

    func searchNewest(cursor: String?, limit: Int) throws -> MessagePage {
        try listing("searchNewest", mailbox: nil, cursor: cursor, limit: limit) { _, _ in true }
    }

    func searchByDate(mailbox: String?, from: Int, to: Int, cursor: String?, limit: Int) throws -> MessagePage {
        try listing("searchByDate", mailbox: mailbox, cursor: cursor, limit: limit) { _, m in (from...to).contains(m.idate) }
    }

    func setFlags(mailbox: String, uids: String, _ update: FlagUpdate) throws -> Int {
        calls.append(.setFlags(mailbox: mailbox, uids: uids, update))
        return try faulting("setFlags") {
            guard boxes[mailbox] != nil else { throw Self.notFound("mailbox") }
            var matched = 0
            for uid in Self.uids(uids) where boxes[mailbox]?.messages[uid] != nil {
                boxes[mailbox]?.messages[uid]?.apply(update)
                matched += 1
            }
            return matched
        }
    }

    func moveMessages(mailbox: String, uids: String, to target: String, _ update: FlagUpdate) throws -> [(Int, Int)] {
        calls.append(.move(mailbox: mailbox, uids: uids, to: target, update))
        return try faulting("moveMessages") {
            guard boxes[mailbox] != nil, boxes[target] != nil else { throw Self.notFound("mailbox") }
            var pairs: [(Int, Int)] = []
            for uid in Self.uids(uids) {
                guard var message = boxes[mailbox]?.messages.removeValue(forKey: uid) else { continue }
                message.apply(update)
                pairs.append((uid, store(message, in: target)))
            }
            guard !pairs.isEmpty else { throw Self.notFound("message") }
            return pairs
        }
    }

    func deleteMessage(mailbox: String, uid: Int) throws {
        calls.append(.delete(mailbox: mailbox, uid: uid))
        try faulting("deleteMessage") {
            guard boxes[mailbox]?.messages.removeValue(forKey: uid) != nil else { throw Self.notFound("message") }
        }
    }

    func uploadMessage(mailbox: String, raw: [UInt8], seen: Bool, flagged: Bool, draft: Bool,
                       date: Int) throws -> (uid: Int, size: Int) {
        calls.append(.upload(mailbox: mailbox))
        return try faulting("uploadMessage") {
            guard boxes[mailbox] != nil else { throw Self.notFound("mailbox") }
            let headers = MessageHeaders(raw)
            let uid = store(Message(raw: raw, messageId: headers.messageId, subject: StoredSubject.of(headers.subject),
                                    idate: date, seen: seen, flagged: flagged, draft: draft), in: mailbox)
            return (uid, raw.count)
        }
    }

    func downloadMessage(mailbox: String, uid: Int, maxBytes: Int, begin: () throws -> Void,
                         sink: (UnsafeRawBufferPointer) throws -> Void) throws {
        calls.append(.other("downloadMessage"))
        try faulting("downloadMessage") {
            guard let raw = boxes[mailbox]?.messages[uid]?.raw else { throw Self.notFound("message") }
            try begin()
            try raw.withUnsafeBytes { try sink($0) }
        }
    }

    func downloadMessages(_ messages: [(mailbox: String, uid: Int, maxBytes: Int)], begin: (Int) throws -> Void,
                          sink: (Int, UnsafeRawBufferPointer) throws -> Void,
                          end: (Int) throws -> Void) -> (done: Int, stoppedBy: Error?) {
        calls.append(.other("downloadMessages"))
        for (i, wanted) in messages.enumerated() {
            do {
                guard let raw = boxes[wanted.mailbox]?.messages[wanted.uid]?.raw else { throw Self.notFound("message") }
                try begin(i)
                try raw.withUnsafeBytes { try sink(i, $0) }
                try end(i)
            } catch {
                return (i, error)
            }
        }
        return (messages.count, nil)
    }

    // MARK: The model

    private func store(_ message: Message, in mailbox: String) -> Int {
        guard let uid = boxes[mailbox]?.nextUid else { return 0 }
        boxes[mailbox]?.nextUid += 1
        boxes[mailbox]?.messages[uid] = message
        return uid
    }

    /// Runs `body` under the operation's next scripted fault, if any.
    private func faulting<T>(_ operation: String, _ body: () throws -> T) throws -> T {
        guard let fault = faults[operation]?.first else { return try body() }
        faults[operation]?.removeFirst()
        if fault.afterDoing { _ = try body() }
        throw fault.error
    }

    /// Items in uid order (newest first for `searchNewest`), `limit` a page; the cursor is the offset.
    private func listing(_ operation: String, mailbox: String?, cursor: String?, limit: Int,
                         _ matches: (Int, Message) -> Bool) throws -> MessagePage {
        calls.append(.other(operation))
        return try faulting(operation) {
            if let mailbox, boxes[mailbox] == nil { throw Self.notFound("mailbox") }
            var items: [MessageItem] = []
            for (id, box) in boxes.sorted(by: { $0.key < $1.key }) where mailbox == nil || id == mailbox {
                for (uid, message) in box.messages.sorted(by: { $0.key < $1.key }) where matches(uid, message) {
                    if let item = Self.item(uid, message, in: id) { items.append(item) }
                }
            }
            if operation == "searchNewest" { items.reverse() }
            let offset = cursor.flatMap { Int($0) } ?? 0
            let page = Array(items.dropFirst(offset).prefix(limit))
            let next = offset + page.count < items.count ? String(offset + page.count) : nil
            return MessagePage(items: page, nextCursor: next, total: items.count)
        }
    }

    private static func item(_ uid: Int, _ m: Message, in mailbox: String) -> MessageItem? {
        var fields: [(String, JSON)] = [("id", .number(Double(uid))), ("mailbox", .string(mailbox)),
                                        ("size", .number(Double(m.raw.count))), ("idate", .string(isoDate(m.idate))),
                                        ("subject", .string(m.subject)), ("seen", .bool(m.seen)),
                                        ("flagged", .bool(m.flagged)), ("draft", .bool(m.draft)), ("deleted", .bool(m.deleted))]
        if let id = m.messageId { fields.append(("messageId", .string(id))) }
        return MessageItem(.object(fields))
    }

    /// "1,2,3" or "3:15".
    private static func uids(_ list: String) -> [Int] {
        let parts = list.split(separator: ":").compactMap { Int($0) }
        if parts.count == 2, list.contains(":") { return parts[0] <= parts[1] ? Array(parts[0]...parts[1]) : [] }
        return list.split(separator: ",").compactMap { Int($0) }
    }

    private static func notFound(_ what: String) -> WildDuckError {
        .server(route: "test", status: 404, code: what == "message" ? "MessageNotFound" : nil, message: "no such \(what)")
    }
}

extension InMemoryAccount.Message {
    mutating func apply(_ update: FlagUpdate) {
        if let seen = update.seen { self.seen = seen }
        if let flagged = update.flagged { self.flagged = flagged }
        if let deleted = update.deleted { self.deleted = deleted }
    }
}

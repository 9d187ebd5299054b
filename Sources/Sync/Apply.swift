import Maildir
import Store
import WildDuck

/// Applying remote events to the store, then exporting. Exact events (a flag list, an expunge,
/// a uid that appeared) are applied directly or with one small REST read per mailbox;
/// everything else makes the engine reconcile that part over REST, which is the truth.
extension Mirror {
    public func apply(_ events: [RemoteEvent]) throws {
        var added: [String: Set<Int>] = [:]
        var relist = Set<String>()
        var mailboxList = false, settings = false
        if events.contains(.resync) {
            _ = try syncOnce()
            return
        }
        let known = Set(try store.mailboxes().map(\.id))
        try store.transaction {
            for event in events {
                switch event {
                case .messageFlags(let m, let uid, let imapFlags):
                    if try store.message(mailboxId: m, uid: uid) != nil {
                        try store.updateFlags(mailboxId: m, uid: uid, flags: Mirror.flags(imap: imapFlags), json: nil)
                    } else {
                        added[m, default: []].insert(uid)
                    }
                case .messageRemoved(let m, let uid):
                    try store.removeMessage(mailboxId: m, uid: uid)
                case .messageAdded(let m, let uid), .messageChanged(let m, let uid):
                    added[m, default: []].insert(uid)
                case .mailboxDirty(let m):
                    relist.insert(m)
                case .mailboxesChanged:
                    mailboxList = true
                case .settingsChanged, .filtersChanged, .autoreplyChanged:
                    settings = true
                case .resync:
                    break
                }
            }
        }
        if added.keys.contains(where: { !known.contains($0) }) || relist.contains(where: { !known.contains($0) }) {
            mailboxList = true
        }
        if settings { try syncSettings() }
        if mailboxList {
            // Newly created mailboxes are listed in full; known ones keep their state.
            for mailbox in try syncMailboxList() where mailbox.syncedIndex == nil { relist.insert(mailbox.id) }
        }
        let mailboxes = Dictionary(try store.mailboxes().map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        for (mailbox, uids) in added where !relist.contains(mailbox) {
            guard mailboxes[mailbox] != nil else { continue }
            try refresh(mailbox: mailbox, uids: uids)
        }
        for id in relist {
            if let mailbox = mailboxes[id] { try syncMessages(of: mailbox) }
        }
        try export()
    }

    /// Re-reads the given uids of one mailbox over REST: inserts new ones, updates flags, and
    /// forgets the ones the server no longer has.
    func refresh(mailbox: String, uids: Set<Int>) throws {
        var remaining = uids
        let list = uids.sorted().map(String.init).joined(separator: ",")
        var cursor: String?
        var items: [MessageItem] = []
        repeat {
            let page: MessagePage
            do {
                page = try client.searchUids(mailbox: mailbox, uids: list, cursor: cursor)
            } catch let error as WildDuckError where error.isNotFound {
                return
            }
            items += page.items
            cursor = page.items.isEmpty ? nil : page.nextCursor
        } while cursor != nil
        try store.transaction {
            for item in items {
                remaining.remove(item.uid)
                try store.insertMessage(MessageRecord(
                    mailboxId: mailbox, uid: item.uid, messageId: item.messageId, size: item.size, idate: item.idate,
                    flags: Mirror.flags(of: item), json: item.json.text,
                    uniq: Mirror.uniqueName(mailboxId: mailbox, uid: item.uid, idate: item.idate)))
            }
            for uid in remaining { try store.removeMessage(mailboxId: mailbox, uid: uid) }
        }
    }

    /// IMAP flag names → Maildir flags, with the REST API's rule that a forwarded message is not
    /// also shown as answered (so both paths agree).
    static func flags(imap: [String]) -> MessageFlags {
        let set = Set(imap.map { $0.lowercased() })
        var f: MessageFlags = []
        if set.contains("\\draft") { f.insert(.draft) }
        if set.contains("\\flagged") { f.insert(.flagged) }
        if set.contains("$forwarded") { f.insert(.passed) }
        if set.contains("\\answered") && !set.contains("$forwarded") { f.insert(.replied) }
        if set.contains("\\seen") { f.insert(.seen) }
        if set.contains("\\deleted") { f.insert(.trashed) }
        return f
    }
}

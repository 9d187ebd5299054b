import Maildir
import Store
import WildDuck

/// Applying remote events to the store, then exporting. Exact events (a flag list, an expunge,
/// a uid that appeared) are applied directly or with one small REST read per mailbox;
/// everything else makes the engine reconcile that part over REST, which is the truth.
extension AccountSync {
    /// When a batch was committed to the store and when its files were in place.
    public struct BatchTiming: Sendable {
        public var committed: ContinuousClock.Instant
        public var exported: ContinuousClock.Instant
    }

    /// Applies one batch: the REST reads it needs first, then every store change in one
    /// transaction, then one export pass.
    ///
    /// Mailboxes that are new to the cache are offered to `subscribe` first: when it returns
    /// true, the caller has subscribed to them and lists them once the subscriptions are settled
    /// (subscribe, then list, so nothing delivered in between is missed); otherwise they are
    /// listed here.
    @discardableResult
    public func apply(_ events: [RemoteEvent], keepOrphans: Double = 0,
                      subscribe: ([String]) -> Bool = { _ in false }) throws -> BatchTiming {
        if events.contains(.resync) {
            let known = Set(try store.mailboxes().map(\.id))
            _ = try syncOnce()
            // Mailboxes it found are followed from now on (and listed again once subscribed).
            _ = subscribe(try store.mailboxes().map(\.id).filter { !known.contains($0) })
            return BatchTiming(committed: .now, exported: .now)
        }
        let committed = try applyEvents(events, subscribe: subscribe)
        try export(keepOrphans: keepOrphans)
        return BatchTiming(committed: committed, exported: .now)
    }

    /// `apply` without the export (`--once` applies the journal's replay with it, then exports
    /// once at the end of the pass). Repeats are harmless: an event says what the state became,
    /// and a message that is already in the cache is not read again for a repeated EXISTS.
    func applyEvents(_ events: [RemoteEvent], subscribe: ([String]) -> Bool = { _ in false }) throws -> ContinuousClock.Instant {
        var fetch: [String: Set<Int>] = [:]
        var relist = Set<String>()
        var mailboxList = false, settings = false
        let known = Set(try store.mailboxes().map(\.id))
        for event in events {
            switch event {
            case .messageFlags(let m, let uid, _):
                if try store.message(mailboxId: m, uid: uid) == nil { fetch[m, default: []].insert(uid) }
            case .messageAdded(let m, let uid):
                // Uids are never reused (RFC 3501 §2.3.1.1): a known one is a repeated event.
                if try store.message(mailboxId: m, uid: uid) == nil { fetch[m, default: []].insert(uid) }
            case .messageChanged(let m, let uid):
                fetch[m, default: []].insert(uid)
            case .mailboxDirty(let m): relist.insert(m)
            case .mailboxesChanged: mailboxList = true
            case .settingsChanged, .filtersChanged, .autoreplyChanged: settings = true
            case .messageRemoved, .resync: break
            }
        }
        if fetch.keys.contains(where: { !known.contains($0) }) || relist.contains(where: { !known.contains($0) }) {
            mailboxList = true
        }
        if settings { try syncSettings() }
        if mailboxList {
            // Newly created mailboxes are listed in full (after subscribing, when the caller
            // can); known ones keep their state.
            let changed = try syncMailboxList()
            let new = changed.filter { !known.contains($0.id) }.map(\.id)
            let deferred = !new.isEmpty && subscribe(new) ? Set(new) : []
            for mailbox in changed where mailbox.syncedIndex == nil && !deferred.contains(mailbox.id) {
                relist.insert(mailbox.id)
            }
        }
        let mailboxes = Set(try store.mailboxes().map(\.id))
        let fetched = try read(fetch.filter { mailboxes.contains($0.key) && !relist.contains($0.key) })

        try store.transaction {
            for event in events {
                switch event {
                case .messageFlags(let m, let uid, let imapFlags) where fetch[m]?.contains(uid) != true:
                    try store.updateFlags(mailboxId: m, uid: uid, flags: MessageFlags(imap: imapFlags), json: nil)
                case .messageRemoved(let m, let uid):
                    try store.removeMessage(mailboxId: m, uid: uid)
                default: break
                }
            }
            // What REST says now wins over the events before it; uids it no longer has are gone.
            for (mailbox, items) in fetched {
                var missing = fetch[mailbox] ?? []
                for item in items {
                    missing.remove(item.uid)
                    try store.insertMessage(MessageRecord(
                        mailboxId: mailbox, uid: item.uid, messageId: item.messageId, size: item.size, idate: item.idate,
                        flags: MessageFlags(listing: item), json: item.json.text,
                        uniq: AccountSync.uniqueName(mailboxId: mailbox, uid: item.uid, idate: item.idate)))
                }
                for uid in missing { try store.removeMessage(mailboxId: mailbox, uid: uid) }
            }
        }
        let committed = ContinuousClock.now
        for mailbox in try store.mailboxes() where relist.contains(mailbox.id) { try syncMessages(of: mailbox) }
        return committed
    }

    /// The current list items of the given uids (those the server still has), by mailbox.
    ///
    /// New messages in several mailboxes (a `--once` catching up from the journal) are looked
    /// for first in the newest messages of the whole account, one search for up to 250, instead
    /// of one search per mailbox: a delivery, an upload and a move make the message's `_id`
    /// anew, and that search returns the highest `_id`s first. It stops once every uid is found
    /// or it has read 250 messages more than it looks for; what it did not find (an older
    /// message, one gone meanwhile) is read per mailbox as before.
    func read(_ wanted: [String: Set<Int>]) throws -> [String: [MessageItem]] {
        var found: [String: [MessageItem]] = [:]
        var missing = wanted.filter { !$0.value.isEmpty }
        if missing.count > 1 {
            let count = missing.values.reduce(0) { $0 + $1.count }
            var cursor: String?
            var scanned = 0
            var paging = Paging(route: "GET search", limit: count + 500, isCancelled: isCancelled)
            repeat {
                let page = try client.searchNewest(cursor: cursor)
                for item in page.items {
                    guard let m = item.mailbox, missing[m]?.remove(item.uid) != nil else { continue }
                    found[m, default: []].append(item)
                    if missing[m]?.isEmpty == true { missing[m] = nil }
                }
                scanned += page.items.count
                cursor = try paging.next(after: page)
            } while cursor != nil && !missing.isEmpty && scanned < count + 250
        }
        for (mailbox, uids) in missing { found[mailbox, default: []] += try read(mailbox: mailbox, uids: uids) }
        return found
    }

    /// The current list items of the given uids of one mailbox (those the server still has),
    /// in as many searches as it takes to keep each request within the server's limit.
    func read(mailbox: String, uids: Set<Int>) throws -> [MessageItem] {
        var items: [MessageItem] = []
        for list in client.uidLists(mailbox: mailbox, uids.sorted()) {
            var cursor: String?
            var paging = Paging(route: "GET search", limit: Paging.limit(total: uids.count), isCancelled: isCancelled)
            repeat {
                let page: MessagePage
                do {
                    page = try client.searchUids(mailbox: mailbox, uids: list, cursor: cursor)
                } catch let error as WildDuckError where error.isNotFound {
                    return []
                }
                items += page.items
                cursor = try paging.next(after: page)
            } while cursor != nil
        }
        return items.filter { uids.contains($0.uid) }
    }
}

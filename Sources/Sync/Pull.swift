import Foundation
import Maildir
import Store
import WildDuck

/// pull: server → store. Reads the server (settings, the mailbox list, the journal's replay,
/// listings, the REST reads live events need) and writes what it read into the store. It never
/// touches the Maildir (the export makes the files follow the store) and never sends a change
/// (the push does). `AccountSync` makes one for each use; the store is the only state.
struct Pull {
    let store: Store
    let client: any RemoteAccount
    /// For the journal's replay (`catchUpFromJournal`).
    let server: any RemoteServer
    let config: AccountConfig
    let log: SyncLog
    /// Whether the journal is replayed (`--once`; the daemon's stream follows it instead).
    let readsJournal: Bool
    let journal: JournalReplay
    let isCancelled: @Sendable () -> Bool
    let onProgress: ((SyncProgress) -> Void)?

    /// A pass's pull: settings, the mailbox list, the journal since the last pass, the listings
    /// of what it cannot account for, and the full check when it is due. `sent`: what this pass's push sent (the journal proof counts it); `fullCheck`: asked for
    /// (`--full-check`) whatever the last one's date.
    func run(sent: [SentRequest], fullCheck asked: Bool) throws -> Pulled {
        try log.timed("settings") { try settings() }
        let (count, changed) = try log.timed("mailbox list") { try mailboxList() }
        // The journal's ids carry the server's clock, so the position is taken from it: the
        // second in which the server answered the listing (the client's clock, after the
        // listing, when it sends no Date). A client clock behind the server's would start the
        // next replay before the listing, and entries counted twice could hide a missing one.
        let listed = client.serverTime ?? Int(Date().timeIntervalSince1970)
        let caught = try log.timed("journal") { try catchUpFromJournal(changed, sent: sent) }
        var synced = caught.synced
        try log.timed("listings") {
            for mailbox in caught.relist {
                try listing(of: mailbox)
                synced.insert(mailbox.id)
            }
        }
        var differences: Int?
        if try fullCheckDue(now: listed, asked: asked) {
            // Mailboxes brought up to date from the journal are checked too: that is what it checks.
            let listedNow = Set(caught.relist.map(\.id))
            try log.timed("full check") {
                let check = try fullCheck(except: listedNow, now: listed)
                synced.formUnion(check.checked)
                differences = check.differences
            }
        }
        return Pulled(changed: changed, caught: caught, synced: synced, listed: listed, mailboxes: count, fullCheck: differences)
    }


    /// What a pass's pull did, for the journal position it keeps.
    struct Pulled {
        /// The mailboxes whose modifyIndex had changed.
        var changed: [MailboxRecord]
        var caught: CatchUp
        /// The mailboxes this pass listed or brought up to date.
        var synced: Set<String>
        /// The server's second of the mailbox listing.
        var listed: Int
        /// How many mailboxes the server listed.
        var mailboxes: Int
        /// The full check's differences, when this pull did it.
        var fullCheck: Int?
    }


    /// Settings (the user object), filters and autoreply: small, fetched whole every pass.
    func settings() throws {
        let user = try client.fetchUser()
        let autoreply = try client.fetchAutoreply()
        let filters = try client.fetchFilters()
        try store.transaction {
            try store.setUserJSON(user.text)
            try store.setAutoreplyJSON(autoreply.text)
            try store.replaceFilters(filters.filters.map { ($0.id, $0.json.text) }, limitsJSON: filters.limits?.text)
        }
        // Each new or changed filter whole, once: the listing has query and action only in
        // words, and `--restore` needs them as objects. An unchanged listing costs no request.
        // One that cannot be read now is read by a later pass; the mail goes on either way.
        for filter in try store.filterDetails() where filter.detail == nil {
            do {
                try store.setFilterDetail(id: filter.id, json: try client.fetchFilter(id: filter.id).text)
            } catch let error as WildDuckError {
                log.log(.verbose, "filter \(filter.id) could not be read whole: \(error); a later pass tries again")
                // Deleted since the listing, or refused alone: the next; anything else, later.
                guard case .server(_, let status, _, _) = error, status < 500, status != 429 else { break }
            }
        }
    }

    /// Lists mailboxes, records them, forgets the ones the server no longer has, and returns
    /// how many the server listed and those whose modifyIndex differs from what was last
    /// mirrored.
    ///
    /// A list that cannot be the account's is refused before anything is recorded (see
    /// `checkMailboxList`): removing a mailbox discards its pending changes and its files.
    func mailboxList() throws -> (count: Int, changed: [MailboxRecord]) {
        let remote = try client.fetchMailboxes()
        let local = try store.mailboxes()
        let remoteIds = Set(remote.map(\.id))
        try Pull.checkMailboxList(remote.map(\.path), dropping: local.filter { !remoteIds.contains($0.id) }.map(\.path),
                                    of: local.count, allowed: config.allowMassDelete)
        try store.transaction {
            for m in remote {
                try store.upsertMailbox(MailboxRecord(id: m.id, path: m.path, specialUse: m.specialUse,
                                                      modifyIndex: m.modifyIndex, total: m.total, unseen: m.unseen,
                                                      json: m.json.text))
            }
            for m in local where !remoteIds.contains(m.id) {
                log.log(.verbose, "mailbox \(m.path) was deleted on the server")
                try store.removeMailbox(id: m.id)
            }
        }
        return (remote.count, try store.mailboxes().filter { $0.syncedIndex != $0.modifyIndex })
    }

    /// Refuses a mailbox list that is bad data rather than the account's mailboxes: one without
    /// INBOX (WildDuck creates it with the user and refuses to rename or delete it:
    /// https://github.com/nodemailer/wildduck/blob/08c5804798e7ffe1b281859c4edcec2465d058c2/lib/mailbox-handler.js,
    /// `rename` and `del`; an empty success from a broken proxy has none), or one that drops
    /// more than half of at least 4 known mailboxes at once (unless `--allow-mass-delete`).
    /// Acting on either would remove the mailboxes from the cache, discard their pending changes
    /// and delete every file, to download them again when the server answers properly.
    static func checkMailboxList(_ paths: [String], dropping dropped: [String], of known: Int, allowed: Bool) throws {
        let route = "GET /users/:user/mailboxes"
        let kept = "nothing was removed locally and pending changes are kept"
        guard paths.contains(where: { $0.uppercased() == "INBOX" }) else {
            throw WildDuckError.malformed(route: route, detail: "the server listed \(paths.count) mailboxes and no INBOX, which WildDuck always has (a proxy answering for it?); \(kept); re-run when the server answers properly")
        }
        if !allowed && known >= 4 && dropped.count * 2 > known {
            throw WildDuckError.malformed(route: route, detail: "the server no longer lists \(dropped.count) of the \(known) mailboxes (\(dropped.prefix(5).joined(separator: ", "))\(dropped.count > 5 ? ", …" : "")); \(kept). If they were deleted on the server, run once with --allow-mass-delete")
        }
    }

    /// What `catchUpFromJournal` did: the mailboxes still to list, the mailboxes it brought up to
    /// date (`synced`: proven, or unsettled ones it applied new entries to) and those it confirmed
    /// (`settled`), and, when the replay was read, where from, the ids applied (for the next
    /// position) and whether it was read to a mark of its end.
    struct CatchUp {
        var relist: [MailboxRecord]
        var synced: Set<String> = []
        var settled: Set<String> = []
        var read: (from: String, seen: Set<String>, complete: Bool)?
        /// How many mailboxes the replay brought up to date.
        var fromJournal = 0
    }

    /// Brings the changed mailboxes the journal can account for up to date from its replay
    /// (through the same path as the daemon's events, so pending local changes are merged as a
    /// listing would), confirms or completes the unsettled ones, and returns what must still be
    /// listed: the changed mailboxes it could not prove, and the unsettled ones it could not
    /// confirm (no journal to read them from).
    func catchUpFromJournal(_ changed: [MailboxRecord], sent: [SentRequest]) throws -> CatchUp {
        let changedIds = Set(changed.map(\.id))
        let unsettled = try store.mailboxes().filter { $0.unsettledFrom != nil && !changedIds.contains($0.id) && $0.syncedIndex != nil }
        // The daemon reads no replay here: what it cannot confirm it lists (and its own update
        // stream follows what comes after).
        guard readsJournal else { return CatchUp(relist: changed + unsettled) }
        guard changed.contains(where: { $0.syncedIndex != nil }) || !unsettled.isEmpty else { return CatchUp(relist: changed) }
        let now = client.serverTime.map(Double.init) ?? Date().timeIntervalSince1970
        guard let resume = journal.resumeId(position: try store.lastEventId(), now: now) else {
            log.log(.verbose, "no journal position from the last \(Int(journal.journalLife - journal.ageMargin)) minutes; listing the changed mailboxes")
            return CatchUp(relist: changed + unsettled)
        }
        let seen = try store.journalSeen()
        let outcome = journal.read(session: server, resumeId: resume, changed: changed, unsettled: unsettled + changed.filter { $0.unsettledFrom != nil },
                                   seen: seen, sent: sent, reflected: { [store] e in Pull.reflected(e, in: store) }, log: log)
        if let failure = outcome.failure {
            log.log(.verbose, "\(failure); listing the changed mailboxes")
            return CatchUp(relist: changed + unsettled)
        }
        if !outcome.proven.isEmpty || !outcome.touched.isEmpty {
            _ = try applyEvents(outcome.events)
            var highest: [String: Int] = [:]
            for case .messageAdded(let m, let uid) in outcome.events { highest[m] = max(highest[m] ?? 0, uid) }
            let touched = unsettled.filter { outcome.touched.contains($0.id) }
            try store.transaction {
                for (id, index) in outcome.proven {
                    try store.setMailboxSynced(id: id, index: index, highestUid: highest[id] ?? 0)
                }
                for m in touched { try store.setMailboxSynced(id: m.id, index: m.modifyIndex, highestUid: highest[m.id] ?? 0) }
            }
            log.log(.verbose, "\(outcome.proven.count) mailboxes brought up to date from the journal (\(outcome.events.count) events)")
        }
        return CatchUp(relist: changed.filter { outcome.proven[$0.id] == nil },
                       synced: Set(outcome.proven.keys).union(outcome.touched), settled: outcome.settled,
                       read: (resume, seen.union(outcome.ids), outcome.complete), fromJournal: outcome.proven.count)
    }

    /// Whether the cache already shows what a journal entry says: its message is there (EXISTS),
    /// gone (EXPUNGE), or has these flags as the server last gave them (FETCH).
    static func reflected(_ e: JournalEntry, in store: Store) -> Bool {
        guard let m = e.mailbox, let uid = e.uid, e.events.count == 1 else { return false }
        let row = try? store.message(mailboxId: m, uid: uid)
        switch e.events[0] {
        case .messageAdded: return row != nil
        case .messageRemoved: return row == nil
        case .messageFlags(_, _, let flags): return row.map { $0.baseFlags == MessageFlags(imap: flags) } ?? false
        default: return false
        }
    }

    /// How a listing differed from the cache.
    struct ListingDifference: Sendable, Equatable {
        public var missing = 0      // messages the cache did not have
        public var staleFlags = 0   // messages whose flags the cache had wrong
        public var extra = 0        // messages the cache had that the server no longer lists
        public var total: Int { missing + staleFlags + extra }
    }

    /// Whether this pass does the full check: asked for (`--full-check`), or the last one is
    /// older than `fullCheckInterval` (a cache that never had one counts its first sync as one).
    func fullCheckDue(now: Int, asked: Bool) throws -> Bool {
        guard !config.dryRun else { return false }
        if asked { return true }
        guard config.fullCheckInterval > 0 else { return false }
        guard let last = try store.lastFullCheck() else {
            try store.setLastFullCheck(now)
            return false
        }
        return Double(now - last) >= config.fullCheckInterval
    }

    /// The safety net, which depends on nothing the journal or `modifyIndex` say: every mailbox
    /// not listed by this pass is listed in full and compared with the cache. A difference is
    /// repaired like any listing's, and logged as a warning: the incremental sync missed it,
    /// which is a defect to report (or a change another client made while this pass ran).
    /// Returns the mailboxes it listed and how many differences it repaired.
    func fullCheck(except listed: Set<String>, now: Int) throws -> (checked: Set<String>, differences: Int) {
        var checked = Set<String>()
        var found = ListingDifference()
        for mailbox in try store.mailboxes() where !listed.contains(mailbox.id) && mailbox.syncedIndex != nil {
            let difference = try listing(of: mailbox)
            checked.insert(mailbox.id)
            guard difference.total > 0 else { continue }
            found.missing += difference.missing; found.staleFlags += difference.staleFlags; found.extra += difference.extra
            log.log(.warning, "full check: \(mailbox.path) differed from the server although the incremental sync had it as current: \(difference.missing) messages missing, \(difference.staleFlags) with stale flags, \(difference.extra) no longer on the server; repaired. Please report this as a wdsync defect (unless another client was changing this mailbox during the run)")
        }
        try store.setLastFullCheck(now)
        log.log(found.total > 0 ? .warning : .verbose, "full check of \(checked.count) mailboxes: \(found.total == 0 ? "the cache matched the server" : "\(found.total) differences repaired")")
        return (checked, found.total)
    }

    /// Re-lists one mailbox page by page and applies new, changed and vanished messages; says
    /// how the listing differed from the cache.
    @discardableResult
    func listing(of mailbox: MailboxRecord) throws -> ListingDifference {
        var difference = ListingDifference()
        var known = try store.messageFlags(mailboxId: mailbox.id)
        var seen = Set<Int>()
        var cursor: String?
        var highest = mailbox.highestUid
        var restarted = false
        var incomplete = false   // the server listed items that are not valid
        let limit = Paging.limit(total: max(mailbox.total ?? 0, known.count))
        var paging = Paging(route: "GET messages", limit: limit, isCancelled: isCancelled)
        log.log(.verbose, "listing \(mailbox.path)")
        while true {
            if isCancelled() { throw SyncError.cancelled }
            let page: MessagePage
            do {
                page = try client.listMessages(mailbox: mailbox.id, cursor: cursor)
            } catch let error as WildDuckError where cursor != nil && error.isInputValidation && !restarted {
                log.log(.warning, "the server rejected a listing cursor for \(mailbox.path); listing it again from the start")
                restarted = true
                cursor = nil
                paging = Paging(route: "GET messages", limit: limit, isCancelled: isCancelled)
                seen.removeAll()
                incomplete = false
                continue
            } catch let error as WildDuckError where error.isNotFound {
                log.log(.verbose, "mailbox \(mailbox.path) disappeared while listing; the next pass removes it")
                return difference
            }
            if page.skipped > 0 { incomplete = true }
            onProgress?(SyncProgress(phase: .listing, mailbox: mailbox.path, done: seen.count + page.items.count,
                                     total: max(mailbox.total ?? 0, seen.count + page.items.count)))
            try store.transaction {
                for item in page.items {
                    let first = seen.insert(item.uid).inserted
                    highest = max(highest, item.uid)
                    let flags = MessageFlags(listing: item)
                    if let old = known[item.uid] {
                        if old != flags {
                            if first { difference.staleFlags += 1 }
                            try store.updateFlags(mailboxId: mailbox.id, uid: item.uid, flags: flags, json: item.json.text)
                            known[item.uid] = flags
                        }
                    } else {
                        difference.missing += 1
                        try store.insertMessage(MessageRecord(
                            mailboxId: mailbox.id, uid: item.uid, messageId: item.messageId, size: item.size,
                            idate: item.idate, flags: flags, json: item.json.text,
                            uniq: AccountSync.uniqueName(mailboxId: mailbox.id, uid: item.uid, idate: item.idate)))
                        known[item.uid] = flags
                    }
                }
            }
            do {
                guard let next = try paging.next(after: page) else { break }
                cursor = next
            } catch let error as WildDuckError {
                // What was read is kept; the mailbox is listed again next pass.
                try store.markMailboxStale(id: mailbox.id)
                throw error
            }
        }
        try store.transaction {
            // A listing with invalid items is not the whole truth: nothing is removed on its
            // word, and the mailbox is listed again next pass.
            if incomplete {
                try store.markMailboxStale(id: mailbox.id)
                return
            }
            for uid in known.keys where !seen.contains(uid) {
                difference.extra += 1
                try store.removeMessage(mailboxId: mailbox.id, uid: uid)
            }
            try store.setMailboxSynced(id: mailbox.id, index: mailbox.modifyIndex, highestUid: highest)
        }
        return difference
    }


    /// Applies remote events to the store (`AccountSync.apply` exports after it; `--once`
    /// applies the journal's replay with it, then exports once at the end of the pass). Exact
    /// events (a flag list, an expunge, a uid that appeared) are applied directly or with one
    /// small REST read per mailbox; everything else is listed again over REST, which is the truth. Repeats are harmless: an event says what the state became,
    /// and a message that is already in the cache is not read again for a repeated EXISTS.
    func applyEvents(_ events: [RemoteEvent], subscribe: ([String]) -> Bool = { _ in false }) throws -> ContinuousClock.Instant {
        var fetch: [String: Set<Int>] = [:]
        var relist = Set<String>()
        var listMailboxes = false, readSettings = false
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
            case .mailboxesChanged: listMailboxes = true
            case .settingsChanged, .filtersChanged, .autoreplyChanged: readSettings = true
            case .messageRemoved, .resync: break
            }
        }
        if fetch.keys.contains(where: { !known.contains($0) }) || relist.contains(where: { !known.contains($0) }) {
            listMailboxes = true
        }
        if readSettings { try settings() }
        if listMailboxes {
            // Newly created mailboxes are listed in full (after subscribing, when the caller
            // can); known ones keep their state.
            let changed = try mailboxList().changed
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
        for mailbox in try store.mailboxes() where relist.contains(mailbox.id) { try listing(of: mailbox) }
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

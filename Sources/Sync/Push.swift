import Foundation
import Maildir
import Store
import WildDuck

/// push: outbox → server. Sends each pending mutation and records the server's answer (new
/// uids) before removing it from the outbox.
///
/// Exactly once: a flag change and a delete may be sent again (the same PUT sets the same
/// flags; a DELETE answered 404 is done). A move and an upload are marked "sent" in the store
/// before their request goes out; one still marked so on the next pass has lost its answer,
/// and the push looks for the message in the target mailbox — by Message-ID and internal date
/// (the subject when there is no Message-ID), among uids it does not know — before sending
/// anything again. Never by bytes or size: the server stores a rebuilt copy.
///
/// The push never touches the Maildir: what it means for the files (a duplicate copy to
/// remove) is recorded in the store, and the export does it.
///
/// Order: moves first (a moved message's flag changes travel with it), then flags, deletes
/// and uploads. Deletes, moves to Trash or Junk and T flags go through the mass-delete
/// breaker first (`Breaker`).
struct Push {
    let store: Store
    let maildir: any LocalFolders
    let client: any RemoteAccount
    let log: SyncLog
    /// Checked between the pages of a search (the daemon's SIGTERM).
    let isCancelled: () -> Bool
    var allowMassDelete = false
    /// Mailboxes where the breaker counts nothing (`mass-delete-exempt`).
    var massDeleteExempt: [String] = []
    /// The daemon's settle time for destructive changes, in seconds (see `Breaker`).
    var settle = 0

    /// Uids per bulk request.
    static let batch = 500

    struct Result: Sendable, Equatable {
        var flags = 0
        var moves = 0
        var deletes = 0
        var uploads = 0
        var requests = 0
        /// Uploads not sent because their file is still changing (sent by a later pass).
        var unstable = 0
        /// The writes the server accepted, for the journal proof (`JournalReplay.explains`).
        var sent: [SentRequest] = []
        /// What the breaker held back in this pass (it stays held: see `Breaker`).
        var newlyHeld: [HeldChanges] = []
        /// Held changes released by `--allow-mass-delete` that this pass sent.
        var released = 0
        /// Held changes `--discard-held` dropped, their messages restored.
        var discarded = 0
        /// When destructive changes that are settling may go (unix seconds).
        var settleUntil: Int?
    }

    func run() throws -> Result {
        var result = Result()
        let entries = try store.outbox()
        guard !entries.isEmpty else { return result }
        let mailboxes = Dictionary(try store.mailboxes().map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        for entry in entries where entry.held == .discarded {
            try store.transaction { try store.restoreDiscarded(entry) }
            result.discarded += 1
        }
        let live = entries.filter { $0.held != .discarded }
        let breaker = Breaker(store: store, exempt: massDeleteExempt, allowAll: allowMassDelete, settle: settle)
        let now = Int(Date().timeIntervalSince1970)
        let decision = try store.transaction { try breaker.decide(live, mailboxes: mailboxes, now: now) }
        result.newlyHeld = decision.newlyHeld
        result.released = decision.released
        result.settleUntil = decision.settleUntil
        let sendable = live.filter { !decision.blocked.contains($0.id) }
        try pushMoves(sendable.filter { $0.kind == .move }, mailboxes: mailboxes, counted: decision.counted, at: now, into: &result)
        try pushFlags(try store.outbox().filter { $0.kind == .flags && $0.held != .discarded }, blocked: decision.blocked,
                      counted: decision.counted, at: now, into: &result)
        try pushDeletes(sendable.filter { $0.kind == .delete }, mailboxes: mailboxes, counted: decision.counted, at: now, into: &result)
        try pushUploads(try store.outbox().filter { $0.kind == .upload }, into: &result)
        return result
    }

    // MARK: - Flags

    /// `blocked`: entries whose T the breaker holds back; their S and F changes go all the same.
    private func pushFlags(_ entries: [OutboxEntry], blocked: Set<Int>, counted: [String: Bool], at now: Int,
                           into result: inout Result) throws {
        // mailbox → change → uids
        var groups: [String: [String: (update: FlagUpdate, uids: [Int])]] = [:]
        var withoutT = Set<String>()   // "mailbox uid" whose T stays pending
        try store.transaction {
            for entry in entries {
                guard let uid = entry.uid, let row = try store.fileRow(mailboxId: entry.mailboxId, uid: uid) else {
                    try store.removeOutbox(id: entry.id)
                    continue
                }
                var update = row.flags.flagUpdate(from: row.baseFlags)
                if blocked.contains(entry.id) {
                    if update.deleted == true { update.deleted = nil }
                    withoutT.insert(Breaker.key(entry.mailboxId, uid))
                    if update.isEmpty { continue }
                }
                if update.isEmpty {
                    try store.removeOutbox(id: entry.id)
                    continue
                }
                groups[entry.mailboxId, default: [:]][update.key, default: (update, [])].uids.append(uid)
            }
        }
        for (mailbox, changes) in groups.sorted(by: { $0.key < $1.key }) {
            for (_, change) in changes.sorted(by: { $0.key < $1.key }) {
                for chunk in Self.chunks(change.uids.sorted()) {
                    result.requests += 1
                    do {
                        let matched = try client.setFlags(mailbox: mailbox, uids: chunk.map(String.init).joined(separator: ","), change.update)
                        result.sent.append(.flags(mailbox: mailbox, uids: chunk, matched: matched))
                    } catch let error as WildDuckError where error.isNotFound || Self.isPermanent(error) {
                        // The messages are gone (the pull removes them), or the server refuses
                        // this change for good: drop it rather than retry forever.
                        if !error.isNotFound { log.log(.warning, "flag change in mailbox \(mailbox) refused: \(error)") }
                        try store.transaction {
                            for uid in chunk { if let e = try store.outboxEntry(mailboxId: mailbox, uid: uid) { try store.removeOutbox(id: e.id) } }
                        }
                        continue
                    }
                    try store.transaction {
                        for uid in chunk {
                            guard let row = try store.fileRow(mailboxId: mailbox, uid: uid) else { continue }
                            let key = Breaker.key(mailbox, uid)
                            var sent = row.flags
                            if withoutT.contains(key) {
                                sent = sent.taking(.trashed, from: row.baseFlags)
                            } else if let removed = counted[key] {
                                try store.recordDestructive(mailboxId: mailbox, removed: removed, at: now)
                            }
                            let base = row.baseFlags.taking(.pushable, from: sent)
                            try store.setBaseFlags(mailboxId: mailbox, uid: uid, base)
                            if !withoutT.contains(key), let e = try store.outboxEntry(mailboxId: mailbox, uid: uid), e.kind == .flags {
                                try store.removeOutbox(id: e.id)
                            }
                            result.flags += 1
                        }
                    }
                }
            }
        }
    }

    // MARK: - Moves

    private func pushMoves(_ entries: [OutboxEntry], mailboxes: [String: MailboxRecord], counted: [String: Bool], at now: Int,
                           into result: inout Result) throws {
        // Moves whose answer was lost are settled one by one before anything else is sent.
        for entry in entries where entry.sent {
            try settleMove(entry, into: &result)
        }
        var groups: [String: (source: String, target: String, update: FlagUpdate, uids: [Int])] = [:]
        try store.transaction {
            for entry in entries where !entry.sent {
                guard let uid = entry.uid, let target = entry.target,
                      let row = try store.fileRow(mailboxId: entry.mailboxId, uid: uid) else {
                    try store.removeOutbox(id: entry.id)
                    continue
                }
                guard mailboxes[target] != nil else { continue }   // settled by removeMailbox
                let update = row.flags.flagUpdate(from: row.baseFlags)
                let key = entry.mailboxId + " " + target + " " + update.key
                groups[key, default: (entry.mailboxId, target, update, [])].uids.append(uid)
                try store.setOutboxSent(id: entry.id, true)
            }
        }
        for (_, group) in groups.sorted(by: { $0.key < $1.key }) {
            for chunk in Self.chunks(group.uids.sorted()) {
                result.requests += 1
                var pairs: [(Int, Int)] = []
                do {
                    pairs = try client.moveMessages(mailbox: group.source, uids: chunk.map(String.init).joined(separator: ","),
                                                    to: group.target, group.update)
                    result.sent += SentRequest.moved(from: group.source, to: group.target, pairs: pairs)
                } catch let error as WildDuckError where error.isNotFound {
                    pairs = []
                } catch let error as WildDuckError where Self.isPermanent(error) {
                    // "Mailbox is missing": the next mailbox listing settles it (removeMailbox).
                    log.log(.warning, "moving messages from \(group.source) to \(group.target) failed: \(error); kept for the next run")
                    try store.transaction {
                        for uid in chunk { if let e = try store.outboxEntry(mailboxId: group.source, uid: uid) { try store.setOutboxSent(id: e.id, false) } }
                    }
                    continue
                }
                var moved = Set<Int>()
                try store.transaction {
                    for (old, new) in pairs where chunk.contains(old) {
                        guard let row = try store.fileRow(mailboxId: group.source, uid: old) else { continue }
                        try forget(duplicate: try store.completeMove(mailboxId: group.source, uid: old, target: group.target, newUid: new,
                                                                     baseFlags: row.baseFlags.taking(.pushable, from: row.flags)))
                        if let removed = counted[Breaker.key(group.source, old)] {
                            try store.recordDestructive(mailboxId: group.source, removed: removed, at: now)
                        }
                        moved.insert(old)
                        result.moves += 1
                    }
                }
                try mergeFlagsAfterMove(target: group.target, uids: pairs.filter { moved.contains($0.0) }.map(\.1), into: &result)
                // Not moved: gone from the source. Perhaps moved already (a resend), else lost.
                for uid in chunk where !moved.contains(uid) {
                    if let e = try store.outboxEntry(mailboxId: group.source, uid: uid) { try settleMove(e, into: &result) }
                }
            }
        }
    }

    /// A move whose outcome is unknown: send it again (a message still in the source moves now;
    /// one that is not is not matched), and if the source no longer has it, find it in the target.
    /// A message the server lost meanwhile is uploaded from the local file: the mail is kept.
    private func settleMove(_ entry: OutboxEntry, into result: inout Result) throws {
        guard let uid = entry.uid, let target = entry.target,
              let row = try store.fileRow(mailboxId: entry.mailboxId, uid: uid),
              let message = try store.message(mailboxId: entry.mailboxId, uid: uid) else {
            try store.removeOutbox(id: entry.id)
            return
        }
        let update = row.flags.flagUpdate(from: row.baseFlags)
        let base = row.baseFlags.taking(.pushable, from: row.flags)
        result.requests += 1
        do {
            let pairs = try client.moveMessages(mailbox: entry.mailboxId, uids: String(uid), to: target, update)
            result.sent += SentRequest.moved(from: entry.mailboxId, to: target, pairs: pairs)
            if let pair = pairs.first(where: { $0.0 == uid }) {
                try store.transaction {
                    try forget(duplicate: try store.completeMove(mailboxId: entry.mailboxId, uid: uid, target: target, newUid: pair.1, baseFlags: base))
                }
                try mergeFlagsAfterMove(target: target, uids: [pair.1], into: &result)
                result.moves += 1
                return
            }
        } catch let error as WildDuckError where error.isNotFound {}
        result.requests += 1
        if let found = try find(in: target, messageId: message.messageId, date: message.idate, subject: nil, afterUid: nil) {
            // The move went through, with the flag changes it carried: that is the agreed state,
            // and what the server shows besides (another client's change) is merged over it.
            try store.transaction {
                try forget(duplicate: try store.completeMove(mailboxId: entry.mailboxId, uid: uid, target: target, newUid: found.uid, baseFlags: base))
                try store.updateFlags(mailboxId: target, uid: found.uid, flags: MessageFlags(listing: found), json: nil)
            }
            result.moves += 1
            return
        }
        if let moved = try findMovedElsewhere(messageId: message.messageId, date: message.idate, source: entry.mailboxId, target: target),
           let from = moved.mailbox {
            // Another client moved the message since the last pull (mutt saved it from the
            // folder it saw): the person's move is carried out from where it is now, so that
            // it is not uploaded as a second copy. Lost answer: the next run finds it in the
            // target (above).
            result.requests += 1
            do {
                let pairs = try client.moveMessages(mailbox: from, uids: String(moved.uid), to: target, update)
                result.sent += SentRequest.moved(from: from, to: target, pairs: pairs)
                if let pair = pairs.first(where: { $0.0 == moved.uid }) {
                    try store.transaction {
                        try forget(duplicate: try store.completeMove(mailboxId: entry.mailboxId, uid: uid, target: target, newUid: pair.1, baseFlags: base))
                        // Its copy downloaded where the other client had put it is not the
                        // person's: its file goes (the person's is the moved message's now).
                        try store.removeMessage(mailboxId: from, uid: moved.uid)
                    }
                    try mergeFlagsAfterMove(target: target, uids: [pair.1], into: &result)
                    result.moves += 1
                    return
                }
            } catch let error as WildDuckError where error.isNotFound {}
        }
        log.log(.warning, "message \(uid) of \(entry.mailboxId) is gone from the server; uploading its local file \(entry.file ?? "") instead of moving it")
        try store.transaction {
            try store.convertMovesToUploads(from: entry.mailboxId, uid: uid)
            try store.completeDelete(mailboxId: entry.mailboxId, uid: uid)
        }
    }

    // MARK: - Deletes

    private func pushDeletes(_ entries: [OutboxEntry], mailboxes: [String: MailboxRecord], counted: [String: Bool], at now: Int,
                             into result: inout Result) throws {
        var byMailbox: [String: [OutboxEntry]] = [:]
        for entry in entries { byMailbox[entry.mailboxId, default: []].append(entry) }
        for (mailbox, list) in byMailbox.sorted(by: { $0.key < $1.key }) {
            for entry in list {
                guard let uid = entry.uid else { try store.removeOutbox(id: entry.id); continue }
                result.requests += 1
                do {
                    try client.deleteMessage(mailbox: mailbox, uid: uid)
                    result.sent.append(.single("EXPUNGE", mailbox: mailbox, uid: uid))
                } catch let error as WildDuckError where error.isNotFound {
                    // Already gone.
                } catch let error as WildDuckError where Self.isPermanent(error) {
                    log.log(.warning, "deleting message \(uid) of \(mailboxes[mailbox]?.path ?? mailbox) failed: \(error); kept for the next run")
                    continue
                }
                try store.transaction {
                    try store.completeDelete(mailboxId: mailbox, uid: uid)
                    if counted[Breaker.key(mailbox, uid)] != nil {
                        try store.recordDestructive(mailboxId: mailbox, removed: true, at: now)
                    }
                }
                result.deletes += 1
            }
        }
    }

    // MARK: - Uploads

    /// Uploads. Those whose answer was lost are settled first, by looking on the server,
    /// before anything is sent; then the others go out one by one.
    private func pushUploads(_ entries: [OutboxEntry], into result: inout Result) throws {
        var toSend: [OutboxEntry] = []
        for entry in entries where !entry.storedDiffers {
            guard entry.file != nil else { try store.removeOutbox(id: entry.id); continue }
            if entry.sent, try settleUpload(entry, into: &result) { continue }
            toSend.append(entry)
        }
        for entry in toSend { try sendUpload(entry, into: &result) }
    }

    /// An upload whose answer is unknown: true when the server has it (it is tied to the local
    /// file now), false when it does not (it may be sent again).
    private func settleUpload(_ entry: OutboxEntry, into result: inout Result) throws -> Bool {
        result.requests += 1
        guard let found = try find(in: entry.mailboxId, messageId: entry.messageId, date: entry.date,
                                   subject: StoredSubject.of(entry.subject), afterUid: entry.afterUid) else { return false }
        try tie(entry, uid: found.uid, size: found.size, base: MessageFlags(listing: found))
        result.uploads += 1
        return true
    }

    private func sendUpload(_ entry: OutboxEntry, into result: inout Result) throws {
        guard let file = entry.file else { try store.removeOutbox(id: entry.id); return }
        let flags = entry.flags ?? []
        let content: LocalContent
        do { content = try maildir.readFile(file, limit: LocalScan.uploadLimit) } catch {
            // Removed (or made unreadable) before it went out: nothing to upload.
            log.log(.verbose, "\(file) is gone; not uploading it")
            try store.removeOutbox(id: entry.id)
            return
        }
        let headers = MessageHeaders(content.bytes)
        // Only what has stopped changing goes out: the file must have the bytes the scan that
        // queued it read, and be quiet (see `LocalScan.quietSeconds`). Otherwise the row records
        // what it is now, and a later pass sends it.
        if LocalScan.isBeingWritten(content) || (entry.sha256 != nil && content.sha256 != entry.sha256) {
            try store.updateUploadContent(id: entry.id, sha256: content.sha256, size: content.bytes.count,
                                          messageId: headers.messageId, subject: headers.subject, date: content.mtime)
            log.log(.verbose, "\(file) changed since it was found; it is uploaded once it has not changed for \(LocalScan.quietSeconds) s")
            result.unstable += 1
            return
        }
        let afterUid = try store.mailboxes().first { $0.id == entry.mailboxId }?.highestUid
        // The intent, with the SHA-256 of exactly the bytes sent, is committed before the request.
        try store.markUploadSent(id: entry.id, sha256: content.sha256, size: content.bytes.count,
                                 messageId: headers.messageId, subject: headers.subject, date: content.mtime,
                                 afterUid: afterUid)
        var sent = entry
        sent.sha256 = content.sha256; sent.size = content.bytes.count; sent.messageId = headers.messageId
        sent.subject = headers.subject; sent.date = content.mtime; sent.afterUid = afterUid; sent.sent = true
        result.requests += 1
        let reply: (uid: Int, size: Int)
        do {
            reply = try client.uploadMessage(mailbox: entry.mailboxId, raw: content.bytes, seen: flags.contains(.seen),
                                             flagged: flags.contains(.flagged), draft: flags.contains(.draft),
                                             date: content.mtime)
        } catch let error as WildDuckError where !error.provesNotDone {
            // A 5xx or 429 (a proxy's 502 after WildDuck stored it), a broken connection, an
            // answer that is not WildDuck's: the upload may have been stored. It stays "sent",
            // and is settled by looking on the server before anything is sent again: now, and
            // if that fails too, by the next pass.
            log.log(.verbose, "uploading \(file): \(error); looking on the server whether it was stored")
            do {
                if try settleUpload(sent, into: &result) { return }
            } catch let lookup as WildDuckError {
                log.log(.verbose, "looking for \(file) on the server: \(lookup)")
                throw error
            }
            // Not there (yet: a proxy's 504 may come before WildDuck is done): it stays "sent",
            // so the next pass looks again before it sends anything.
            if Self.isPermanent(error) {
                log.log(.warning, "cannot upload \(file): \(error); it is tried again on the next run")
                return
            }
            throw error
        } catch let error as WildDuckError {
            // WildDuck refused it: nothing was stored.
            try store.setOutboxSent(id: entry.id, false)
            guard case .server = error else { throw error }   // the password or token refused: the run ends
            if error.isNotFound {
                log.log(.warning, "cannot upload \(file): its mailbox is gone from the server")
                try store.removeOutbox(id: entry.id)
                return
            }
            log.log(.warning, "cannot upload \(file): \(error); it is tried again on the next run")
            return
        }
        result.sent.append(.single("EXISTS", mailbox: entry.mailboxId, uid: reply.uid))
        guard Self.storedSizeMatches(sent: content.bytes, stored: reply.size) else {
            // The server holds something else than what was sent (a body cut short on the
            // way). Neither copy is deleted: the file stays as it is, not tied to the server's
            // message, which the pull downloads as a message of its own, and the upload is not
            // sent again (it would only make another copy).
            try store.setUploadStoredDiffers(id: entry.id)
            log.log(.error, "the server stored \(file) as message \(reply.uid) of \(reply.size) bytes, but \(content.bytes.count) were sent; both are kept: the server's copy is downloaded next to your file. Compare them and delete the wrong one; to upload the file again, give it a new name (a copy)")
            return
        }
        try tie(sent, uid: reply.uid, size: reply.size, base: flags.intersection([.seen, .flagged, .draft]))
        result.uploads += 1
    }

    /// Whether the size WildDuck reports for a stored upload fits the bytes sent. WildDuck
    /// stores a rebuilt message (every bare LF becomes CRLF; `message.size` in the answer of
    /// `POST /users/:user/mailboxes/:mailbox/messages` is the rebuilt size, lib/api/messages.js),
    /// so the expected size is the sent one plus a CR per bare LF; re-encoded parts may differ
    /// a little more, so 5 % and 1 KiB either way are allowed. A body cut short on the way is
    /// far outside that.
    static func storedSizeMatches(sent: [UInt8], stored: Int) -> Bool {
        let expected = rebuiltSize(sent)
        return abs(stored - expected) <= expected / 20 + 1024
    }

    /// The size of `bytes` with every bare LF made CRLF, as WildDuck stores them.
    static func rebuiltSize(_ bytes: [UInt8]) -> Int {
        var bareLF = 0
        var previous: UInt8 = 0
        for b in bytes {
            if b == 0x0A && previous != 0x0D { bareLF += 1 }
            previous = b
        }
        return bytes.count + bareLF
    }

    /// A copy of a moved or uploaded message that an older run downloaded while the answer was
    /// unknown goes, with the change that makes it a copy (same transaction): the export unlinks
    /// it. Only wdsync's own files: the user's file is the message.
    private func forget(duplicate file: String?) throws {
        guard let file, AccountSync.ownsFile(Maildir.uniquePart(ofFileName: (file as NSString).lastPathComponent)) else { return }
        try store.recordDuplicate(file: file)
        log.log(.verbose, "\(file) is a second copy of a message whose file is elsewhere; it is removed")
    }

    /// The local file is the server's message `uid` from now on.
    private func tie(_ entry: OutboxEntry, uid: Int, size: Int, base: MessageFlags) throws {
        try store.transaction {
            let duplicate = try store.completeUpload(entry, uid: uid, size: size, baseFlags: base)
            if duplicate != entry.file { try forget(duplicate: duplicate) }
        }
    }

    // MARK: - Finding a message whose answer was lost

    /// The message in `mailbox` that a lost request created: same Message-ID and internal date
    /// (± 1 s), or, without a Message-ID, same internal date and subject as WildDuck stores it
    /// (`subject`, see `StoredSubject`; nil: not looked for by subject); its uid above `afterUid`
    /// and not one the store already knows. (WildDuck gives a message without a Message-ID one
    /// of its own, so the item's is not compared then.)
    func find(in mailbox: String, messageId: String?, date: Int?, subject: String?, afterUid: Int?) throws -> MessageItem? {
        let wanted = MessageHeaders.normalized(messageId)
        guard wanted != nil || (date != nil && subject != nil) else { return nil }
        var cursor: String?
        let total = try store.mailboxes().first { $0.id == mailbox }?.total ?? 0
        var paging = Paging(route: "GET search", limit: Paging.limit(total: max(total, try store.messageCount(mailboxId: mailbox))),
                            isCancelled: isCancelled)
        repeat {
            let page: MessagePage
            do {
                if let date {
                    page = try client.searchByDate(mailbox: mailbox, from: date - 1, to: date + 1, cursor: cursor)
                } else {
                    page = try client.searchNew(mailbox: mailbox, fromUid: (afterUid ?? 0) + 1, cursor: cursor)
                }
            } catch let error as WildDuckError where error.isNotFound {
                return nil
            }
            for item in page.items {
                if let afterUid, item.uid <= afterUid { continue }
                if let date, let idate = item.idate, abs(idate - date) > 1 { continue }
                if let wanted {
                    guard MessageHeaders.normalized(item.messageId) == wanted else { continue }
                } else if StoredSubject.fold(item.json["subject"]?.string ?? "") != subject {
                    continue
                }
                // A move's copy is not a message the store already has with its file; an upload's
                // may be (a pull listed it while the answer was unknown): `afterUid` decides.
                if afterUid == nil, let known = try store.fileRow(mailboxId: mailbox, uid: item.uid), known.file != nil { continue }
                return item
            }
            cursor = try paging.next(after: page)
        } while cursor != nil
        return nil
    }

    /// A moved message keeps on the server what another client changed before the move, which
    /// the pull does not see (the journal's entry names the old uid, and the target's new uid is
    /// this push's own): the moved copies' flags are read back and merged as a listing's are.
    private func mergeFlagsAfterMove(target: String, uids: [Int], into result: inout Result) throws {
        guard !uids.isEmpty else { return }
        let wanted = Set(uids)
        for list in client.uidLists(mailbox: target, uids.sorted()) {
            var cursor: String?
            var paging = Paging(route: "GET search", limit: Paging.limit(total: uids.count), isCancelled: isCancelled)
            repeat {
                result.requests += 1
                let page: MessagePage
                do {
                    page = try client.searchUids(mailbox: target, uids: list, cursor: cursor)
                } catch let error as WildDuckError where error.isNotFound {
                    return   // the target is gone: the mailbox listing settles it
                }
                try store.transaction {
                    for item in page.items where wanted.contains(item.uid) {
                        try store.updateFlags(mailboxId: target, uid: item.uid, flags: MessageFlags(listing: item), json: nil)
                    }
                }
                cursor = try paging.next(after: page)
            } while cursor != nil
        }
    }

    /// The message of a move that found it in neither the source nor the target: the same
    /// Message-ID and internal date in another mailbox, moved there by another client since the
    /// last pull — or before it: the cache may know it there already, with a file wdsync
    /// downloaded for it (its name carries that mailbox and uid; a copy the person made has a
    /// name of their own and is not taken). Without a Message-ID nothing is matched (a message
    /// of the same date and subject may be another one).
    func findMovedElsewhere(messageId: String?, date: Int?, source: String, target: String) throws -> MessageItem? {
        guard let wanted = MessageHeaders.normalized(messageId), let date else { return nil }
        let total = try store.mailboxes().reduce(0) { $0 + ($1.total ?? 0) }
        var paging = Paging(route: "GET search", limit: Paging.limit(total: total), isCancelled: isCancelled)
        var cursor: String?
        repeat {
            let page = try client.searchByDate(mailbox: nil, from: date - 1, to: date + 1, cursor: cursor)
            for item in page.items {
                guard let mailbox = item.mailbox, mailbox != source, mailbox != target,
                      let idate = item.idate, abs(idate - date) <= 1,
                      MessageHeaders.normalized(item.messageId) == wanted else { continue }
                if let known = try store.fileRow(mailboxId: mailbox, uid: item.uid),
                   AccountSync.carriedKey(known.uniq).map({ $0.mailboxId != mailbox || $0.uid != item.uid }) ?? true { continue }
                return item
            }
            cursor = try paging.next(after: page)
        } while cursor != nil
        return nil
    }

    // MARK: - Helpers

    static func chunks(_ uids: [Int]) -> [[Int]] {
        stride(from: 0, to: uids.count, by: batch).map { Array(uids[$0..<min($0 + batch, uids.count)]) }
    }

    /// Errors that sending again will not fix (`WildDuckError.remedy`: WildDuck's 500s
    /// "Mailbox is missing" and "Nothing was changed", 4xx other than 404 and 429).
    static func isPermanent(_ error: WildDuckError) -> Bool {
        error.failure.remedy == .skip
    }
}

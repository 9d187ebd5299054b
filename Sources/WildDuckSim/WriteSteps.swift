import Foundation

// WildDuck writes a change in steps, not at once: it takes the mailbox's new `modifyIndex` first and
// writes the messages and their journal entries after it, one by one or in batches of 150
// (BULK_BATCH_SIZE). A listing taken between the steps sees part of the change under the final index,
// and the journal entries of the rest arrive after it. The simulator writes in the same steps and lets
// other requests in between them (the lock is released after each); `onWriteStep` lets a test stop a
// write at a step. Read at
// https://github.com/nodemailer/wildduck/blob/08c5804798e7ffe1b281859c4edcec2465d058c2/ :
// - delivery, upload, APPEND (lib/message-handler.js `add`, L460-L494): uidNext and modifyIndex are
//   taken in one update, then the message is inserted (L511), then its EXISTS entry is written (L585,
//   with that modseq, so no further step);
// - IMAP STORE (lib/handlers/on-store.js L38-L62, L304-L388): one new modseq for the whole command,
//   taken at the first message it changes; the messages are written in bulk batches of 150 (L359, L100),
//   each followed by its FETCH entries, which carry the modseq (no further step);
// - REST flag update (lib/message-handler.js `update`, L1767, L1834-L1880): one step for the request,
//   then each matched message is updated, and each batch of 150 FETCH entries (without a modseq) takes
//   one more step when it is written (lib/imap-notifier.js `addEntries`, L152-L201);
// - move (lib/message-handler.js `move`, L919-L943, L1020-L1221, L988-L996): one step on the source at
//   the start; then message by message a copy is inserted in the target and the original deleted; per
//   batch of 150 the EXPUNGE entries (with the first step's modseq) and the EXISTS entries (without: one
//   step on the target, taken when they are written) follow.

/// A point between two steps of a write.
public enum SimWriteStep: Sendable, Equatable {
    /// The write took a new `modifyIndex` of this mailbox; the data follows.
    case bumped(mailbox: String)
    /// The write stored one message (a move: moved one) or one batch, in this mailbox.
    case wrote(mailbox: String)
}

/// Which flags a STORE or a REST update sets (nil: left alone).
struct FlagChanges: Sendable {
    var seen: Bool?, flagged: Bool?, draft: Bool?, deleted: Bool?, answered: Bool?, forwarded: Bool?

    func applied(to old: MsgFlags) -> MsgFlags {
        var f = old
        if let v = seen { f.seen = v }
        if let v = flagged { f.flagged = v; f.flaggedField = nil }
        if let v = draft { f.draft = v; f.draftField = nil }
        if let v = deleted { f.deleted = v }
        if let v = answered { f.answered = v }
        if let v = forwarded { f.forwarded = v }
        return f
    }
}

extension SimAccount {
    /// Calls `hook` (on the writing thread, with no lock held) at every step of every write, so a test can
    /// hold a write between its `modifyIndex` step and its data. nil removes it.
    public func onWriteStep(_ hook: (@Sendable (SimWriteStep) -> Void)?) {
        stepHook.withLock { $0 = hook }
    }

    func step(_ s: SimWriteStep) {
        let hook = stepHook.withLock { $0 }
        hook?(s)
    }

    /// A delivery, an APPEND or an upload: the uid and the `modifyIndex` step first, then the message with
    /// its EXISTS entry.
    func deliver(source: RawSource, parsed: ParsedMail, to mailboxId: String, flags: MsgFlags, idateMs: Int64?,
                 process: SimProcess = .other) throws -> (uid: Int, size: Int) {
        let content = makeContent(source, parsed: parsed)
        let (uid, idate) = try mutate { s -> (Int, Int64) in
            guard let uid = s.mailboxes[mailboxId]?.uidNext else { throw SimAccountError.noSuchMailbox }
            s.mailboxes[mailboxId]?.uidNext += 1
            s.mailboxes[mailboxId]?.modifyIndex += 1
            return (uid, idateMs ?? s.clock())
        }
        step(.bumped(mailbox: mailboxId))
        try mutate { s in
            // The mailbox went away in between: WildDuck's insert would fail the same way.
            guard s.mailboxes[mailboxId] != nil else { throw SimAccountError.noSuchMailbox }
            s.add(content: content, uid: uid, to: mailboxId, flags: flags, idate: idate, process: process)
        }
        step(.wrote(mailbox: mailboxId))
        return (uid, content.size)
    }

    /// Changes one message's flags as another client's IMAP STORE would. Throws `messageNotFound` when it
    /// does not exist.
    public func setFlags(mailboxId: String, uid: Int, seen: Bool? = nil, flagged: Bool? = nil, draft: Bool? = nil, deleted: Bool? = nil,
                         answered: Bool? = nil, forwarded: Bool? = nil) throws {
        guard try state.withLock({ s -> Bool in
            guard let mb = s.mailboxes[mailboxId] else { throw SimAccountError.noSuchMailbox }
            return mb.index(ofUid: uid) != nil
        }) else { throw SimAccountError.messageNotFound }
        try store(mailboxId: mailboxId, uids: [uid], seen: seen, flagged: flagged, draft: draft, deleted: deleted,
                  answered: answered, forwarded: forwarded)
    }

    /// One IMAP STORE command of another client on `uids` (those that exist): one `modifyIndex` step for
    /// the whole command, taken before the first message is written and only if some message changes;
    /// then the messages in batches of 150, each followed by a FETCH entry per changed message. Returns how
    /// many changed.
    @discardableResult
    public func store(mailboxId: String, uids: [Int], seen: Bool? = nil, flagged: Bool? = nil, draft: Bool? = nil, deleted: Bool? = nil,
                      answered: Bool? = nil, forwarded: Bool? = nil) throws -> Int {
        let changes = FlagChanges(seen: seen, flagged: flagged, draft: draft, deleted: deleted, answered: answered, forwarded: forwarded)
        let uids = Array(Set(uids)).sorted()
        let bumped = try mutate { s -> Bool in
            guard let mb = s.mailboxes[mailboxId] else { throw SimAccountError.noSuchMailbox }
            let changing = uids.contains { uid in
                mb.index(ofUid: uid).map { changes.applied(to: mb.byDate[$0].flags) != mb.byDate[$0].flags } ?? false
            }
            if changing { s.mailboxes[mailboxId]?.modifyIndex += 1 }
            return changing
        }
        guard bumped else { return 0 }
        step(.bumped(mailbox: mailboxId))
        var changed = 0
        for start in stride(from: 0, to: uids.count, by: AccountState.batchSize) {
            let batch = uids[start..<min(uids.count, start + AccountState.batchSize)]
            changed += mutate { s -> Int in
                guard var mb = s.mailboxes[mailboxId] else { return 0 }
                s.mailboxes[mailboxId] = nil
                var entries: [(fields: [(String, JSONValue)], unseen: Bool)] = []
                for uid in batch {
                    guard let i = mb.index(ofUid: uid) else { continue }
                    let old = mb.byDate[i].flags
                    let f = changes.applied(to: old)
                    guard f != old else { continue }
                    mb.byDate[i].flags = f
                    if old.seen != f.seen { mb.unseen += f.seen ? -1 : 1 }
                    entries.append((Entry.fetch(mb.byDate[i], mailbox: mailboxId), seen != nil))
                }
                s.mailboxes[mailboxId] = mb
                for e in entries { s.publish("FETCH", mailbox: mailboxId, e.fields, unseenChange: e.unseen, process: .other) }
                return entries.count
            }
            step(.wrote(mailbox: mailboxId))
        }
        return changed
    }

    /// The REST flag update (`PUT .../messages`), as WildDuck's `update`: one step for the request, then
    /// every matched message gets a FETCH entry with its full flag list, changed or not, written in batches
    /// of 150 that take one step each. Returns the number of matched messages. Throws `noSuchMailbox`.
    func updateMessages(mailboxId: String, uids set: UidSet, changes: [(FlagKey, Bool)]) throws -> Int {
        let matched = try mutate { s -> [Int] in
            guard let mb = s.mailboxes[mailboxId] else { throw SimAccountError.noSuchMailbox }
            s.mailboxes[mailboxId]?.modifyIndex += 1
            return mb.uids(matching: set)
        }
        step(.bumped(mailbox: mailboxId))
        let touchesSeen = changes.contains { $0.0 == .seen }
        var count = 0
        for start in stride(from: 0, to: matched.count, by: AccountState.batchSize) {
            let batch = matched[start..<min(matched.count, start + AccountState.batchSize)]
            count += mutate { s -> Int in
                guard var mb = s.mailboxes[mailboxId] else { return 0 }
                s.mailboxes[mailboxId] = nil
                var entries: [[(String, JSONValue)]] = []
                for uid in batch {
                    guard let i = mb.index(ofUid: uid) else { continue }
                    var f = mb.byDate[i].flags
                    let old = f
                    let draftBool = f.listedDraft
                    var flaggedBool: Bool?
                    for (key, value) in changes {
                        switch key {
                        case .seen: f.seen = value
                        case .deleted: f.deleted = value
                        case .flagged: f.flagged = value; flaggedBool = value
                        // WildDuck's quirk: `draft` sets the \Draft flag but writes the `flagged` boolean
                        case .draft: f.draft = value; flaggedBool = value
                        }
                    }
                    if let b = flaggedBool { f.flaggedField = b == f.flagged ? nil : b }
                    f.draftField = draftBool == f.draft ? nil : draftBool
                    mb.byDate[i].flags = f
                    if old.seen != f.seen { mb.unseen += f.seen ? -1 : 1 }
                    entries.append(Entry.fetch(mb.byDate[i], mailbox: mailboxId))
                }
                // the batch's entries have no modseq: writing them takes a step (imap-notifier.js addEntries)
                if !entries.isEmpty { mb.modifyIndex += 1 }
                s.mailboxes[mailboxId] = mb
                for e in entries { s.publish("FETCH", mailbox: mailboxId, e, unseenChange: touchesSeen, process: .api) }
                return entries.count
            }
            step(.wrote(mailbox: mailboxId))
        }
        return count
    }

    /// Moves one message as another client (IMAP MOVE) would; the same steps as the REST `moveTo`.
    @discardableResult
    public func move(mailboxId: String, uid: Int, to target: String) throws -> Int {
        guard let pair = try moveMessages(mailboxId: mailboxId, uids: UidSet(ranges: [uid...uid]), to: target, changes: [],
                                          process: .other).first else {
            throw SimAccountError.messageNotFound
        }
        return pair.new
    }

    /// Moves every message of `uids` (those that exist) as another client's IMAP MOVE would: one command.
    @discardableResult
    public func move(mailboxId: String, uids: [Int], to target: String) throws -> [(old: Int, new: Int)] {
        let ranges = uids.map { $0...$0 }
        return try moveMessages(mailboxId: mailboxId, uids: UidSet(ranges: ranges), to: target, changes: [], process: .other)
    }

    /// A move, as WildDuck's `move`: the source's `modifyIndex` goes up once, at the start (even when
    /// nothing matched); then message by message a copy is stored in the target (new uid, new `_id`) with
    /// `changes` applied and no FETCH entry, and the original removed; per batch of 150 the journal gets
    /// every EXPUNGE (source) and then every EXISTS (target, one `modifyIndex` step per batch). Returns the
    /// (old uid, new uid) pairs. Throws `noSuchMailbox` when either mailbox is missing.
    func moveMessages(mailboxId source: String, uids set: UidSet, to target: String, changes: [(FlagKey, Bool)],
                      process: SimProcess = .api) throws -> [(old: Int, new: Int)] {
        let (matched, targetUse) = try mutate { s -> ([Int], String?) in
            guard let mb = s.mailboxes[source], let t = s.mailboxes[target] else { throw SimAccountError.noSuchMailbox }
            s.mailboxes[source]?.modifyIndex += 1
            return (mb.uids(matching: set), t.specialUse)
        }
        step(.bumped(mailbox: source))
        var pairs: [(old: Int, new: Int)] = []
        var expunges: [(entry: [(String, JSONValue)], unseen: Bool)] = []
        var exists: [(entry: [(String, JSONValue)], unseen: Bool)] = []
        func flush(_ s: inout AccountState) {
            guard !exists.isEmpty else { return }
            for e in expunges { s.publish("EXPUNGE", mailbox: source, e.entry, unseenChange: e.unseen, process: process) }
            s.mailboxes[target]?.modifyIndex += 1
            for e in exists { s.publish("EXISTS", mailbox: target, e.entry, unseenChange: e.unseen, process: process) }
            expunges.removeAll()
            exists.removeAll()
        }
        for uid in matched {
            let moved = mutate { s -> Bool in
                guard s.mailboxes[target] != nil, var r = s.mailboxes[source]?.remove(uid: uid),
                      let newUid = s.mailboxes[target]?.uidNext else { return false }
                s.mailboxes[target]?.uidNext += 1
                expunges.append((Entry.expunge(uid: uid, objectId: r.objectId, thread: r.content.thread, mailbox: source), !r.flags.seen))
                r.uid = newUid
                r.objectId = s.newId(process)
                s.seq += 1
                r.seq = s.seq
                var junk: Int?
                if targetUse == "\\Junk" && !r.junk {
                    r.junk = true
                    junk = 1
                } else if targetUse != "\\Trash" && r.junk {
                    r.junk = false
                    junk = -1
                }
                for (key, value) in changes {
                    switch key {
                    case .seen: r.flags.seen = value
                    case .deleted: r.flags.deleted = value
                    case .flagged: r.flags.flagged = value; r.flags.flaggedField = nil
                    case .draft: r.flags.draft = value; r.flags.draftField = nil
                    }
                }
                r.searchable = !r.flags.deleted
                s.mailboxes[target]?.insert(r)
                exists.append((Entry.exists(r, mailbox: target, junk: junk), !r.flags.seen))
                pairs.append((uid, newUid))
                if exists.count >= AccountState.batchSize { flush(&s) }
                return true
            }
            if moved { step(.wrote(mailbox: source)) }
        }
        mutate { s in flush(&s) }
        return pairs
    }
}

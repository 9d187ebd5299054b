import Foundation
import Store
import Lock
import WildDuck

/// `--once` reads what changed since its last run from the journal instead of listing whole
/// mailboxes, and proves, mailbox by mailbox, that what it read is everything. The stream is the
/// WildDuck module's (`Session.readJournal`; what the server sends, and when, is described at
/// `JournalStream`); what is counted and concluded from it is here.
///
/// WildDuck takes a change's `modifyIndex` step before it writes the change's messages (see
/// docs/incremental-sync.md): a listing, or a replay, taken while a change is under way sees part
/// of it under the final index, and the journal entries of the rest come later, often without a
/// further step (the source of a move, an IMAP STORE). So no sync of a mailbox is final when it
/// is made: the mailbox is "unsettled" from a journal position before the sync, and the next pass
/// reads the journal from there. What it finds for the mailbox is applied (entries say what the
/// state became, so applying one already reflected changes nothing); a mailbox with nothing new
/// (or nothing the cache does not already show) is settled. A mailbox that cannot be confirmed so (no journal, too old, a failed replay) is
/// listed.
///
/// THE PROOF RULE. A mailbox whose `modifyIndex` moved from `S` (what the cache mirrors) to `M`
/// (the listing at the start of this run) is brought up to date from the replay only when all of
/// these hold; otherwise it is listed again, in full, as without a journal:
/// 1. there is a stored position, younger than the journal's life (3 h) minus `ageMargin`;
/// 2. the stream answered 200, sent no `event: error`, no entry that does not decode, and the
///    replay was read to its end (below) before `timeout`;
/// 3. every new entry of the mailbox is an EXISTS, EXPUNGE or FETCH with a flag list (anything
///    else — a FETCH without flags, an unknown command — says "re-read me");
/// 4. the new entries account for exactly `M − S` steps of `modifyIndex`, counted as WildDuck's
///    writes make them (`readings`), and not for `M − S − 1`: a count that one step without any
///    entry (a change whose entries are not written yet, a lost entry) explains as well proves
///    nothing.
/// "New" entries are those not applied before (see `nextPosition`: the replay starts a little
/// before the last pass, and the ids applied since are kept in the cache, `journal_seen`).
/// Entries whose effect the cache already shows (the message is there, or gone, or has these
/// flags) are not counted: a listing may have seen them (counting one twice could hide a
/// missing one; leaving out one that was not seen can only make the count fall short, and the
/// mailbox is listed).
///
/// THE END OF THE REPLAY. Nothing in the stream marks it for sure. The server writes `COUNTERS`
/// after the whole replay when it held an EXISTS, an EXPUNGE or a FETCH that changed `\Seen`, and
/// its first `: idling` heartbeat only after the replay (at once when the replay was empty). A
/// stream that has been quiet for `quiet` seconds without either may have stalled (the server
/// reads the journal with a database cursor): after an EXISTS or EXPUNGE, whose COUNTERS must
/// follow, it proves nothing; otherwise what was read is used, but the position does not move
/// past it (the next pass reads the rest). `timeout` bounds it all.
struct JournalReplay {
    var ageMargin: Double = 15 * 60
    var journalLife: Double = 3 * 3600
    var overlap: Double = 60
    var quiet: Double = 1
    var timeout: Double = 30

    struct Outcome {
        /// Mailboxes brought up to date by `events` (id → modifyIndex they are now at).
        var proven: [String: Int] = [:]
        /// Unsettled mailboxes for which the replay holds nothing new: their last sync is final.
        var settled: Set<String> = []
        /// Unsettled mailboxes whose new entries are in `events`: they stay unsettled.
        var touched: Set<String> = []
        /// The new entries' events for the proven and touched mailboxes, oldest first.
        var events: [RemoteEvent] = []
        /// Highest id read, and every id read (for the next position).
        var lastId: String?
        var ids: [String] = []
        /// The replay ended on a mark the server writes after all of it (COUNTERS, a heartbeat,
        /// the end of the stream), not on a quiet stream.
        var complete = false
        /// Why nothing could be proven, for the log (nil when the replay was read).
        var failure: String?
    }

    /// The id to send as Last-Event-ID for a stored position, or nil when the position is
    /// missing or too old for the journal to still hold what followed it.
    func resumeId(position: String?, now: Double) -> String? {
        guard let position, let seconds = ObjectIdTime.seconds(of: position) else { return nil }
        return now - Double(seconds) < journalLife - ageMargin ? position.lowercased() : nil
    }

    /// The position after a complete pass whose mailbox listing the server answered in second
    /// `listed` (unix seconds, the server's clock): `overlap` seconds before the listing, never
    /// before where the pass read from, and not past where it read from when the replay may
    /// have stopped early (`complete` false). Ids of different server processes are only
    /// roughly ordered, and a change under way during the listing writes its entries after it:
    /// both are read by the next pass. The ids already applied after the position are kept in
    /// `seen` and neither applied nor counted twice.
    func nextPosition(listed: Int, readFrom: String?, seen: Set<String>, complete: Bool = true) -> (position: String, seen: [String]) {
        let behind = ObjectIdTime.id(atSeconds: listed - Int(overlap))
        let position: String
        if let readFrom { position = complete ? max(readFrom, behind) : readFrom } else { position = behind }
        return (position, seen.filter { $0 > position }.sorted())
    }

    /// Reads the replay since `resumeId` and decides which of `changed` it brings up to date, and
    /// which `unsettled` mailboxes (unchanged since their last sync) it confirms; `sent` are the
    /// writes this pass itself sent (Push), whose steps are known exactly. `reflected` says
    /// whether the cache already shows an entry's effect.
    func read(session: any JournalSource, resumeId: String, changed: [MailboxRecord], unsettled: [MailboxRecord] = [],
              seen: Set<String>, sent: [SentRequest] = [], reflected: (JournalEntry) -> Bool = { _ in false },
              log: SyncLog) -> Outcome {
        let collected = collect(session: session, resumeId: resumeId, log: log)
        var outcome = Outcome()
        guard case .success(let list, let marked) = collected else {
            if case .failure(let why) = collected { outcome.failure = why }
            return outcome
        }
        for e in list { if let id = e.id { outcome.ids.append(id) } }
        outcome.lastId = outcome.ids.max()
        if let bad = list.first(where: { $0.command == nil }) {
            outcome.failure = bad.isError ? "the server reported an error while replaying its journal" : "an update did not decode"
            return outcome
        }
        if !marked && list.contains(where: { $0.command == "EXISTS" || $0.command == "EXPUNGE" }) {
            outcome.failure = "the journal's replay stopped before its end (no COUNTERS after its EXISTS and EXPUNGE entries)"
            return outcome
        }
        outcome.complete = marked
        let fresh = list.filter { e in e.command != "COUNTERS" && !(e.id.map(seen.contains) ?? false) }
        let moved = Self.movedIn(fresh)
        var unsettledFrom: [String: String] = [:]
        for m in unsettled { unsettledFrom[m.id] = m.unsettledFrom ?? "" }
        for mailbox in unsettled where mailbox.syncedIndex == mailbox.modifyIndex {
            let from = unsettledFrom[mailbox.id] ?? ""
            // Mailbox-level entries (CREATE, RENAME) are the mailbox list's business.
            if fresh.contains(where: { $0.mailbox == mailbox.id && $0.uid != nil && ($0.id ?? from) >= from && !reflected($0) }) {
                outcome.touched.insert(mailbox.id)
                log.log(.verbose, "\(mailbox.path) changed after it was last read, without a new modifyIndex; applying what the journal says")
            } else {
                outcome.settled.insert(mailbox.id)
            }
        }
        for mailbox in changed {
            guard let synced = mailbox.syncedIndex, mailbox.modifyIndex > synced else { continue }
            // CREATE, RENAME and DELETE are the mailbox list's business and take no step.
            let own = fresh.filter { $0.mailbox == mailbox.id && !["CREATE", "RENAME", "DELETE"].contains($0.command ?? "") }
            if Self.explains(own, steps: mailbox.modifyIndex - synced, sent: sent.filter { $0.mailbox == mailbox.id }, reflected: reflected,
                             movedIn: { $0.id.map(moved.contains) ?? false }) {
                outcome.proven[mailbox.id] = mailbox.modifyIndex
            } else {
                log.log(.verbose, "the journal does not account for every change in \(mailbox.path) (\(own.count) entries for \(mailbox.modifyIndex - synced) modifyIndex steps); listing it")
            }
        }
        // Entries written in the same second by two server processes do not sort in the order
        // they were written (an ObjectId's time is in seconds; the rest is per process), so the
        // replay can bring a message's older flags after its newer ones — the server's setting
        // from just before a listing after the user's pushed change, which put the pushed flags
        // back in the Maildir while the server kept them. For such a message which came last is
        // unknown: its flags are read from the server instead (merged three-way, as a
        // listing's are).
        let unordered = Self.unorderedMessages(list)
        outcome.events = fresh.filter { e in
            guard let m = e.mailbox else { return false }
            if outcome.proven[m] != nil { return true }
            return outcome.touched.contains(m) && (e.id ?? "") >= (unsettledFrom[m] ?? "")
        }.flatMap(\.events).map { event in
            if case .messageFlags(let mailbox, let uid, _) = event, unordered.contains("\(mailbox) \(uid)") {
                return .messageChanged(mailbox: mailbox, uid: uid)
            }
            return event
        }
        return outcome
    }

    /// The messages ("mailbox uid") with two entries in `list` from the same second and from
    /// different server processes: their order is unknown.
    static func unorderedMessages(_ list: [JournalEntry]) -> Set<String> {
        var stamps: [String: [(second: Substring, process: Substring)]] = [:]
        var unordered = Set<String>()
        for e in list {
            guard let m = e.mailbox, let uid = e.uid, let id = e.id, id.count == 24 else { continue }
            let key = "\(m) \(uid)"
            let second = id.prefix(8), process = id.dropFirst(8).prefix(10)
            if stamps[key, default: []].contains(where: { $0.second == second && $0.process != process }) { unordered.insert(key) }
            stamps[key, default: []].append((second, process))
        }
        return unordered
    }

    /// Rule 3 and 4 above: whether `entries` (one mailbox's new entries, oldest first) account
    /// for exactly `steps` steps of its modifyIndex, and one step fewer cannot be explained.
    ///
    /// The writes this pass sent itself (`sent`, all of this mailbox) are counted first, exactly:
    /// each takes its own entries out of the list — one per uid it touched, as many as the
    /// server said it matched; fewer found proves nothing — and its known steps out of `steps`.
    /// Only then are the remaining entries read as `readings` says. Without this, two of our
    /// own flag requests in a row (one `seen`, one `flagged`) would form one run of FETCH
    /// entries that no reading counts right, and the mailbox would be listed.
    static func explains(_ entries: [JournalEntry], steps: Int, sent: [SentRequest] = [],
                         reflected: (JournalEntry) -> Bool = { _ in false },
                         movedIn: (JournalEntry) -> Bool = { _ in false }) -> Bool {
        var entries = entries
        var steps = steps
        for request in sent {
            var uids = Set(request.uids)
            var taken = 0
            entries.removeAll { e in
                guard taken < request.entries, e.command == request.command, let uid = e.uid,
                      uids.remove(uid) != nil else { return false }
                taken += 1
                return true
            }
            guard taken == request.entries else { return false }
            steps -= request.steps
        }
        // Entries the cache already showed before this pass are not counted (see `read`).
        entries.removeAll(where: reflected)
        guard steps >= 0, let sums = readings(entries, movedIn: movedIn) else { return false }
        return sums.contains(steps) && !sums.contains(steps - 1)
    }

    /// Every count of `modifyIndex` steps the entries can stand for, as WildDuck's writes take
    /// them (docs/incremental-sync.md has each in its code), or nil when an entry is not one the
    /// rule reads. Consecutive entries of one kind form a run, and every run of a kind is read
    /// the same way:
    /// - EXISTS: one step each (deliveries, uploads, APPENDs); those `movedIn` says a move wrote,
    ///   one per 150 of a run;
    /// - EXPUNGE: one step each (deletes), or one per run (a move out of it: its one step at the
    ///   start);
    /// - FETCH: one step each (one IMAP STORE per message), one per run (one STORE command: one
    ///   step whatever it changes), one per run plus one per 150 of it (a REST flag update), or
    ///   two each (a REST flag update per message).
    static func readings(_ entries: [JournalEntry], movedIn: (JournalEntry) -> Bool = { _ in false }) -> Set<Int>? {
        var runs: [(command: String, count: Int)] = []
        for e in entries {
            guard var command = e.command, e.uid != nil, ["EXISTS", "EXPUNGE", "FETCH"].contains(command),
                  e.events.count == 1 else { return nil }
            if case .messageChanged = e.events[0] { return nil }
            if command == "EXISTS" && movedIn(e) { command = "EXISTS moved" }
            if runs.last?.command == command { runs[runs.count - 1].count += 1 } else { runs.append((command, 1)) }
        }
        func sums(_ command: String, _ readings: [(Int) -> Int]) -> Set<Int> {
            let mine = runs.filter { $0.command == command }.map(\.count)
            return Set(readings.map { reading in mine.reduce(0) { $0 + reading($1) } })
        }
        // EXISTS entries that follow as many EXPUNGE entries of another mailbox are a move's
        // batch (`movedIn`): one step per 150; any other is a delivery or upload: one step each.
        let added = Set(sums("EXISTS", [{ $0 }]).flatMap { a in sums("EXISTS moved", [batches]).map { a + $0 } })
        let removed = sums("EXPUNGE", [{ $0 }, { _ in 1 }])
        let flagged = sums("FETCH", [{ $0 }, { _ in 1 }, { 1 + batches($0) }, { 2 * $0 }])
        var out = Set<Int>()
        for a in added { for r in removed { for f in flagged { out.insert(a + r + f) } } }
        return out
    }

    /// The ids of EXISTS entries written by a move: a run of them right after as many EXPUNGE
    /// entries of one other mailbox (WildDuck writes each batch of a move so: the source's
    /// EXPUNGE entries, then the target's EXISTS entries, lib/message-handler.js `move`).
    static func movedIn(_ entries: [JournalEntry]) -> Set<String> {
        var out = Set<String>()
        var i = 0
        while i < entries.count {
            guard entries[i].command == "EXPUNGE", let source = entries[i].mailbox else { i += 1; continue }
            var j = i
            while j < entries.count, entries[j].command == "EXPUNGE", entries[j].mailbox == source { j += 1 }
            var k = j
            let target = k < entries.count ? entries[k].mailbox : nil
            while k < entries.count, k - j < j - i, entries[k].command == "EXISTS", entries[k].mailbox == target { k += 1 }
            if k - j == j - i { for e in entries[j..<k] { if let id = e.id { out.insert(id) } } }
            i = max(j, i + 1)
        }
        return out
    }

    /// WildDuck writes journal entries in batches of 150; a batch that needs a new modseq moves
    /// `modifyIndex` once (docs/incremental-sync.md).
    static func batches(_ n: Int) -> Int { (n + 149) / 150 }

    private enum Collected { case success([JournalEntry], marked: Bool), failure(String) }

    /// Reads entries until the end of the replay (see above), then closes the stream.
    private func collect(session: any JournalSource, resumeId: String, log: SyncLog) -> Collected {
        struct State {
            var entries: [JournalEntry] = []
            var lastActivity = ContinuousClock.now
            var marked = false
            var opened = false
            var end: Result<JournalStream.End, Error>?
        }
        let state = Mutex(State())
        let wake = DispatchSemaphore(value: 0)
        let finished = DispatchSemaphore(value: 0)
        let handle = CloseHandle()
        let timeout = self.timeout
        let thread = Thread {
            let end = Result {
                try session.readJournal(after: resumeId, handle: handle, timeout: timeout,
                                        onOpen: { state.withLock { $0.opened = true; $0.lastActivity = .now }; wake.signal() },
                                        onEntry: { entry in
                    state.withLock { s in
                        if entry.command == "COUNTERS" { s.marked = true }
                        s.entries.append(entry)
                        s.lastActivity = .now
                    }
                    wake.signal()
                }, onComment: {
                    // The server's heartbeats start only once the replay is written.
                    state.withLock { $0.marked = true }
                    wake.signal()
                })
            }
            state.withLock { $0.end = end }
            wake.signal()
            finished.signal()
        }
        thread.start()
        let deadline = ContinuousClock.now + .seconds(timeout)
        var result: Collected = .failure("reading the journal took longer than \(Int(timeout)) s")
        reading: while ContinuousClock.now < deadline {
            let (end, marked, last, opened, error) = state.withLock { s in
                (s.end, s.marked, s.lastActivity, s.opened, s.entries.contains { $0.isError })
            }
            if error {
                // Whatever ended the stream after it, the replay failed.
                result = .success(state.withLock { $0.entries }, marked: true)
                break reading
            }
            if let end {
                switch end {
                case .success(.ended): result = .success(state.withLock { $0.entries }, marked: true)
                case .success(.refused(let status, let code)):
                    result = .failure(status == 404 || status == 405 ? "the server has no update stream (HTTP \(status))"
                                      : "the update stream was refused (HTTP \(status)\(code.map { ", \($0)" } ?? ""))")
                case .failure(let error): result = .failure("update stream: \(error)")
                }
                break reading
            }
            if marked || (opened && ContinuousClock.now - last >= .seconds(quiet)) {
                result = .success(state.withLock { $0.entries }, marked: marked)
                break reading
            }
            let wait = (opened ? min(deadline, last + .seconds(quiet)) : deadline) - ContinuousClock.now
            _ = wake.wait(timeout: .now() + max(0.001, Double(wait.components.seconds) + Double(wait.components.attoseconds) / 1e18))
        }
        handle.close()
        finished.wait()
        return result
    }
}

/// A write this pass sent to the server (Push), as the journal shows it: `entries` entries of
/// `command` in `mailbox`, one for each of `entries` of `uids`, and `steps` steps of the
/// mailbox's `modifyIndex` (docs/incremental-sync.md has how WildDuck counts them).
struct SentRequest: Sendable, Equatable {
    var mailbox: String
    var command: String
    var uids: [Int]
    var entries: Int
    var steps: Int

    /// A REST flag update that matched `matched` messages: a FETCH for each, one step for the
    /// request and one per batch of entries.
    static func flags(mailbox: String, uids: [Int], matched: Int) -> SentRequest {
        SentRequest(mailbox: mailbox, command: "FETCH", uids: uids, entries: min(matched, uids.count),
                    steps: 1 + JournalReplay.batches(matched))
    }

    /// A move of `pairs` (old uid, new uid): EXPUNGEs and one step in the source, EXISTS and one
    /// step per batch in the target.
    static func moved(from source: String, to target: String, pairs: [(Int, Int)]) -> [SentRequest] {
        [SentRequest(mailbox: source, command: "EXPUNGE", uids: pairs.map(\.0), entries: pairs.count, steps: 1),
         SentRequest(mailbox: target, command: "EXISTS", uids: pairs.map(\.1), entries: pairs.count,
                     steps: JournalReplay.batches(pairs.count))]
    }

    /// A message deleted (EXPUNGE) or uploaded (EXISTS): one entry, one step.
    static func single(_ command: String, mailbox: String, uid: Int) -> SentRequest {
        SentRequest(mailbox: mailbox, command: command, uids: [uid], entries: 1, steps: 1)
    }
}

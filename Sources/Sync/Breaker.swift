#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Store

/// The mass-delete breaker: what a person does, not what one request holds. Deletes, moves to
/// Trash or Junk and T flags are counted per mailbox over a window (`window`, persisted in the
/// cache, so neither a restarted daemon nor `--once` in a loop starts from zero). When the ones
/// pending plus the ones the server confirmed within the window reach `count` and more than
/// `share` of the mailbox (as it was at the window's start), none of the pending ones is sent:
/// they are held in the outbox, the local change stays as it is, and `--allow-mass-delete`
/// releases them or `--discard-held` restores the messages.
///
/// The daemon sends a mailbox's destructive changes only once they settled (no new one for
/// `settle` seconds): a `rm` of 200 files reaches it over several scans, and each scan's part
/// alone would pass. `--once` reads a snapshot, settled by definition.
///
/// In an exempt mailbox (Trash and Junk by default) nothing is counted or held: emptying them
/// is the ordinary act.
struct Breaker {
    /// At least this many destructive changes in a mailbox…
    static let count = 10
    /// …and more than this share of it trip the breaker…
    static let share = 0.25
    /// …counted over this many seconds.
    static let window = 24 * 3600

    let store: Store
    /// Mailbox paths and special uses (`\Trash`) where nothing is counted.
    let exempt: [String]
    /// `--once --allow-mass-delete`: everything passes, and is not counted.
    let allowAll: Bool
    /// Seconds without a new destructive change before a mailbox's go (0: at once).
    let settle: Int

    struct Decision {
        /// Entries not to send now (held or settling). A flags entry still sends its S and F
        /// changes; only its T waits.
        var blocked: Set<Int> = []
        /// Messages ("mailbox uid") whose change is recorded in the window once the server
        /// confirmed it: whether it takes the message out of the mailbox.
        var counted: [String: Bool] = [:]
        /// Held by this pass.
        var newlyHeld: [HeldChanges] = []
        /// Released entries this pass sends.
        var released = 0
        /// When the settling mailboxes may go (unix seconds).
        var settleUntil: Int?
    }

    static func key(_ mailbox: String, _ uid: Int) -> String { "\(mailbox) \(uid)" }

    static func isTrashOrJunk(_ mailbox: MailboxRecord?) -> Bool {
        mailbox?.specialUse == "\\Trash" || mailbox?.specialUse == "\\Junk"
    }

    func isExempt(_ mailbox: MailboxRecord?) -> Bool {
        guard let mailbox else { return false }
        return exempt.contains { $0 == mailbox.path || ($0.hasPrefix("\\") && $0.caseInsensitiveCompare(mailbox.specialUse ?? "") == .orderedSame) }
    }

    /// Whether an entry destroys (in the breaker's sense), and whether it takes the message out of its mailbox.
    func destroys(_ entry: OutboxEntry, mailboxes: [String: MailboxRecord]) throws -> (removed: Bool, kind: WritableKeyPath<HeldChanges, Int>)? {
        switch entry.kind {
        case .upload: return nil
        case .delete: return (true, \.deletes)
        case .move, .flags:
            if entry.kind == .move, let target = entry.target, target != entry.mailboxId, Self.isTrashOrJunk(mailboxes[target]) {
                return (true, \.moves)
            }
            guard let uid = entry.uid, let row = try store.fileRow(mailboxId: entry.mailboxId, uid: uid),
                  row.flags.contains(.trashed), !row.baseFlags.contains(.trashed) else { return nil }
            return (entry.kind == .move, \.flags)
        }
    }

    func decide(_ entries: [OutboxEntry], mailboxes: [String: MailboxRecord], now: Int) throws -> Decision {
        var decision = Decision()
        var byMailbox: [String: [(OutboxEntry, removed: Bool, kind: WritableKeyPath<HeldChanges, Int>)]] = [:]
        // A request already sent (its answer lost) is settled by the push, not held.
        for entry in entries where entry.held != .discarded && !entry.sent {
            guard let d = try destroys(entry, mailboxes: mailboxes) else {
                // No longer destructive (the T was taken off again): nothing to hold.
                if entry.held != .no { try store.setHeld(ids: [entry.id], .no, from: entry.held) }
                continue
            }
            if entry.held == .released { decision.released += 1; continue }
            if allowAll || isExempt(mailboxes[entry.mailboxId]) { continue }
            byMailbox[entry.mailboxId, default: []].append((entry, d.removed, d.kind))
        }
        for (mailbox, list) in byMailbox.sorted(by: { $0.key < $1.key }) {
            let fresh = list.filter { $0.0.held == .no }
            let alreadyHeld = list.count - fresh.count
            if settle > 0, let newest = fresh.map(\.0.createdAt).max(), newest + settle > now {
                decision.blocked.formUnion(list.map(\.0.id))
                decision.settleUntil = min(decision.settleUntil ?? Int.max, newest + settle)
                continue
            }
            let window = try store.destructiveSince(now - Self.window, mailboxId: mailbox)
            let count = list.count + window.all
            let total = try store.messageCount(mailboxId: mailbox) + window.removed
            // A mailbox with held changes holds the new ones too, until the user decides.
            if alreadyHeld > 0 || (count >= Self.count && Double(count) > Self.share * Double(total)) {
                decision.blocked.formUnion(list.map(\.0.id))
                if !fresh.isEmpty {
                    try store.setHeld(ids: fresh.map(\.0.id), .held, from: .no)
                    var held = HeldChanges(mailboxId: mailbox, path: mailboxes[mailbox]?.path ?? mailbox)
                    for item in fresh { held[keyPath: item.kind] += 1 }
                    decision.newlyHeld.append(held)
                }
                continue
            }
            for item in list { decision.counted[Self.key(item.0.mailboxId, item.0.uid ?? 0)] = item.removed }
        }
        return decision
    }
}

/// `--allow-mass-delete` and `--discard-held` while another wdsync holds the account's lock
/// (the daemon): the decision, with the messages it is about, is appended to a file next to the
/// cache, and the lock holder's next push applies it. The cache is never written by a process
/// without the lock: the daemon keeps read statements open between passes, and a write from
/// elsewhere would make its next transaction fail (SQLITE_BUSY_SNAPSHOT).
public enum HeldDecisions {
    public static func path(db: String) -> String { db + ".held-decisions" }

    /// Appends "release MAILBOX UID" or "discard MAILBOX UID" lines (mode 0600; a link there is refused).
    public static func write(_ decision: OutboxEntry.Held, messages: [(mailboxId: String, uid: Int)], db: String) throws {
        let file = path(db: db)
        let word = decision == .discarded ? "discard" : "release"
        let text = messages.map { "\(word) \($0.mailboxId) \($0.uid)\n" }.joined()
        let fd = open(file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else {
            throw SyncError.localIO("cannot write \(file): \(String(cString: strerror(errno))); check the folder's permissions")
        }
        defer { close(fd) }
        let written = text.withCString { Glibc.write(fd, $0, strlen($0)) }
        guard written == text.utf8.count, fsync(fd) == 0 else {
            throw SyncError.localIO("cannot write \(file): \(String(cString: strerror(errno)))")
        }
    }

    /// The decisions written since the last call (the file is renamed away first, so a line
    /// appended meanwhile goes to a new file and is not lost).
    static func take(db: String) -> [(OutboxEntry.Held, String, Int)] {
        let file = path(db: db), taken = file + ".taken"
        guard rename(file, taken) == 0 else { return [] }
        defer { unlink(taken) }
        guard let text = try? String(contentsOfFile: taken, encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { line in
            let parts = line.split(separator: " ")
            guard parts.count == 3, let uid = Int(parts[2]) else { return nil }
            switch parts[0] {
            case "release": return (.released, String(parts[1]), uid)
            case "discard": return (.discarded, String(parts[1]), uid)
            default: return nil
            }
        }
    }
}

import Maildir

/// What the mass-delete breaker holds back in one mailbox (`wdsync --status`, the log).
public struct HeldChanges: Sendable, Equatable {
    public var mailboxId: String
    public var path: String
    public var deletes = 0
    /// Moves to Trash or Junk.
    public var moves = 0
    /// T (deleted) flags.
    public var flags = 0
    public init(mailboxId: String, path: String, deletes: Int = 0, moves: Int = 0, flags: Int = 0) {
        self.mailboxId = mailboxId; self.path = path; self.deletes = deletes; self.moves = moves; self.flags = flags
    }
    public var total: Int { deletes + moves + flags }

    /// "40 deletes and 3 moves to Trash or Junk in Bulk".
    public var description: String {
        var parts: [String] = []
        if deletes > 0 { parts.append("\(deletes) delete\(deletes == 1 ? "" : "s")") }
        if moves > 0 { parts.append("\(moves) move\(moves == 1 ? "" : "s") to Trash or Junk") }
        if flags > 0 { parts.append("\(flags) T (deleted) flag\(flags == 1 ? "" : "s")") }
        let list = parts.count > 1 ? parts.dropLast().joined(separator: ", ") + " and " + (parts.last ?? "") : parts.joined()
        return "\(list) in \(path)"
    }
}

/// The mass-delete breaker's state in the cache (migration 0008): the held state of outbox rows
/// and the window of destructive changes the server confirmed.
extension Store {
    public func setHeld(ids: [Int], _ held: OutboxEntry.Held, from: OutboxEntry.Held) throws {
        for id in ids {
            try db.run("UPDATE outbox SET held = ? WHERE id = ? AND held = ?", .int(held.rawValue), .int(id), .int(from.rawValue))
        }
    }

    /// Held changes, per mailbox (`held` = 1), or those in another state.
    public func heldChanges(_ state: OutboxEntry.Held = .held) throws -> [HeldChanges] {
        guard try hasColumn("outbox", "held") else { return [] }
        let s = try db.prepare("""
            SELECT o.mailbox_id, COALESCE(m.path, o.mailbox_id), o.kind, COUNT(*)
            FROM outbox o LEFT JOIN mailboxes m ON m.id = o.mailbox_id
            WHERE o.held = ? GROUP BY o.mailbox_id, o.kind ORDER BY 2
            """)
        try s.bind([.int(state.rawValue)])
        var out: [HeldChanges] = []
        while try s.step() {
            let id = s.text(0) ?? ""
            if out.last?.mailboxId != id { out.append(HeldChanges(mailboxId: id, path: s.text(1) ?? id)) }
            switch OutboxEntry.Kind(rawValue: s.text(2) ?? "") {
            case .delete: out[out.count - 1].deletes += s.int(3)
            case .move: out[out.count - 1].moves += s.int(3)
            default: out[out.count - 1].flags += s.int(3)
            }
        }
        return out
    }

    /// `--allow-mass-delete` (`to: .released`) or `--discard-held` (`to: .discarded`): every
    /// held change is handed to the next push. Returns what it was, per mailbox.
    @discardableResult
    public func decideHeld(_ decision: OutboxEntry.Held) throws -> [HeldChanges] {
        try transaction {
            let held = try heldChanges()
            try db.run("UPDATE outbox SET held = ? WHERE held = ?", .int(decision.rawValue), .int(OutboxEntry.Held.held.rawValue))
            return held
        }
    }

    /// The messages whose changes are held: (mailbox, uid).
    public func heldMessages() throws -> [(mailboxId: String, uid: Int)] {
        guard try hasColumn("outbox", "held") else { return [] }
        let s = try db.prepare("SELECT mailbox_id, uid FROM outbox WHERE held = ? AND uid IS NOT NULL ORDER BY id")
        try s.bind([.int(OutboxEntry.Held.held.rawValue)])
        var out: [(mailboxId: String, uid: Int)] = []
        while try s.step() { out.append((s.text(0) ?? "", s.int(1))) }
        return out
    }

    /// A decision about one held change (`HeldDecisions`).
    public func setHeld(mailboxId: String, uid: Int, _ held: OutboxEntry.Held, from: OutboxEntry.Held) throws {
        try db.run("UPDATE outbox SET held = ? WHERE mailbox_id = ? AND uid = ? AND held = ?",
                   .int(held.rawValue), .text(mailboxId), .int(uid), .int(from.rawValue))
    }

    /// The server confirmed destructive changes the breaker counts.
    public func recordDestructive(mailboxId: String, removed: Bool, count: Int = 1, at: Int) throws {
        for _ in 0..<count {
            try db.run("INSERT INTO breaker_window(mailbox_id, at, removed) VALUES (?, ?, ?)",
                       .text(mailboxId), .int(at), .int(removed ? 1 : 0))
        }
    }

    /// The destructive changes confirmed in a mailbox since `since`, and how many of them took
    /// a message out of it. Older ones are forgotten.
    public func destructiveSince(_ since: Int, mailboxId: String) throws -> (all: Int, removed: Int) {
        try db.run("DELETE FROM breaker_window WHERE at < ?", .int(since))
        let s = try db.prepare("SELECT COUNT(*), COALESCE(SUM(removed), 0) FROM breaker_window WHERE mailbox_id = ?")
        try s.bind([.text(mailboxId)])
        _ = try s.step()
        return (s.int(0), s.int(1))
    }

    /// `--discard-held`: a held change is dropped and the message restored locally: a deleted
    /// one is downloaded again, a moved one goes back to its folder, a T flag is taken off
    /// (other flag changes of it stay pending).
    public func restoreDiscarded(_ entry: OutboxEntry) throws {
        try removeOutbox(id: entry.id)
        guard let uid = entry.uid, let row = try fileRow(mailboxId: entry.mailboxId, uid: uid) else { return }
        switch entry.kind {
        case .delete:
            try markForDownload(mailboxId: entry.mailboxId, uid: uid)
        case .move, .flags:
            let flags = row.flags.taking(.trashed, from: row.baseFlags)
            try db.run("UPDATE messages SET flags = ?, dirty = 1 WHERE mailbox_id = ? AND uid = ?",
                       .int(flags.rawValue), .text(entry.mailboxId), .int(uid))
            if !flags.pushableChanges(from: row.baseFlags).isEmpty {
                try queue(.flags, mailboxId: entry.mailboxId, uid: uid)
            }
        case .upload:
            break
        }
    }

    func hasColumn(_ table: String, _ column: String) throws -> Bool {
        let s = try db.prepare("SELECT 1 FROM pragma_table_info(?) WHERE name = ?")
        try s.bind([.text(table), .text(column)])
        return try s.step()
    }
}

/// What the people did, independent of wdsync's code: which messages exist by intent, which a
/// person deleted, moved or re-flagged since the sides last agreed. Messages are known by their
/// Message-ID: every message of a run (seeded, delivered, written by the person) gets a unique
/// one, and ends with a marker line naming it, so a cut-off copy anywhere is recognised.
struct Oracle {
    /// Messages that should exist (created and not deleted by a person or another client).
    var alive: Set<String> = []
    /// Messages the server has held at some point: from then on they may not vanish unless
    /// someone deleted them.
    var seenOnServer: Set<String> = []
    /// What the person did since the last quiet point, per message: verified at the next one.
    var intents: [String: Intent] = [:]
    /// A run exited 66 since the last quiet point: the mass-delete breaker held the person's
    /// deletes (and moves to Trash, T flags), and the person released them.
    var breakerHeld = false
    /// The Maildir or cache was restored or replaced since the last quiet point.
    var restored = false

    struct Intent: Equatable {
        /// the mailbox the message should end up in (a move, a save, a new file)
        var folder: String?
        /// the S/F/T letters the person set or cleared
        var flags: [Character: Bool] = [:]
        var deleted = false
    }

    static func marker(_ id: String) -> String { "-- end of <\(id)> --" }

    /// Messages another client changed since the last quiet point.
    var touchedByServer: Set<String> = []

    /// Another client touched a message the person may have changed too, before or after, with
    /// neither side having seen the other's change: which one wins is a matter of timing, so
    /// only the safety invariants hold for it until the next quiet point.
    mutating func conflict(_ id: String) {
        intents[id] = nil
        touchedByServer.insert(id)
    }

    mutating func personDeleted(_ id: String) {
        alive.remove(id)
        if !touchedByServer.contains(id) { intents[id] = Intent(folder: nil, flags: [:], deleted: true) }
    }

    mutating func personMoved(_ id: String, to folder: String) {
        guard !touchedByServer.contains(id) else { return }
        var i = intents[id] ?? Intent()
        i.folder = folder
        intents[id] = i
    }

    mutating func personFlagged(_ id: String, _ changes: [Character: Bool]) {
        guard !touchedByServer.contains(id) else { return }
        var i = intents[id] ?? Intent()
        for (k, v) in changes { i.flags[k] = v }
        intents[id] = i
    }

    mutating func personCreated(_ id: String, in folder: String) {
        alive.insert(id)
        intents[id] = Intent(folder: folder, flags: [:], deleted: false)
    }
}

/// A broken invariant, with the step it was found at.
struct Failure: Error, CustomStringConvertible {
    var step: Int
    var invariant: String
    var detail: String
    var description: String { "step \(step) [\(invariant)] \(detail)" }
}

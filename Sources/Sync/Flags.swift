import Maildir
import WildDuck

/// The server's forms of a message's flags, converted to and from `MessageFlags` here and only
/// here: a REST listing's booleans, the IMAP flag names of a journal or WebSocket event, and the
/// flag update a push sends. The three-way merge and the pushable set are on the type.
extension MessageFlags {
    /// A message of a REST listing or lookup.
    init(listing item: MessageItem) {
        self = []
        if item.draft { insert(.draft) }
        if item.flagged { insert(.flagged) }
        if item.forwarded { insert(.passed) }
        if item.answered { insert(.replied) }
        if item.seen { insert(.seen) }
        if item.deleted { insert(.trashed) }
    }

    /// IMAP flag names (an event's `flags`), with the REST API's rule that a forwarded message
    /// is not also shown as answered, so that both paths agree.
    init(imap: [String]) {
        let set = Set(imap.map { $0.lowercased() })
        self = []
        if set.contains("\\draft") { insert(.draft) }
        if set.contains("\\flagged") { insert(.flagged) }
        if set.contains("$forwarded") { insert(.passed) }
        if set.contains("\\answered") && !set.contains("$forwarded") { insert(.replied) }
        if set.contains("\\seen") { insert(.seen) }
        if set.contains("\\deleted") { insert(.trashed) }
    }

    /// The update that makes the server's S, F and T those of `self` where they differ from `base`.
    func flagUpdate(from base: MessageFlags) -> FlagUpdate {
        let diff = pushableChanges(from: base)
        var update = FlagUpdate()
        if diff.contains(.seen) { update.seen = contains(.seen) }
        if diff.contains(.flagged) { update.flagged = contains(.flagged) }
        if diff.contains(.trashed) { update.deleted = contains(.trashed) }
        return update
    }
}

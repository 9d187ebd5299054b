/// A message's flags: the six Maildir flags, the one flag model of wdsync. The same bits are in
/// a file's name, in the cache (`messages.flags`, `base_flags`) and in the outbox; what the
/// server says is converted to them in one place (`Sources/Sync/Flags.swift`: a listing, IMAP
/// flag names, REST fields). They are declared in ASCII order of their letters, so the `:2,`
/// info string is produced by one loop and is always sorted, as the Maildir spec requires.
///
/// Parsing ignores letters it does not know (lowercase Dovecot keyword letters, anything else).
/// wdsync owns the files it writes: a flag change writes the info from the server's flags alone,
/// so a letter another program added to one of wdsync's files is not kept.
public struct MessageFlags: OptionSet, Sendable, Hashable, CustomStringConvertible {
    public let rawValue: Int
    public init(rawValue: Int) { self.rawValue = rawValue }

    /// `D`: a draft.
    public static let draft = MessageFlags(rawValue: 1 << 0)
    /// `F`: flagged (IMAP \Flagged).
    public static let flagged = MessageFlags(rawValue: 1 << 1)
    /// `P`: passed (resent, forwarded or bounced).
    public static let passed = MessageFlags(rawValue: 1 << 2)
    /// `R`: replied (IMAP \Answered).
    public static let replied = MessageFlags(rawValue: 1 << 3)
    /// `S`: seen.
    public static let seen = MessageFlags(rawValue: 1 << 4)
    /// `T`: trashed (IMAP \Deleted).
    public static let trashed = MessageFlags(rawValue: 1 << 5)

    /// The letters in ASCII order; bit `i` is `letters[i]`.
    static let letters: [UInt8] = Array("DFPRST".utf8)

    /// The flag letters, sorted: `"FS"`.
    public var letters: String {
        var out: [UInt8] = []
        for (i, letter) in Self.letters.enumerated() where rawValue & (1 << i) != 0 {
            out.append(letter)
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// The info suffix of a file name: `":2,FS"` (`":2,"` when no flag is set).
    public var info: String { ":2," + letters }

    public var description: String { info }

    /// Flags from the letters after `:2,` (unknown letters are ignored).
    public init(letters: Substring) {
        var raw = 0
        for byte in letters.utf8 {
            if let i = Self.letters.firstIndex(of: byte) { raw |= 1 << i }
        }
        self.init(rawValue: raw)
    }

    /// Flags of a Maildir file name such as `"1700000000.abc.host:2,RS"`. A name without a
    /// `:2,` info (or with the experimental `:1,`) has no flags.
    public init(fileName: String) {
        // Bytes, not Characters (see `Maildir.uniquePart(ofFileName:)`).
        let bytes = fileName.utf8
        guard let colon = bytes.firstIndex(of: UInt8(ascii: ":")) else { self.init(); return }
        let info = bytes[bytes.index(after: colon)...]
        guard info.starts(with: "2,".utf8) else { self.init(); return }
        self.init(letters: Substring(String(decoding: info.dropFirst(2), as: UTF8.self)))
    }

    // MARK: - Two-way

    /// The flags the REST API can set on an existing message: S, F, T (`seen`, `flagged`,
    /// `deleted`). R and P have no REST field, and `draft` writes the server's `flagged` field,
    /// so D, R and P are kept locally and never pushed.
    public static let pushable: MessageFlags = [.seen, .flagged, .trashed]

    /// The pushable flags that differ between `self` (local) and `base` (the server's state
    /// both sides last agreed on): empty when there is nothing to send.
    public func pushableChanges(from base: MessageFlags) -> MessageFlags {
        symmetricDifference(base).intersection(.pushable)
    }

    /// `self` with the `flags` bits as `other` has them: `base.taking(.pushable, from: sent)` is
    /// the base after the server confirmed what was sent.
    public func taking(_ flags: MessageFlags, from other: MessageFlags) -> MessageFlags {
        subtracting(flags).union(other.intersection(flags))
    }

    /// The three-way merge of one message's flags: `local` is the state on disk (with local
    /// changes), `base` the server's state both sides last agreed on, `server` what the server
    /// says now. A flag changed on one side only takes that side's value; a flag changed on both
    /// sides takes the local one.
    public static func merge(local: MessageFlags, base: MessageFlags, server: MessageFlags) -> MessageFlags {
        let take = server.symmetricDifference(base).subtracting(local.symmetricDifference(base))
        return server.intersection(take).union(local.subtracting(take))
    }
}

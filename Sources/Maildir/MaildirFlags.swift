/// The six Maildir flags. They are declared in ASCII order of their letters, so the `:2,` info
/// string is produced by one loop and is always sorted, as the Maildir spec requires.
///
/// Parsing ignores letters it does not know (lowercase Dovecot keyword letters, anything else).
/// wdsync owns the files it writes: a flag change writes the info from the server's flags alone,
/// so a letter another program added to one of wdsync's files is not kept.
public struct MaildirFlags: OptionSet, Sendable, Hashable, CustomStringConvertible {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// `D`: a draft.
    public static let draft = MaildirFlags(rawValue: 1 << 0)
    /// `F`: flagged (IMAP \Flagged).
    public static let flagged = MaildirFlags(rawValue: 1 << 1)
    /// `P`: passed (resent, forwarded or bounced).
    public static let passed = MaildirFlags(rawValue: 1 << 2)
    /// `R`: replied (IMAP \Answered).
    public static let replied = MaildirFlags(rawValue: 1 << 3)
    /// `S`: seen.
    public static let seen = MaildirFlags(rawValue: 1 << 4)
    /// `T`: trashed (IMAP \Deleted).
    public static let trashed = MaildirFlags(rawValue: 1 << 5)

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
        var raw: UInt8 = 0
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
}

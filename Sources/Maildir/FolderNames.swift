// # Maildir folder names: the encoding scheme
//
// Mailbox paths come from the server and are data, never paths. wdsync turns a mailbox path
// into a directory name below the Maildir root with this reversible scheme:
//
// 1. The path is split on `/` into segments. Each segment is encoded byte by byte (UTF-8).
//    Bytes are copied unchanged, except these, which are written as `%XX` (the byte in two
//    uppercase hex digits):
//    - `%` itself, always (so every `%` in a folder name starts an escape);
//    - control characters: bytes 0x00–0x1F and 0x7F, and the C1 controls U+0080–U+009F
//      (both bytes of their UTF-8 form);
//    - bytes that are not part of well-formed UTF-8 (reachable only through the `[UInt8]` API;
//      a Swift `String` always holds valid Unicode);
//    - `/` (cannot remain after splitting; listed for the byte API);
//    - maildir++ only: every `.` (the maildir++ hierarchy separator);
//    - verbatim only: a `.` at the start of a segment, so `.`, `..` and hidden names become
//      `%2E`, `%2E.` and `%2Ehidden`;
//    - verbatim only: the first letter of a segment that is exactly `cur`, `new` or `tmp`
//      (`%63ur`, `%6Eew`, `%74mp`), so a child folder never collides with its parent's
//      Maildir subdirectories.
//    Everything else, including spaces and non-ASCII letters, is kept, so `Entwürfe` stays
//    readable in the MUA's folder list.
// 2. An empty segment (`a//b`, a leading or trailing `/`, the empty path) is written as a lone `%`.
// 3. Layouts:
//    - verbatim (default): segments are joined with `/`: `INBOX` → `<root>/INBOX`,
//      `Work/Projects` → `<root>/Work/Projects`, each a Maildir (`cur/ new/ tmp/`).
//    - maildir++: the path `INBOX` (exactly) is the root itself (`<root>/cur` …); any other path
//      is `.` + the segments joined with `.`: `Work/Projects` → `<root>/.Work.Projects`,
//      `a.b/c` → `<root>/.a%2Eb.c`, `INBOX/Sub` → `<root>/.INBOX.Sub`. Each such folder holds
//      an empty `maildirfolder` marker file.
// 4. Over-long names: one directory name is at most 200 bytes (UTF-8). File systems allow 255,
//    but notmuch stores every directory name in a Xapian term, and Xapian refuses terms over 245
//    bytes — with its prefix and ids, a 236-byte name already makes `notmuch new` fail for the
//    whole database; 200 leaves room. When an encoded segment (verbatim) or the whole encoded
//    folder name `.a.b.c` (maildir++) is longer, it is cut to at most 166 bytes (never inside an
//    escape or a UTF-8 character) and `%~` plus 32 lowercase hex digits are appended: the first
//    128 bits of the SHA-256 of the original, unencoded bytes (the segment in verbatim; the whole
//    path in maildir++). **This one case is not reversible from the name alone**: `decode`
//    returns nil, and the mailbox path must be looked up in the database. (Before this limit,
//    names were cut at 255 bytes; the exporter renames such folders, as it does after a mailbox
//    rename, because every pass compares each mailbox's folder with the name encoded now.)
//
// Decoding reverses 1–3: split on the separator, a lone `%` is an empty segment, `%XX` is the
// byte XX. Decoding is strict: it accepts exactly the names the encoder produces, so a directory
// made by someone else is recognised as foreign.
//
// Why two mailbox paths never share a directory: decoding is a left inverse of encoding (every
// literal `%` is escaped, so input cannot forge an escape, and the separator never appears
// literally inside an encoded segment); a truncated name contains `%~`, which no other encoding
// does, so it can only meet another truncated name whose SHA-256 prefix collides. Why nothing
// leaves the root: no encoded segment is empty, `.` or `..`, contains `/` or NUL, or (verbatim)
// is `cur`, `new` or `tmp`.
//
// Not handled: Unicode normalisation (NFC and NFD spellings are different bytes and so different
// folders — compare mailbox paths as UTF-8 bytes, not with Swift's `==`), and case-insensitive
// file systems (`Work` and `work` would share a folder there; wdsync expects a case-sensitive one).

/// How mailbox paths are laid out under the Maildir root.
public enum MaildirLayout: String, Sendable, Hashable, CaseIterable {
    /// Nested directories: `Work/Projects` → `<root>/Work/Projects`, `INBOX` → `<root>/INBOX`.
    case verbatim
    /// Courier's Maildir++: INBOX is the root, other folders are `<root>/.Work.Projects`.
    case maildirPlusPlus = "maildir++"
}

/// The folder-name encoding described at the top of this file.
public enum FolderNames {
    /// Longest file name written (bytes), the usual `NAME_MAX`.
    public static let maxNameBytes = 255
    /// Longest directory name written (bytes): what notmuch can index (see the scheme, 4.).
    public static let maxFolderNameBytes = 200
    static let hashHexDigits = 32
    /// Length a too-long name is cut to before `%~` and the hash are appended.
    static let truncatedPrefixBytes = maxFolderNameBytes - 2 - hashHexDigits

    private static let percent = UInt8(ascii: "%")
    private static let dot = UInt8(ascii: ".")
    private static let slash = UInt8(ascii: "/")
    private static let tilde = UInt8(ascii: "~")
    private static let upperHex: [UInt8] = Array("0123456789ABCDEF".utf8)

    /// The folder directory for a mailbox path, relative to the root ("" is the root itself).
    public static func encode(_ mailboxPath: String, layout: MaildirLayout) -> String {
        encode(bytes: Array(mailboxPath.utf8), layout: layout)
    }

    /// The folder directory for a mailbox path given as raw bytes (which may be invalid UTF-8).
    public static func encode(bytes path: [UInt8], layout: MaildirLayout) -> String {
        let segments = path.split(separator: slash, omittingEmptySubsequences: false)
        switch layout {
        case .verbatim:
            var out: [UInt8] = []
            out.reserveCapacity(path.count + 8)
            for (i, segment) in segments.enumerated() {
                if i > 0 { out.append(slash) }
                var encoded = encodeSegment(segment, layout: layout)
                if encoded.count > maxFolderNameBytes {
                    encoded = truncate(encoded, hashing: Array(segment))
                }
                out += encoded
            }
            return String(decoding: out, as: UTF8.self)
        case .maildirPlusPlus:
            if path.elementsEqual("INBOX".utf8) { return "" }
            var out: [UInt8] = [dot]
            out.reserveCapacity(path.count + 8)
            for (i, segment) in segments.enumerated() {
                if i > 0 { out.append(dot) }
                out += encodeSegment(segment, layout: layout)
            }
            if out.count > maxFolderNameBytes {
                out = truncate(out, hashing: path)
            }
            return String(decoding: out, as: UTF8.self)
        }
    }

    /// The mailbox path of a folder directory (relative to the root), or nil when the name was
    /// not produced by `encode` (a foreign directory, or a truncated over-long name, which only
    /// the database can map back), or when the path is not valid UTF-8 (use `decodeBytes`).
    public static func decode(_ folder: String, layout: MaildirLayout) -> String? {
        guard let bytes = decodeBytes(folder, layout: layout) else { return nil }
        return FolderNames.string(validatingUTF8: bytes)
    }

    /// Like `decode`, but returns the raw bytes of the mailbox path.
    public static func decodeBytes(_ folder: String, layout: MaildirLayout) -> [UInt8]? {
        let input = Array(folder.utf8)
        var path: [UInt8] = []
        switch layout {
        case .verbatim:
            guard !input.isEmpty else { return nil }
            for (i, segment) in input.split(separator: slash, omittingEmptySubsequences: false).enumerated() {
                guard let decoded = decodeSegment(segment) else { return nil }
                if i > 0 { path.append(slash) }
                path += decoded
            }
        case .maildirPlusPlus:
            if input.isEmpty { return Array("INBOX".utf8) }
            guard input.first == dot else { return nil }
            for (i, segment) in input.dropFirst().split(separator: dot, omittingEmptySubsequences: false).enumerated() {
                guard let decoded = decodeSegment(segment) else { return nil }
                if i > 0 { path.append(slash) }
                path += decoded
            }
        }
        // Strict: only names the encoder produces (this also rejects `.INBOX` in maildir++).
        guard encode(bytes: path, layout: layout).utf8.elementsEqual(input) else { return nil }
        return path
    }

    // MARK: - Segments

    static func encodeSegment(_ segment: ArraySlice<UInt8>, layout: MaildirLayout) -> [UInt8] {
        if segment.isEmpty { return [percent] }
        var out: [UInt8] = []
        out.reserveCapacity(segment.count)
        let reserved = layout == .verbatim
            && (segment.elementsEqual("cur".utf8) || segment.elementsEqual("new".utf8) || segment.elementsEqual("tmp".utf8))
        let start = segment.startIndex
        var i = start
        while i < segment.endIndex {
            let b = segment[i]
            if b < 0x80 {
                let escape = b == percent || b < 0x20 || b == 0x7F || b == slash
                    || (b == dot && (layout == .maildirPlusPlus || i == start))
                    || (reserved && i == start)
                if escape { appendEscape(b, to: &out) } else { out.append(b) }
                i += 1
                continue
            }
            let n = utf8SequenceLength(segment, at: i)
            if n == 0 {
                appendEscape(b, to: &out)
                i += 1
            } else if n == 2 && b == 0xC2 && segment[i + 1] < 0xA0 {
                // C1 control U+0080–U+009F.
                appendEscape(b, to: &out)
                appendEscape(segment[i + 1], to: &out)
                i += 2
            } else {
                out += segment[i..<(i + n)]
                i += n
            }
        }
        return out
    }

    /// Decodes one encoded segment; nil for anything malformed or truncated (`%~`).
    static func decodeSegment(_ segment: ArraySlice<UInt8>) -> [UInt8]? {
        if segment.elementsEqual([percent]) { return [] }
        if segment.isEmpty { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(segment.count)
        var i = segment.startIndex
        while i < segment.endIndex {
            let b = segment[i]
            if b == percent {
                guard i + 2 < segment.endIndex,
                      let hi = hexValue(segment[i + 1]), let lo = hexValue(segment[i + 2]) else { return nil }
                out.append(hi << 4 | lo)
                i += 3
            } else {
                out.append(b)
                i += 1
            }
        }
        return out
    }

    /// Cuts an over-long encoded name at a token boundary and appends `%~` and the hash.
    static func truncate(_ encoded: [UInt8], hashing original: [UInt8]) -> [UInt8] {
        var cut = 0
        while cut < encoded.count {
            let b = encoded[cut]
            let step: Int
            if b == percent {
                // `%XX`, or a lone `%` (an empty segment, followed by a separator or the end).
                step = (cut + 1 < encoded.count && hexValue(encoded[cut + 1]) != nil) ? 3 : 1
            } else if b < 0x80 {
                step = 1
            } else {
                step = max(1, utf8SequenceLength(encoded[...], at: cut))
            }
            if cut + step > truncatedPrefixBytes { break }
            cut += step
        }
        let digest = SHA256Hasher.digest(original)
        return Array(encoded[..<cut]) + [percent, tilde] + Array(hex(digest.prefix(hashHexDigits / 2)).utf8)
    }

    private static func appendEscape(_ b: UInt8, to out: inout [UInt8]) {
        out.append(percent)
        out.append(upperHex[Int(b >> 4)])
        out.append(upperHex[Int(b & 0x0F)])
    }

    /// Uppercase hex digits only (the encoder writes uppercase; decoding is strict).
    private static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    /// The bytes as a String when they are well-formed UTF-8, else nil.
    static func string(validatingUTF8 bytes: [UInt8]) -> String? {
        var i = 0
        while i < bytes.count {
            if bytes[i] < 0x80 { i += 1; continue }
            let n = utf8SequenceLength(bytes[...], at: i)
            if n == 0 { return nil }
            i += n
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Length of the well-formed UTF-8 sequence starting at `i` (2…4), or 0 if it is not one.
    static func utf8SequenceLength(_ s: ArraySlice<UInt8>, at i: Int) -> Int {
        let b0 = s[i]
        func cont(_ k: Int, _ lo: UInt8 = 0x80, _ hi: UInt8 = 0xBF) -> Bool {
            i + k < s.endIndex && s[i + k] >= lo && s[i + k] <= hi
        }
        switch b0 {
        case 0xC2...0xDF: return cont(1) ? 2 : 0
        case 0xE0: return cont(1, 0xA0) && cont(2) ? 3 : 0
        case 0xE1...0xEC, 0xEE...0xEF: return cont(1) && cont(2) ? 3 : 0
        case 0xED: return cont(1, 0x80, 0x9F) && cont(2) ? 3 : 0
        case 0xF0: return cont(1, 0x90) && cont(2) && cont(3) ? 4 : 0
        case 0xF1...0xF3: return cont(1) && cont(2) && cont(3) ? 4 : 0
        case 0xF4: return cont(1, 0x80, 0x8F) && cont(2) && cont(3) ? 4 : 0
        default: return 0
        }
    }
}

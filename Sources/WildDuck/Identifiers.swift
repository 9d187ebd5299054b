/// Checks for identifiers the server hands out. They end up in file names, folder names and
/// request paths, so anything that is not the shape WildDuck documents is refused where JSON
/// becomes models (https://github.com/nodemailer/wildduck/blob/08c5804798e7ffe1b281859c4edcec2465d058c2/docs/api/openapi.yml):
/// object ids are MongoDB ObjectIds (24 hex digits), message ids are IMAP uids (RFC 3501 §2.3.1.1:
/// non-zero 32-bit unsigned integers), and names never contain NUL.
public enum ServerID {
    /// A MongoDB ObjectId in its hex form: exactly 24 hex digits.
    public static func isObjectId(_ text: String) -> Bool {
        let bytes = text.utf8
        return bytes.count == 24 && bytes.allSatisfy { b in
            (0x30...0x39).contains(b) || (0x61...0x66).contains(b) || (0x41...0x46).contains(b)
        }
    }

    /// An IMAP uid: 1 … 2³²−1.
    public static func isUid(_ value: Int) -> Bool { value >= 1 && value <= Int(UInt32.max) }

    /// A name (mailbox path, flag) that may go into a file name or SQL text.
    public static func isName(_ text: String) -> Bool { !text.utf8.contains(0) }

    /// A uid from JSON, or nil when it is missing or not a valid uid.
    public static func uid(_ json: JSON?) -> Int? {
        guard let n = json?.int, isUid(n) else { return nil }
        return n
    }

    /// An ObjectId from JSON, or nil when it is missing or malformed.
    public static func objectId(_ json: JSON?) -> String? {
        guard let s = json?.string, isObjectId(s) else { return nil }
        return s
    }

    /// A server string made fit for a log line: at most `limit` characters, control characters
    /// escaped (the logger escapes them too; this keeps messages short and readable).
    public static func describe(_ json: JSON?, limit: Int = 60) -> String {
        guard let json else { return "none" }
        let text = json.text
        var out = ""
        for scalar in text.unicodeScalars.prefix(limit) {
            if scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value) {
                out += "\\u{\(String(scalar.value, radix: 16))}"
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
        return text.unicodeScalars.count > limit ? out + "…" : out
    }
}

/// What every log line goes through before it is written (the logger calls `clean`, call sites
/// do not have to): secrets are redacted and control characters escaped, whichever direction
/// the text came from. Server strings (mailbox names, error messages, WebSocket frames in
/// `--debug`) may hold terminal escape sequences; written raw they could rewrite the user's
/// terminal or forge log lines.
public enum LogText {
    /// `"token":"…"`, `"accessToken": "…"`, `"password":"…"` (also inside escaped JSON).
    nonisolated(unsafe) private static let jsonSecret = try? Regex(
        #"(?i)(\\?"[a-z_\-]*(?:token|password|secret)[a-z_\-]*\\?"\s*:\s*\\?")[^"\\]*"#)
    /// `X-Access-Token: …` (a header line, or as it appears in a dump).
    nonisolated(unsafe) private static let header = try? Regex(#"(?i)(x-access-token\s*[:=]\s*)[^\s,;"'&]+"#)
    /// `?accessToken=…`, `&access_token=…`, `token=…`, `password=…` in URLs and form bodies.
    nonisolated(unsafe) private static let query = try? Regex(#"(?i)((?:access_?token|token|password)=)[^\s&"'#]+"#)
    /// A bare 40-hex-digit word: the shape of WildDuck's access tokens.
    nonisolated(unsafe) private static let bareToken = try? Regex(#"\b[0-9a-fA-F]{40}\b"#)

    public static let redactedMark = "<redacted>"

    /// The text with secrets replaced by `<redacted>` and control characters escaped.
    public static func clean(_ text: String) -> String {
        escapeControls(redact(text))
    }

    public static func redact(_ text: String) -> String {
        var out = text
        // Cheap pre-check: most lines hold none of the markers.
        let lower = out.lowercased()
        if lower.contains("token") || lower.contains("password") || lower.contains("secret") {
            for regex in [jsonSecret, header, query].compactMap({ $0 }) {
                out = out.replacing(regex) { match in
                    (match.output[1].substring.map(String.init) ?? "") + redactedMark
                }
            }
        }
        if let bareToken { out = out.replacing(bareToken, with: redactedMark) }
        return out
    }

    /// C0 controls (newline and tab included: one message is one line), DEL, C1 controls and
    /// the bidirectional overrides become `\u{…}`.
    public static func escapeControls(_ text: String) -> String {
        guard text.unicodeScalars.contains(where: isControl) else { return text }
        var out = ""
        for scalar in text.unicodeScalars {
            if isControl(scalar) { out += "\\u{\(String(scalar.value, radix: 16))}" } else { out.unicodeScalars.append(scalar) }
        }
        return out
    }

    static func isControl(_ s: Unicode.Scalar) -> Bool {
        switch s.value {
        case 0..<0x20, 0x7F...0x9F, 0x202A...0x202E, 0x2066...0x2069: return true
        default: return false
        }
    }
}

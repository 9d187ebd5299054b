#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// The subject as WildDuck stores it, to find an upload whose answer was lost by its subject
/// when it has no Message-ID. WildDuck takes the last Subject field, decodes its RFC 2047
/// encoded words with libmime's `decodeWords`, folds every run of whitespace into one space
/// and trims it (`prepareMessage` and `normalizeSubject` in
/// https://github.com/nodemailer/wildduck/blob/08c5804798e7ffe1b281859c4edcec2465d058c2/lib/message-handler.js,
/// `decodeWords` in
/// https://github.com/nodemailer/libmime/blob/3075051660e703afad1a8196fb2782c3d4f287df/lib/libmime.js,
/// the version WildDuck's package.json pins). The list items' `subject` is that stored value.
enum StoredSubject {
    static func of(_ raw: String?) -> String {
        fold(decodeWords(raw ?? ""))
    }

    /// Every run of whitespace becomes one space; none at the ends.
    static func fold(_ s: String) -> String {
        s.split(whereSeparator: \.isWhitespace).joined(separator: " ")
    }

    private struct Word {
        var range: Range<String.Index>
        var charset: String
        var encoding: Character   // "B" or "Q"
        var text: String
    }

    /// RFC 2047 encoded words decoded as libmime does: whitespace between two encoded words
    /// goes; adjacent words with the same charset and encoding are joined before decoding (a
    /// character split over two words comes out whole); an unknown charset is read as UTF-8.
    static func decodeWords(_ s: String) -> String {
        guard s.contains("=?") else { return s }
        let words = find(s)
        guard !words.isEmpty else { return s }
        var out = ""
        var cursor = s.startIndex
        var i = 0
        while i < words.count {
            out += s[cursor..<words[i].range.lowerBound]
            var group = words[i]
            var j = i + 1
            // Whitespace between encoded words is dropped; the same charset and encoding join.
            while j < words.count, s[words[j - 1].range.upperBound..<words[j].range.lowerBound].allSatisfy(\.isWhitespace) {
                let next = words[j]
                if next.encoding == group.encoding && normalize(next.charset) == normalize(group.charset) {
                    group.text += next.text
                    j += 1
                    continue
                }
                out += decode(group)
                group = next
                j += 1
            }
            out += decode(group)
            cursor = words[j - 1].range.upperBound
            i = j
        }
        out += s[cursor...]
        return out
    }

    /// `=?charset?B|Q?text?=` occurrences, left to right.
    private static func find(_ s: String) -> [Word] {
        var words: [Word] = []
        var rest = s.startIndex
        while let start = s.range(of: "=?", range: rest..<s.endIndex) {
            let after = start.upperBound
            guard let q1 = s[after...].firstIndex(of: "?"), q1 > after,
                  s.index(after: q1) < s.endIndex else { break }
            let encoding = Character(s[s.index(after: q1)].uppercased())
            let q2 = s.index(q1, offsetBy: 2, limitedBy: s.endIndex) ?? s.endIndex
            guard encoding == "B" || encoding == "Q", q2 < s.endIndex, s[q2] == "?",
                  let end = s.range(of: "?=", range: s.index(after: q2)..<s.endIndex),
                  !s[s.index(after: q2)..<end.lowerBound].contains("?") else {
                rest = after
                continue
            }
            let charset = String(s[after..<q1])
            guard charset.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" || $0 == "*" }) else {
                rest = after
                continue
            }
            words.append(Word(range: start.lowerBound..<end.upperBound, charset: charset, encoding: encoding,
                              text: String(s[s.index(after: q2)..<end.lowerBound])))
            rest = end.upperBound
        }
        return words
    }

    private static func normalize(_ charset: String) -> String {
        let base = charset.split(separator: "*", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? charset
        return base.lowercased().replacingOccurrences(of: "_", with: "-")
    }

    private static func decode(_ word: Word) -> String {
        let bytes = word.encoding == "B" ? base64(word.text) : quotedPrintable(word.text)
        return convert(bytes, from: normalize(word.charset))
    }

    /// Node's lenient base64: each piece between `=` signs on its own, other characters skipped.
    private static func base64(_ text: String) -> [UInt8] {
        var out: [UInt8] = []
        for piece in text.split(separator: "=") {
            var acc: UInt32 = 0, bits = 0
            for c in piece.utf8 {
                let v: UInt32
                switch c {
                case UInt8(ascii: "A")...UInt8(ascii: "Z"): v = UInt32(c - UInt8(ascii: "A"))
                case UInt8(ascii: "a")...UInt8(ascii: "z"): v = UInt32(c - UInt8(ascii: "a")) + 26
                case UInt8(ascii: "0")...UInt8(ascii: "9"): v = UInt32(c - UInt8(ascii: "0")) + 52
                case UInt8(ascii: "+"), UInt8(ascii: "-"): v = 62
                case UInt8(ascii: "/"), UInt8(ascii: "_"): v = 63
                default: continue
                }
                acc = (acc << 6) | v
                bits += 6
                if bits >= 8 {
                    bits -= 8
                    out.append(UInt8((acc >> UInt32(bits)) & 0xFF))
                }
            }
        }
        return out
    }

    /// RFC 2047's Q: `_` and whitespace are spaces, `=XX` a byte; a broken escape stays as it is.
    private static func quotedPrintable(_ text: String) -> [UInt8] {
        let input = Array(text.utf8)
        var cleaned: [UInt8] = []
        var i = 0
        while i < input.count {
            // "= 4" (a line split inside an escape) is read as "=4".
            if input[i] == UInt8(ascii: "="), i + 1 < input.count, input[i + 1] == 0x20 || input[i + 1] == 0x09 {
                var k = i + 1
                while k < input.count, input[k] == 0x20 || input[k] == 0x09 || input[k] == 0x0A || input[k] == 0x0D { k += 1 }
                if k < input.count, hexValue(input[k]) != nil {
                    cleaned.append(input[i])
                    i = k
                    continue
                }
            }
            let c = input[i]
            cleaned.append(c == UInt8(ascii: "_") || c == 0x20 || c == 0x09 || c == 0x0A || c == 0x0D ? 0x20 : c)
            i += 1
        }
        var out: [UInt8] = []
        i = 0
        while i < cleaned.count {
            if cleaned[i] == UInt8(ascii: "="), i + 2 < cleaned.count,
               let hi = hexValue(cleaned[i + 1]), let lo = hexValue(cleaned[i + 2]) {
                out.append(hi << 4 | lo)
                i += 3
                continue
            }
            out.append(cleaned[i])
            i += 1
        }
        return out
    }

    private static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }

    /// Bytes in `charset` as a string; UTF-8 (lossy) when the charset is unknown, as libmime does.
    static func convert(_ bytes: [UInt8], from charset: String) -> String {
        if ["utf-8", "utf8", "us-ascii", "ascii", "7bit"].contains(charset) || bytes.isEmpty {
            return String(decoding: bytes, as: UTF8.self)
        }
        if ["iso-8859-1", "latin1", "latin-1", "l1"].contains(charset) {
            return String(bytes.map { Character(Unicode.Scalar($0)) })
        }
        #if canImport(Glibc)
        let cd = iconv_open("UTF-8", charset.uppercased())
        guard let cd, cd != iconv_t(bitPattern: -1) else { return String(decoding: bytes, as: UTF8.self) }
        defer { iconv_close(cd) }
        var input = bytes.map { CChar(bitPattern: $0) }
        var output = [CChar](repeating: 0, count: bytes.count * 4 + 16)
        let converted: Int? = input.withUnsafeMutableBufferPointer { inBuf in
            output.withUnsafeMutableBufferPointer { outBuf in
                var inPtr = inBuf.baseAddress
                var inLeft = inBuf.count
                var outPtr = outBuf.baseAddress
                var outLeft = outBuf.count
                guard iconv(cd, &inPtr, &inLeft, &outPtr, &outLeft) != -1 else { return nil }
                return outBuf.count - outLeft
            }
        }
        guard let converted else { return String(decoding: bytes, as: UTF8.self) }
        return String(decoding: output.prefix(converted).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        #else
        return String(decoding: bytes, as: UTF8.self)
        #endif
    }
}

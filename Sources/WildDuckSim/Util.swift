import Foundation

/// Deterministic PRNG (SplitMix64) for the message generator.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

enum Hex {
    static let digits: [UInt8] = Array("0123456789abcdef".utf8)

    static func encode(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count * 2)
        for b in bytes { out.append(digits[Int(b >> 4)]); out.append(digits[Int(b & 0xF)]) }
        return String(decoding: out, as: UTF8.self)
    }

    static func fixed(_ v: UInt64, width: Int) -> String {
        var out = [UInt8](repeating: UInt8(ascii: "0"), count: width)
        var x = v
        var i = width - 1
        while i >= 0 { out[i] = digits[Int(x & 0xF)]; x >>= 4; i -= 1 }
        return String(decoding: out, as: UTF8.self)
    }

    static func isHex(_ s: String, count: Int) -> Bool {
        let u = s.utf8
        guard u.count == count else { return false }
        return u.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) || ($0 >= 0x41 && $0 <= 0x46) }
    }
}

enum FNV {
    static func hash64<S: Sequence>(_ bytes: S) -> UInt64 where S.Element == UInt8 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in bytes { h ^= UInt64(b); h = h &* 0x0000_0100_0000_01B3 }
        return h
    }
}

enum Base64URL {
    static func encode(_ s: String) -> String {
        Data(s.utf8).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    static func decode(_ s: String) -> String? {
        guard s.utf8.count <= 1024,
              s.utf8.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5A) || ($0 >= 0x61 && $0 <= 0x7A) || $0 == 0x2D || $0 == 0x5F })
        else { return nil }
        var b = s.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while b.utf8.count % 4 != 0 { b += "=" }
        guard let d = Data(base64Encoded: b) else { return nil }
        return String(data: d, encoding: .utf8)
    }
}

/// Dates as milliseconds since the epoch, formatted like JavaScript's toISOString().
enum ISODate {
    static func format(ms: Int64) -> String {
        let totalSec = ms >= 0 ? ms / 1000 : (ms - 999) / 1000
        let millis = Int(ms - totalSec * 1000)
        var days = totalSec >= 0 ? totalSec / 86400 : (totalSec - 86399) / 86400
        let secOfDay = Int(totalSec - days * 86400)
        // civil_from_days (Howard Hinnant)
        days += 719_468
        let era = (days >= 0 ? days : days - 146_096) / 146_097
        let doe = days - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        var y = yoe + era * 400
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        if m <= 2 { y += 1 }
        func p2(_ v: Int) -> String { v < 10 ? "0\(v)" : "\(v)" }
        func p3(_ v: Int) -> String { v < 10 ? "00\(v)" : (v < 100 ? "0\(v)" : "\(v)") }
        let ys = y >= 0 && y < 10000 ? String(repeating: "0", count: max(0, 4 - String(y).count)) + String(y) : String(y)
        return "\(ys)-\(p2(Int(m)))-\(p2(Int(d)))T\(p2(secOfDay / 3600)):\(p2(secOfDay / 60 % 60)):\(p2(secOfDay % 60)).\(p3(millis))Z"
    }

    static func daysFromCivil(_ y0: Int, _ m: Int, _ d: Int) -> Int64 {
        let y = m <= 2 ? y0 - 1 : y0
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let mp = m > 2 ? m - 3 : m + 9
        let doy = (153 * mp + 2) / 5 + d - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return Int64(era * 146_097 + doe - 719_468)
    }

    /// Parses `YYYY-MM-DD[THH:MM[:SS[.mmm]]][Z|±HH:MM]`; also accepts plain epoch milliseconds.
    static func parse(_ s: String) -> Int64? {
        if let n = Int64(s) { return n }
        let c = Array(s.utf8)
        func num(_ from: Int, _ len: Int) -> Int? {
            guard from + len <= c.count else { return nil }
            var v = 0
            for i in from..<from + len {
                guard c[i] >= 0x30 && c[i] <= 0x39 else { return nil }
                v = v * 10 + Int(c[i] - 0x30)
            }
            return v
        }
        guard c.count >= 10, let y = num(0, 4), let mo = num(5, 2), let d = num(8, 2), c[4] == 0x2D, c[7] == 0x2D,
              (1...12).contains(mo), (1...31).contains(d) else { return nil }
        var ms = daysFromCivil(y, mo, d) * 86_400_000
        var i = 10
        if i < c.count, c[i] == UInt8(ascii: "T") || c[i] == UInt8(ascii: " ") {
            guard let h = num(i + 1, 2), let mi = num(i + 4, 2) else { return nil }
            ms += Int64(h * 3600 + mi * 60) * 1000
            i += 6
            if i < c.count, c[i] == UInt8(ascii: ":"), let sec = num(i + 1, 2) { ms += Int64(sec) * 1000; i += 3 }
            if i < c.count, c[i] == UInt8(ascii: ".") {
                i += 1
                var frac = 0, digits = 0
                while i < c.count, c[i] >= 0x30, c[i] <= 0x39 { if digits < 3 { frac = frac * 10 + Int(c[i] - 0x30); digits += 1 }; i += 1 }
                while digits < 3 { frac *= 10; digits += 1 }
                ms += Int64(frac)
            }
            if i < c.count {
                if c[i] == UInt8(ascii: "Z") { i += 1 } else if c[i] == UInt8(ascii: "+") || c[i] == UInt8(ascii: "-") {
                    let sign: Int64 = c[i] == UInt8(ascii: "+") ? 1 : -1
                    guard let oh = num(i + 1, 2) else { return nil }
                    var om = 0
                    if let m2 = num(i + 4, 2), i + 3 < c.count, c[i + 3] == UInt8(ascii: ":") { om = m2; i += 6 } else if let m2 = num(i + 3, 2) { om = m2; i += 5 } else { i += 3 }
                    ms -= sign * Int64(oh * 60 + om) * 60_000
                }
            }
        }
        return i == c.count ? ms : nil
    }
}

func millis(_ date: Date) -> Int64 { Int64((date.timeIntervalSince1970 * 1000).rounded()) }
func nowMillis() -> Int64 { millis(Date()) }

func randomHex(bytes n: Int) -> String {
    var g = SystemRandomNumberGenerator()
    return Hex.encode((0..<n).map { _ in UInt8.random(in: 0...255, using: &g) })
}

func uuidString() -> String { UUID().uuidString.lowercased() }

extension Array where Element == UInt8 {
    /// Index of the first occurrence of `needle` at or after `from`.
    func firstIndex(of needle: [UInt8], from: Int = 0) -> Int? {
        guard !needle.isEmpty, count >= needle.count else { return nil }
        let first = needle[0]
        var i = from
        let last = count - needle.count
        while i <= last {
            if self[i] == first {
                var ok = true
                var j = 1
                while j < needle.count { if self[i + j] != needle[j] { ok = false; break }; j += 1 }
                if ok { return i }
            }
            i += 1
        }
        return nil
    }
}

extension StringProtocol {
    /// Trims ASCII spaces, tabs, CR and LF (much cheaper than Foundation's trimmingCharacters).
    var trimmedWS: String {
        let u = Array(utf8)
        var s = 0, e = u.count
        func ws(_ c: UInt8) -> Bool { c == 0x20 || c == 0x09 || c == 0x0D || c == 0x0A }
        while s < e, ws(u[s]) { s += 1 }
        while e > s, ws(u[e - 1]) { e -= 1 }
        return String(decoding: u[s..<e], as: UTF8.self)
    }
}

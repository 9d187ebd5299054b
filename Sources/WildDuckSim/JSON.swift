// A minimal JSON value with a hand-written parser and serialiser.
// Objects keep their key order so that responses look like the server's.

public enum JSONValue: Sendable, Equatable {
    case null
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object([(String, JSONValue)])
    /// Pre-serialised JSON, written verbatim.
    case raw([UInt8])

    public static func == (lhs: JSONValue, rhs: JSONValue) -> Bool {
        switch (lhs, rhs) {
        case (.null, .null): return true
        case let (.bool(a), .bool(b)): return a == b
        case let (.int(a), .int(b)): return a == b
        case let (.double(a), .double(b)): return a == b
        case let (.int(a), .double(b)), let (.double(b), .int(a)): return Double(a) == b
        case let (.string(a), .string(b)): return a == b
        case let (.array(a), .array(b)): return a == b
        case let (.object(a), .object(b)):
            guard a.count == b.count else { return false }
            for (x, y) in zip(a, b) where x.0 != y.0 || x.1 != y.1 { return false }
            return true
        case let (.raw(a), .raw(b)): return a == b
        default: return false
        }
    }

    public subscript(key: String) -> JSONValue? {
        if case let .object(pairs) = self {
            for (k, v) in pairs where k == key { return v }
        }
        return nil
    }

    public subscript(index: Int) -> JSONValue? {
        if case let .array(items) = self, index >= 0, index < items.count { return items[index] }
        return nil
    }

    public var stringValue: String? { if case let .string(s) = self { return s }; return nil }
    public var intValue: Int? {
        switch self {
        case let .int(i): return i
        case let .double(d) where d.rounded() == d && abs(d) < 9.0e15: return Int(d)
        default: return nil
        }
    }
    public var boolValue: Bool? { if case let .bool(b) = self { return b }; return nil }
    public var arrayValue: [JSONValue]? { if case let .array(a) = self { return a }; return nil }
    public var objectValue: [(String, JSONValue)]? { if case let .object(o) = self { return o }; return nil }
    public var isNull: Bool { if case .null = self { return true }; return false }

    // MARK: serialisation

    public func serialized() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(256)
        write(to: &out)
        return out
    }

    public var text: String { String(decoding: serialized(), as: UTF8.self) }

    public func write(to out: inout [UInt8]) {
        switch self {
        case .null: out.append(contentsOf: "null".utf8)
        case let .bool(b): out.append(contentsOf: (b ? "true" : "false").utf8)
        case let .int(i): JSONWriter.int(i, to: &out)
        case let .double(d):
            if d.isFinite { out.append(contentsOf: "\(d)".utf8) } else { out.append(contentsOf: "null".utf8) }
        case let .string(s): JSONWriter.string(s, to: &out)
        case let .array(items):
            out.append(UInt8(ascii: "["))
            for (i, v) in items.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                v.write(to: &out)
            }
            out.append(UInt8(ascii: "]"))
        case let .object(pairs):
            out.append(UInt8(ascii: "{"))
            for (i, (k, v)) in pairs.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                JSONWriter.string(k, to: &out)
                out.append(UInt8(ascii: ":"))
                v.write(to: &out)
            }
            out.append(UInt8(ascii: "}"))
        case let .raw(bytes): out.append(contentsOf: bytes)
        }
    }

    /// Pretty-printed with two-space indentation (used by the SSE stream, like JSON.stringify(x, null, 2)).
    public func pretty(indent: Int = 0) -> String {
        let pad = String(repeating: "  ", count: indent + 1)
        let closePad = String(repeating: "  ", count: indent)
        switch self {
        case let .array(items) where !items.isEmpty:
            return "[\n" + items.map { pad + $0.pretty(indent: indent + 1) }.joined(separator: ",\n") + "\n" + closePad + "]"
        case let .object(pairs) where !pairs.isEmpty:
            return "{\n" + pairs.map { pad + JSONValue.string($0.0).text + ": " + $0.1.pretty(indent: indent + 1) }
                .joined(separator: ",\n") + "\n" + closePad + "}"
        default:
            return text
        }
    }

    // MARK: parsing

    public static func parse(_ bytes: [UInt8]) -> JSONValue? {
        var p = JSONParser(bytes: bytes)
        p.skipWS()
        guard let v = p.value(depth: 0) else { return nil }
        p.skipWS()
        return p.pos == bytes.count ? v : nil
    }

    public static func parse(_ text: String) -> JSONValue? { parse(Array(text.utf8)) }
}

enum JSONWriter {
    static let hex: [UInt8] = Array("0123456789abcdef".utf8)

    static func int(_ i: Int, to out: inout [UInt8]) {
        if i == 0 { out.append(UInt8(ascii: "0")); return }
        var v = i.magnitude
        var tmp: [UInt8] = []
        tmp.reserveCapacity(20)
        while v > 0 { tmp.append(UInt8(ascii: "0") + UInt8(v % 10)); v /= 10 }
        if i < 0 { out.append(UInt8(ascii: "-")) }
        out.append(contentsOf: tmp.reversed())
    }

    static func string(_ s: String, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        for c in s.utf8 {
            switch c {
            case UInt8(ascii: "\""): out.append(UInt8(ascii: "\\")); out.append(c)
            case UInt8(ascii: "\\"): out.append(UInt8(ascii: "\\")); out.append(c)
            case 0x0A: out.append(UInt8(ascii: "\\")); out.append(UInt8(ascii: "n"))
            case 0x0D: out.append(UInt8(ascii: "\\")); out.append(UInt8(ascii: "r"))
            case 0x09: out.append(UInt8(ascii: "\\")); out.append(UInt8(ascii: "t"))
            case 0..<0x20, 0x7F:
                out.append(contentsOf: Array("\\u00".utf8))
                out.append(hex[Int(c >> 4)]); out.append(hex[Int(c & 0xF)])
            default: out.append(c)
            }
        }
        out.append(UInt8(ascii: "\""))
    }
}

struct JSONParser {
    let bytes: [UInt8]
    var pos = 0

    init(bytes: [UInt8]) { self.bytes = bytes }

    mutating func skipWS() {
        while pos < bytes.count, bytes[pos] == 0x20 || bytes[pos] == 0x0A || bytes[pos] == 0x0D || bytes[pos] == 0x09 { pos += 1 }
    }

    mutating func value(depth: Int) -> JSONValue? {
        guard depth < 64, pos < bytes.count else { return nil }
        switch bytes[pos] {
        case UInt8(ascii: "{"):
            pos += 1
            var pairs: [(String, JSONValue)] = []
            skipWS()
            if pos < bytes.count, bytes[pos] == UInt8(ascii: "}") { pos += 1; return .object(pairs) }
            while true {
                skipWS()
                guard let k = string() else { return nil }
                skipWS()
                guard pos < bytes.count, bytes[pos] == UInt8(ascii: ":") else { return nil }
                pos += 1
                skipWS()
                guard let v = value(depth: depth + 1) else { return nil }
                pairs.append((k, v))
                skipWS()
                guard pos < bytes.count else { return nil }
                if bytes[pos] == UInt8(ascii: ",") { pos += 1; continue }
                if bytes[pos] == UInt8(ascii: "}") { pos += 1; return .object(pairs) }
                return nil
            }
        case UInt8(ascii: "["):
            pos += 1
            var items: [JSONValue] = []
            skipWS()
            if pos < bytes.count, bytes[pos] == UInt8(ascii: "]") { pos += 1; return .array(items) }
            while true {
                skipWS()
                guard let v = value(depth: depth + 1) else { return nil }
                items.append(v)
                skipWS()
                guard pos < bytes.count else { return nil }
                if bytes[pos] == UInt8(ascii: ",") { pos += 1; continue }
                if bytes[pos] == UInt8(ascii: "]") { pos += 1; return .array(items) }
                return nil
            }
        case UInt8(ascii: "\""):
            return string().map { .string($0) }
        case UInt8(ascii: "t"): return literal("true", .bool(true))
        case UInt8(ascii: "f"): return literal("false", .bool(false))
        case UInt8(ascii: "n"): return literal("null", .null)
        default: return number()
        }
    }

    mutating func literal(_ word: String, _ v: JSONValue) -> JSONValue? {
        let w = Array(word.utf8)
        guard pos + w.count <= bytes.count, Array(bytes[pos..<pos + w.count]) == w else { return nil }
        pos += w.count
        return v
    }

    mutating func number() -> JSONValue? {
        let start = pos
        var isInt = true
        if pos < bytes.count, bytes[pos] == UInt8(ascii: "-") { pos += 1 }
        while pos < bytes.count {
            let c = bytes[pos]
            if c >= 0x30 && c <= 0x39 { pos += 1; continue }
            if c == UInt8(ascii: ".") || c == UInt8(ascii: "e") || c == UInt8(ascii: "E") || c == UInt8(ascii: "+") || c == UInt8(ascii: "-") {
                isInt = false; pos += 1; continue
            }
            break
        }
        guard pos > start else { return nil }
        let s = String(decoding: bytes[start..<pos], as: UTF8.self)
        if isInt, let i = Int(s) { return .int(i) }
        if let d = Double(s) { return .double(d) }
        return nil
    }

    mutating func hex4() -> UInt32? {
        guard pos + 4 <= bytes.count else { return nil }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let c = bytes[pos]
            let d: UInt32
            switch c {
            case 0x30...0x39: d = UInt32(c - 0x30)
            case 0x41...0x46: d = UInt32(c - 0x41 + 10)
            case 0x61...0x66: d = UInt32(c - 0x61 + 10)
            default: return nil
            }
            v = v * 16 + d
            pos += 1
        }
        return v
    }

    mutating func string() -> String? {
        guard pos < bytes.count, bytes[pos] == UInt8(ascii: "\"") else { return nil }
        pos += 1
        var out: [UInt8] = []
        while pos < bytes.count {
            let c = bytes[pos]
            if c == UInt8(ascii: "\"") { pos += 1; return String(decoding: out, as: UTF8.self) }
            if c < 0x20 { return nil }
            if c == UInt8(ascii: "\\") {
                pos += 1
                guard pos < bytes.count else { return nil }
                let e = bytes[pos]
                pos += 1
                switch e {
                case UInt8(ascii: "\""): out.append(0x22)
                case UInt8(ascii: "\\"): out.append(0x5C)
                case UInt8(ascii: "/"): out.append(0x2F)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "u"):
                    guard var cp = hex4() else { return nil }
                    if cp >= 0xD800 && cp < 0xDC00 {
                        // surrogate pair
                        if pos + 6 <= bytes.count, bytes[pos] == UInt8(ascii: "\\"), bytes[pos + 1] == UInt8(ascii: "u") {
                            pos += 2
                            guard let lo = hex4(), lo >= 0xDC00, lo < 0xE000 else { return nil }
                            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00)
                        } else { cp = 0xFFFD }
                    } else if cp >= 0xDC00 && cp < 0xE000 { cp = 0xFFFD }
                    let scalar = Unicode.Scalar(cp) ?? "\u{FFFD}"
                    out.append(contentsOf: Array(String(Character(scalar)).utf8))
                default: return nil
                }
                continue
            }
            out.append(c)
            pos += 1
        }
        return nil
    }
}

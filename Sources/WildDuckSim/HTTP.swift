import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A parsed HTTP/1.1 request.
public struct HTTPRequest: Sendable {
    public var method: String
    /// the raw target (path + query)
    public var target: String
    /// decoded path segments (empty segments dropped)
    public var segments: [String]
    public var query: [String: String]
    /// lower-cased names
    public var headers: [String: String]
    public var body: [UInt8]
    public var keepAlive: Bool

    public func header(_ name: String) -> String? { headers[name.lowercased()] }
}

/// A response to write.
struct HTTPResponse: Sendable {
    var status: Int
    var headers: [(String, String)] = []
    var body: [UInt8] = []
    /// send with `Transfer-Encoding: chunked` (one chunk) instead of Content-Length
    var chunked = false

    static func json(_ status: Int, _ value: JSONValue) -> HTTPResponse {
        HTTPResponse(status: status, headers: [("Content-Type", "application/json; charset=utf-8")], body: value.serialized())
    }

    /// An IMF-fixdate, as Node's HTTP server sends in every answer's `Date` header.
    static func date(seconds: Int64) -> String {
        var t = time_t(seconds), parts = tm()
        gmtime_r(&t, &parts)
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"], months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ n: Int32) -> String { n < 10 ? "0\(n)" : "\(n)" }
        return "\(days[Int(parts.tm_wday)]), \(two(parts.tm_mday)) \(months[Int(parts.tm_mon)]) \(parts.tm_year + 1900) "
            + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) GMT"
    }

    static func jsonBytes(_ status: Int, _ bytes: [UInt8]) -> HTTPResponse {
        HTTPResponse(status: status, headers: [("Content-Type", "application/json; charset=utf-8")], body: bytes)
    }

    /// Serialises status line, headers and body. With `truncateAt`, only that many body bytes
    /// are included. Without `lengthHeader` the body is delimited by the connection's end.
    func encoded(keepAlive: Bool, truncateAt: Int? = nil, lengthHeader: Bool = true) -> [UInt8] {
        var head = "HTTP/1.1 \(status) \(HTTPResponse.reason(status))\r\n"
        for (k, v) in headers { head += "\(k): \(v)\r\n" }
        let chunked = chunked && lengthHeader
        if chunked { head += "Transfer-Encoding: chunked\r\n" } else if lengthHeader { head += "Content-Length: \(body.count)\r\n" }
        head += keepAlive ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n"
        var out: [UInt8] = []
        out.reserveCapacity(head.utf8.count + body.count + 32)
        out.append(contentsOf: head.utf8)
        let limit = truncateAt.map { min($0, body.count) } ?? body.count
        if chunked {
            if !body.isEmpty {
                out.append(contentsOf: String(body.count, radix: 16).utf8)
                out.append(contentsOf: [0x0D, 0x0A])
                out.append(contentsOf: body[0..<limit])
                if truncateAt != nil { return out }
                out.append(contentsOf: [0x0D, 0x0A])
            }
            if truncateAt != nil { return out }
            out.append(contentsOf: Array("0\r\n\r\n".utf8))
        } else {
            out.append(contentsOf: body[0..<limit])
        }
        return out
    }

    static func reason(_ s: Int) -> String {
        switch s {
        case 200: return "OK"
        case 201: return "Created"
        case 204: return "No Content"
        case 400: return "Bad Request"
        case 401: return "Unauthorized"
        case 403: return "Forbidden"
        case 404: return "Not Found"
        case 405: return "Method Not Allowed"
        case 408: return "Request Timeout"
        case 413: return "Payload Too Large"
        case 429: return "Too Many Requests"
        case 431: return "Request Header Fields Too Large"
        case 500: return "Internal Server Error"
        case 502: return "Bad Gateway"
        case 503: return "Service Unavailable"
        case 504: return "Gateway Timeout"
        default: return "Status \(s)"
        }
    }
}

enum HTTPParseError: Error { case malformed(String), tooLarge, headerOverflow }

/// Incremental request parser: feed bytes, take complete requests (handles pipelining and partial reads).
struct HTTPRequestParser {
    var buffer: [UInt8] = []
    var start = 0
    let maxBody = 80 * 1024 * 1024

    /// Node's limit on a request's head, which WildDuck keeps: Node's default
    /// `--max-http-header-size` is 16 KiB, WildDuck's API server sets no `maxHeaderSize`
    /// (https://github.com/nodemailer/wildduck/blob/08c5804798e7ffe1b281859c4edcec2465d058c2/api.js#L67-L70,
    /// #L184; restify 11 calls `http.createServer()` without options). Node counts the bytes of
    /// the URL, the header names and the header values (not the method, the version, the colons
    /// or the line ends), and fails the request once they reach the limit
    /// (https://github.com/nodejs/node/blob/0031663d9ea356ce9c0f56697c1a0e4888479902/src/node_http_parser.cc,
    /// `TrackHeader`), possibly before the head is complete.
    static let maxHeadCount = 16 * 1024

    /// What Node counts of the head in `bytes` (whole or not yet complete) against `maxHeadCount`.
    static func nodeHeadCount(_ bytes: ArraySlice<UInt8>) -> Int {
        var count = 0
        var first = true
        for line in bytes.split(separator: 0x0A, omittingEmptySubsequences: false) {
            let line = line.last == 0x0D ? line.dropLast() : line
            if first {
                first = false
                // the URL: the request line's second word
                count += line.split(separator: 0x20, maxSplits: 2, omittingEmptySubsequences: true).dropFirst().first?.count ?? 0
            } else if let colon = line.firstIndex(of: UInt8(ascii: ":")) {
                count += line[..<colon].count + line[(colon + 1)...].drop { $0 == 0x20 || $0 == 0x09 }.count
            } else {
                count += line.count
            }
        }
        return count
    }

    mutating func append(_ bytes: UnsafeRawBufferPointer) {
        if start > 0 && start >= buffer.count / 2 {
            buffer.removeFirst(start)
            start = 0
        }
        buffer.append(contentsOf: bytes)
    }

    var pending: Int { buffer.count - start }
    /// Set when a request with `Expect: 100-continue` waits for its body; the caller answers `100 Continue` once.
    var wantsContinue = false
    var continuedAt = -1

    /// Returns a complete request, or nil when more bytes are needed.
    mutating func next() throws -> HTTPRequest? {
        guard start < buffer.count else { return nil }
        // skip stray CRLF between requests
        while start + 1 < buffer.count, buffer[start] == 0x0D, buffer[start + 1] == 0x0A { start += 2 }
        guard let headEnd = buffer.firstIndex(of: [0x0D, 0x0A, 0x0D, 0x0A], from: start) else {
            if buffer.count - start >= Self.maxHeadCount, Self.nodeHeadCount(buffer[start...]) >= Self.maxHeadCount {
                throw HTTPParseError.headerOverflow
            }
            return nil
        }
        if headEnd - start >= Self.maxHeadCount, Self.nodeHeadCount(buffer[start..<headEnd]) >= Self.maxHeadCount {
            throw HTTPParseError.headerOverflow
        }
        // request line and headers, parsed on bytes
        var lineStart = start
        var lineEnd = buffer.firstIndex(of: [0x0D, 0x0A], from: lineStart) ?? headEnd
        if lineEnd > headEnd { lineEnd = headEnd }
        let requestLine = buffer[lineStart..<lineEnd].split(separator: 0x20, omittingEmptySubsequences: true)
        guard requestLine.count == 3, requestLine[2].starts(with: Array("HTTP/1.".utf8)) else { throw HTTPParseError.malformed("request line") }
        let method = String(decoding: requestLine[0], as: UTF8.self)
        let target = String(decoding: requestLine[1], as: UTF8.self)
        let http10 = Array(requestLine[2]) == Array("HTTP/1.0".utf8)
        var headers: [String: String] = [:]
        lineStart = lineEnd + 2
        while lineStart < headEnd {
            var e = lineStart
            while e + 1 < headEnd + 2, !(buffer[e] == 0x0D && buffer[e + 1] == 0x0A) { e += 1 }
            guard let colon = buffer[lineStart..<e].firstIndex(of: UInt8(ascii: ":")) else { throw HTTPParseError.malformed("header") }
            var nameBytes = Array(buffer[lineStart..<colon])
            for i in nameBytes.indices where nameBytes[i] >= 0x41 && nameBytes[i] <= 0x5A { nameBytes[i] += 0x20 }
            let name = String(decoding: nameBytes, as: UTF8.self).trimmedWS
            let value = String(decoding: buffer[(colon + 1)..<e], as: UTF8.self).trimmedWS
            if let old = headers[name] { headers[name] = old + ", " + value } else { headers[name] = value }
            lineStart = e + 2
        }
        var pos = headEnd + 4
        var body: [UInt8] = []
        if let ex = headers["expect"], ex.lowercased() == "100-continue", continuedAt != start {
            let complete: Bool
            if let cl = headers["content-length"].flatMap({ Int($0.trimmedWS) }) {
                complete = buffer.count - pos >= cl
            } else { complete = false }
            if !complete { wantsContinue = true; continuedAt = start; return nil }
        }
        if let te = headers["transfer-encoding"], te.lowercased().contains("chunked") {
            // chunked body
            while true {
                guard let lineEnd = buffer.firstIndex(of: [0x0D, 0x0A], from: pos) else { return nil }
                let sizeText = String(decoding: buffer[pos..<lineEnd], as: UTF8.self).split(separator: ";").first.map(String.init) ?? ""
                guard let size = Int(sizeText.trimmedWS, radix: 16), size >= 0 else {
                    throw HTTPParseError.malformed("chunk size")
                }
                if body.count + size > maxBody { throw HTTPParseError.tooLarge }
                let dataStart = lineEnd + 2
                if size == 0 {
                    // trailers until empty line
                    var p = dataStart
                    while true {
                        guard let e = buffer.firstIndex(of: [0x0D, 0x0A], from: p) else { return nil }
                        if e == p { pos = e + 2; break }
                        p = e + 2
                    }
                    break
                }
                guard buffer.count >= dataStart + size + 2 else { return nil }
                body.append(contentsOf: buffer[dataStart..<(dataStart + size)])
                pos = dataStart + size + 2
            }
        } else if let cl = headers["content-length"] {
            guard let n = Int(cl.trimmedWS), n >= 0 else { throw HTTPParseError.malformed("content-length") }
            if n > maxBody { throw HTTPParseError.tooLarge }
            guard buffer.count - pos >= n else { return nil }
            body = Array(buffer[pos..<(pos + n)])
            pos += n
        }
        start = pos
        let conn = headers["connection"]?.lowercased() ?? ""
        let keepAlive = http10 ? conn.contains("keep-alive") : !conn.contains("close")
        let (segments, query) = HTTPRequestParser.splitTarget(target)
        return HTTPRequest(method: method, target: target, segments: segments, query: query, headers: headers, body: body, keepAlive: keepAlive)
    }

    static func percentDecode(_ s: Substring, plusIsSpace: Bool) -> String {
        guard s.contains("%") || (plusIsSpace && s.contains("+")) else { return String(s) }
        var out: [UInt8] = []
        let u = Array(s.utf8)
        var i = 0
        func hv(_ c: UInt8) -> UInt8? {
            switch c {
            case 0x30...0x39: return c - 0x30
            case 0x41...0x46: return c - 0x41 + 10
            case 0x61...0x66: return c - 0x61 + 10
            default: return nil
            }
        }
        while i < u.count {
            if u[i] == UInt8(ascii: "%"), i + 2 < u.count, let a = hv(u[i + 1]), let b = hv(u[i + 2]) {
                out.append(a << 4 | b); i += 3; continue
            }
            if plusIsSpace && u[i] == UInt8(ascii: "+") { out.append(0x20); i += 1; continue }
            out.append(u[i]); i += 1
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func splitTarget(_ target: String) -> ([String], [String: String]) {
        var pathPart = Substring(target)
        var queryPart: Substring = ""
        if let q = target.firstIndex(of: "?") {
            pathPart = target[..<q]
            queryPart = target[target.index(after: q)...]
        }
        if let h = pathPart.firstIndex(of: "#") { pathPart = pathPart[..<h] }
        let segments = pathPart.split(separator: "/").map { percentDecode($0, plusIsSpace: false) }
        var query: [String: String] = [:]
        for pair in queryPart.split(separator: "&") {
            if let eq = pair.firstIndex(of: "=") {
                query[percentDecode(pair[..<eq], plusIsSpace: true)] = percentDecode(pair[pair.index(after: eq)...], plusIsSpace: true)
            } else {
                query[percentDecode(pair, plusIsSpace: true)] = ""
            }
        }
        return (segments, query)
    }
}

/// Socket helpers.
enum Sock {
    /// Writes everything; false when the peer is gone.
    @discardableResult
    static func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var off = 0
        return bytes.withUnsafeBytes { p -> Bool in
            guard let base = p.baseAddress else { return true }
            while off < bytes.count {
                let n = send(fd, base + off, bytes.count - off, Int32(MSG_NOSIGNAL))
                if n < 0 {
                    if errno == EINTR { continue }
                    return false
                }
                if n == 0 { return false }
                off += n
            }
            return true
        }
    }

    /// A listening IPv4 socket on `host:port` (0: any free port) and the port it got.
    static func listening(host: String, port: UInt16) throws -> (fd: Int32, port: UInt16) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw SimAccountError.io("socket() failed: errno \(errno)") }
        setOption(fd, SOL_SOCKET, SO_REUSEADDR, 1)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        guard inet_pton(AF_INET, host, &addr.sin_addr) == 1 else {
            close(fd)
            throw SimAccountError.io("invalid IPv4 address \(host)")
        }
        let rc = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else {
            let e = errno
            close(fd)
            throw SimAccountError.io("bind \(host):\(port) failed: errno \(e)")
        }
        guard listen(fd, 1024) == 0 else {
            close(fd)
            throw SimAccountError.io("listen failed: errno \(errno)")
        }
        var bound = sockaddr_in()
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &bound) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        return (fd, UInt16(bigEndian: bound.sin_port))
    }

    static func setOption(_ fd: Int32, _ level: Int32, _ name: Int32, _ value: Int32) {
        var v = value
        _ = setsockopt(fd, level, name, &v, socklen_t(MemoryLayout<Int32>.size))
    }
}

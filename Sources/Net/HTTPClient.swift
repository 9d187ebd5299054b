#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A small blocking HTTP/1.1 client with keep-alive, enough for a REST API and for streaming
/// large bodies to disk: Content-Length, chunked and close-delimited bodies, no redirects.
/// One `HTTPConnection` is used by one thread at a time; open several for concurrency.

/// Where requests go: `http://host[:port][/prefix]` or `https://…`.
public struct HTTPEndpoint: Sendable, Equatable {
    public var tls: Bool
    public var host: String
    public var port: Int
    /// Path prefix without a trailing slash ("" for the root).
    public var prefix: String

    /// Parses a base URL. Returns nil for anything but http/https with a host.
    public init?(url: String) {
        let lower = url.lowercased()
        let rest: Substring
        if lower.hasPrefix("http://") { tls = false; rest = url.dropFirst(7) }
        else if lower.hasPrefix("https://") { tls = true; rest = url.dropFirst(8) }
        else { return nil }
        let authority = rest.prefix { $0 != "/" && $0 != "?" && $0 != "#" }
        var path = String(rest.dropFirst(authority.count).prefix { $0 != "?" && $0 != "#" })
        while path.hasSuffix("/") { path.removeLast() }
        prefix = path
        guard !authority.isEmpty, !authority.contains("@") else { return nil }
        if authority.hasPrefix("[") {  // [v6]:port
            guard let close = authority.firstIndex(of: "]") else { return nil }
            host = String(authority[authority.index(after: authority.startIndex)..<close])
            let after = authority[authority.index(after: close)...]
            if after.isEmpty { port = tls ? 443 : 80 }
            else if after.hasPrefix(":"), let p = Int(after.dropFirst()), (1...65535).contains(p) { port = p }
            else { return nil }
        } else if let colon = authority.lastIndex(of: ":") {
            host = String(authority[..<colon])
            guard let p = Int(authority[authority.index(after: colon)...]), (1...65535).contains(p) else { return nil }
            port = p
        } else {
            host = String(authority)
            port = tls ? 443 : 80
        }
        guard !host.isEmpty else { return nil }
    }

    /// Whether the host is this machine's loopback: `localhost` (or a name under it), 127.0.0.0/8,
    /// or ::1 (also as an IPv4-mapped 127.x address). Decided from the URL, not by resolving it.
    public var isLoopback: Bool {
        var name = host.lowercased()
        if name.hasSuffix(".") { name.removeLast() }
        if name == "localhost" || name.hasSuffix(".localhost") { return true }
        var v4 = in_addr()
        if inet_pton(AF_INET, name, &v4) == 1 {
            return UInt32(bigEndian: v4.s_addr) >> 24 == 127
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, name, &v6) == 1 {
            let b = withUnsafeBytes(of: &v6) { Array($0) }
            if b[0..<15].allSatisfy({ $0 == 0 }) && b[15] == 1 { return true }              // ::1
            if b[0..<10].allSatisfy({ $0 == 0 }) && b[10] == 0xFF && b[11] == 0xFF { return b[12] == 127 }  // ::ffff:127.x
        }
        return false
    }

    /// The Host header value.
    public var hostHeader: String {
        let h = host.contains(":") ? "[\(host)]" : host
        return (port == (tls ? 443 : 80)) ? h : "\(h):\(port)"
    }
}

public struct HTTPResponseHead: Sendable {
    public var status: Int
    /// Header names lower-cased, in arrival order.
    public var headers: [(name: String, value: String)]
    public func header(_ name: String) -> String? {
        let n = name.lowercased()
        return headers.first { $0.name == n }?.value
    }

    /// Whether header `name` contains `token` (lower-case ASCII), ignoring ASCII case: compared
    /// as bytes, as `String.contains` costs several microseconds on every response.
    public func header(_ name: String, contains token: String) -> Bool {
        guard let value = header(name) else { return false }
        let t = Array(token.utf8), v = Array(value.utf8)
        guard !t.isEmpty, v.count >= t.count else { return t.isEmpty }
        for i in 0...(v.count - t.count) {
            var j = 0
            while j < t.count, (v[i + j] >= 65 && v[i + j] <= 90 ? v[i + j] + 32 : v[i + j]) == t[j] { j += 1 }
            if j == t.count { return true }
        }
        return false
    }

    /// The `Date` header in seconds since the epoch; nil when it is missing or not an
    /// IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT"), the only form a server may send
    /// (RFC 9110, section 5.6.7).
    public var date: Int? { header("date").flatMap(HTTPResponseHead.parseDate) }

    public static func parseDate(_ text: String) -> Int? {
        let parts = text.split(separator: " ", omittingEmptySubsequences: false)
        guard parts.count == 6, parts[0].count == 4, parts[0].last == ",", parts[5] == "GMT",
              let day = digits(parts[1], 2), let year = digits(parts[3], 4),
              let month = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
                .firstIndex(of: String(parts[2])).map({ $0 + 1 }) else { return nil }
        let time = parts[4].split(separator: ":", omittingEmptySubsequences: false)
        guard time.count == 3, let h = digits(time[0], 2), let m = digits(time[1], 2), let s = digits(time[2], 2),
              (1...31).contains(day), year >= 1970, h < 24, m < 60, s < 61 else { return nil }
        // Days since 1970-01-01 of a proleptic Gregorian date, years counted from March.
        let y = month <= 2 ? year - 1 : year
        let dayOfYear = (153 * ((month + 9) % 12) + 2) / 5 + day - 1
        let days = (y / 400) * 146_097 + (y % 400) * 365 + (y % 400) / 4 - (y % 400) / 100 + dayOfYear - 719_468
        return days * 86_400 + h * 3600 + m * 60 + s
    }

    private static func digits(_ text: Substring, _ count: Int) -> Int? {
        guard text.utf8.count == count, text.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }) else { return nil }
        return Int(text)
    }
}

public struct HTTPResponse: Sendable {
    public var head: HTTPResponseHead
    public var body: [UInt8]
    public var status: Int { head.status }
    public init(head: HTTPResponseHead, body: [UInt8]) {
        self.head = head
        self.body = body
    }
}

/// Buffered reads over a ByteStream: lines for the head, exact counts for bodies.
public final class BufferedReader {
    public let stream: ByteStream
    private var buffer: [UInt8]
    private var start = 0
    private var end = 0
    /// Bytes read from the stream so far (whether consumed or still buffered).
    public private(set) var received = 0
    /// While set, `fill` fails with `NetError.timedOut` once the deadline has passed, and shortens
    /// the stream's read timeout so that no single read outlasts it.
    var deadline: Deadline?

    struct Deadline {
        /// When the exchange must be over if nothing arrives…
        var base: ContinuousClock.Instant
        /// …extended by one second per this many bytes received since `receivedAtStart`.
        var bytesPerSecond: Int
        var receivedAtStart: Int
        /// The stream's normal timeout (0 = none) and the one currently applied.
        var readTimeout: Double
        var applied: Double
    }

    public init(_ stream: ByteStream, capacity: Int = 64 * 1024) {
        self.stream = stream
        buffer = [UInt8](repeating: 0, count: capacity)
    }

    public var buffered: Int { end - start }

    /// Reads more bytes from the stream into the buffer. Returns false at end of stream.
    @discardableResult
    public func fill() throws -> Bool {
        if start == end { start = 0; end = 0 }
        if end == buffer.count {
            if start > 0 {
                buffer.withUnsafeMutableBytes { raw in
                    guard let base = raw.baseAddress else { return }
                    base.copyMemory(from: base + start, byteCount: end - start)
                }
                end -= start; start = 0
            } else {
                buffer.append(contentsOf: repeatElement(0, count: buffer.count))
            }
        }
        if var d = deadline {
            let earned = Double(received - d.receivedAtStart) / Double(max(1, d.bytesPerSecond))
            let left = ContinuousClock.now.duration(to: d.base + .seconds(earned))
            let remaining = Double(left.components.seconds) + Double(left.components.attoseconds) / 1e18
            guard remaining > 0 else { throw NetError.timedOut }
            let wanted = d.readTimeout > 0 ? min(d.readTimeout, remaining) : remaining
            // Re-applied only when it changes noticeably: one setsockopt, not one per read.
            if abs(wanted - d.applied) > 0.25 {
                stream.setTimeout(max(wanted, 0.001))
                d.applied = wanted
                deadline = d
            }
        }
        let n = try buffer.withUnsafeMutableBytes { raw in
            try stream.read(into: UnsafeMutableRawBufferPointer(rebasing: raw[end...]))
        }
        end += n
        received += n
        return n > 0
    }

    /// A line without its CRLF (or LF). Throws if the line is longer than `limit`.
    public func readLine(limit: Int = 16 * 1024) throws -> String {
        try withLine(limit: limit) { String(decoding: $0, as: UTF8.self) }
    }

    /// Hands the next line, without its CRLF (or LF), to `body` straight from the buffer, and
    /// consumes it. Throws if the line is longer than `limit`.
    public func withLine<T>(limit: Int = 16 * 1024, _ body: (UnsafeBufferPointer<UInt8>) throws -> T) throws -> T {
        var scanned = start
        while true {
            let found: Int? = buffer.withUnsafeBufferPointer { b in
                guard scanned < end, let base = b.baseAddress,
                      let hit = memchr(base + scanned, 10, end - scanned) else { return nil }
                return base.distance(to: hit.assumingMemoryBound(to: UInt8.self))
            }
            if let newline = found {
                let lineStart = start
                var lineEnd = newline
                start = newline + 1
                return try buffer.withUnsafeBufferPointer { b in
                    if lineEnd > lineStart && b[lineEnd - 1] == 13 { lineEnd -= 1 }
                    return try body(UnsafeBufferPointer(rebasing: b[lineStart..<lineEnd]))
                }
            }
            scanned = end
            if end - start > limit { throw NetError.protocolViolation("header line too long") }
            let offset = scanned - start
            guard try fill() else { throw NetError.closed }
            scanned = start + offset
        }
    }

    /// Hands up to `max` buffered (or newly read) bytes to `body`. Returns 0 at end of stream.
    public func read(max: Int, _ body: (UnsafeRawBufferPointer) throws -> Void) throws -> Int {
        if start == end { guard try fill() else { return 0 } }
        let n = min(max, end - start)
        try buffer.withUnsafeBytes { raw in try body(UnsafeRawBufferPointer(rebasing: raw[start..<(start + n)])) }
        start += n
        return n
    }

    /// Reads exactly `count` bytes.
    public func readExact(_ count: Int) throws -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(count)
        while out.count < count {
            let got = try read(max: count - out.count) { out.append(contentsOf: $0) }
            if got == 0 { throw NetError.closed }
        }
        return out
    }
}

/// Errors above the byte stream: what the server sent could not be read as HTTP.
public struct HTTPError: Error, CustomStringConvertible, Sendable {
    public var description: String
}

/// Limits on what one exchange may cost, whatever the server sends.
public struct HTTPLimits: Sendable {
    /// Seconds one request may take from sending to the end of its response (nil: no limit, for
    /// streams that stay open such as SSE). The deadline is extended by one second for every
    /// `minimumRate` bytes received, so a large message on a slow link is not cut off while a
    /// server that drips a byte now and then is (the per-read timeout alone never fires there).
    public var deadline: Double?
    public var minimumRate: Int
    /// Interim (1xx) responses accepted before the final one.
    public var maxInterimResponses: Int
    /// Trailer lines accepted after a chunked body (each at most 16 KiB, like header lines).
    public var maxTrailerLines: Int

    public init(deadline: Double? = nil, minimumRate: Int = 16 * 1024, maxInterimResponses: Int = 16,
                maxTrailerLines: Int = 64) {
        self.deadline = deadline
        self.minimumRate = minimumRate
        self.maxInterimResponses = maxInterimResponses
        self.maxTrailerLines = maxTrailerLines
    }
}

/// One keep-alive connection to an endpoint.
///
/// The only request it sends twice is one whose first try went out on a reused keep-alive
/// connection that the server had closed while idle: when that try failed with the connection
/// closed or reset and NOT ONE BYTE of its response arrived, and the method is idempotent (GET,
/// HEAD, PUT, DELETE, OPTIONS), it is sent once more on a fresh connection. A POST is never
/// resent here (the server may have acted on it; exactly-once is the caller's business), and a
/// response that broke off after its first byte is an error, never continued or restarted here:
/// the caller decides whether to retry, and starts its sink over if it does.
///
/// A body is complete only when it ended as announced: the chunked terminator, the full
/// Content-Length, or for a body delimited by the end of the connection, a clean end of stream
/// (over TLS that means close_notify; `TLSStream` reports an EOF without it as an error). An end
/// of stream before that is `NetError.closed`, never the end of the body.
public final class HTTPConnection {
    public typealias Connector = @Sendable (HTTPEndpoint) throws -> ByteStream
    public let endpoint: HTTPEndpoint
    private let connector: Connector
    private var reader: BufferedReader?
    public var timeout: Double
    /// Largest response body `request` (not the streaming variant) accepts.
    public var maxBodySize = 64 * 1024 * 1024
    public var limits = HTTPLimits()

    public init(endpoint: HTTPEndpoint, timeout: Double = 60, connector: @escaping Connector) {
        self.endpoint = endpoint
        self.timeout = timeout
        self.connector = connector
    }

    /// A plain TCP connector (no TLS).
    public static func tcpConnector(timeout: Double) -> Connector {
        { endpoint in
            guard !endpoint.tls else { throw NetError.tls("this build has no TLS connector for https://") }
            return try TCPStream(host: endpoint.host, port: endpoint.port, timeout: timeout)
        }
    }

    /// Methods that may be sent twice with the effect of once (RFC 9110, 9.2.2).
    public static func isIdempotent(_ method: String) -> Bool {
        ["GET", "HEAD", "PUT", "DELETE", "OPTIONS"].contains(method)
    }

    public func close() {
        reader?.stream.close()
        reader = nil
    }

    /// Sends a request and reads the whole response body into memory.
    public func request(_ method: String, _ path: String, headers: [(String, String)] = [],
                        body: [UInt8]? = nil) throws -> HTTPResponse {
        var data = [UInt8]()
        let limit = maxBodySize
        let head = try stream(method, path, headers: headers, body: body) { chunk in
            guard data.count + chunk.count <= limit else {
                throw HTTPError(description: "response body larger than \(limit) bytes")
            }
            data.append(contentsOf: chunk)
        }
        return HTTPResponse(head: head, body: data)
    }

    /// Sends a request and hands the response body to `sink` in chunks as it arrives.
    /// `onHead` sees the status and headers before the first body byte.
    public func stream(_ method: String, _ path: String, headers: [(String, String)] = [],
                       body: [UInt8]? = nil,
                       onHead: (HTTPResponseHead) throws -> Void = { _ in },
                       sink: (UnsafeRawBufferPointer) throws -> Void) throws -> HTTPResponseHead {
        let bytes = try encode(method, path, headers: headers, body: body)
        // Bytes left over from an earlier exchange mean the connection is out of step: never reuse it.
        if let existing = reader, existing.buffered > 0 { close() }
        // A reused connection may have been closed by the server while idle. The rule for sending
        // again is in the type's documentation: idempotent, and nothing at all came back.
        let reused = reader
        let receivedBefore = reused?.received ?? 0
        do {
            return try exchange(bytes, method: method, onHead: onHead, sink: sink)
        } catch let error as NetError where error == .closed || isReset(error) {
            guard let reused, reused.received == receivedBefore, Self.isIdempotent(method) else { throw error }
            close()
            return try exchange(bytes, method: method, onHead: onHead, sink: sink)
        }
    }

    private func isReset(_ error: NetError) -> Bool {
        if case .io = error { return true }
        return false
    }

    /// HTTP/1.1 pipelining (RFC 9112, 9.3.2): sends a GET for each of `paths` in one write, then
    /// reads the responses in order, response `i` to `onHead(i, head)`, `sink(i, chunk)`… and
    /// `onEnd(i)`. Returns how many responses were read whole, and what stopped it short.
    ///
    /// It stops at the first failure of any kind (the connection, the server's answer, a
    /// callback that throws) and closes the connection, which loses the responses not yet read;
    /// and it stops after a response that closes the connection. It never sends anything twice:
    /// the requests it did not finish are the caller's to send again (GET is safe to repeat).
    public func pipeline(_ paths: [String], headers: [(String, String)] = [],
                         onHead: (Int, HTTPResponseHead) throws -> Void,
                         sink: (Int, UnsafeRawBufferPointer) throws -> Void,
                         onEnd: (Int) throws -> Void) -> (done: Int, stoppedBy: Error?) {
        if let existing = reader, existing.buffered > 0 { close() }
        var done = 0
        var keepAlive = true
        defer { if !keepAlive { close() } }
        do {
            var bytes: [UInt8] = []
            for path in paths { bytes += try encode("GET", path, headers: headers, body: nil) }
            var start = ContinuousClock.now
            let reader = try connected()
            try reader.stream.write(bytes)
            while done < paths.count && keepAlive {
                let i = done
                defer { start = ContinuousClock.now }
                _ = try receive(reader, method: "GET", start: start, sent: 0, keepAlive: &keepAlive,
                                onHead: { try onHead(i, $0) }, sink: { try sink(i, $0) })
                try onEnd(i)
                done += 1
            }
            return (done, nil)
        } catch {
            keepAlive = false
            return (done, error)
        }
    }

    /// How many bytes the head (request line and headers) of this request would take.
    public func headSize(_ method: String, _ path: String, headers: [(String, String)]) -> Int {
        (try? encode(method, path, headers: headers, body: nil).count) ?? 0
    }

    /// The bytes of one request.
    private func encode(_ method: String, _ path: String, headers: [(String, String)], body: [UInt8]?) throws -> [UInt8] {
        var request = "\(method) \(endpoint.prefix)\(path) HTTP/1.1\r\nHost: \(endpoint.hostHeader)\r\n"
        for (name, value) in headers {
            // Bytes, not Characters: "\r\n" is a single Character and would slip through.
            guard !name.utf8.contains(where: { $0 == 13 || $0 == 10 }),
                  !value.utf8.contains(where: { $0 == 13 || $0 == 10 }) else {
                throw HTTPError(description: "header \(name) contains a line break")
            }
            request += "\(name): \(value)\r\n"
        }
        if let body { request += "Content-Length: \(body.count)\r\n" }
        request += "\r\n"
        var bytes = Array(request.utf8)
        if let body { bytes += body }
        return bytes
    }

    /// The kept-alive connection, or a new one.
    private func connected() throws -> BufferedReader {
        if let reader { return reader }
        let stream = try connector(endpoint)
        stream.setTimeout(timeout)
        let reader = BufferedReader(stream)
        self.reader = reader
        return reader
    }

    private func exchange(_ bytes: [UInt8], method: String,
                          onHead: (HTTPResponseHead) throws -> Void,
                          sink: (UnsafeRawBufferPointer) throws -> Void) throws -> HTTPResponseHead {
        let start = ContinuousClock.now
        var keepAlive = true
        defer { if !keepAlive { close() } }
        do {
            let reader = try connected()
            try reader.stream.write(bytes)
            return try receive(reader, method: method, start: start, sent: bytes.count, keepAlive: &keepAlive,
                               onHead: onHead, sink: sink)
        } catch {
            keepAlive = false
            throw error
        }
    }

    /// Reads one response, due `limits.deadline` after `start` plus the time the `sent` bytes
    /// earn (sending a large upload takes time too). Clears `keepAlive` when the server closes.
    private func receive(_ reader: BufferedReader, method: String, start: ContinuousClock.Instant, sent: Int,
                         keepAlive: inout Bool,
                         onHead: (HTTPResponseHead) throws -> Void,
                         sink: (UnsafeRawBufferPointer) throws -> Void) throws -> HTTPResponseHead {
        defer {
            if let d = reader.deadline, d.applied != timeout { reader.stream.setTimeout(timeout) }
            reader.deadline = nil
        }
        if let seconds = limits.deadline {
            let base = start + .seconds(seconds + Double(sent) / Double(max(1, limits.minimumRate)))
            reader.deadline = .init(base: base, bytesPerSecond: limits.minimumRate, receivedAtStart: reader.received,
                                    readTimeout: timeout, applied: timeout)
        }
        var head = try readHead(reader)
        var interim = 0
        while (100..<200).contains(head.status) {
            // 100 Continue, 102 Processing, 103 Early Hints: skip them, but not forever.
            guard head.status != 101 else { throw HTTPError(description: "unexpected 101 Switching Protocols") }
            interim += 1
            guard interim <= limits.maxInterimResponses else {
                throw HTTPError(description: "more than \(limits.maxInterimResponses) interim (1xx) responses")
            }
            head = try readHead(reader)
        }
        if head.header("connection", contains: "close") { keepAlive = false }
        try onHead(head)
        try readBody(reader, head: head, method: method, keepAlive: &keepAlive, sink: sink)
        return head
    }

    /// Reads a status line and header lines, parsed as bytes: a download's head is read for
    /// every message, and String's generic splitting and trimming cost microseconds each.
    private func readHead(_ reader: BufferedReader) throws -> HTTPResponseHead {
        let status: Result<Int, HTTPError> = try reader.withLine { line in
            // "HTTP/1.x NNN reason": the status is three digits (RFC 9112 §4), 100…599, not
            // "-1", "+200" or "2000".
            if line.count >= 12, line.starts(with: "HTTP/1.".utf8), line[8] == 32, line.count == 12 || line[12] == 32,
               line[9...11].allSatisfy({ $0 >= 48 && $0 <= 57 }) {
                let code = line[9...11].reduce(0) { $0 * 10 + Int($1 - 48) }
                if (100...599).contains(code) { return .success(code) }
            }
            let shown = String(decoding: line.prefix(60), as: UTF8.self)
            return .failure(HTTPError(description: "not an HTTP response (status line \"\(shown)\")"))
        }
        let code = try status.get()
        var headers: [(name: String, value: String)] = []
        while true {
            let header: (name: String, value: String)?? = try reader.withLine { line in
                if line.isEmpty { return .some(nil) }
                guard let colon = line.firstIndex(of: 58) else { return nil }
                let name = String(unsafeUninitializedCapacity: colon) { out in
                    for i in 0..<colon { out[i] = line[i] >= 65 && line[i] <= 90 ? line[i] + 32 : line[i] }
                    return colon
                }
                var from = colon + 1, to = line.count
                while from < to, line[from] == 32 || line[from] == 9 { from += 1 }
                while to > from, line[to - 1] == 32 || line[to - 1] == 9 { to -= 1 }
                return .some((name, String(decoding: UnsafeBufferPointer(rebasing: line[from..<to]), as: UTF8.self)))
            }
            guard let header else { throw HTTPError(description: "malformed header line in response") }
            guard let header else { break }
            headers.append(header)
            if headers.count > 200 { throw HTTPError(description: "too many response headers") }
        }
        return HTTPResponseHead(status: code, headers: headers)
    }

    private func readBody(_ reader: BufferedReader, head: HTTPResponseHead, method: String,
                          keepAlive: inout Bool, sink: (UnsafeRawBufferPointer) throws -> Void) throws {
        if method == "HEAD" || head.status == 204 || head.status == 304 || (100..<200).contains(head.status) {
            return
        }
        if head.header("transfer-encoding", contains: "chunked") {
            while true {
                guard let size = try reader.withLine(HTTPConnection.chunkSize) else {
                    throw HTTPError(description: "malformed chunk size in response")
                }
                if size == 0 {
                    var trailers = 0
                    while try !reader.withLine({ $0.isEmpty }) {
                        trailers += 1
                        guard trailers <= limits.maxTrailerLines else {
                            throw HTTPError(description: "more than \(limits.maxTrailerLines) trailer lines after a chunked body")
                        }
                    }
                    return
                }
                var remaining = size
                while remaining > 0 {
                    let n = try reader.read(max: remaining, sink)
                    if n == 0 { throw NetError.closed }
                    remaining -= n
                }
                guard try reader.withLine({ $0.isEmpty }) else {
                    throw HTTPError(description: "missing CRLF after chunk")
                }
            }
        } else if let lengthText = head.header("content-length") {
            guard let length = Int(lengthText), length >= 0 else {
                throw HTTPError(description: "malformed Content-Length")
            }
            var remaining = length
            while remaining > 0 {
                let n = try reader.read(max: remaining, sink)
                if n == 0 { throw NetError.closed }
                remaining -= n
            }
        } else {
            // Delimited by the end of the connection (RFC 9112, 6.3): the stream's clean end is
            // the only end marker, which TLS authenticates (close_notify) and plain TCP cannot.
            keepAlive = false
            while try reader.read(max: Int.max, sink) > 0 {}
        }
    }
}

extension HTTPConnection {
    /// The size on a chunk-size line ("1f3a", "1f3a;name=value", spaces around); nil for
    /// anything else, or a size that does not fit an Int.
    static func chunkSize(_ line: UnsafeBufferPointer<UInt8>) -> Int? {
        var size = 0, digits = 0, i = 0
        while i < line.count, line[i] == 32 || line[i] == 9 { i += 1 }
        while i < line.count {
            let c = line[i]
            let value: Int
            switch c {
            case 48...57: value = Int(c - 48)
            case 97...102: value = Int(c - 87)
            case 65...70: value = Int(c - 55)
            default: value = -1
            }
            if value < 0 { break }
            guard size <= Int.max >> 4 else { return nil }
            size = size << 4 | value
            digits += 1
            i += 1
        }
        while i < line.count, line[i] == 32 || line[i] == 9 { i += 1 }
        guard digits > 0, i == line.count || line[i] == 59 else { return nil }
        return size
    }
}

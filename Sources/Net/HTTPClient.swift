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
}

public struct HTTPResponse: Sendable {
    public var head: HTTPResponseHead
    public var body: [UInt8]
    public var status: Int { head.status }
}

/// Buffered reads over a ByteStream: lines for the head, exact counts for bodies.
public final class BufferedReader {
    public let stream: ByteStream
    private var buffer: [UInt8]
    private var start = 0
    private var end = 0

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
        let n = try buffer.withUnsafeMutableBytes { raw in
            try stream.read(into: UnsafeMutableRawBufferPointer(rebasing: raw[end...]))
        }
        end += n
        return n > 0
    }

    /// A line without its CRLF (or LF). Throws if the line is longer than `limit`.
    public func readLine(limit: Int = 16 * 1024) throws -> String {
        var scanned = start
        while true {
            while scanned < end {
                if buffer[scanned] == 10 {
                    var lineEnd = scanned
                    if lineEnd > start && buffer[lineEnd - 1] == 13 { lineEnd -= 1 }
                    let line = String(decoding: buffer[start..<lineEnd], as: UTF8.self)
                    start = scanned + 1
                    return line
                }
                scanned += 1
            }
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

/// One keep-alive connection to an endpoint. Reconnects transparently when the server closed an
/// idle connection before answering (safe because callers only retry idempotent requests).
public final class HTTPConnection {
    public typealias Connector = @Sendable (HTTPEndpoint) throws -> ByteStream
    public let endpoint: HTTPEndpoint
    private let connector: Connector
    private var reader: BufferedReader?
    public var timeout: Double
    /// Largest response body `request` (not the streaming variant) accepts.
    public var maxBodySize = 64 * 1024 * 1024

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

        // A reused connection may have been closed by the server while idle: retry once on a
        // fresh one if nothing at all came back.
        let reused = reader != nil
        do {
            return try exchange(bytes, method: method, onHead: onHead, sink: sink)
        } catch let error as NetError where reused && (error == .closed || isReset(error)) {
            close()
            return try exchange(bytes, method: method, onHead: onHead, sink: sink)
        }
    }

    private func isReset(_ error: NetError) -> Bool {
        if case .io = error { return true }
        return false
    }

    private func exchange(_ bytes: [UInt8], method: String,
                          onHead: (HTTPResponseHead) throws -> Void,
                          sink: (UnsafeRawBufferPointer) throws -> Void) throws -> HTTPResponseHead {
        let reader: BufferedReader
        if let existing = self.reader { reader = existing } else {
            let stream = try connector(endpoint)
            stream.setTimeout(timeout)
            reader = BufferedReader(stream)
            self.reader = reader
        }
        var keepAlive = true
        defer { if !keepAlive { close() } }
        do {
            try reader.stream.write(bytes)
            var head: HTTPResponseHead
            repeat { head = try readHead(reader) } while head.status == 100
            let connection = head.header("connection")?.lowercased() ?? ""
            if connection.contains("close") { keepAlive = false }
            try onHead(head)
            try readBody(reader, head: head, method: method, keepAlive: &keepAlive, sink: sink)
            return head
        } catch {
            keepAlive = false
            throw error
        }
    }

    private func readHead(_ reader: BufferedReader) throws -> HTTPResponseHead {
        let statusLine = try reader.readLine()
        let parts = statusLine.split(separator: " ", maxSplits: 2)
        guard parts.count >= 2, parts[0].hasPrefix("HTTP/1."), let status = Int(parts[1]) else {
            throw HTTPError(description: "not an HTTP response (status line \"\(statusLine.prefix(60))\")")
        }
        var headers: [(name: String, value: String)] = []
        while true {
            let line = try reader.readLine()
            if line.isEmpty { break }
            guard let colon = line.firstIndex(of: ":") else {
                throw HTTPError(description: "malformed header line in response")
            }
            let name = line[..<colon].lowercased()
            let value = line[line.index(after: colon)...].trimmingSpaces()
            headers.append((name, value))
            if headers.count > 200 { throw HTTPError(description: "too many response headers") }
        }
        return HTTPResponseHead(status: status, headers: headers)
    }

    private func readBody(_ reader: BufferedReader, head: HTTPResponseHead, method: String,
                          keepAlive: inout Bool, sink: (UnsafeRawBufferPointer) throws -> Void) throws {
        if method == "HEAD" || head.status == 204 || head.status == 304 || (100..<200).contains(head.status) {
            return
        }
        if let te = head.header("transfer-encoding"), te.lowercased().contains("chunked") {
            while true {
                let sizeLine = try reader.readLine()
                let hex = sizeLine.prefix { $0 != ";" }.trimmingSpaces()
                guard let size = Int(hex, radix: 16), size >= 0 else {
                    throw HTTPError(description: "malformed chunk size in response")
                }
                if size == 0 {
                    while try !reader.readLine().isEmpty {}  // trailers
                    return
                }
                var remaining = size
                while remaining > 0 {
                    let n = try reader.read(max: remaining, sink)
                    if n == 0 { throw NetError.closed }
                    remaining -= n
                }
                guard try reader.readLine().isEmpty else {
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
            keepAlive = false
            while try reader.read(max: Int.max, sink) > 0 {}
        }
    }
}

extension StringProtocol {
    func trimmingSpaces() -> String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" { s.removeFirst() }
        while let l = s.last, l == " " || l == "\t" { s.removeLast() }
        return String(s)
    }
}

import Foundation
@testable import WildDuckSim
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

struct ClientError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

struct Reply {
    var status: Int
    var headers: [String: String]
    var body: [UInt8]
    /// the bytes of the body as they came over the wire (chunk framing included)
    var wireBody: [UInt8]

    var json: JSONValue? { JSONValue.parse(body) }
    var text: String { String(decoding: body, as: UTF8.self) }
}

/// A tiny blocking HTTP/1.1 client on a raw socket (keep-alive, Content-Length and chunked replies).
final class RawClient {
    let fd: Int32
    var buffer: [UInt8] = []

    init(port: UInt16) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw ClientError("socket") }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else { close(fd); throw ClientError("connect failed \(errno)") }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(4))
        // generous receive timeout so that a broken server fails the test instead of hanging it
        var tv = timeval(tv_sec: 20, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close(fd) }

    func sendRaw(_ bytes: [UInt8]) throws {
        var off = 0
        while off < bytes.count {
            let n = bytes.withUnsafeBytes { p -> Int in
                guard let base = p.baseAddress else { return -1 }
                return send(fd, base + off, bytes.count - off, Int32(MSG_NOSIGNAL))
            }
            guard n > 0 else { throw ClientError("send failed") }
            off += n
        }
    }

    static func request(_ method: String, _ path: String, token: String? = nil, headers: [(String, String)] = [], body: [UInt8]? = nil,
                        contentType: String = "application/json") -> [UInt8] {
        var h = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        if let t = token { h += "X-Access-Token: \(t)\r\n" }
        for (k, v) in headers { h += "\(k): \(v)\r\n" }
        if let b = body { h += "Content-Type: \(contentType)\r\nContent-Length: \(b.count)\r\n" }
        h += "\r\n"
        return Array(h.utf8) + (body ?? [])
    }

    func call(_ method: String, _ path: String, token: String? = nil, headers: [(String, String)] = [], json: String? = nil) throws -> Reply {
        try sendRaw(RawClient.request(method, path, token: token, headers: headers, body: json.map { Array($0.utf8) }))
        return try readReply()
    }

    /// nil when the connection was closed before any byte of a reply arrived.
    private func fill() throws -> Bool {
        var tmp = [UInt8](repeating: 0, count: 65536)
        let n = tmp.withUnsafeMutableBytes { recv(fd, $0.baseAddress, 65536, 0) }
        if n < 0 { throw ClientError("recv failed errno \(errno)") }
        if n == 0 { return false }
        buffer.append(contentsOf: tmp[0..<n])
        return true
    }

    func readReply() throws -> Reply {
        while true {
            if let r = try parseReply() { return r }
            guard try fill() else { throw ClientError("connection closed (\(buffer.count) bytes pending)") }
        }
    }

    /// True when the peer closed the connection (no more bytes).
    func isClosedByPeer() throws -> Bool {
        if !buffer.isEmpty { return false }
        return try !fill()
    }

    private func parseReply() throws -> Reply? {
        guard let he = buffer.firstIndex(of: [0x0D, 0x0A, 0x0D, 0x0A]) else { return nil }
        let head = String(decoding: buffer[0..<he], as: UTF8.self).components(separatedBy: "\r\n")
        let statusParts = head[0].split(separator: " ")
        guard statusParts.count >= 2, let status = Int(statusParts[1]) else { throw ClientError("bad status line \(head[0])") }
        var headers: [String: String] = [:]
        for l in head.dropFirst() {
            if let c = l.firstIndex(of: ":") {
                headers[l[..<c].lowercased()] = l[l.index(after: c)...].trimmingCharacters(in: .whitespaces)
            }
        }
        let start = he + 4
        if headers["transfer-encoding"]?.lowercased() == "chunked" {
            var pos = start
            var body: [UInt8] = []
            while true {
                guard let le = buffer.firstIndex(of: [0x0D, 0x0A], from: pos) else { return nil }
                guard let size = Int(String(decoding: buffer[pos..<le], as: UTF8.self), radix: 16) else { throw ClientError("bad chunk") }
                if size == 0 {
                    guard buffer.count >= le + 4 else { return nil }
                    let wire = Array(buffer[start..<(le + 4)])
                    buffer.removeFirst(le + 4)
                    return Reply(status: status, headers: headers, body: body, wireBody: wire)
                }
                guard buffer.count >= le + 2 + size + 2 else { return nil }
                body.append(contentsOf: buffer[(le + 2)..<(le + 2 + size)])
                pos = le + 2 + size + 2
            }
        }
        let len = Int(headers["content-length"] ?? "0") ?? 0
        guard buffer.count >= start + len else { return nil }
        let body = Array(buffer[start..<(start + len)])
        buffer.removeFirst(start + len)
        return Reply(status: status, headers: headers, body: body, wireBody: body)
    }
}

/// A running server with a token, for tests.
final class Harness {
    let account: SimAccount
    let server: SimServer
    let token: String
    let client: RawClient

    init(account: SimAccount = SimAccount()) throws {
        self.account = account
        server = SimServer(account: account)
        try server.start()
        client = try RawClient(port: server.port)
        let r = try client.call("POST", "/authenticate", json: #"{"username":"demo","password":"demo","token":true}"#)
        guard let t = r.json?["token"]?.stringValue else { throw ClientError("no token: \(r.text)") }
        token = t
    }

    deinit { server.stop() }

    var inbox: String { account.mailboxId(path: "INBOX") ?? "" }

    func get(_ path: String) throws -> Reply { try client.call("GET", path, token: token) }
    func call(_ method: String, _ path: String, json: String? = nil) throws -> Reply { try client.call(method, path, token: token, json: json) }
}

func mail(_ n: Int, subject: String? = nil, extra: String = "") -> [UInt8] {
    Array("From: Sender \(n) <s\(n)@example.com>\r\nTo: demo@example.com\r\nSubject: \(subject ?? "Message \(n)")\r\nMessage-ID: <m\(n)@test>\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n\(extra)\r\nBody of message \(n)\r\n".utf8)
}

/// One SSE block: `data:` lines joined, `id:`, or a comment.
struct SSEEvent {
    var data: String
    var id: String?
    var comment: String?
    var json: JSONValue? { JSONValue.parse(data) }
    var command: String? { json?["command"]?.stringValue }
}

/// Reads an SSE response (chunked) incrementally from a RawClient.
final class SSEReader {
    let client: RawClient
    var status = 0
    var headers: [String: String] = [:]
    private var decoded: [UInt8] = []
    private var raw: [UInt8] = []

    init(port: UInt16, token: String, lastEventId: String? = nil, viaQuery: Bool = false) throws {
        client = try RawClient(port: port)
        var path = "/users/me/updates?accessToken=\(token)"
        var headers: [(String, String)] = []
        if let l = lastEventId {
            if viaQuery { path += "&Last-Event-ID=\(l)" } else { headers.append(("Last-Event-ID", l)) }
        }
        try client.sendRaw(RawClient.request("GET", path, headers: headers))
        // read the head
        while true {
            if let he = client.buffer.firstIndex(of: [0x0D, 0x0A, 0x0D, 0x0A]) {
                let lines = String(decoding: client.buffer[0..<he], as: UTF8.self).components(separatedBy: "\r\n")
                status = Int(lines[0].split(separator: " ")[1]) ?? 0
                for l in lines.dropFirst() {
                    if let c = l.firstIndex(of: ":") { self.headers[l[..<c].lowercased()] = l[l.index(after: c)...].trimmingCharacters(in: .whitespaces) }
                }
                raw = Array(client.buffer[(he + 4)...])
                client.buffer.removeAll()
                break
            }
            guard try client.fillPublic() else { throw ClientError("closed before head") }
        }
    }

    /// Decodes complete chunks; returns false at the terminating chunk.
    private func decodeChunks() throws {
        while let le = raw.firstIndex(of: [0x0D, 0x0A]) {
            guard let size = Int(String(decoding: raw[0..<le], as: UTF8.self), radix: 16) else { throw ClientError("bad chunk") }
            guard raw.count >= le + 2 + size + 2 else { return }
            decoded += raw[(le + 2)..<(le + 2 + size)]
            raw.removeFirst(le + 2 + size + 2)
        }
    }

    /// The next event or comment; throws when the stream ends or nothing complete arrives within `timeout`.
    func next(timeout: Double = 10) throws -> SSEEvent {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            if Date() > deadline { throw ClientError("no SSE event within \(timeout)s") }
            try decodeChunks()
            if let end = decoded.firstIndex(of: [0x0A, 0x0A]) {
                let block = String(decoding: decoded[0..<end], as: UTF8.self)
                decoded.removeFirst(end + 2)
                var data: [String] = []
                var ev = SSEEvent(data: "")
                for line in block.split(separator: "\n", omittingEmptySubsequences: false) {
                    if line.hasPrefix("data: ") { data.append(String(line.dropFirst(6))) } else if line.hasPrefix("id: ") { ev.id = String(line.dropFirst(4)) } else if line.hasPrefix(":") {
                        ev.comment = String(line.dropFirst()).trimmingCharacters(in: .whitespaces)
                    }
                }
                ev.data = data.joined(separator: "\n")
                return ev
            }
            guard try client.fillPublic() else { throw ClientError("stream ended") }
            raw += client.buffer
            client.buffer.removeAll()
        }
    }

    /// The next event that is not a comment (heartbeats are skipped, but do not extend the deadline).
    func nextEvent(timeout: Double = 10) throws -> SSEEvent {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let e = try next(timeout: max(0.001, deadline.timeIntervalSinceNow))
            if e.comment == nil { return e }
        }
    }

    /// True when the server closes the stream before sending another event.
    func endsWithoutEvents() -> Bool {
        do {
            while true { if try next(timeout: 10).comment == nil { return false } }
        } catch { return true }
    }
}

extension RawClient {
    func fillPublic() throws -> Bool {
        var tmp = [UInt8](repeating: 0, count: 65536)
        let n = tmp.withUnsafeMutableBytes { recv(fd, $0.baseAddress, 65536, 0) }
        if n < 0 { throw ClientError("recv failed errno \(errno)") }
        if n == 0 { return false }
        buffer.append(contentsOf: tmp[0..<n])
        return true
    }
}

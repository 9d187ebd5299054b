// RFC 6455 §4: the opening handshake (HTTP/1.1 Upgrade), for both sides.
import COpenSSL
import Net

/// Everything that can end a WebSocket connection or prevent one.
public enum WebSocketError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The URL is not `ws://host[:port][/path]` or `wss://…`.
    case invalidURL(String)
    /// TCP or TLS failed (resolve, connect, certificate, I/O, timeout).
    case transport(NetError)
    /// The server answered the upgrade with another status than 101 (e.g. 404, or 200 from a
    /// server without WebSocket support): the caller may fall back to another transport.
    case handshakeRejected(status: Int, reason: String)
    /// The server answered 101 but broke the handshake rules (bad accept value, missing
    /// Upgrade, an extension or parameter we did not offer, a malformed response).
    case handshakeFailed(String)
    /// The server closed the connection with a close frame; `code` nil = no status (1005).
    case closedByPeer(code: UInt16?, reason: String)
    /// The peer broke the protocol or a limit; we sent a close frame with `error.closeCode`.
    case protocolViolation(WebSocketProtocolError)
    /// The connection dropped without a close frame (status 1006).
    case connectionLost(String)
    /// `send`/`ping` after the connection started closing.
    case notOpen

    public var description: String {
        switch self {
        case .invalidURL(let s): return "invalid WebSocket URL: \(s)"
        case .transport(let e): return e.description
        case .handshakeRejected(let status, let reason): return "WebSocket upgrade refused: HTTP \(status) \(reason)"
        case .handshakeFailed(let s): return "WebSocket handshake failed: \(s)"
        case .closedByPeer(let code, let reason):
            return "closed by server with \(code.map(String.init) ?? "no status")\(reason.isEmpty ? "" : ": \(reason)")"
        case .protocolViolation(let e): return e.description
        case .connectionLost(let s): return "WebSocket connection lost: \(s)"
        case .notOpen: return "WebSocket is closing or closed"
        }
    }
}

/// A parsed `ws://` or `wss://` URL.
public struct WebSocketURL: Equatable, Sendable {
    public var secure: Bool
    /// The host name or IP address (IPv6 without brackets).
    public var host: String
    public var port: Int
    /// Path and query, at least "/".
    public var resource: String

    public init(secure: Bool, host: String, port: Int, resource: String = "/") {
        self.secure = secure
        self.host = host
        self.port = port
        self.resource = resource
    }

    public init(parsing string: String) throws(WebSocketError) {
        var rest = Substring(string)
        if let hash = rest.firstIndex(of: "#") { rest = rest[..<hash] }
        guard let sep = rest.range(of: "://") else { throw .invalidURL(string) }
        switch rest[..<sep.lowerBound].lowercased() {
        case "ws": secure = false
        case "wss": secure = true
        default: throw .invalidURL(string)
        }
        rest = rest[sep.upperBound...]
        let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) ?? rest.endIndex
        let authority = rest[..<authorityEnd]
        let tail = rest[authorityEnd...]
        resource = tail.isEmpty ? "/" : (tail.first == "?" ? "/" + tail : String(tail))
        guard !authority.isEmpty, !authority.contains("@") else { throw .invalidURL(string) }
        var portText: Substring?
        if authority.first == "[" {
            guard let close = authority.firstIndex(of: "]") else { throw .invalidURL(string) }
            host = String(authority[authority.index(after: authority.startIndex)..<close])
            let after = authority[authority.index(after: close)...]
            if !after.isEmpty {
                guard after.first == ":" else { throw .invalidURL(string) }
                portText = after.dropFirst()
            }
        } else if let colon = authority.lastIndex(of: ":") {
            host = String(authority[..<colon])
            portText = authority[authority.index(after: colon)...]
        } else {
            host = String(authority)
        }
        guard !host.isEmpty, !resource.utf8.contains(where: { $0 <= 32 || $0 == 127 }),
              !host.utf8.contains(where: { $0 <= 32 || $0 == 127 }) else { throw .invalidURL(string) }
        if let portText {
            guard let p = Int(portText), (1...65535).contains(p) else { throw .invalidURL(string) }
            port = p
        } else {
            port = secure ? 443 : 80
        }
    }

    /// The `Host` header value: the port is left out when it is the scheme's default.
    public var hostHeader: String {
        let h = host.contains(":") ? "[\(host)]" : host
        return port == (secure ? 443 : 80) ? h : "\(h):\(port)"
    }
}

/// The head of an HTTP/1.1 request or response: start line and headers.
public struct HTTPHead: Sendable {
    /// "GET /ws HTTP/1.1" or "HTTP/1.1 101 Switching Protocols", split at the first two spaces.
    public var startLine: [String]
    public var headers: [(name: String, value: String)]

    /// All values of header `name` (case-insensitive), joined with ", " (RFC 9110 §5.3).
    public func value(_ name: String) -> String? {
        let values = headers.filter { $0.name.lowercased() == name.lowercased() }.map(\.value)
        return values.isEmpty ? nil : values.joined(separator: ", ")
    }

    /// Whether header `name` contains the comma-separated token `token` (case-insensitive).
    public func contains(_ name: String, token: String) -> Bool {
        guard let v = value(name) else { return false }
        return v.split(separator: ",").contains { $0.trimmingASCIIWhitespace().lowercased() == token.lowercased() }
    }

    /// Parses a head from the start of `bytes`. Returns nil if the blank line has not arrived
    /// yet, else the head and the number of bytes it took (what follows is WebSocket data).
    /// Throws if the head is malformed or longer than `limit`.
    public static func parse(_ bytes: [UInt8], limit: Int = 16384) throws(WebSocketError) -> (head: HTTPHead, length: Int)? {
        var end: Int?
        if bytes.count >= 4 {
            for i in 0...(bytes.count - 4) where bytes[i] == 13 && bytes[i + 1] == 10 && bytes[i + 2] == 13 && bytes[i + 3] == 10 {
                end = i
                break
            }
        }
        guard let end else {
            if bytes.count > limit { throw .handshakeFailed("HTTP head longer than \(limit) bytes") }
            return nil
        }
        guard end <= limit else { throw .handshakeFailed("HTTP head longer than \(limit) bytes") }
        guard UTF8Validator.isValid(bytes[0..<end]) else { throw .handshakeFailed("HTTP head is not UTF-8") }
        let text = String(decoding: bytes[0..<end], as: UTF8.self)
        let lines = text.split(separator: "\r\n", omittingEmptySubsequences: false)
        guard let first = lines.first, !first.isEmpty else { throw .handshakeFailed("empty HTTP head") }
        let start = first.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false).map(String.init)
        var headers: [(name: String, value: String)] = []
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { throw .handshakeFailed("malformed header line") }
            headers.append((line[..<colon].trimmingASCIIWhitespace(), line[line.index(after: colon)...].trimmingASCIIWhitespace()))
        }
        return (HTTPHead(startLine: start, headers: headers), end + 4)
    }
}

/// The pieces of the opening handshake.
public enum WebSocketHandshake {
    /// The GUID of RFC 6455 §1.3.
    public static let guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    /// A fresh `Sec-WebSocket-Key`: 16 random bytes, base64.
    public static func makeKey() -> String {
        var rng = SystemRandomNumberGenerator()
        return base64((0..<16).map { _ in UInt8.random(in: 0...255, using: &rng) })
    }

    /// `Sec-WebSocket-Accept` for a key: base64(SHA-1(key + GUID)).
    public static func acceptValue(forKey key: String) -> String {
        base64(sha1(Array((key + guid).utf8)))
    }

    /// The client's upgrade request. `headers` are added as given (do not repeat the ones
    /// this function writes).
    public static func clientRequest(url: WebSocketURL, key: String, extensions: String?,
                                     headers: [(name: String, value: String)] = []) -> String {
        var lines = [
            "GET \(url.resource) HTTP/1.1",
            "Host: \(url.hostHeader)",
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Key: \(key)",
            "Sec-WebSocket-Version: 13",
        ]
        if let extensions { lines.append("Sec-WebSocket-Extensions: \(extensions)") }
        // Header injection guard: names are tokens, values have no CR/LF (bytes, not Characters:
        // "\r\n" is a single Character in Swift).
        for h in headers where !h.name.isEmpty && !h.name.utf8.contains(where: { $0 <= 32 || $0 == UInt8(ascii: ":") || $0 >= 127 })
            && !h.value.utf8.contains(where: { $0 == 13 || $0 == 10 || $0 == 0 }) {
            lines.append("\(h.name): \(h.value)")
        }
        return lines.joined(separator: "\r\n") + "\r\n\r\n"
    }

    /// Checks the server's answer (RFC 6455 §4.1): status 101, `Upgrade: websocket`,
    /// `Connection: Upgrade`, the accept value, no subprotocol, and the extension answer
    /// against what we offered. Returns the negotiated permessage-deflate parameters.
    public static func validateResponse(_ head: HTTPHead, key: String, offeredCompression: Bool) throws(WebSocketError) -> PerMessageDeflateParameters? {
        guard head.startLine.count >= 2, head.startLine[0].hasPrefix("HTTP/"), let status = Int(head.startLine[1]) else {
            throw .handshakeFailed("malformed status line")
        }
        guard status == 101 else {
            throw .handshakeRejected(status: status, reason: head.startLine.count > 2 ? head.startLine[2] : "")
        }
        guard head.contains("Upgrade", token: "websocket") else { throw .handshakeFailed("missing Upgrade: websocket") }
        guard head.contains("Connection", token: "upgrade") else { throw .handshakeFailed("missing Connection: Upgrade") }
        guard head.value("Sec-WebSocket-Accept") == acceptValue(forKey: key) else {
            throw .handshakeFailed("wrong Sec-WebSocket-Accept")
        }
        guard head.value("Sec-WebSocket-Protocol") == nil else { throw .handshakeFailed("server chose a subprotocol we did not offer") }
        guard let ext = head.value("Sec-WebSocket-Extensions") else { return nil }
        guard offeredCompression else { throw .handshakeFailed("server accepted an extension we did not offer: \(ext)") }
        return try PerMessageDeflateParameters.validateServerResponse(ext)
    }

    /// Server side: checks a client's upgrade request (GET, HTTP/1.1, `Upgrade: websocket`,
    /// `Connection: Upgrade`, version 13, a 16-byte key) and builds the 101 answer, with
    /// permessage-deflate if `compression` and the client offered it. Returns the response
    /// text and the negotiated parameters (give them to `WebSocketReceiver`/`WebSocketSender`
    /// with role `.server`). On a thrown error answer 400 (426 for a wrong version).
    public static func serverResponse(for request: HTTPHead, compression: Bool = true,
                                      headers: [(name: String, value: String)] = []) throws(WebSocketError) -> (response: String, deflate: PerMessageDeflateParameters?) {
        guard request.startLine.count == 3, request.startLine[0] == "GET", request.startLine[2] == "HTTP/1.1" else {
            throw .handshakeFailed("not an HTTP/1.1 GET")
        }
        guard request.contains("Upgrade", token: "websocket") else { throw .handshakeFailed("missing Upgrade: websocket") }
        guard request.contains("Connection", token: "upgrade") else { throw .handshakeFailed("missing Connection: Upgrade") }
        guard request.value("Sec-WebSocket-Version") == "13" else { throw .handshakeFailed("unsupported Sec-WebSocket-Version") }
        guard let key = request.value("Sec-WebSocket-Key"), key.utf8.count == 24, key.hasSuffix("==") else {
            throw .handshakeFailed("missing or malformed Sec-WebSocket-Key")
        }
        var deflate: PerMessageDeflateParameters?
        if compression, let offer = request.value("Sec-WebSocket-Extensions") {
            deflate = PerMessageDeflateParameters.negotiate(clientOffer: offer)
        }
        var lines = [
            "HTTP/1.1 101 Switching Protocols",
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Accept: \(acceptValue(forKey: key))",
        ]
        if let deflate { lines.append("Sec-WebSocket-Extensions: \(deflate.headerValue)") }
        for h in headers { lines.append("\(h.name): \(h.value)") }
        return (lines.joined(separator: "\r\n") + "\r\n\r\n", deflate)
    }

    /// SHA-1 through OpenSSL's EVP interface.
    static func sha1(_ data: [UInt8]) -> [UInt8] {
        var md = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var len: UInt32 = 0
        let ok = data.withUnsafeBytes { raw in
            EVP_Digest(raw.baseAddress, raw.count, &md, &len, EVP_sha1(), nil)
        }
        precondition(ok == 1, "EVP_Digest(SHA-1) failed")
        return Array(md[0..<Int(len)])
    }

    /// Standard base64 with padding.
    static func base64(_ data: [UInt8]) -> String {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
        var out: [UInt8] = []
        out.reserveCapacity((data.count + 2) / 3 * 4)
        var i = 0
        while i < data.count {
            let b0 = UInt32(data[i])
            let b1 = i + 1 < data.count ? UInt32(data[i + 1]) : 0
            let b2 = i + 2 < data.count ? UInt32(data[i + 2]) : 0
            let n = b0 << 16 | b1 << 8 | b2
            out.append(alphabet[Int(n >> 18 & 63)])
            out.append(alphabet[Int(n >> 12 & 63)])
            out.append(i + 1 < data.count ? alphabet[Int(n >> 6 & 63)] : UInt8(ascii: "="))
            out.append(i + 2 < data.count ? alphabet[Int(n & 63)] : UInt8(ascii: "="))
            i += 3
        }
        return String(decoding: out, as: UTF8.self)
    }
}

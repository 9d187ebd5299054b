import Testing
@testable import WebSocket

@Suite("Handshake")
struct HandshakeTests {
    @Test func acceptValueFromRFC() {
        // RFC 6455 §1.3.
        #expect(WebSocketHandshake.acceptValue(forKey: "dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    }

    @Test func keysAreFreshAndWellFormed() {
        let a = WebSocketHandshake.makeKey(), b = WebSocketHandshake.makeKey()
        #expect(a != b)
        #expect(a.utf8.count == 24 && a.hasSuffix("=="))
    }

    @Test func base64() {
        #expect(WebSocketHandshake.base64([]) == "")
        #expect(WebSocketHandshake.base64(Array("f".utf8)) == "Zg==")
        #expect(WebSocketHandshake.base64(Array("fo".utf8)) == "Zm8=")
        #expect(WebSocketHandshake.base64(Array("foobar".utf8)) == "Zm9vYmFy")
    }

    @Test func urls() throws {
        let a = try WebSocketURL(parsing: "ws://example.com/ws")
        #expect(a == WebSocketURL(secure: false, host: "example.com", port: 80, resource: "/ws"))
        #expect(a.hostHeader == "example.com")
        let b = try WebSocketURL(parsing: "WSS://[::1]:8443?x=1#frag")
        #expect(b.secure && b.host == "::1" && b.port == 8443 && b.resource == "/?x=1")
        #expect(b.hostHeader == "[::1]:8443")
        #expect(try WebSocketURL(parsing: "wss://h").port == 443)
        for bad in ["http://x/", "ws://", "ws://user@host/", "ws://host:0/", "ws://host:99999/", "ws://host:abc/", "example.com"] {
            #expect(throws: WebSocketError.self, "\(bad)") { _ = try WebSocketURL(parsing: bad) }
        }
    }

    @Test func requestHasTheRequiredHeaders() throws {
        let url = try WebSocketURL(parsing: "ws://h:81/ws?a=b")
        let req = WebSocketHandshake.clientRequest(url: url, key: "k", extensions: PerMessageDeflateParameters.clientOffer,
                                                   headers: [("X-Test", "1"), ("Bad\r\nHeader", "x")])
        #expect(req.hasPrefix("GET /ws?a=b HTTP/1.1\r\nHost: h:81\r\n"))
        #expect(req.contains("\r\nSec-WebSocket-Version: 13\r\n"))
        #expect(req.contains("\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"))
        #expect(req.contains("\r\nX-Test: 1\r\n"))
        #expect(!req.contains("Bad"))
        #expect(req.hasSuffix("\r\n\r\n"))
    }

    func response(_ status: String = "101 Switching Protocols", key: String = "dGhlIHNhbXBsZSBub25jZQ==", extra: [String] = []) throws -> HTTPHead {
        let text = (["HTTP/1.1 \(status)", "Upgrade: websocket", "Connection: Upgrade",
                     "Sec-WebSocket-Accept: \(WebSocketHandshake.acceptValue(forKey: key))"] + extra).joined(separator: "\r\n") + "\r\n\r\nXYZ"
        let parsed = try HTTPHead.parse(Array(text.utf8))
        #expect(parsed?.length == text.utf8.count - 3)
        guard let head = parsed?.head else { throw TestTimeout(what: "a head") }
        return head
    }

    @Test func responseValidation() throws {
        let key = "dGhlIHNhbXBsZSBub25jZQ=="
        #expect(try WebSocketHandshake.validateResponse(response(), key: key, offeredCompression: true) == nil)
        #expect(throws: WebSocketError.handshakeRejected(status: 404, reason: "Not Found")) {
            try WebSocketHandshake.validateResponse(try response("404 Not Found"), key: key, offeredCompression: true)
        }
        #expect(throws: WebSocketError.self) {
            try WebSocketHandshake.validateResponse(try response(key: "other"), key: key, offeredCompression: true)
        }
        #expect(throws: WebSocketError.self) {
            try WebSocketHandshake.validateResponse(try response(extra: ["Sec-WebSocket-Extensions: permessage-deflate"]), key: key, offeredCompression: false)
        }
        let full = try response(extra: ["Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=9"])
        #expect(try WebSocketHandshake.validateResponse(full, key: key, offeredCompression: true)
            == PerMessageDeflateParameters(serverNoContextTakeover: true, clientNoContextTakeover: true, serverMaxWindowBits: 10, clientMaxWindowBits: 9))
        #expect(HTTPHeadIncomplete())
    }

    func HTTPHeadIncomplete() -> Bool {
        guard case .some(.none) = try? HTTPHead.parse(Array("HTTP/1.1 101 OK\r\nA: b\r\n".utf8)) else { return false }
        return true
    }

    @Test(arguments: [
        "x-webkit-deflate-frame",
        "permessage-deflate, permessage-deflate",
        "permessage-deflate; mystery=1",
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits=010",
        "permessage-deflate; client_max_window_bits",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
    ])
    func invalidExtensionAnswersFailTheConnection(header: String) {
        #expect(throws: WebSocketError.self) { _ = try PerMessageDeflateParameters.validateServerResponse(header) }
    }

    @Test func serverSide() throws {
        let url = try WebSocketURL(parsing: "ws://h/ws")
        let key = WebSocketHandshake.makeKey()
        let req = WebSocketHandshake.clientRequest(url: url, key: key, extensions: PerMessageDeflateParameters.clientOffer)
        guard let head = try HTTPHead.parse(Array(req.utf8))?.head else { Issue.record("no head"); return }
        let (text, deflate) = try WebSocketHandshake.serverResponse(for: head)
        #expect(deflate == PerMessageDeflateParameters())
        guard let answer = try HTTPHead.parse(Array(text.utf8))?.head else { Issue.record("no answer"); return }
        #expect(try WebSocketHandshake.validateResponse(answer, key: key, offeredCompression: true) == PerMessageDeflateParameters())
        #expect(PerMessageDeflateParameters.negotiate(clientOffer: "permessage-deflate; server_max_window_bits=8, permessage-deflate; client_no_context_takeover")
            == PerMessageDeflateParameters(clientNoContextTakeover: true))
        #expect(PerMessageDeflateParameters.negotiate(clientOffer: "permessage-deflate; unknown") == nil)
        let noCompression = try WebSocketHandshake.serverResponse(for: head, compression: false)
        #expect(noCompression.deflate == nil && !noCompression.response.contains("Extensions"))
    }
}

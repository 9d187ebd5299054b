import Foundation
import Testing
@testable import WebSocket

/// Interop with Python's `websockets` (Fixtures/ws_server.py). Requires
/// `python3 -m pip install websockets`; the tests fail, not skip, without it.
@Suite("Interop with Python websockets", .timeLimit(hangGuard))
struct InteropTests {
    static let modes = ["none", "default", "nct"]

    func connect(_ server: PythonServer, path: String = "/", _ options: WebSocketOptions = WebSocketOptions()) async throws -> WebSocketClient {
        try await WebSocketClient.connect(url: "ws://127.0.0.1:\(server.port)\(path)", options: options)
    }

    @Test(arguments: modes)
    func echoAndNegotiation(mode: String) async throws {
        let server = try await PythonServer.start("ws_server.py", ["--compression", mode])
        defer { server.stop() }
        let ws = try await connect(server)
        switch mode {
        case "none": #expect(ws.compression == nil)
        case "default":
            // websockets' defaults: server_max_window_bits=12, and client_max_window_bits=12 since we offered it.
            #expect(ws.compression == PerMessageDeflateParameters(serverMaxWindowBits: 12, clientMaxWindowBits: 12))
        default:
            #expect(ws.compression == PerMessageDeflateParameters(serverNoContextTakeover: true, clientNoContextTakeover: true,
                                                                  serverMaxWindowBits: 10, clientMaxWindowBits: 9))
        }
        try await ws.send(text: "cmd:extensions")
        let ext = try await ws.nextText()
        #expect(mode == "none" ? ext.isEmpty : ext.hasPrefix("permessage-deflate"))
        for i in 0..<20 {
            let text = "héllo \(i) " + String(repeating: "wildduck ", count: i * 50)
            try await ws.send(text: text)
            #expect(try await ws.nextText() == text)
        }
        try await ws.send(binary: [0, 1, 2, 255])
        #expect(try await ws.next() == .binary([0, 1, 2, 255]))
        try await ws.send(text: "")
        #expect(try await ws.nextText() == "")
        await ws.close()
        #expect(try await ws.ending() == nil)
        #expect(ws.closeStatus == WebSocketCloseStatus(code: 1000, reason: ""))
    }

    @Test(arguments: modes)
    func fragmentedMessagesFromTheServer(mode: String) async throws {
        let server = try await PythonServer.start("ws_server.py", ["--compression", mode])
        defer { server.stop() }
        let ws = try await connect(server)
        try await ws.send(text: "cmd:fragments 5 1000")
        let expected = (0..<5).map { String(repeating: String(UnicodeScalar(UInt8(97 + $0))), count: 999) + "é" }.joined()
        #expect(try await ws.nextText() == expected)
        try await ws.send(text: "cmd:binfragments 4 70000")
        let bytes = (0..<4).flatMap { i in (0..<70000).map { j in UInt8((i * 7 + j) % 256) } }
        #expect(try await ws.next() == .binary(bytes))
        await ws.close()
    }

    @Test(arguments: modes)
    func largeMessagesBothWays(mode: String) async throws {
        let server = try await PythonServer.start("ws_server.py", ["--compression", mode])
        defer { server.stop() }
        let ws = try await connect(server)
        let size = 4 << 20
        try await ws.send(text: "cmd:large \(size)")
        let expected = (0..<size).map { UInt8($0 % 251) }
        #expect(try await ws.next() == .binary(expected))
        // 4 MiB of random bytes (incompressible) echoed back.
        var rng = SystemRandomNumberGenerator()
        var random = [UInt8](repeating: 0, count: size)
        for i in stride(from: 0, to: size, by: 8) {
            let v = rng.next() as UInt64
            withUnsafeBytes(of: v) { for k in 0..<8 { random[i + k] = $0[k] } }
        }
        try await ws.send(binary: random)
        #expect(try await ws.next() == .binary(random))
        await ws.close()
    }

    @Test(arguments: ["none", "default"])
    func serverPingIsAnsweredWithPong(mode: String) async throws {
        let server = try await PythonServer.start("ws_server.py", ["--compression", mode])
        defer { server.stop() }
        let ws = try await connect(server)
        // The server pings and waits (5 s) for our pong with the same payload.
        try await ws.send(text: "cmd:ping liveness-42")
        #expect(try await ws.nextText() == "pong-ok")
        // Our ping is answered by the server; the pong is reported to the caller.
        try await ws.ping(Array("are you there".utf8))
        #expect(try await ws.next() == .pong(Array("are you there".utf8)))
        await ws.close()
    }

    @Test(arguments: [(4001 as UInt16, "token expired"), (4002, "auth failed"), (1000, ""), (1001, "going away")])
    func serverInitiatedCloseIsSurfaced(code: UInt16, reason: String) async throws {
        let server = try await PythonServer.start("ws_server.py")
        defer { server.stop() }
        let ws = try await connect(server, path: "/tagged/c\(code)")
        try await ws.send(text: "cmd:close \(code) \(reason)")
        let ending = try await ws.ending()
        #expect(ending == .closedByPeer(code: code, reason: reason))
        #expect(ws.closeStatus == WebSocketCloseStatus(code: code, reason: reason))
        await ws.close() // no-op after the server's close
        // The server saw our echo of its close code.
        let probe = try await connect(server)
        try await probe.send(text: "cmd:closeinfo c\(code)")
        // We echo the code (RFC 6455 §5.5.1), without the reason.
        #expect(try await probe.nextText() == "\(code) ")
        await probe.close()
        // Sending after the close fails.
        await #expect(throws: WebSocketError.notOpen) { try await ws.send(text: "late") }
    }

    @Test func clientInitiatedCloseReachesTheServer() async throws {
        let server = try await PythonServer.start("ws_server.py")
        defer { server.stop() }
        let ws = try await connect(server, path: "/tagged/mine")
        try await ws.send(text: "ping me")
        #expect(try await ws.nextText() == "ping me")
        await ws.close(code: 4000, reason: "user disconnect")
        #expect(try await ws.ending() == nil)
        let probe = try await connect(server)
        try await probe.send(text: "cmd:closeinfo mine")
        #expect(try await probe.nextText() == "4000 user disconnect")
        await probe.close()
    }

    @Test func closeFromAnotherTaskUnblocksTheReader() async throws {
        let server = try await PythonServer.start("ws_server.py")
        defer { server.stop() }
        let ws = try await connect(server)
        let consumer = Task { try await ws.ending() }
        // The consumer is now waiting on an idle connection; close from here.
        await ws.close()
        #expect(try await within(patience, "the consumer to finish") { try await consumer.value } == nil)
    }

    @Test func protocolViolationByTheServerFailsTheConnection() async throws {
        let server = try await PythonServer.start("ws_server.py", ["--compression", "none"])
        defer { server.stop() }
        let ws = try await connect(server, path: "/tagged/badutf8")
        // A text frame with invalid UTF-8, written raw by the server.
        try await ws.send(text: "cmd:raw 8102c328")
        let ending = try await ws.ending()
        guard case .protocolViolation(let e)? = ending else { Issue.record("expected a protocol violation, got \(String(describing: ending))"); return }
        #expect(e.closeCode == 1007)
        let probe = try await connect(server)
        try await probe.send(text: "cmd:closeinfo badutf8")
        #expect(try await probe.nextText().hasPrefix("1007 "))
        await probe.close()
    }

    @Test func messageTooBigClosesWith1009() async throws {
        let server = try await PythonServer.start("ws_server.py")
        defer { server.stop() }
        let ws = try await connect(server, path: "/tagged/big", WebSocketOptions(maxMessageSize: 100_000))
        try await ws.send(text: "cmd:large 200000")
        let ending = try await ws.ending()
        guard case .protocolViolation(let e)? = ending else { Issue.record("expected 1009, got \(String(describing: ending))"); return }
        #expect(e.closeCode == 1009)
        let probe = try await connect(server)
        try await probe.send(text: "cmd:closeinfo big")
        #expect(try await probe.nextText().hasPrefix("1009 "))
        await probe.close()
    }

    @Test func extraHeadersAreSent() async throws {
        let server = try await PythonServer.start("ws_server.py")
        defer { server.stop() }
        let ws = try await connect(server, WebSocketOptions(headers: [(name: "X-Wdsync-Test", value: "yes"), (name: "User-Agent", value: "wdsync/0")]))
        try await ws.send(text: "cmd:headers")
        let json = try await ws.nextText()
        let headers = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: String]
        #expect(headers?["X-Wdsync-Test"] == "yes")
        #expect(headers?["User-Agent"] == "wdsync/0")
        #expect(headers?["Sec-WebSocket-Extensions"] == "permessage-deflate; client_max_window_bits")
        await ws.close()
    }

    @Test func nonUpgradeAnswersAreTypedErrors() async throws {
        let server = try await PythonServer.start("ws_server.py")
        defer { server.stop() }
        await #expect(throws: WebSocketError.handshakeRejected(status: 404, reason: "Not Found")) {
            _ = try await connect(server, path: "/notfound")
        }
        await #expect(throws: WebSocketError.handshakeRejected(status: 200, reason: "OK")) {
            _ = try await connect(server, path: "/plain")
        }
        do {
            _ = try await connect(server, path: "/badext")
            Issue.record("an unoffered extension parameter must fail the connection")
        } catch let WebSocketError.handshakeFailed(detail) {
            #expect(detail.contains("mystery_param"))
        }
        // Without compression offered, the server must not answer with it, and doesn't.
        let plain = try await connect(server, WebSocketOptions(compression: false))
        #expect(plain.compression == nil)
        await plain.close()
    }

    @Test func connectionRefusedAndBadURL() async throws {
        // Bind-then-close gives a port nothing listens on.
        await #expect(throws: WebSocketError.self) { _ = try await WebSocketClient.connect(url: "ws://127.0.0.1:1/") }
        await #expect(throws: WebSocketError.invalidURL("http://x/")) { _ = try await WebSocketClient.connect(url: "http://x/") }
    }

    @Test func connectionLostWithoutCloseFrame() async throws {
        let server = try await PythonServer.start("ws_server.py")
        let ws = try await connect(server)
        try await ws.send(text: "x")
        #expect(try await ws.nextText() == "x")
        server.stop() // the process exits: TCP drops without a close frame
        let ending = try await ws.ending()
        guard case .connectionLost? = ending else { Issue.record("expected connectionLost, got \(String(describing: ending))"); return }
        #expect(ws.closeStatus?.code == 1006)
    }
}

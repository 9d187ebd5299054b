import Foundation
import Net
import Lock
import Testing
@testable import WebSocket

/// A self-signed certificate for "localhost" and 127.0.0.1, made with the openssl CLI.
struct TestCertificate: Sendable {
    let directory: String
    var cert: String { directory + "/cert.pem" }
    var key: String { directory + "/key.pem" }

    static func make() throws -> TestCertificate {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("wdsync-tls-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", dir + "/key.pem", "-out", dir + "/cert.pem", "-days", "2", "-subj", "/CN=localhost",
                 "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        return TestCertificate(directory: dir)
    }

    func remove() { try? FileManager.default.removeItem(atPath: directory) }
}

/// Connects a TLSStream on its own thread (the handshake blocks).
func tlsConnect(port: Int, host: String, caFile: String?, insecure: Bool = false) async throws -> StreamHandle {
    try await onThread {
        let tcp = try TCPStream(host: "127.0.0.1", port: port, timeout: 10)
        return StreamHandle(try TLSStream(wrapping: tcp, host: host, caFile: caFile, insecure: insecure, timeout: 10))
    }
}

func tlsError(_ body: () async throws -> Void) async -> String? {
    do {
        try await body()
        return nil
    } catch NetError.tls(let detail) {
        return detail
    } catch {
        Issue.record("expected NetError.tls, got \(error)")
        return nil
    }
}

@Suite("TLSStream", .timeLimit(hangGuard))
struct TLSStreamTests {
    func echo(_ handle: StreamHandle, _ text: String) async throws -> String {
        try await onThread {
            try handle.stream.write(text)
            var got: [UInt8] = []
            var buf = [UInt8](repeating: 0, count: 1024)
            while got.count < text.utf8.count {
                let n = try buf.withUnsafeMutableBytes { try handle.stream.read(into: $0) }
                if n == 0 { break }
                got += buf[0..<n]
            }
            return String(decoding: got, as: UTF8.self)
        }
    }

    @Test func verificationRules() async throws {
        let cert = try TestCertificate.make()
        defer { cert.remove() }
        let server = try await PythonServer.start("tls_echo_server.py", [cert.cert, cert.key])
        defer { server.stop() }

        // Valid: trusted through --ca-file, name matches (DNS and IP SAN).
        let ok = try await tlsConnect(port: server.port, host: "localhost", caFile: cert.cert)
        #expect(try await echo(ok, "hello over TLS") == "hello over TLS")
        if let tls = ok.stream as? TLSStream {
            #expect(tls.protocolVersion == "TLSv1.2" || tls.protocolVersion == "TLSv1.3")
        }
        ok.stream.close()
        let byIP = try await tlsConnect(port: server.port, host: "127.0.0.1", caFile: cert.cert)
        #expect(try await echo(byIP, "ip") == "ip")
        byIP.stream.close()

        // Rejected: not trusted without the CA file.
        let untrusted = await tlsError { _ = try await tlsConnect(port: server.port, host: "localhost", caFile: nil) }
        #expect(untrusted?.hasPrefix("certificate verify failed for host localhost:") == true, "\(untrusted ?? "no error")")

        // Rejected: trusted, but for another name.
        let wrongName = await tlsError { _ = try await tlsConnect(port: server.port, host: "wrong.example", caFile: cert.cert) }
        #expect(wrongName?.hasPrefix("certificate verify failed for host wrong.example:") == true, "\(wrongName ?? "no error")")

        // A CA file that does not exist is a clear error.
        let missing = await tlsError { _ = try await tlsConnect(port: server.port, host: "localhost", caFile: "/nonexistent/ca.pem") }
        #expect(missing?.hasPrefix("cannot load CA file /nonexistent/ca.pem") == true, "\(missing ?? "no error")")

        // Accepted: insecure turns both checks off.
        let insecure = try await tlsConnect(port: server.port, host: "wrong.example", caFile: nil, insecure: true)
        #expect(try await echo(insecure, "insecure") == "insecure")
        insecure.stream.close()
    }

    @Test func closeFromAnotherThreadUnblocksRead() async throws {
        let cert = try TestCertificate.make()
        defer { cert.remove() }
        let server = try await PythonServer.start("tls_echo_server.py", [cert.cert, cert.key])
        defer { server.stop() }
        let handle = try await tlsConnect(port: server.port, host: "localhost", caFile: cert.cert)
        handle.stream.setTimeout(0)
        let (started, signal) = AsyncStream<Void>.makeStream()
        let reader = Task {
            try await onThread { () -> String in
                var buf = [UInt8](repeating: 0, count: 16)
                do {
                    // One echo proves the reader is in its loop; the second read then blocks.
                    try handle.stream.write("a")
                    _ = try buf.withUnsafeMutableBytes { try handle.stream.read(into: $0) }
                    signal.yield()
                    let n = try buf.withUnsafeMutableBytes { try handle.stream.read(into: $0) }
                    return "read \(n)"
                } catch {
                    return "\(error)"
                }
            }
        }
        try await within(patience, "the first echo") { for await _ in started { return } }
        handle.stream.close()
        let outcome = try await within(patience, "the blocked read to return") { try await reader.value }
        #expect(outcome == "read 0" || outcome.contains("closed"))
    }
}

@Suite("TLS end of stream", .timeLimit(hangGuard))
struct TLSEndOfStreamTests {
    /// Sends a command line and reads until the end of the stream; returns the bytes and the error, if any.
    func readToEnd(_ handle: StreamHandle, after command: String) async throws -> (String, Error?) {
        try await onThread {
            try handle.stream.write(command)
            var got: [UInt8] = []
            var buf = [UInt8](repeating: 0, count: 1024)
            do {
                while true {
                    let n = try buf.withUnsafeMutableBytes { try handle.stream.read(into: $0) }
                    if n == 0 { return (String(decoding: got, as: UTF8.self), nil) }
                    got += buf[0..<n]
                }
            } catch {
                return (String(decoding: got, as: UTF8.self), error)
            }
        }
    }

    @Test func aCutWithoutCloseNotifyIsAnErrorNotAnEnd() async throws {
        let cert = try TestCertificate.make()
        defer { cert.remove() }
        let server = try await PythonServer.start("tls_echo_server.py", [cert.cert, cert.key])
        defer { server.stop() }

        let cut = try await tlsConnect(port: server.port, host: "localhost", caFile: cert.cert)
        let (partial, error) = try await readToEnd(cut, after: "TRUNCATE\n")
        cut.stream.close()
        #expect(partial == "partial")
        #expect(error as? NetError == .closed, "a truncated TLS stream must not read as a clean end")

        let clean = try await tlsConnect(port: server.port, host: "localhost", caFile: cert.cert)
        let (bye, none) = try await readToEnd(clean, after: "CLOSE\n")
        clean.stream.close()
        #expect(bye == "bye")
        #expect(none == nil, "close_notify is a clean end: \(String(describing: none))")
    }
}

@Suite("wss:// interop", .timeLimit(hangGuard))
struct SecureWebSocketTests {
    @Test func wssWithCAFile() async throws {
        let cert = try TestCertificate.make()
        defer { cert.remove() }
        let server = try await PythonServer.start("ws_server.py", ["--tls", cert.cert, cert.key])
        defer { server.stop() }
        let url = "wss://localhost:\(server.port)/"
        let ws = try await WebSocketClient.connect(url: url, options: WebSocketOptions(tls: WebSocketTLSOptions(caFile: cert.cert)))
        try await ws.send(text: "secure hello")
        #expect(try await ws.nextText() == "secure hello")
        try await ws.send(text: "cmd:large 1000000")
        #expect(try await ws.next() == .binary((0..<1_000_000).map { UInt8($0 % 251) }))
        await ws.close()
        #expect(try await ws.ending() == nil)

        do {
            _ = try await WebSocketClient.connect(url: url)
            Issue.record("an untrusted certificate must be rejected")
        } catch WebSocketError.transport(.tls(let detail)) {
            #expect(detail.contains("certificate verify failed"))
        }
        let insecure = try await WebSocketClient.connect(url: url, options: WebSocketOptions(tls: WebSocketTLSOptions(insecure: true)))
        try await insecure.send(text: "x")
        #expect(try await insecure.nextText() == "x")
        await insecure.close()
    }
}

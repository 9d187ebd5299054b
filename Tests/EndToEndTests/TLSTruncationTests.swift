#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import WildDuckSim

/// wdsync over https:// (the simulator behind its TLS front) when the TLS stream is cut.
@Suite(.serialized, .timeLimit(.minutes(3))) struct TLSTruncationTests {
    /// A self-signed certificate for 127.0.0.1, made with the openssl command.
    static func certificate(in dir: String) throws -> (cert: String, key: String) {
        let (cert, key) = (dir + "/cert.pem", dir + "/key.pem")
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                       "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1",
                       "-addext", "subjectAltName=IP:127.0.0.1"]
        p.environment = isolatedEnvironment(home: dir)
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { throw HarnessError("openssl req failed") }
        return (cert, key)
    }

    /// Files in new/ and cur/.
    func files(_ h: Harness) -> [String] {
        h.snapshot().keys.filter { $0.contains("/new/") || $0.contains("/cur/") }.sorted()
    }

    /// The server sends message bodies delimited by the connection's end and the TCP connection
    /// is cut halfway without close_notify: nothing but the missing close_notify says the body is
    /// incomplete. No message may be written or recorded; the run says why and asks for a re-run;
    /// the next run, over the same TLS front with proper closes, mirrors everything.
    @Test func aBodyCutWithoutCloseNotifyIsNeverAMessage() throws {
        let h = try Harness()
        try h.seedStandard(generated: 20)
        let (cert, key) = try Self.certificate(in: h.dir)
        let front = try SimTLSFront(server: h.server, certificate: cert, key: key)
        try front.start()
        defer { front.stop() }
        h.serverURL = front.baseURL
        let tls = ["--ca-file", cert]

        front.cutWithoutCloseNotify = true
        h.server.injectFault(.closeDelimited(truncated: true), on: "message.eml", count: 1_000)
        let r = try h.run(extra: tls)
        #expect(r.status == 69, "\(r.stderr)")
        #expect(r.stderr.contains("connection closed by peer"), "\(r.stderr)")
        #expect(r.stderr.contains("re-run"), "\(r.stderr)")
        #expect(h.server.stats()["message.eml"] > 0)
        #expect(files(h).isEmpty, "\(files(h))")
        // Nothing was recorded as downloaded either: --verify finds every message still to be
        // downloaded, and no file recorded.
        let verify = try h.run(h.baseArguments.filter { $0 != "--once" } + ["--verify"] + tls)
        let problems = verify.stderr.split(separator: "\n").filter { !$0.contains("problems; run wdsync --once") }
        #expect(problems.count == h.totalServerMessages, "\(verify.stderr)")
        #expect(problems.allSatisfy { $0.hasSuffix("has not been downloaded yet") }, "\(verify.stderr)")

        // The same connection-delimited bodies, whole and ended with close_notify, are complete.
        front.cutWithoutCloseNotify = false
        h.server.clearFaults()
        h.server.injectFault(.closeDelimited(truncated: false), on: "message.eml", count: 1_000)
        try h.sync(extra: tls)
        try h.expectMirror()
    }
}

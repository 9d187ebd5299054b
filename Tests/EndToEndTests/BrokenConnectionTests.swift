#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import WildDuckSim

/// Broken connections and a misbehaving server never leave a corrupt or half-written file.
@Suite(.serialized, .timeLimit(.minutes(3))) struct BrokenConnectionTests {
    /// Every file in new/ and cur/ (relative path → bytes).
    func files(_ h: Harness) -> [String: Data] {
        var result: [String: Data] = [:]
        for (rel, _) in h.snapshot() where rel.contains("/new/") || rel.contains("/cur/") {
            result[rel] = FileManager.default.contents(atPath: h.maildir + "/" + rel)
        }
        return result
    }

    @Test func connectionsCutMidBodyCorruptNothing() throws {
        let h = try Harness()
        try h.seedStandard(generated: 120)
        let total = h.totalServerMessages
        // Kept-alive connections die halfway through a message.eml: with a FIN twice, with a
        // reset twice, and one ends before its chunked terminator.
        h.server.injectFault(.closeMidBody(reset: false), on: "message.eml", count: 2, after: 20)
        h.server.injectFault(.closeMidBody(reset: true), on: "message.eml", count: 2, after: 30)
        h.server.injectFault(.truncateBody, on: "message.eml", count: 1, after: 30)
        let r = try h.run()
        #expect(r.status == 0, "\(r.stderr)")
        // Every file holds exactly the server's bytes, and nothing is left in tmp/.
        try h.expectMirror()
        #expect(h.server.stats()["message.eml"] == total + 5)
        let verify = try h.run(h.baseArguments.filter { $0 != "--once" } + ["--verify"])
        #expect(verify.status == 0, "\(verify.stderr)")
        #expect(verify.stderr.contains("the Maildir matches the cache"))
    }

    @Test func transientFailuresAreRetriedWithinTheRun() throws {
        let h = try Harness()
        try h.seedStandard(generated: 30)
        h.server.injectFault(.retryAfter(status: 503, seconds: 0), on: "authenticate", count: 1)
        h.server.injectFault(.retryAfter(status: 429, seconds: 1), on: "user", count: 1)
        h.server.injectFault(.status(502, body: "<html>Bad Gateway</html>"), on: "mailboxes", count: 2)
        h.server.injectFault(.dropConnection, on: "messages", count: 1)
        h.server.injectFault(.status(503, body: #"{"error":"busy"}"#), on: "message.eml", count: 3, after: 10)
        let r = try h.run(extra: ["-v"])
        #expect(r.status == 0, "\(r.stderr)")
        try h.expectMirror()
        #expect(r.stderr.contains("trying again"))
        #expect(h.server.stats()["authenticate"] == 2)
        #expect(h.server.stats()["user"] == 2)
        #expect(h.server.stats()["mailboxes"] == 3)
    }

    @Test func anEndlessBodyIsCutAtItsSizeCapAndTheRunGoesOn() throws {
        let h = try Harness()
        try h.seedStandard(generated: 30)
        let total = h.totalServerMessages
        h.server.injectFault(.endlessBody, on: "message.eml", count: 1, after: 10)
        let r = try h.run()
        #expect(r.status == 76, "\(r.stderr)")
        #expect(r.stderr.contains("size cap"))
        #expect(r.stderr.contains("1 message(s) could not be downloaded"))
        // Every other message is in place, the refused one has no file (not even in tmp/), and
        // nothing in new/ or cur/ differs from a server message.
        let written = files(h)
        #expect(written.count == total - 1)
        let all = Set(h.account.mailboxes().flatMap { h.account.messages(mailboxId: $0.id).map { Data($0.raw) } })
        for (rel, data) in written { #expect(all.contains(data), "\(rel) is not a server message") }
        #expect(!h.mirrorDifferences().contains { $0.contains("tmp") })
        // The next run (the server behaving again) fetches it.
        try h.sync()
        try h.expectMirror()
    }

    @Test func plainHTTPToAnotherHostIsWarnedAboutOncePerRun() throws {
        let h = try Harness()
        try h.seedStandard(generated: 20)
        let silent = try h.run()
        #expect(silent.status == 0)
        #expect(!silent.stderr.contains("unencrypted"), "\(silent.stderr)")
        // 0.0.0.0 reaches this machine on Linux but is not a loopback address, so it stands in
        // for a remote server; the run opens several connections and must warn once.
        // (A cache belongs to one server URL: this run gets its own.)
        h.maildir = h.dir + "/mail2"
        h.db = h.dir + "/cache2.sqlite"
        var args = h.baseArguments
        let i = try #require(args.firstIndex(of: "--server"))
        args[i + 1] = "http://0.0.0.0:\(h.server.port)"
        let warned = try h.run(args)
        #expect(warned.status == 0, "\(warned.stderr)")
        #expect(warned.stderr.components(separatedBy: "unencrypted").count == 2, "\(warned.stderr)")
        #expect(!warned.stderr.contains("demo-secret-pw"))
        try h.expectMirror()
    }
}

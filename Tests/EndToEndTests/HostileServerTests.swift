#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import WildDuckSim

/// A server that sends what it should not: ids that are not ids, oversized or absurd JSON.
/// Every case ends without a crash and without a corrupt file, and the next run converges.
@Suite(.serialized) struct HostileServerTests {
    /// Everything under the scratch directory that is not the Maildir, the cache or the password.
    func strayPaths(_ h: Harness) -> [String] {
        let top = (try? FileManager.default.contentsOfDirectory(atPath: h.dir)) ?? []
        return top.filter { !["mail", "password", "cache.sqlite", "cache.sqlite.lock", "cache.sqlite-wal", "cache.sqlite-shm",
                              "cache.sqlite-journal"].contains($0) }
    }

    @Test(arguments: ["../../escaped", String(repeating: "a", count: 300), "5f1e0b9a2c3d4e5f6071829g", "", "..", "a/b"])
    func invalidMailboxIdsAreSkippedAndTheRestIsMirrored(badId: String) throws {
        let h = try Harness()
        try h.seedStandard(generated: 20)
        let work = try #require(h.account.mailboxId(path: "Work"))
        h.server.injectFault(.rewrite(["\"\(work)\"": "\"\(badId)\""]), on: "mailboxes", count: 100)
        let r = try h.run()
        // Before ids were checked, a 300-byte id made every run end with 74 (the file name
        // was too long), and "../" ids went into folder names and request paths.
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("skipped a mailbox"))
        #expect(strayPaths(h).isEmpty, "\(strayPaths(h))")
        #expect(!FileManager.default.fileExists(atPath: h.maildir + "/Work/cur"))
        let inbox = try #require(h.account.mailboxId(path: "INBOX"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: h.maildir + "/INBOX/cur").count
                + FileManager.default.contentsOfDirectory(atPath: h.maildir + "/INBOX/new").count
                == h.account.messages(mailboxId: inbox).count)
        h.server.clearFaults()
        try h.sync()
        try h.expectMirror()
    }

    @Test func aMailboxWhoseFolderCannotBeMadeDoesNotStopTheOthers() throws {
        let h = try Harness()
        try h.seedStandard(generated: 20)
        try FileManager.default.createDirectory(atPath: h.maildir, withIntermediateDirectories: true)
        // A file of the user's where the folder of "Sent Mail" belongs: that mailbox cannot be
        // exported (before, every run ended with 74 here); every other one is.
        _ = FileManager.default.createFile(atPath: h.maildir + "/Sent Mail", contents: Data("mine\n".utf8))
        let r = try h.run()
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("mailbox Sent Mail is not exported"))
        #expect(FileManager.default.contents(atPath: h.maildir + "/Sent Mail") == Data("mine\n".utf8))
        let problems = h.mirrorDifferences()
        #expect(problems.count == 1 && problems[0].contains("Sent Mail"), "\(problems)")
        try FileManager.default.removeItem(atPath: h.maildir + "/Sent Mail")
        try h.sync()
        try h.expectMirror()
    }

    @Test func invalidUidsAreSkippedAndTheRestIsMirrored() throws {
        let h = try Harness()
        try h.seedStandard(generated: 0)
        var bad: [String: String] = [:]
        for (uid, id) in [(1, "0"), (2, "-2"), (3, "4294967296"), (4, "1.5"), (5, "\"5\"")] { bad["{\"id\":\(uid),"] = "{\"id\":\(id)," }
        h.server.injectFault(.rewrite(bad), on: "messages", count: 100)
        let r = try h.run()
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("skipped a message"))
        let inbox = try #require(h.account.mailboxId(path: "INBOX"))
        let files = try FileManager.default.contentsOfDirectory(atPath: h.maildir + "/INBOX/cur")
            + FileManager.default.contentsOfDirectory(atPath: h.maildir + "/INBOX/new")
        #expect(files.count == h.account.messages(mailboxId: inbox).count - 5)
        #expect(!files.contains { $0.contains("_0.") || $0.contains("_-") || $0.contains("_4294967296.") })
        h.server.clearFaults()
        try h.sync()
        try h.expectMirror()
    }

    @Test func deeplyNestedAndHugeJSONAreRefusedWithoutACrash() throws {
        let h = try Harness()
        try h.seedStandard(generated: 5)
        // 200,000 levels would overflow the stack of a recursive parser without a depth limit.
        let nested = String(repeating: "[", count: 200_000) + String(repeating: "]", count: 200_000)
        h.server.injectFault(.status(200, body: nested), on: "mailboxes")
        let deep = try h.run()
        #expect(deep.status == 76, "\(deep.stderr)")
        #expect(deep.stderr.contains("nesting too deep"))
        // 20 MB of JSON: over the size limit for one answer.
        let huge = "{\"success\":true,\"results\":[" + String(repeating: "0,", count: 10_000_000) + "0]}"
        h.server.injectFault(.status(200, body: huge), on: "mailboxes")
        let big = try h.run()
        #expect(big.status == 76, "\(big.stderr)")
        #expect(big.stderr.contains("too large"))
        try h.sync()
        try h.expectMirror()
    }

    @Test func debugLogHoldsNoTokenAndNoControlCharacter() throws {
        let h = try Harness()
        try h.seedStandard(generated: 5)
        // A mailbox name that would retitle the terminal and clear it if written raw.
        let evil = try h.account.createMailbox(path: "Evil\u{1b}]0;pwned\u{07}\u{9b}2J")
        try h.account.deliver(Array("Subject: x\r\n\r\nx\r\n".utf8), to: evil)
        let daemon = try h.startDaemon()
        #expect(daemon.waitForLog("ws ←"), "\(daemon.log)")
        try h.account.renameMailbox(id: evil, to: "Evil2\u{1b}[2J")
        // Seen as an event ("listing Evil2…") or, when it lands during the reconcile after the
        // connection, by that reconcile ("renaming folder … → Evil2…"): either logs the new name.
        #expect(daemon.waitForLog("Evil2"), "\(daemon.log)")
        #expect(daemon.terminate() == 0)
        let log = daemon.log
        #expect(!log.utf8.contains(0x1B), "\(log)")
        #expect(!log.unicodeScalars.contains { (0x80...0x9F).contains($0.value) || $0.value == 0x07 })
        #expect(log.contains("<redacted>"))
        #expect(!h.account.validTokens.isEmpty)
        for token in h.account.validTokens { #expect(!log.contains(token)) }
    }

    /// Resident memory of a process in MiB (Linux), from /proc.
    func residentMiB(_ daemon: Daemon) -> Int? {
        guard let status = try? String(contentsOfFile: "/proc/\(daemon.process.processIdentifier)/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
              let kb = Int(line.split(separator: " ").dropFirst().first ?? "") else { return nil }
        return kb / 1024
    }

    @Test func pingFloodAndDeflateBombLeaveTheDaemonFollowingWithBoundedMemory() throws {
        let h = try Harness()
        try h.seedStandard(generated: 5)
        let inbox = try #require(h.account.mailboxId(path: "INBOX"))
        let daemon = try h.startDaemon()
        #expect(daemon.waitForLog("connected (WebSocket)"), "\(daemon.log)")
        try h.expectMirrorEventually()

        // 300,000 pings: answered with at most one queued pong at a time.
        h.server.webSocketAction(.pingFlood(count: 300_000))
        #expect(Harness.wait(timeout: 60) { h.server.webSocketPongs > 0 })
        try h.account.deliver(Array("Subject: after the flood\r\n\r\nx\r\n".utf8), to: inbox)
        try h.expectMirrorEventually(timeout: 60)
        let afterFlood = residentMiB(daemon)
        #expect((afterFlood ?? 0) < 200, "resident memory after the ping flood: \(afterFlood ?? -1) MiB")

        // 40 MiB of "a" in a few dozen KiB on the wire: refused at the 16 MiB message limit
        // (close 1009), then the daemon reconnects.
        // Sent to the sessions open at that moment: after the flood the daemon may be
        // reconnecting (its own pings can go unanswered on a loaded machine), so wait for one.
        var refused = false
        for _ in 0..<6 where !refused {
            _ = Harness.wait(timeout: 30) { h.server.openWebSockets > 0 }
            h.server.webSocketAction(.deflateBomb(bytes: 40 << 20))
            refused = daemon.waitForLog("exceeds the limit", timeout: 20)
        }
        #expect(refused, "\(daemon.log)")
        try h.account.deliver(Array("Subject: after the bomb\r\n\r\nx\r\n".utf8), to: inbox)
        try h.expectMirrorEventually(timeout: 60)
        let afterBomb = residentMiB(daemon)
        #expect((afterBomb ?? 0) < 200, "resident memory after the deflate bomb: \(afterBomb ?? -1) MiB")
        #expect(daemon.terminate() == 0)
    }
}

#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Store
import Testing
import WildDuckSim

/// Plain `wdsync` (no --once): live changes reach the Maildir, through whichever transport works.
@Suite(.serialized) struct LiveTests {
    /// Every kind of server change, then SIGTERM.
    func exerciseChanges(_ h: Harness, _ daemon: Daemon) throws {
        let a = h.account
        let inbox = try #require(a.mailboxId(path: "INBOX"))
        let work = try #require(a.mailboxId(path: "Work"))
        try h.expectMirrorEventually()

        // New message.
        try a.deliver(Array("From: live@x\r\nSubject: live\r\nMessage-ID: <live-1@x>\r\n\r\nhi\r\n".utf8), to: inbox)
        try h.expectMirrorEventually()
        // Flags.
        let first = try #require(a.messages(mailboxId: inbox).last)
        try a.setFlags(mailboxId: inbox, uid: first.uid, seen: true, flagged: true)
        try h.expectMirrorEventually()
        // Move (renamed, not downloaded).
        let before = h.server.stats().perRoute["message.eml", default: 0]
        try a.move(mailboxId: inbox, uid: first.uid, to: work)
        try h.expectMirrorEventually()
        #expect(h.server.stats().perRoute["message.eml", default: 0] == before, "a move downloaded the message again")
        // Expunge.
        // A message with its own Message-ID (the server would make up a new one per copy).
        let raw = Array("From: a@x\r\nSubject: split move\r\nMessage-ID: <split-move@x>\r\n\r\nbody\r\n".utf8)
        let uid = try a.deliver(raw, to: inbox)
        try h.expectMirrorEventually()
        let victim = try #require(a.messages(mailboxId: inbox).first { $0.uid == uid })
        try a.expunge(mailboxId: inbox, uid: victim.uid)
        try h.expectMirrorEventually()
        // Mailbox create, rename, delete.
        let box = try a.createMailbox(path: "Live/New")
        try a.deliver(Array("Subject: in new box\r\n\r\nx\r\n".utf8), to: box)
        try h.expectMirrorEventually()
        try a.renameMailbox(id: box, to: "Live/Renamed")
        try h.expectMirrorEventually()
        #expect(!FileManager.default.fileExists(atPath: h.maildir + "/Live/New"))
        try a.deleteMailbox(id: box)
        #expect(Harness.wait(timeout: 20) { !FileManager.default.fileExists(atPath: h.maildir + "/Live/Renamed") })
        // Settings, filters, autoreply reach the cache.
        a.updateUser(["name": "Live Name"])
        a.setAutoreply(status: true, subject: "away-subject", text: "away")
        _ = a.addFilter(name: "live-filter")
        // Nudge in case the transport has no channel for these (polling, SSE).
        daemon.signal(SIGUSR1)
        #expect(Harness.wait(timeout: 20) {
            guard let store = try? Store(path: h.db) else { return false }
            let user = (try? store.userJSON()) ?? nil
            let auto = (try? store.autoreplyJSON()) ?? nil
            let filters = (try? store.filters()) ?? []
            return user?.contains("Live Name") == true && auto?.contains("away-subject") == true
                && filters.contains { $0.json.contains("live-filter") }
        })
        #expect(daemon.terminate() == 0, "wdsync did not exit cleanly on SIGTERM: \(daemon.log.suffix(2000))")
        try h.expectMirror()
    }

    @Test func pollingWhenTheServerHasNeitherWebSocketNorSSE() throws {
        let h = try Harness()
        try h.seedStandard(generated: 30)
        h.server.injectFault(.status(404, body: #"{"code":"ResourceNotFound","message":"no"}"#), on: "ws", count: 1_000)
        h.server.injectFault(.status(404, body: #"{"code":"ResourceNotFound","message":"no"}"#), on: "updates", count: 1_000)
        let daemon = try h.startDaemon(extra: ["--poll-interval", "1"])
        #expect(daemon.waitForLog("to REST polling"), "no fallback to polling: \(daemon.log.suffix(2000))")
        try exerciseChanges(h, daemon)
    }

    @Test func sseWhenTheServerHasNoWebSocket() throws {
        let h = try Harness()
        try h.seedStandard(generated: 30)
        h.server.injectFault(.status(404, body: #"{"code":"ResourceNotFound","message":"no"}"#), on: "ws", count: 1_000)
        let daemon = try h.startDaemon(extra: ["--poll-interval", "3600"])
        #expect(daemon.waitForLog("connected (SSE)"), "SSE did not connect: \(daemon.log.suffix(2000))")
        try exerciseChanges(h, daemon)
        #expect(!daemon.log.contains("REST polling"))
    }

    @Test func webSocket() throws {
        let h = try Harness()
        try h.seedStandard(generated: 30)
        let daemon = try h.startDaemon(extra: ["--poll-interval", "3600"])
        #expect(daemon.waitForLog("connected (WebSocket)"), "WebSocket did not connect: \(daemon.log.suffix(2000))")
        try exerciseChanges(h, daemon)
        #expect(!daemon.log.contains("switching from WebSocket"))
    }
}

/// A mailbox created while the daemon runs, with mail delivered into it as soon as its folder
/// appears (create a folder in webmail, move messages into it): the daemon subscribes to the new
/// mailbox, then lists it, so nothing delivered in between is missed.
@Suite(.serialized) struct LiveNewMailboxTests {
    enum Way: String, CaseIterable, CustomTestStringConvertible {
        case webSocketPerEvent, webSocketBatched, webSocketRefusingASecondSubscription, sse, polling
        var testDescription: String { rawValue }
    }

    @Test(arguments: Way.allCases)
    func mailDeliveredIntoANewMailboxArrives(way: Way) throws {
        let h = try Harness()
        try h.seedStandard(generated: 10)
        let refuse = #"{"code":"ResourceNotFound","message":"no"}"#
        var extra = ["--poll-interval", "3600"]
        switch way {
        case .webSocketPerEvent, .webSocketBatched:
            // No mailbox-level updates for unsubscribed mailboxes: only a subscription helps.
            h.server.configureWebSocket {
                $0.style = way == .webSocketBatched ? .batched : .perEvent
                $0.mailboxUpdatesForUnsubscribed = false
            }
        case .webSocketRefusingASecondSubscription:
            h.server.configureWebSocket { $0.multipleMessageSubscriptions = false }
        case .sse:
            h.server.injectFault(.status(404, body: refuse), on: "ws", count: 1_000)
        case .polling:
            h.server.injectFault(.status(404, body: refuse), on: "ws", count: 1_000)
            h.server.injectFault(.status(404, body: refuse), on: "updates", count: 1_000)
            extra = ["--poll-interval", "1"]
        }
        let d = try h.startDaemon(extra: extra)
        let connected = way == .polling ? "to REST polling" : way == .sse ? "connected (SSE)" : "connected (WebSocket)"
        #expect(d.waitForLog(connected), "\(d.log.suffix(2000))")
        try h.expectMirrorEventually()

        let box = try h.account.createMailbox(path: "Fresh/Projects")
        #expect(Harness.wait(timeout: 20) { FileManager.default.fileExists(atPath: h.maildir + "/Fresh/Projects/cur") },
                "the new mailbox's folder did not appear: \(d.log.suffix(2000))")
        for i in 0..<2 {
            try h.account.deliver(Array("Subject: fresh \(i)\r\nMessage-ID: <fresh-\(i)@x>\r\n\r\nx\r\n".utf8), to: box)
        }
        try h.expectMirrorEventually()
        if way != .sse && way != .polling {
            let subscribed = d.log.split(separator: "\n").contains {
                $0.contains("ws → ") && $0.contains(#""type":"subscribe""#) && $0.contains(#""mailboxId":"\#(box)""#)
            }
            #expect(subscribed, "no messages subscription was sent for the new mailbox")
        }
        // A second message later comes as an update (or, refused, a mailbox-level update / poll).
        try h.account.deliver(Array("Subject: fresh later\r\nMessage-ID: <fresh-later@x>\r\n\r\nx\r\n".utf8), to: box)
        try h.expectMirrorEventually()
        #expect(d.terminate() == 0)
    }
}

/// An expunge leaves the readers' view with the batch that brings it; a move whose two halves
/// arrive in different batches is still a rename.
@Suite(.serialized) struct LiveExpungeTests {
    @Test func anExpungeLeavesTheMaildirWithItsBatchAndASplitMoveIsStillARename() throws {
        let h = try Harness()
        try h.seedStandard(generated: 10)
        let a = h.account
        let d = try h.startDaemon(extra: ["--poll-interval", "3600"])
        #expect(d.waitForLog("connected (WebSocket)"), "\(d.log.suffix(2000))")
        try h.expectMirrorEventually()
        let inbox = try #require(a.mailboxId(path: "INBOX"))
        let work = try #require(a.mailboxId(path: "Work"))
        // A message with its own Message-ID (the server would make up a new one per copy).
        let raw = Array("From: a@x\r\nSubject: split move\r\nMessage-ID: <split-move@x>\r\n\r\nbody\r\n".utf8)
        let uid = try a.deliver(raw, to: inbox)
        try h.expectMirrorEventually()
        let victim = try #require(a.messages(mailboxId: inbox).first { $0.uid == uid })
        let unique = "wd\(inbox)_\(victim.uid)."
        func inView() -> [String] {
            ["cur", "new"].flatMap { sub in
                ((try? FileManager.default.contentsOfDirectory(atPath: h.maildir + "/INBOX/" + sub)) ?? []).filter { $0.contains(unique) }
            }
        }
        #expect(inView().count == 1)
        func batches() -> Int { d.log.components(separatedBy: "batch of ").count - 1 }

        let before = batches()
        try a.expunge(mailboxId: inbox, uid: victim.uid)
        #expect(Harness.wait(timeout: 20) { batches() > before }, "the expunge was not applied: \(d.log.suffix(2000))")
        // Checked right after the batch that applied it, not after some time.
        #expect(inView().isEmpty, "the expunged message is still in INBOX/cur or INBOX/new after its batch")

        // The same message arrives in another mailbox in a later batch: renamed, not downloaded.
        let downloads = h.server.stats().perRoute["message.eml", default: 0]
        try a.deliver(victim.raw, to: work)
        try h.expectMirrorEventually()
        #expect(h.server.stats().perRoute["message.eml", default: 0] == downloads, "the moved message was downloaded again")
        #expect(d.terminate() == 0)
    }
}

@Suite(.serialized) struct LiveAccountsTests {
    @Test func twoAccountsSideBySideInOneProcess() throws {
        let a = try Harness(), b = try Harness()
        try a.seedStandard(generated: 5)
        try b.seedStandard(generated: 5)
        let config = a.dir + "/config"
        try """
        user = demo
        ping-interval = 1
        [account one]
        server = \(a.server.baseURL)
        password-file = \(a.passwordFile)
        maildir = \(a.maildir)
        db = \(a.db)
        [account two]
        server = \(b.server.baseURL)
        password-file = \(b.passwordFile)
        maildir = \(b.maildir)
        db = \(b.db)
        """.write(toFile: config, atomically: true, encoding: .utf8)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: wdsyncBinary)
        p.arguments = ["--config", config, "-v"]
        p.environment = isolatedEnvironment(home: a.dir)
        let log = a.dir + "/two.log"
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        p.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        try p.run()
        let d = Daemon(process: p, logPath: log)
        #expect(d.waitForLog("[one] connected (WebSocket)") && d.waitForLog("[two] connected (WebSocket)"), "\(d.log.suffix(1500))")
        for h in [a, b] {
            let inbox = try #require(h.account.mailboxId(path: "INBOX"))
            try h.account.deliver(Array("Subject: side by side\r\n\r\nx\r\n".utf8), to: inbox)
        }
        try a.expectMirrorEventually()
        try b.expectMirrorEventually()
        #expect(d.terminate() == 0)
    }
}

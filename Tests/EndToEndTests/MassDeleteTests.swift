#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Store
import Testing
import WildDuckSim

/// The mass-delete breaker holds what a person does (a `rm`, deletes spread over seconds or
/// over runs, moves to Trash, T flags), in the daemon as in `--once`; what it holds stays held
/// across restarts, is shown by `--status`, and is released or undone, also while the daemon
/// runs. Emptying Trash or Junk is not a mass delete.
@Suite(.serialized) struct MassDeleteTests {
    /// A synced account with `bulk` messages in a mailbox Bulk and `trash` in Trash.
    static func account(bulk: Int, trash: Int = 0) throws -> (Harness, String) {
        let h = try Harness()
        let id = try h.account.createMailbox(path: "Bulk")
        _ = try h.account.generate(count: bulk, mailboxIds: [id], seed: 11, sizeMix: .small)
        if trash > 0 {
            _ = try h.account.generate(count: trash, mailboxIds: [try #require(h.account.mailboxId(path: "Trash"))],
                                       seed: 12, sizeMix: .small)
        }
        try h.sync()
        return (h, id)
    }

    /// The message files of a folder (relative to the root).
    static func files(_ h: Harness, _ folder: String) -> [String] {
        ["cur", "new"].flatMap { sub in
            ((try? FileManager.default.contentsOfDirectory(atPath: "\(h.maildir)/\(folder)/\(sub)")) ?? [])
                .filter { !$0.hasPrefix(".") }.sorted().map { "\(folder)/\(sub)/\($0)" }
        }
    }

    static func remove(_ h: Harness, _ files: some Sequence<String>) {
        for f in files { #expect(unlink(h.maildir + "/" + f) == 0) }
    }

    static func held(_ h: Harness) -> [HeldChanges] {
        (try? Store(path: h.db).heldChanges()) ?? []
    }

    static func status(_ h: Harness) throws -> String {
        let r = try h.run(["--status", "--db", h.db, "--maildir", h.maildir])
        #expect(r.status == 0, "\(r.stderr)")
        return r.stdout
    }

    /// `wdsync --allow-mass-delete` (or `--discard-held`) as a user types it: no `--once`.
    static func decide(_ h: Harness, _ option: String) throws -> RunResult {
        try h.run(h.baseArguments.filter { $0 != "--once" } + [option])
    }

    @Test func oneRmUnderTheDaemonDeletesNothing() throws {
        let (h, bulk) = try Self.account(bulk: 200)
        let daemon = try h.startDaemon()
        #expect(daemon.waitForLog("connected (WebSocket)"), "\(daemon.log.suffix(2000))")
        let (rc, out) = try shell("rm -f Bulk/cur/* Bulk/new/*", cwd: h.maildir)
        #expect(rc == 0, "\(out)")
        #expect(Harness.wait(timeout: 40) { Self.held(h).first?.deletes == 200 }, "\(Self.held(h)) \(daemon.log.suffix(3000))")
        #expect(h.account.messages(mailboxId: bulk).count == 200)
        #expect(Self.files(h, "Bulk").isEmpty, "held deletes came back")
        let status = try Self.status(h)
        #expect(status.contains("200 deletes in Bulk") && status.contains("wdsync --allow-mass-delete"), "\(status)")
        #expect(daemon.log.contains("mass-delete breaker: 200 deletes in Bulk held back"), "\(daemon.log.suffix(3000))")
        #expect(daemon.terminate() == 0)
        #expect(h.account.messages(mailboxId: bulk).count == 200)
    }

    @Test func deletesSpreadOverSecondsAreHeld() throws {
        let (h, bulk) = try Self.account(bulk: 60)
        let daemon = try h.startDaemon()
        #expect(daemon.waitForLog("connected (WebSocket)"), "\(daemon.log.suffix(2000))")
        for file in Self.files(h, "Bulk").prefix(40) {
            Self.remove(h, [file])
            usleep(300_000)
        }
        #expect(Harness.wait(timeout: 40) { Self.held(h).first?.deletes == 40 }, "\(Self.held(h)) \(daemon.log.suffix(3000))")
        #expect(h.account.messages(mailboxId: bulk).count == 60)
        #expect(daemon.terminate() == 0)
    }

    @Test func movesToTrashAreCountedAndCanBeUndone() throws {
        let (h, bulk) = try Self.account(bulk: 60)
        let trash = try #require(h.account.mailboxId(path: "Trash"))
        // mv Bulk/cur/* Trash/cur/, 40 of them.
        for file in Self.files(h, "Bulk").prefix(40) {
            #expect(rename(h.maildir + "/" + file, h.maildir + "/Trash/cur/" + (file as NSString).lastPathComponent) == 0)
        }
        let r = try h.run()
        #expect(r.status == 66, "\(r.stderr)")
        #expect(r.stderr.contains("40 moves to Trash or Junk in Bulk"), "\(r.stderr)")
        #expect(h.account.messages(mailboxId: bulk).count == 60)
        #expect(h.account.messages(mailboxId: trash).isEmpty)
        #expect(Self.files(h, "Trash").count == 40, "the moved files must stay where the user put them")
        #expect(try h.run().status == 66)

        // Undone: the messages go back to Bulk, nothing was sent.
        let undo = try h.run(extra: ["--discard-held"])
        #expect(undo.status == 0, "\(undo.stderr)")
        #expect(Self.files(h, "Trash").isEmpty)
        #expect(Self.held(h).isEmpty)
        #expect(h.account.messages(mailboxId: bulk).count == 60)
        try h.expectMirror()
        try TwoWayTests.expectQuiet(h)
    }

    @Test func deletesOverSeveralRunsAreCountedTogether() throws {
        let (h, bulk) = try Self.account(bulk: 40)
        var statuses: [Int32] = []
        for _ in 0..<3 {
            Self.remove(h, Self.files(h, "Bulk").prefix(5))
            statuses.append(try h.run().status)
        }
        // 5, 10 (of 40: not over a quarter), then 15: held.
        #expect(statuses == [0, 0, 66])
        #expect(h.account.messages(mailboxId: bulk).count == 30)
        #expect(Self.held(h).map(\.deletes) == [5])
    }

    @Test func tFlagsAreCountedWhileOtherFlagsGo() throws {
        let (h, bulk) = try Self.account(bulk: 40)
        let seen = h.account.messages(mailboxId: bulk).filter(\.seen).count
        // Unseen ones first, so their S is a change too.
        let marked = Self.files(h, "Bulk").sorted { $0.contains("/new/") && !$1.contains("/new/") }.prefix(20)
        let unseen = marked.filter { $0.contains("/new/") }.count
        #expect(unseen > 0)
        for file in marked {
            let flags = Set((file.components(separatedBy: ":2,").last ?? "") + "ST")
            try TwoWayTests.rename(h, file, flags: String(flags.sorted()))
        }
        let r = try h.run()
        #expect(r.status == 66, "\(r.stderr)")
        #expect(r.stderr.contains("20 T (deleted) flags in Bulk"), "\(r.stderr)")
        // The S of the same files went through; the T waits.
        #expect(h.account.messages(mailboxId: bulk).filter(\.seen).count == seen + unseen)
        #expect(!h.account.messages(mailboxId: bulk).contains { $0.deleted })
        try h.sync(extra: ["--allow-mass-delete"])
        #expect(h.account.messages(mailboxId: bulk).filter { $0.deleted && $0.seen }.count == 20)
        try TwoWayTests.expectQuiet(h)
    }

    @Test func emptyingTrashIsNotAMassDelete() throws {
        let (h, _) = try Self.account(bulk: 10, trash: 30)
        let trash = try #require(h.account.mailboxId(path: "Trash"))
        // Protected like any other mailbox when the configuration says so.
        Self.remove(h, Self.files(h, "Trash").prefix(15))
        let r = try h.run(extra: ["--mass-delete-exempt", "none"])
        #expect(r.status == 66, "\(r.stderr)")
        #expect(h.account.messages(mailboxId: trash).count == 30)
        // By default, emptying Trash under the daemon goes through.
        let daemon = try h.startDaemon()
        #expect(daemon.waitForLog("connected (WebSocket)"), "\(daemon.log.suffix(2000))")
        Self.remove(h, Self.files(h, "Trash"))
        #expect(Harness.wait(timeout: 30) { h.account.messages(mailboxId: trash).isEmpty }, "\(daemon.log.suffix(3000))")
        #expect(Self.held(h).isEmpty)
        #expect(daemon.terminate() == 0)
        try TwoWayTests.expectQuiet(h)
    }

    @Test func approvingWhileTheDaemonRuns() throws {
        let (h, bulk) = try Self.account(bulk: 60)
        let daemon = try h.startDaemon()
        #expect(daemon.waitForLog("connected (WebSocket)"), "\(daemon.log.suffix(2000))")
        Self.remove(h, Self.files(h, "Bulk").prefix(40))
        #expect(Harness.wait(timeout: 40) { Self.held(h).first?.deletes == 40 }, "\(daemon.log.suffix(3000))")
        let r = try Self.decide(h, "--allow-mass-delete")
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("released 40 deletes in Bulk"), "\(r.stderr)")
        #expect(Harness.wait(timeout: 30) { h.account.messages(mailboxId: bulk).count == 20 }, "\(daemon.log.suffix(3000))")
        #expect(Self.held(h).isEmpty)
        #expect(!(try Self.status(h)).contains("held"))
        try h.expectMirrorEventually()
        #expect(daemon.process.isRunning)
        #expect(daemon.terminate() == 0)
        try TwoWayTests.expectQuiet(h)
    }

    @Test func aRestartedDaemonKeepsWhatIsHeld() throws {
        let (h, bulk) = try Self.account(bulk: 60)
        var daemon = try h.startDaemon()
        #expect(daemon.waitForLog("connected (WebSocket)"), "\(daemon.log.suffix(2000))")
        Self.remove(h, Self.files(h, "Bulk").prefix(40))
        #expect(Harness.wait(timeout: 40) { Self.held(h).first?.deletes == 40 }, "\(daemon.log.suffix(3000))")
        #expect(daemon.terminate() == 0)

        daemon = try h.startDaemon()
        #expect(daemon.waitForLog("connected (WebSocket)"), "\(daemon.log.suffix(2000))")
        // Its initial sync and the reconcile after connecting both pushed: still held.
        #expect(Harness.wait(timeout: 30) { daemon.log.components(separatedBy: "last local scan took").count >= 3 },
                "\(daemon.log.suffix(3000))")
        #expect(h.account.messages(mailboxId: bulk).count == 60)
        #expect(Self.files(h, "Bulk").count == 20, "held deletes came back")
        #expect(Self.held(h).first?.deletes == 40)
        let doc = try ReportingTests.statusJSON(h, ["--db", h.db, "--maildir", h.maildir])
        #expect((doc["held"] as? [[String: Any]])?.first?["deletes"] as? Int == 40, "\(doc)")

        // Undone through the running daemon: the files come back.
        let r = try Self.decide(h, "--discard-held")
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("discarded 40 deletes in Bulk"), "\(r.stderr)")
        try h.expectMirrorEventually(timeout: 30)
        #expect(Self.held(h).isEmpty)
        #expect(h.account.messages(mailboxId: bulk).count == 60)
        #expect(daemon.terminate() == 0)
        try TwoWayTests.expectQuiet(h)
    }
}

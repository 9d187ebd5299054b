#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import WildDuckSim

/// Bad input gets a clear error and loses nothing.
@Suite(.serialized) struct FailureTests {
    @Test func wrongPasswordExitsWithTheAuthCodeAndNeverPrintsIt() throws {
        let h = try Harness()
        let wrong = h.dir + "/wrong"
        _ = FileManager.default.createFile(atPath: wrong, contents: Data("not-the-pw-42\n".utf8), attributes: [.posixPermissions: 0o600])
        let r = try h.run(extra: ["--password-file", wrong])
        #expect(r.status == 77)
        #expect(r.stderr.contains("authentication failed"))
        #expect(!r.stderr.contains("not-the-pw-42"))
    }

    @Test func groupReadablePasswordFileIsRefusedWithAFix() throws {
        let h = try Harness()
        chmod(h.passwordFile, 0o644)
        let r = try h.run()
        #expect(r.status == 64)
        #expect(r.stderr.contains("chmod 600"))
        #expect(h.server.stats().totalRequests == 0)
    }

    @Test func unreachableServer() throws {
        let h = try Harness()
        let r = try h.run(["--once", "--server", "http://127.0.0.1:1", "--user", "demo", "--password-file", h.passwordFile,
                           "--maildir", h.maildir, "--db", h.db])
        #expect(r.status == 69)
        #expect(r.stderr.contains("cannot reach"))
    }

    @Test func defaultPathsFollowXDGOnAFirstRun() throws {
        let h = try Harness()
        try h.seedStandard(generated: 5)
        let r = try h.run(["--once", "--server", h.server.baseURL, "--user", "demo", "--password-file", h.passwordFile])
        #expect(r.status == 0, "\(r.stderr)")
        h.maildir = h.dir + "/data/wdsync/default/mail"
        try h.expectMirror()
        #expect(FileManager.default.fileExists(atPath: h.dir + "/data/wdsync/default/cache.sqlite"))
    }

    @Test func usageErrors() throws {
        let h = try Harness()
        #expect(try h.run(["--once", "--bogus"]).status == 64)
        #expect(try h.run(["--once", "--server", h.server.baseURL]).status == 64)
        let help = try h.run(["--help"])
        #expect(help.status == 0 && help.stdout.contains("--password-command"))
    }

    @Test func serverErrorsThatOutlastTheRetriesEndTheRunThenARerunConverges() throws {
        let h = try Harness()
        try h.seedStandard(generated: 40)
        h.server.injectFault(.status(500, body: #"{"error":"MongoDB Error: boom","code":"InternalDatabaseError"}"#), on: "message.eml", count: 1_000)
        let r = try h.run()
        #expect(r.status == 76)
        #expect(r.stderr.contains("HTTP 500"))
        h.server.clearFaults()
        try h.sync()
        try h.expectMirror()
    }

    @Test func malformedJSONIsAServerError() throws {
        let h = try Harness()
        h.server.injectFault(.malformedJSON, on: "mailboxes", count: 1)
        let r = try h.run()
        #expect(r.status == 76)
        #expect(r.stderr.contains("unexpected answer"))
        try h.sync()
    }

    @Test func rejectedCursorRestartsTheListing() throws {
        let h = try Harness()
        let inbox = try #require(h.account.mailboxId(path: "INBOX"))
        try h.account.generate(count: 600, mailboxIds: [inbox], seed: 3, sizeMix: .small)
        h.server.injectFault(.rejectCursor, on: "messages", count: 1)
        try h.sync()
        try h.expectMirror()
    }

    @Test func aMessageThat404sMidSyncIsPickedUpNextRun() throws {
        let h = try Harness()
        try h.seedStandard(generated: 20)
        h.server.injectFault(.status(404, body: #"{"error":"This message does not exist","code":"MessageNotFound"}"#), on: "message.eml", count: 1)
        try h.sync()
        #expect(h.snapshot().count == h.totalServerMessages - 1)
        try h.sync()
        try h.expectMirror()
    }

    @Test func aTokenRefusedMidDownloadIsRenewedAndEveryMessageArrivesOnce() throws {
        let h = try Harness()
        try h.seedStandard(generated: 40)
        // The token expires in the middle of the downloads, which go several to a pipeline: the
        // rest of each refused pipeline is asked for again one by one, with a fresh token.
        h.server.injectFault(.revokeTokens, on: "message.eml", count: 1, after: 20)
        try h.sync()
        try h.expectMirror()
        #expect(h.server.stats()["authenticate"] >= 2)
        #expect(h.snapshot().count == h.totalServerMessages)
    }

    @Test func droppedConnectionMidDownloadIsRetriedWithinTheRun() throws {
        let h = try Harness()
        try h.seedStandard(generated: 20)
        h.server.injectFault(.truncateBody, on: "message.eml", count: 1, after: 5)
        try h.sync()
        try h.expectMirror()
    }

    @Test func aConnectionThatKeepsBreakingEndsTheRunThenARerunConverges() throws {
        let h = try Harness()
        try h.seedStandard(generated: 20)
        h.server.injectFault(.truncateBody, on: "message.eml", count: 1_000)
        let r = try h.run()
        #expect(r.status == 69)
        #expect(r.stderr.contains("re-run"))
        h.server.clearFaults()
        try h.sync()
        try h.expectMirror()
    }

    @Test func aSecondProcessOnTheSameAccountIsLockedOut() throws {
        let h = try Harness()
        let fd = open(h.db + ".lock", O_RDWR | O_CREAT, 0o600)
        defer { close(fd) }
        #expect(flock(fd, LOCK_EX | LOCK_NB) == 0)
        let r = try h.run()
        #expect(r.status == 75)
        #expect(r.stderr.contains("already syncing"))
    }

    @Test func unusableMaildirIsALocalIOError() throws {
        let h = try Harness()
        _ = FileManager.default.createFile(atPath: h.dir + "/notadir", contents: Data())
        h.maildir = h.dir + "/notadir/mail"
        let r = try h.run()
        #expect(r.status == 74)
    }

    @Test func aFileOfTheUsersWhereAMessageBelongsIsKeptAndTheRestOfItsBatchArrives() throws {
        let h = try Harness()
        let inbox = try #require(h.account.mailboxId(path: "INBOX"))
        try h.account.generate(count: 30, mailboxIds: [inbox], seed: 9, sizeMix: .realistic)
        // File names depend only on the server's state: a first run shows the one to take.
        try h.sync()
        let taken = try #require(h.snapshot().keys.filter { $0.hasPrefix("INBOX/new/") || $0.hasPrefix("INBOX/cur/") }.sorted().dropFirst(10).first)
        h.maildir = h.dir + "/mail2"
        h.db = h.dir + "/cache2.sqlite"
        let mine = h.maildir + "/" + taken
        try FileManager.default.createDirectory(atPath: (mine as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: mine, contents: Data("mine\n".utf8))
        // The downloads are published in batches; this one fails to publish (never overwrites),
        // is skipped with a warning, and every other message of its batch is published and recorded.
        let r = try h.run()
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("is not exported"), "\(r.stderr)")
        #expect(FileManager.default.contents(atPath: mine) == Data("mine\n".utf8))
        let problems = h.mirrorDifferences()
        #expect(problems.count == 1, "\(problems)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: h.maildir + "/INBOX/tmp").isEmpty)
    }

    @Test func diskFullLosesNothingAndTheNextRunFinishes() throws {
        let h = try Harness()
        let inbox = try #require(h.account.mailboxId(path: "INBOX"))
        try h.account.generate(count: 40, mailboxIds: [inbox], seed: 5, sizeMix: .realistic)
        let mount = h.dir + "/small"
        try FileManager.default.createDirectory(atPath: mount, withIntermediateDirectories: true)
        let (status, output) = try shell("mount -t tmpfs -o size=256k tmpfs '\(mount)'")
        try #require(status == 0, "tests need root to mount a small tmpfs: \(output)")
        defer { _ = try? shell("umount '\(mount)'") }
        h.maildir = mount + "/mail"
        let r = try h.run()
        #expect(r.status == 74)
        #expect(r.stderr.contains("disk full") || r.stderr.contains("disk is full"))
        // Nothing half-written: every file in new/ and cur/ is a complete server message.
        let all = Set(h.account.messages(mailboxId: inbox).map { Data($0.raw) })
        for (rel, _) in h.snapshot() where rel.contains("/new/") || rel.contains("/cur/") {
            #expect(all.contains(FileManager.default.contents(atPath: h.maildir + "/" + rel) ?? Data()), "\(rel) is partial")
        }
        _ = try shell("mount -o remount,size=64m '\(mount)'")
        try h.sync()
        try h.expectMirror()
    }

    @Test func hostileMailboxNamesStayInsideTheRoot() throws {
        let h = try Harness()
        let names = ["../../escape", ".hidden", "Work/cur", "new", "a\nb", "50%/off", "x/../../y", String(repeating: "L", count: 400)]
        for name in names {
            let id = try h.account.createMailbox(path: name)
            try h.account.deliver(Array("Subject: \(name.prefix(20))\r\n\r\nbody\r\n".utf8), to: id)
        }
        try h.sync()
        let root = URL(fileURLWithPath: h.maildir).resolvingSymlinksInPath().path
        var count = 0
        let e = FileManager.default.enumerator(atPath: h.dir)
        while let rel = e?.nextObject() as? String {
            let full = URL(fileURLWithPath: h.dir + "/" + rel).resolvingSymlinksInPath().path
            if full.contains("/cur/") || full.contains("/new/") {
                if (try? FileManager.default.attributesOfItem(atPath: full)[.type] as? FileAttributeType) == .typeRegular {
                    #expect(full.hasPrefix(root + "/"), "\(full) is outside the Maildir")
                    count += 1
                }
            }
        }
        #expect(count == h.totalServerMessages)
        #expect(!FileManager.default.fileExists(atPath: h.dir + "/escape"))
        // No mailbox landed in another mailbox's cur/new/tmp.
        #expect(!FileManager.default.fileExists(atPath: h.maildir + "/Work/cur/cur"))
    }

    @Test func lockAndCacheRefuseLinksAndOtherUsersFiles() throws {
        let h = try Harness()
        try h.seedStandard(generated: 3)
        let precious = h.dir + "/precious"
        _ = FileManager.default.createFile(atPath: precious, contents: Data("keep me\n".utf8), attributes: [.posixPermissions: 0o600])
        // A link at the lock's path: neither followed nor truncated.
        try FileManager.default.createSymbolicLink(atPath: h.db + ".lock", withDestinationPath: precious)
        let lockLink = try h.run()
        #expect(lockLink.status == 74, "\(lockLink.stderr)")
        #expect(lockLink.stderr.contains("symbolic link"))
        #expect(FileManager.default.contents(atPath: precious) == Data("keep me\n".utf8))
        try FileManager.default.removeItem(atPath: h.db + ".lock")
        // A link at the cache's path.
        try FileManager.default.createSymbolicLink(atPath: h.db, withDestinationPath: precious)
        let cacheLink = try h.run()
        #expect(cacheLink.status == 74, "\(cacheLink.stderr)")
        #expect(cacheLink.stderr.contains("symbolic link"))
        #expect(FileManager.default.contents(atPath: precious) == Data("keep me\n".utf8))
        try FileManager.default.removeItem(atPath: h.db)
        // The lock keeps its contents' length: it is never truncated, only overwritten.
        try h.sync()
        try h.expectMirror()
        // Files of another user (the tests run as root in CI; elsewhere chown fails and this
        // part is skipped).
        if geteuid() == 0 {
            chown(h.db, 65534, 65534)
            let foreignCache = try h.run()
            #expect(foreignCache.status == 74, "\(foreignCache.stderr)")
            #expect(foreignCache.stderr.contains("another user"))
            chown(h.db, 0, 0)
            chown(h.db + ".lock", 65534, 65534)
            let foreignLock = try h.run()
            #expect(foreignLock.status == 74, "\(foreignLock.stderr)")
            #expect(foreignLock.stderr.contains("not a regular file of this user"))
            chown(h.db + ".lock", 0, 0)
            try h.sync()
        }
    }
}

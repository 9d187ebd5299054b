#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Store
import Testing
import WildDuckSim

/// `wdsync --once` against the simulator, checked with real Maildir readers.
@Suite(.serialized) struct OnceTests {
    @Test func mirrorsTheCorpusExactlyAndReadersAgree() throws {
        let h = try Harness()
        try h.seedStandard()
        let first = try h.sync()
        #expect(!first.stderr.contains("demo-secret-pw"))
        try h.expectMirror()

        // Modes: files 0600, folders 0700; mtime = internal date.
        let files = h.snapshot()
        #expect(files.count == h.totalServerMessages)
        for (rel, _) in files {
            var st = stat()
            #expect(stat(h.maildir + "/" + rel, &st) == 0)
            #expect(st.st_mode & 0o777 == 0o600, "\(rel) is not 0600")
        }
        var st = stat()
        #expect(stat(h.maildir + "/Work/Projects/cur", &st) == 0 && st.st_mode & 0o777 == 0o700)
        let inbox = try #require(h.account.mailboxId(path: "INBOX"))
        for m in h.account.messages(mailboxId: inbox).prefix(5) {
            let name = try #require(files.keys.first { key in
                FileManager.default.contents(atPath: h.maildir + "/" + key) == Data(m.raw) && key.hasPrefix("INBOX/")
            })
            #expect(stat(h.maildir + "/" + name, &st) == 0)
            // The server sends the date with millisecond precision; the file has whole seconds.
            #expect(abs(Int(st.st_mtim.tv_sec) - Int(m.idate.timeIntervalSince1970)) <= 1)
        }

        // The cache knows every file and its SHA-256, and holds no password.
        let store = try Store(path: h.db)
        let rows = try store.messages()
        #expect(rows.count == h.totalServerMessages)
        #expect(rows.allSatisfy { $0.file != nil && $0.sha256?.count == 64 })
        let dbBytes = try Data(contentsOf: URL(fileURLWithPath: h.db))
        #expect(dbBytes.range(of: Data("demo-secret-pw".utf8)) == nil)
        #expect(stat(h.db, &st) == 0 && st.st_mode & 0o777 == 0o600)

        // Python's mailbox module reads every folder with the same counts and flags.
        let script = """
        import mailbox, sys, json
        root = sys.argv[1]
        out = {}
        for path in sys.argv[2:]:
            md = mailbox.Maildir(root + '/' + path, factory=None, create=False)
            out[path] = sorted(m.get_flags() + ('|new' if m.get_subdir() == 'new' else '|cur') for m in md)
        print(json.dumps(out))
        """
        let paths = h.account.mailboxes().map(\.path)
        let quoted = paths.map { "'\($0)'" }.joined(separator: " ")
        let (status, output) = try shell("python3 -c \"$PY\" '\(h.maildir)' \(quoted)", env: ["PY": script])
        #expect(status == 0, "python mailbox failed: \(output)")
        let parsed = try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: [String]] ?? [:]
        for mailbox in h.account.mailboxes() {
            let expected = h.account.messages(mailboxId: mailbox.id).map { Harness.letters($0) + ($0.seen ? "|cur" : "|new") }.sorted()
            #expect(parsed[mailbox.path] == expected, "python sees \(mailbox.path) differently")
        }

        // notmuch indexes every file it considers mail, and names the ones it does not.
        let nmConfig = h.dir + "/notmuch-config"
        try "[database]\npath=\(h.maildir)\n[new]\ntags=new\n[maildir]\nsynchronize_flags=true\n".write(toFile: nmConfig, atomically: true, encoding: .utf8)
        let (nmStatus, nmOut) = try shell("notmuch new 2>&1", env: ["NOTMUCH_CONFIG": nmConfig])
        #expect(nmStatus == 0, "notmuch failed: \(nmOut)")
        let ignored = Set(nmOut.split(separator: "\n").compactMap { line -> String? in
            guard let range = line.range(of: "Ignoring non-mail file: ") else { return nil }
            return String(line[range.upperBound...])
        })
        let (_, indexed) = try shell("notmuch search --output=files '*'", env: ["NOTMUCH_CONFIG": nmConfig])
        let indexedFiles = Set(indexed.split(separator: "\n").map(String.init))
        let allFiles = Set(files.keys.map { h.maildir + "/" + $0 })
        // wdsync's marker is not mail: notmuch ignores it (users add it to new.ignore).
        #expect(ignored.contains(h.maildir + "/.wdsync-state"))
        #expect(indexedFiles.union(ignored).subtracting([h.maildir + "/.wdsync-state"]) == allFiles)
        #expect(ignored.count <= 5, "notmuch ignored \(ignored.count) files")

        // neomutt opens the folder and sees every message (it copies them all to an mbox).
        let work = try #require(h.account.mailboxId(path: "Work"))
        let expectedWork = h.account.messages(mailboxId: work).count
        let mbox = h.dir + "/neomutt.mbox"
        let (muttStatus, screen) = try shell("python3 -c \"$PY\" '\(h.maildir)/Work' '\(mbox)' \(expectedWork)",
                                             env: ["PY": Self.neomuttDriver, "HOME": h.dir])
        #expect(muttStatus == 0, "neomutt failed: \(screen.suffix(2000))")
        #expect(screen.contains("Msgs:\(expectedWork)"), "neomutt's status line does not show \(expectedWork) messages")
        let copied = (try? String(contentsOfFile: mbox, encoding: .isoLatin1)) ?? ""
        #expect(copied.components(separatedBy: "\nFrom ").count + (copied.hasPrefix("From ") ? 0 : -1) == expectedWork)
    }

    /// Drives neomutt on a pty like a user, but each key only once neomutt shows it is ready for
    /// it (its status line, its prompts), so a slow machine makes it slower, never wrong: open
    /// the folder, tag all (`T ~A`), copy the tagged messages to an mbox (`; C`), quit (`q`)
    /// once the mbox holds them. Arguments: folder, mbox, expected count. Prints the screen.
    static let neomuttDriver = #"""
    import fcntl, os, pty, select, struct, sys, termios, time
    folder, mbox, expected = sys.argv[1], sys.argv[2], int(sys.argv[3])
    deadline = time.monotonic() + 120
    pid, fd = pty.fork()
    if pid == 0:
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack('HHHH', 50, 300, 0, 0))
        os.environ['TERM'] = 'xterm'
        # folder= set: neomutt's default ~/Mail is not looked for (it asks to create it).
        os.execvp('neomutt', ['neomutt', '-n', '-F', '/dev/null', '-R', '-f', folder,
                              '-e', "set mbox_type=mbox confirmcreate=no quit=yes folder='%s'" % os.path.dirname(folder)])
    screen = b''
    def fail(why):
        sys.stdout.write(screen.decode('utf-8', 'replace'))
        os.kill(pid, 9)
        sys.exit(why)
    def read_some(timeout):
        global screen
        r, _, _ = select.select([fd], [], [], timeout)
        if not r:
            return True
        try:
            data = os.read(fd, 65536)
        except OSError:
            return False
        screen += data
        return bool(data)
    def wait_for(text):
        start = len(screen)
        while text not in screen[start:]:
            if time.monotonic() > deadline or not read_some(max(0, deadline - time.monotonic())):
                fail('neomutt never showed %r' % text)
    def copied():
        try:
            with open(mbox, 'rb') as f:
                data = f.read()
        except OSError:
            return False
        return data.startswith(b'From ') and data.count(b'\nFrom ') + 1 >= expected
    wait_for(b'Msgs:%d' % expected)
    os.write(fd, b'T')
    wait_for(b'Tag messages matching')
    os.write(fd, b'~A\r')
    wait_for(b'Tag:%d' % expected)
    os.write(fd, b';C')
    wait_for(b'to mailbox')
    os.write(fd, mbox.encode() + b'\r')
    while not copied():
        if time.monotonic() > deadline or not read_some(0.05):
            fail('neomutt did not copy the messages')
    os.write(fd, b'q')
    while time.monotonic() < deadline and read_some(max(0, deadline - time.monotonic())):
        pass
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            fail('neomutt did not quit')
        time.sleep(0.01)
    sys.stdout.write(screen.decode('utf-8', 'replace'))
    sys.exit(os.waitstatus_to_exitcode(status))
    """#

    @Test func aSecondRunWithNoServerChangeTouchesNothing() throws {
        let h = try Harness()
        try h.seedStandard(generated: 60)
        try h.sync()
        let before = h.snapshot()
        h.server.resetStats()
        try h.sync()
        #expect(h.snapshot() == before, "a no-op run rewrote or renamed files")
        let stats = h.server.stats()
        #expect(stats.perRoute["message.eml", default: 0] == 0)
        #expect(stats.perRoute["messages", default: 0] == 0, "unchanged mailboxes were listed again")
        // authenticate + user + autoreply + filters + mailboxes: O(1), not O(messages); and, this
        // once, the journal, read to confirm that no change was under way during the first run's
        // listings (docs/incremental-sync.md).
        #expect(stats.totalRequests <= 6)
        #expect(stats.perRoute["updates", default: 0] == 1)
        h.server.resetStats()
        try h.sync()
        #expect(h.snapshot() == before)
        #expect(h.server.stats().totalRequests <= 5, "\(h.server.stats().perRoute)")
    }

    /// `--debug` says how long each phase of a pass took, so a slow cron run can be explained
    /// without a profiler.
    @Test func debugLogsHowLongEachPhaseTook() throws {
        let h = try Harness()
        try h.seedStandard(generated: 10)
        let result = try h.sync(extra: ["--debug"])
        for phase in ["local scan", "push", "settings", "mailbox list", "journal", "listings", "export", "last local scan"] {
            #expect(result.stderr.contains("\(phase) took "), "no time for \(phase): \(result.stderr)")
        }
        #expect(!(try h.run(extra: ["-v"]).stderr.contains(" took ")))
    }

    /// The first sync watches each folder it creates, so its last scan need not list the files
    /// it wrote and the next run reads no folder; a folder that already held mail is read.
    @Test func aFirstSyncRecordsTheFoldersItMadeAndReadsOnesThatHeldMail() throws {
        let h = try Harness()
        try h.seedStandard(generated: 60)
        try h.sync()
        let second = try h.sync(extra: ["-v"])
        #expect(!second.stderr.contains("scanned "), "\(second.stderr)")

        // A draft already in the Maildir before the first sync is found and sent.
        let old = try Harness()
        try old.seedStandard(generated: 60)
        for sub in ["cur", "new", "tmp"] {
            try FileManager.default.createDirectory(atPath: old.maildir + "/Drafts/" + sub, withIntermediateDirectories: true)
        }
        try TwoWayTests.writeNew(old, folder: "Drafts", flags: "DS", messageId: "before-1@example.org", subject: "Written before")
        try old.sync()
        try old.sync()
        #expect(TwoWayTests.messages(old, withId: "before-1@example.org").count == 1)
        try TwoWayTests.expectQuiet(old)
    }

    @Test func serverChangesConvergeWithRenamesNotDownloads() throws {
        let h = try Harness()
        try h.seedStandard(generated: 60)
        try h.sync()
        let a = h.account
        let inbox = try #require(a.mailboxId(path: "INBOX"))
        let work = try #require(a.mailboxId(path: "Work"))
        let projects = try #require(a.mailboxId(path: "Work/Projects"))
        let inboxMessages = a.messages(mailboxId: inbox)
        let workMessages = a.messages(mailboxId: work)

        // Flag change, expunge, move, new mail, mailbox rename, mailbox delete, mailbox create.
        try a.setFlags(mailboxId: inbox, uid: inboxMessages[0].uid, seen: !inboxMessages[0].seen, flagged: true)
        try a.expunge(mailboxId: inbox, uid: inboxMessages[1].uid)
        let moved = inboxMessages[2]
        let before = h.snapshot()
        let movedFile = try #require(before.first { FileManager.default.contents(atPath: h.maildir + "/" + $0.key) == Data(moved.raw) })
        try a.move(mailboxId: inbox, uid: moved.uid, to: work)
        try a.deliver(Array("From: x@y\r\nSubject: new\r\nMessage-ID: <brand-new@x>\r\n\r\nhello\r\n".utf8), to: inbox)
        try a.renameMailbox(id: projects, to: "Archive/Projects 2025")
        let trash = try a.createMailbox(path: "Scratch")
        try a.deliver(Array("Subject: scratch\r\n\r\nx\r\n".utf8), to: trash)
        _ = workMessages
        h.server.resetStats()
        try h.sync()
        try h.expectMirror()
        #expect(h.server.stats().perRoute["message.eml", default: 0] == 2, "only the two new messages are downloaded")
        let after = h.snapshot()
        #expect(after.contains { $0.value.inode == movedFile.value.inode && $0.key.hasPrefix("Work/") },
                "the moved message was not renamed into Work")
        #expect(!FileManager.default.fileExists(atPath: h.maildir + "/Work/Projects"))
        #expect(FileManager.default.fileExists(atPath: h.maildir + "/Archive/Projects 2025/cur"))

        // Delete a mailbox: its folder goes away.
        try a.deleteMailbox(id: trash)
        try h.sync()
        try h.expectMirror()
        #expect(!FileManager.default.fileExists(atPath: h.maildir + "/Scratch"))
    }

    @Test func aFileInPlaceButNotRecordedIsAdoptedNotDownloaded() throws {
        let h = try Harness()
        try h.seedStandard(generated: 10)
        try h.sync()
        let before = h.snapshot()
        // What a kill between the rename and the cache update leaves behind.
        for interrupted in [1, 0] {
            do {
                let store = try Store(path: h.db)
                try store.db.run("UPDATE messages SET file = NULL, sha256 = NULL, dirty = 1 WHERE uid IN (1, 2)")
                try store.db.run("UPDATE account SET exporting = ?", .int(interrupted))
            }
            h.server.resetStats()
            try h.sync()
            #expect(h.snapshot() == before, "files were rewritten or duplicated (interrupted: \(interrupted))")
            let downloads = h.server.stats().perRoute["message.eml", default: 0]
            // After an interrupted export the files are found by a scan; otherwise delivering the
            // same bytes again under the same name is a no-op.
            #expect(interrupted == 1 ? downloads == 0 : downloads > 0)
            let store = try Store(path: h.db)
            #expect(try store.messages().allSatisfy { $0.file != nil && $0.sha256 != nil })
        }
    }

    @Test func swappedAndReusedMailboxNamesConverge() throws {
        let h = try Harness()
        let a = h.account
        let x = try a.createMailbox(path: "Alpha")
        let y = try a.createMailbox(path: "Beta")
        let z = try a.createMailbox(path: "Gamma")
        for (i, box) in [x, y, z].enumerated() {
            try a.deliver(Array("Subject: box \(i)\r\nMessage-ID: <box-\(i)@x>\r\n\r\nbody \(i)\r\n".utf8), to: box)
        }
        try h.sync()
        // Swap Alpha and Beta; delete Gamma and give its name to a new mailbox.
        try a.renameMailbox(id: x, to: "Tmp")
        try a.renameMailbox(id: y, to: "Alpha")
        try a.renameMailbox(id: x, to: "Beta")
        try a.deleteMailbox(id: z)
        let g = try a.createMailbox(path: "Gamma")
        try a.deliver(Array("Subject: new gamma\r\n\r\nx\r\n".utf8), to: g)
        try h.sync()
        try h.expectMirror()
        #expect(!(try FileManager.default.contentsOfDirectory(atPath: h.maildir)).contains { $0.hasPrefix("%%") })
        h.server.resetStats()
        try h.sync()
        #expect(h.server.stats().perRoute["message.eml", default: 0] == 0)
    }

    @Test func killedAtAnyMomentThenRerunConverges() throws {
        let h = try Harness()
        try h.seedStandard(generated: 300)
        let total = h.totalServerMessages
        for threshold in [10, 120, 260] {
            // Slow the downloads a little so the kill lands mid-run.
            h.server.injectFault(.delay(milliseconds: 3), on: "message.eml", count: 100_000)
            let (p, _, _) = h.process(h.baseArguments + ["-q"])
            try p.run()
            _ = Harness.wait(timeout: 60) { h.snapshot().count >= threshold || !p.isRunning }
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
            h.server.clearFaults()
        }
        let final = try h.sync()
        _ = final
        try h.expectMirror()
        #expect(h.snapshot().count == total, "duplicates or missing files after kill -9")
        h.server.resetStats()
        try h.sync()
        #expect(h.server.stats().perRoute["message.eml", default: 0] == 0)
    }
}

@Suite(.serialized) struct VerifyAndLayoutTests {
    @Test func verifyFindsAndTheNextSyncRepairsDamage() throws {
        let h = try Harness()
        try h.seedStandard(generated: 20)
        try h.sync()
        #expect(try h.run(["--verify", "--server", h.server.baseURL, "--user", "demo", "--password-file", h.passwordFile,
                           "--maildir", h.maildir, "--db", h.db]).status == 0)
        let files = h.snapshot().keys.sorted()
        try FileManager.default.removeItem(atPath: h.maildir + "/" + files[0])
        try Data("tampered".utf8).write(to: URL(fileURLWithPath: h.maildir + "/" + files[1]))
        let r = try h.run(["--verify", "--server", h.server.baseURL, "--user", "demo", "--password-file", h.passwordFile,
                           "--maildir", h.maildir, "--db", h.db])
        #expect(r.status == 65)
        #expect(r.stderr.contains("2 problems"))
        try h.sync()
        try h.expectMirror()
    }

    /// Issue 24 item 1: mutt reading a message offline renames it from new/ to cur/ with S.
    /// --verify finds it by its unique part (no problem, exit 0) and the man page's
    /// `wdsync --verify || wdsync --once` then pushes the read instead of downloading a copy.
    @Test func verifyRecognisesAReadOrMovedFile() throws {
        let h = try Harness()
        try h.seedStandard(generated: 20)
        try h.sync()
        let inbox = try #require(h.account.mailboxId(path: "INBOX"))
        let unread = try #require(h.account.messages(mailboxId: inbox).first { !$0.seen && !$0.deleted })
        let file = try #require(h.snapshot().keys.first { $0.contains(".wd\(inbox)_\(unread.uid).") && $0.contains("/new/") })
        let name = (file as NSString).lastPathComponent
        let unique = String(name.split(separator: ":", maxSplits: 1)[0])
        let read = "INBOX/cur/\(unique):2,S"
        #expect(rename(h.maildir + "/" + file, h.maildir + "/" + read) == 0)
        // Another message moved to another folder, as mutt's `s` does.
        let other = try #require(h.snapshot().keys.sorted().first { $0.hasPrefix("Work/cur/") })
        let moved = "Work/Projects/cur/" + (other as NSString).lastPathComponent
        #expect(rename(h.maildir + "/" + other, h.maildir + "/" + moved) == 0)
        let r = try h.run(["--verify", "--server", h.server.baseURL, "--user", "demo", "--password-file", h.passwordFile,
                           "--maildir", h.maildir, "--db", h.db])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("2 files were renamed or moved"))
        #expect(!r.stderr.contains("error"))
        try h.sync()
        #expect(h.snapshot().keys.filter { $0.contains(unique) } == [read])
        #expect(h.account.messages(mailboxId: inbox).first { $0.uid == unread.uid }?.seen == true)
        try h.expectMirror()
    }

    /// Issue 19 item 4: an altered file is moved aside (and the user told where), never
    /// deleted: it may be the only complete copy.
    @Test func verifyMovesAnAlteredFileAsideInsteadOfDeletingIt() throws {
        let h = try Harness()
        try h.seedStandard(generated: 5)
        try h.sync()
        let file = try #require(h.snapshot().keys.sorted().first { $0.contains("/cur/") || $0.contains("/new/") })
        try Data("my only complete copy".utf8).write(to: URL(fileURLWithPath: h.maildir + "/" + file))
        let r = try h.run(["--verify", "--server", h.server.baseURL, "--user", "demo", "--password-file", h.passwordFile,
                           "--maildir", h.maildir, "--db", h.db])
        #expect(r.status == 65)
        let aside = h.db + ".altered/" + (file as NSString).lastPathComponent
        #expect(r.stderr.contains("moved to \(aside)"), "\(r.stderr)")
        #expect(FileManager.default.contents(atPath: aside) == Data("my only complete copy".utf8))
        try h.sync()
        try h.expectMirror()
        #expect(FileManager.default.contents(atPath: aside) == Data("my only complete copy".utf8))
    }

    @Test func maildirPlusPlusLayout() throws {
        let h = try Harness()
        try h.seedStandard(generated: 20)
        try h.sync(extra: ["--layout", "maildir++"])
        try h.expectMirror(folder: { path in
            path == "INBOX" ? "" : "." + path.replacingOccurrences(of: "/", with: ".")
        })
        #expect(FileManager.default.fileExists(atPath: h.maildir + "/.Work.Projects/maildirfolder"))
        // Changing the layout of an existing mirror is refused with advice.
        let r = try h.run(extra: ["--layout", "verbatim"])
        #expect(r.status == 64)
        #expect(r.stderr.contains("--layout maildir++"))
    }

    @Test func configFileWithTwoAccounts() throws {
        let a = try Harness(), b = try Harness()
        try a.seedStandard(generated: 10)
        let bInbox = try #require(b.account.mailboxId(path: "INBOX"))
        try b.account.generate(count: 15, mailboxIds: [bInbox], seed: 9, sizeMix: .small)
        let config = a.dir + "/config"
        try """
        # two accounts
        user = demo
        [account first]
        server = \(a.server.baseURL)
        password-file = \(a.passwordFile)
        maildir = \(a.maildir)
        db = \(a.db)
        [account second]
        server = \(b.server.baseURL)
        password-file = \(b.passwordFile)
        maildir = \(b.maildir)
        db = \(b.db)
        """.write(toFile: config, atomically: true, encoding: .utf8)
        let only = try a.run(["--once", "--config", config, "--account", "second"])
        #expect(only.status == 0, "\(only.stderr)")
        #expect(a.snapshot().isEmpty)
        try b.expectMirror()
        let both = try a.run(["--once", "--config", config])
        #expect(both.status == 0, "\(both.stderr)")
        try a.expectMirror()
        #expect(try a.run(["--once", "--config", config, "--account", "nope"]).status == 64)
    }
}

/// Folder names notmuch can index: every directory name at most 200 bytes, also for caches an
/// older wdsync wrote with names cut at 255 bytes.
@Suite(.serialized) struct LongFolderNameTests {
    static let hostile = "Hostile/" + String(repeating: "L", count: 300)
    static let cjk = String(repeating: "長い名前の受信箱", count: 12)   // 96 characters, 288 bytes

    /// The folder of every mailbox, as the cache records it (over-long names are not decodable).
    func folders(_ h: Harness) throws -> [String: String] {
        let store = try Store(path: h.db)
        return Dictionary(try store.mailboxes().map { ($0.path, $0.folder ?? "") }, uniquingKeysWith: { a, _ in a })
    }

    func notmuchNew(_ h: Harness) throws -> (Int32, String) {
        let config = h.dir + "/notmuch-config"
        try "[database]\npath=\(h.maildir)\n[new]\ntags=new\n".write(toFile: config, atomically: true, encoding: .utf8)
        return try shell("notmuch new 2>&1 && notmuch count '*'", env: ["NOTMUCH_CONFIG": config])
    }

    /// The name wdsync used to give an over-long segment: cut at 221 bytes, `%~`, 32 hex digits.
    func oldName(_ segment: String) throws -> String {
        var cut = ""
        for c in segment where cut.utf8.count + String(c).utf8.count <= 221 { cut.append(c) }
        let (status, hash) = try shell("printf '%s' \"$S\" | sha256sum", env: ["S": segment])
        #expect(status == 0)
        return cut + "%~" + hash.prefix(32)
    }

    @Test func notmuchIndexesAMirrorWithLongFolderNamesAndOldCachesAreRenamed() throws {
        let h = try Harness()
        let a = h.account
        for path in [Self.hostile, Self.cjk] {
            let box = try a.createMailbox(path: path)
            try a.deliver(Array("Subject: long \(path.count)\r\nMessage-ID: <long-\(path.count)@x>\r\n\r\nx\r\n".utf8), to: box)
        }
        try h.sync()
        var byPath = try folders(h)
        try h.expectMirror(folder: { byPath[$0] ?? "?" })
        for (path, folder) in byPath where path == Self.hostile || path == Self.cjk {
            #expect(folder.contains("%~"), "\(folder) was not shortened")
            for segment in folder.split(separator: "/") { #expect(segment.utf8.count <= 200, "\(segment) is too long") }
        }
        let (status, output) = try notmuchNew(h)
        #expect(status == 0, "notmuch new failed: \(output)")
        #expect(output.hasSuffix("\(h.totalServerMessages)\n"), "notmuch did not index every message: \(output)")

        // A cache written with the old 255-byte names: the folders are renamed, not downloaded.
        let store = try Store(path: h.db)
        for path in [Self.hostile, Self.cjk] {
            let current = try #require(byPath[path])
            let segment = String(try #require(path.split(separator: "/").last))
            let old = (path == Self.hostile ? "Hostile/" : "") + (try oldName(segment))
            #expect(old.utf8.count > 200 + (path == Self.hostile ? 8 : 0))
            #expect(rename(h.maildir + "/" + current, h.maildir + "/" + old) == 0)
            try store.moveFolder(from: current, to: old, nested: true)
        }
        try? FileManager.default.removeItem(atPath: h.maildir + "/.notmuch")
        h.server.resetStats()
        try h.sync()
        #expect(h.server.stats().perRoute["message.eml", default: 0] == 0, "renaming old folders downloaded messages")
        let renamed = try folders(h)
        #expect(renamed == byPath, "the old folders were not renamed to the new names")
        byPath = renamed
        try h.expectMirror(folder: { byPath[$0] ?? "?" })
        let (again, output2) = try notmuchNew(h)
        #expect(again == 0, "notmuch new failed: \(output2)")
    }
}

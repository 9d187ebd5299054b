#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import WildDuckSim

/// What wdsync tells the outside: the post-sync hook, systemd notifications, `--status`.
@Suite(.serialized) struct ReportingTests {
    /// A hook that appends one line per run (its environment, start and end) to `log`, and
    /// notes an overlap if a second run starts while one is running.
    static func hookScript(in h: Harness, sleep: Double = 0) throws -> (command: String, log: String) {
        let script = h.dir + "/hook.sh"
        let log = h.dir + "/hook.log"
        try """
            #!/bin/sh
            mkdir "\(h.dir)/hook.running" 2>/dev/null || echo OVERLAP >> "\(log)"
            start=$(date +%s.%N)
            sleep \(sleep)
            echo "account=$WDSYNC_ACCOUNT new=$WDSYNC_NEW changed=$WDSYNC_CHANGED removed=$WDSYNC_REMOVED result=$WDSYNC_RESULT maildir=$WDSYNC_MAILDIR start=$start" >> "\(log)"
            rmdir "\(h.dir)/hook.running"

            """.write(toFile: script, atomically: true, encoding: .utf8)
        chmod(script, 0o755)
        return (script, log)
    }

    static func runs(_ log: String) -> [[String: String]] {
        let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").map { line in
            var fields: [String: String] = [:]
            for part in line.split(separator: " ") {
                let kv = part.split(separator: "=", maxSplits: 1)
                fields[String(kv[0])] = kv.count > 1 ? String(kv[1]) : ""
            }
            return fields
        }
    }

    @Test func postSyncRunsAfterEachOnceWithCounts() throws {
        let h = try Harness()
        try h.seedStandard(generated: 30)
        let (script, log) = try Self.hookScript(in: h)
        // From the config file, as `post-sync = notmuch new` would be.
        let config = h.dir + "/config-file"
        try """
            post-sync = \(script)
            [account work]
            server = \(h.server.baseURL)
            user = demo
            password-file = \(h.passwordFile)
            maildir = \(h.maildir)
            db = \(h.db)

            """.write(toFile: config, atomically: true, encoding: .utf8)
        let first = try h.run(["--once", "--config", config])
        #expect(first.status == 0, "\(first.stderr)")
        var runs = Self.runs(log)
        #expect(runs.count == 1)
        #expect(runs.first?["account"] == "work")
        #expect(runs.first?["new"] == String(h.totalServerMessages))
        #expect(runs.first?["changed"] == "0" && runs.first?["removed"] == "0" && runs.first?["result"] == "ok")
        #expect(runs.first?["maildir"] == h.maildir)

        // A flag change and an expunge: counted as changed and removed.
        let inbox = try #require(h.account.mailboxId(path: "INBOX"))
        let messages = h.account.messages(mailboxId: inbox)
        try h.account.setFlags(mailboxId: inbox, uid: messages[0].uid, flagged: !messages[0].flagged)
        try h.account.expunge(mailboxId: inbox, uid: messages[1].uid)
        #expect(try h.run(["--once", "--config", config]).status == 0)
        runs = Self.runs(log)
        #expect(runs.count == 2)
        #expect(runs.last?["new"] == "0" && runs.last?["changed"] == "1" && runs.last?["removed"] == "1", "\(runs)")

        // A failing command is reported and does not fail the sync.
        let failing = try h.run(h.baseArguments + ["--post-sync", "exit 3"])
        #expect(failing.status == 0)
        #expect(failing.stderr.contains("post-sync command exited with status 3"))
    }

    @Test func postSyncInTheDaemonIsDebouncedAndNeverOverlaps() throws {
        let h = try Harness()
        try h.seedStandard(generated: 10)
        let (script, log) = try Self.hookScript(in: h, sleep: 0.5)
        let daemon = try h.startDaemon(extra: ["--post-sync", script])
        #expect(Harness.wait(timeout: 30) { Self.runs(log).count == 1 }, "\(daemon.log)")
        let initial = h.totalServerMessages
        let inbox = try #require(h.account.mailboxId(path: "INBOX"))
        // Several bursts of new mail while the hook is running or was just run.
        for burst in 0..<4 {
            for i in 0..<5 {
                try h.account.deliver(Array("Subject: b\(burst) \(i)\r\nMessage-ID: <b\(burst)-\(i)@x>\r\n\r\nx\r\n".utf8), to: inbox)
            }
            usleep(300_000)
        }
        let total = { Self.runs(log).reduce(0) { $0 + (Int($1["new"] ?? "") ?? 0) } }
        #expect(Harness.wait(timeout: 30) { total() == initial + 20 }, "\(Self.runs(log)) \(daemon.log)")
        #expect(daemon.terminate() == 0)
        let runs = Self.runs(log)
        #expect(!runs.contains { $0["OVERLAP"] != nil }, "two hooks ran at once")
        #expect(total() == initial + 20)
        // At most one run every 2 s: wdsync starts them at least 2 s apart. The script reads the
        // clock a little after its start, later under load, so allow for that; without the
        // debounce, runs would follow each other 0.5 s apart (the hook's duration).
        let starts = runs.compactMap { Double($0["start"] ?? "") }
        #expect(starts.count == runs.count && runs.count >= 2)
        for (a, b) in zip(starts, starts.dropFirst()) { #expect(b - a >= 1.5, "runs \(b - a) s apart") }
    }

    /// A unix datagram socket the test binds, as systemd does for NOTIFY_SOCKET.
    final class NotifySocket {
        let fd: Int32
        let name: String
        init(abstract: Bool, dir: String) throws {
            fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
            name = abstract ? "@wdsync-test-\(UUID().uuidString.prefix(8))" : dir + "/notify.sock"
            var addr = sockaddr_un()
            addr.sun_family = sa_family_t(AF_UNIX)
            var bytes = Array(name.utf8)
            if abstract { bytes[0] = 0 }
            withUnsafeMutableBytes(of: &addr.sun_path) { p in for (i, b) in bytes.enumerated() { p[i] = b } }
            let length = socklen_t(2 + bytes.count + (abstract ? 0 : 1))
            let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
            guard rc == 0 else { throw HarnessError("bind \(name): errno \(errno)") }
            var tv = timeval(tv_sec: 0, tv_usec: 200_000)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        }
        var received: [String] = []
        /// Collects datagrams until `condition` holds for what was received, or `timeout` passes.
        func wait(timeout: Double, _ condition: ([String]) -> Bool) -> Bool {
            let deadline = Date().addingTimeInterval(timeout)
            var buffer = [UInt8](repeating: 0, count: 4096)
            while Date() < deadline && !condition(received) {
                let n = recv(fd, &buffer, buffer.count, 0)
                if n > 0 { received.append(String(decoding: buffer[0..<n], as: UTF8.self)) }
            }
            return condition(received)
        }
        deinit { close(fd) }
    }

    @Test(arguments: [false, true]) func systemdNotifications(abstract: Bool) throws {
        let h = try Harness()
        try h.seedStandard(generated: 10)
        let socket = try NotifySocket(abstract: abstract, dir: h.dir)
        let daemon = try h.startDaemon(environment: ["NOTIFY_SOCKET": socket.name, "WATCHDOG_USEC": "400000"])
        #expect(socket.wait(timeout: 30) { $0.contains { $0.contains("READY=1") } }, "\(socket.received) \(daemon.log)")
        // READY=1 comes after the first complete sync: the Maildir is complete by then.
        try h.expectMirror()
        #expect(socket.wait(timeout: 20) { $0.contains { $0.hasPrefix("STATUS=WebSocket since") } }, "\(socket.received)")
        #expect(socket.wait(timeout: 20) { $0.filter { $0 == "WATCHDOG=1" }.count >= 2 }, "\(socket.received)")
        let inbox = try #require(h.account.mailboxId(path: "INBOX"))
        try h.account.deliver(Array("Subject: notify\r\nMessage-ID: <notify@x>\r\n\r\nx\r\n".utf8), to: inbox)
        #expect(socket.wait(timeout: 20) { $0.contains { $0.contains("STATUS=") && $0.contains("1 new, 0 changed, 0 removed") } },
                "\(socket.received)")
        #expect(daemon.terminate() == 0)
        #expect(socket.wait(timeout: 5) { $0.contains("STOPPING=1") })
        #expect(socket.received.filter { $0.contains("READY=1") }.count == 1)
    }

    static func statusJSON(_ h: Harness, _ args: [String]) throws -> [String: Any] {
        let result = try h.run(["--status", "--json"] + args)
        #expect(result.status == 0, "\(result.stderr)")
        let root = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
        let accounts = root?["accounts"] as? [[String: Any]] ?? []
        #expect(accounts.count == 1, "\(result.stdout)")
        return accounts.first ?? [:]
    }

    @Test func statusFromTheCacheWithAndWithoutADaemon() throws {
        let h = try Harness()
        try h.seedStandard(generated: 20)
        let where_ = ["--db", h.db, "--maildir", h.maildir]

        // Before any sync.
        let never = try h.run(["--status"] + where_)
        #expect(never.status == 0 && never.stdout.contains("never"), "\(never.stdout)")
        #expect(try Self.statusJSON(h, where_)["synced"] as? Bool == false)

        // After a failed run (a wrong password) and a good one.
        let badPassword = h.dir + "/bad"
        _ = FileManager.default.createFile(atPath: badPassword, contents: Data("nope\n".utf8), attributes: [.posixPermissions: 0o600])
        #expect(try h.run(h.baseArguments.map { $0 == h.passwordFile ? badPassword : $0 }).status == 77)
        try h.sync()
        var doc = try Self.statusJSON(h, where_)
        #expect(doc["synced"] as? Bool == true)
        #expect(doc["user"] as? String == "demo")
        #expect(doc["mailboxes"] as? Int == h.account.mailboxes().count)
        #expect(doc["messages"] as? Int == h.totalServerMessages)
        let bytes = h.account.mailboxes().reduce(0) { $0 + h.account.messages(mailboxId: $1.id).reduce(0) { $0 + $1.raw.count } }
        #expect(doc["bytes"] as? Int == bytes)
        #expect(doc["pendingDownloads"] as? Int == 0)
        #expect(doc["daemon"] is NSNull)
        let sync = doc["lastSync"] as? [String: Any] ?? [:]
        #expect(sync["new"] as? Int == h.totalServerMessages)
        #expect(sync["at"] is String && sync["seconds"] is Double)
        let error = doc["lastError"] as? [String: Any] ?? [:]
        #expect((error["message"] as? String ?? "").contains("authentic"), "\(error)")
        #expect(!(error["message"] as? String ?? "").contains("nope"))
        let text = try h.run(["--status"] + where_)
        for label in ["last sync:", "cache:", "pending:", "last error:", "daemon:"] {
            #expect(text.stdout.contains(label), "\(text.stdout)")
        }
        #expect(text.stdout.contains("\(h.totalServerMessages) messages"))

        // A running daemon: its transport and last batch, read while it runs.
        let daemon = try h.startDaemon()
        #expect(Harness.wait(timeout: 30) {
            ((try? Self.statusJSON(h, where_))?["daemon"] as? [String: Any])?["transport"] as? String == "WebSocket"
        }, "\(daemon.log)")
        let inbox = try #require(h.account.mailboxId(path: "INBOX"))
        try h.account.deliver(Array("Subject: s\r\nMessage-ID: <status@x>\r\n\r\nx\r\n".utf8), to: inbox)
        #expect(Harness.wait(timeout: 30) {
            let d = (try? Self.statusJSON(h, where_))?["daemon"] as? [String: Any]
            return (d?["lastBatch"] as? [String: Any])?["new"] as? Int == 1
        }, "\(daemon.log)")
        doc = try Self.statusJSON(h, where_)
        let d = doc["daemon"] as? [String: Any] ?? [:]
        #expect(d["pid"] as? Int == Int(daemon.process.processIdentifier))
        #expect(d["since"] is String && d["transportSince"] is String)
        let running = try h.run(["--status"] + where_)
        #expect(running.stdout.contains("running (pid \(daemon.process.processIdentifier))"), "\(running.stdout)")
        #expect(running.stdout.contains("WebSocket since"))
        #expect(running.stdout.contains("last batch:"))
        // Reading the status disturbed nothing: the daemon still follows the server.
        try h.account.deliver(Array("Subject: s2\r\nMessage-ID: <status2@x>\r\n\r\nx\r\n".utf8), to: inbox)
        try h.expectMirrorEventually()
        #expect(daemon.terminate() == 0)
        #expect(try Self.statusJSON(h, where_)["daemon"] is NSNull)
        #expect(try h.run(["--status"] + where_).stdout.contains("not running"))
    }
}

/// The progress line, seen through a pseudo-terminal (`script` from util-linux).
@Suite(.serialized) struct ProgressTests {
    func throughTerminal(_ h: Harness, _ arguments: [String]) throws -> (Int32, String) {
        let command = ([wdsyncBinary] + arguments).map { "'\($0)'" }.joined(separator: " ")
        return try shell("script -qfec \"$CMD\" /dev/null", env: ["CMD": command, "HOME": h.dir])
    }

    @Test func aLongSyncOnATerminalShowsOneLiveLine() throws {
        let h = try Harness()
        try h.seedStandard(generated: 600)
        let total = h.totalServerMessages
        let (status, output) = try throughTerminal(h, h.baseArguments)
        #expect(status == 0, "\(output)")
        try h.expectMirror()
        // Redrawn in place: carriage returns, no line feeds between updates.
        let updates = output.split(separator: "\r").filter { $0.contains(" msgs") }
        #expect(updates.count >= 2, "\(output)")
        #expect(updates.allSatisfy { !$0.contains("\n") })
        #expect(output.contains("listing INBOX"))
        let first = try #require(updates.first { $0.contains("/\(total) msgs") })
        #expect(first.contains("0/\(total) msgs"), "\(first)")
        let last = try #require(updates.last)
        #expect(last.contains("\(total)/\(total) msgs") && last.contains(" MB") && last.contains("msg/s") && last.contains("ETA 0:00"), "\(last)")
        // The line is erased before the summary, which stands on a line of its own.
        #expect(output.contains("\r\u{1B}[Ksynced "), "\(output.suffix(300))")

        // -q: nothing but errors, even on a terminal.
        let h2 = try Harness()
        try h2.seedStandard(generated: 50)
        let (quietStatus, quiet) = try throughTerminal(h2, h2.baseArguments + ["-q"])
        #expect(quietStatus == 0 && quiet.isEmpty, "\(quiet)")
    }

    @Test func withoutATerminalNothingExtraIsPrinted() throws {
        let h = try Harness()
        try h.seedStandard(generated: 300)
        let result = try h.sync()
        #expect(!result.stderr.contains("\r") && !result.stderr.contains("msg/s") && !result.stderr.contains("\u{1B}"), "\(result.stderr)")
        #expect(result.stderr.split(separator: "\n").count == 1, "\(result.stderr)")
    }
}

/// `--dry-run`: the report lists what a sync would do; the Maildir, the cache and the server
/// are left exactly as they were.
@Suite(.serialized) struct DryRunTests {
    /// Everything under a directory: path → (kind, inode, mtime, size).
    static func tree(_ root: String) -> [String: String] {
        var out: [String: String] = [:]
        guard let e = FileManager.default.enumerator(atPath: root) else { return out }
        while let rel = e.nextObject() as? String {
            var st = stat()
            guard lstat(root + "/" + rel, &st) == 0 else { continue }
            out[rel] = "\(st.st_mode) \(st.st_ino) \(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec) \(st.st_size)"
        }
        return out
    }

    static func serverState(_ h: Harness) -> [String] {
        h.account.mailboxes().flatMap { m in
            ["\(m.id) \(m.path) \(m.modifyIndex) \(m.total) \(m.unseen)"] + h.account.messages(mailboxId: m.id).map {
                "\(m.id) \($0.uid) \($0.seen) \($0.flagged) \($0.deleted) \($0.draft)"
            }
        }
    }

    /// The cache's contents, byte for byte: the database and its WAL. (A reader may create an
    /// empty WAL where there was none: SQLite's own companion file, no content.)
    static func cacheBytes(_ h: Harness) -> [Data] {
        [h.db, h.db + "-wal"].map { FileManager.default.contents(atPath: $0) ?? Data() }
    }

    @Test func reportsWhatASyncWouldDoAndWritesNothing() throws {
        let h = try Harness()
        try h.seedStandard(generated: 40)
        try h.sync()
        // On the server: 3 new messages, a flag change, an expunge, a move.
        let inbox = try #require(h.account.mailboxId(path: "INBOX"))
        let work = try #require(h.account.mailboxId(path: "Work"))
        for i in 0..<3 {
            try h.account.deliver(Array("Subject: dry \(i)\r\nMessage-ID: <dry-\(i)@x>\r\n\r\n\(String(repeating: "x", count: 1000))\r\n".utf8), to: inbox)
        }
        let inboxMessages = h.account.messages(mailboxId: inbox)
        try h.account.setFlags(mailboxId: inbox, uid: inboxMessages[0].uid, flagged: !inboxMessages[0].flagged)
        try h.account.expunge(mailboxId: inbox, uid: inboxMessages[1].uid)
        _ = try h.account.move(mailboxId: work, uid: h.account.messages(mailboxId: work)[0].uid, to: inbox)
        // Locally: the user flags a message (a change to push).
        let workFiles = try FileManager.default.contentsOfDirectory(atPath: h.maildir + "/Work/cur").filter { !$0.contains("F") }.sorted()
        let local = try #require(workFiles.last)
        let flagged = String(local.prefix { $0 != ":" }) + ":2," + String(Array((local.split(separator: ",").last.map(String.init) ?? "") + "F").sorted())
        try FileManager.default.moveItem(atPath: h.maildir + "/Work/cur/" + local, toPath: h.maildir + "/Work/cur/" + flagged)

        let maildirBefore = Self.tree(h.maildir)
        let cacheBefore = Self.cacheBytes(h)
        let serverBefore = Self.serverState(h)

        let result = try h.run(h.baseArguments + ["--dry-run", "-v"])
        #expect(result.status == 0, "\(result.stderr)")
        let out = result.stdout
        #expect(out.contains("dry run, nothing was written"))
        #expect(out.contains("download 3 messages") && out.contains("INBOX 3"), "\(out)")
        #expect(out.contains("remove 1 files"), "\(out)")
        #expect(out.contains("push 1 flag changes"), "\(out)")
        let renames = out.split(separator: "\n").filter { $0.hasPrefix("    rename ") }
        #expect(renames.count == 2, "\(out)")   // the flag change and the move
        #expect(renames.contains { $0.contains("Work/cur/") && $0.contains("→ INBOX/") }, "\(out)")

        #expect(Self.tree(h.maildir) == maildirBefore, "the Maildir changed")
        #expect(Self.cacheBytes(h) == cacheBefore, "the cache changed")
        #expect(Self.serverState(h) == serverBefore, "the server changed")

        // The real sync then does what was announced.
        let real = try h.sync()
        #expect(real.stderr.contains("3 downloaded") && real.stderr.contains("1 removed"), "\(real.stderr)")
        try h.expectMirror()

        // A first sync: no cache, no Maildir; neither is created.
        let h2 = try Harness()
        try h2.seedStandard(generated: 10)
        let first = try h2.run(h2.baseArguments + ["--dry-run"])
        #expect(first.status == 0, "\(first.stderr)")
        #expect(first.stdout.contains("download \(h2.totalServerMessages) messages"), "\(first.stdout)")
        #expect(!FileManager.default.fileExists(atPath: h2.maildir) && !FileManager.default.fileExists(atPath: h2.db))
    }

    /// The dry run prints the export's own decisions: a message mutt moved to cur/ without S
    /// (read, kept "old") whose flags the server changes stays in cur/, in the report as on disk.
    @Test func theReportNamesThePathsTheSyncThenWrites() throws {
        let h = try Harness()
        try h.seedStandard(generated: 20)
        try h.sync()
        let inbox = try #require(h.account.mailboxId(path: "INBOX"))
        let fresh = try FileManager.default.contentsOfDirectory(atPath: h.maildir + "/INBOX/new").sorted()
        let name = try #require(fresh.first)
        try FileManager.default.moveItem(atPath: h.maildir + "/INBOX/new/" + name, toPath: h.maildir + "/INBOX/cur/" + name)
        let unique = String(name.prefix { $0 != ":" })
        let uid = try #require(h.account.messages(mailboxId: inbox).first { unique.contains("_\($0.uid).") }?.uid)
        try h.account.setFlags(mailboxId: inbox, uid: uid, flagged: true)

        let result = try h.run(h.baseArguments + ["--dry-run", "-v"])
        #expect(result.status == 0, "\(result.stderr)")
        let rename = result.stdout.split(separator: "\n").first { $0.hasPrefix("    rename ") && $0.contains(unique) }
        let announced = try #require(rename.map { String($0.split(separator: "→").last ?? "").trimmingCharacters(in: .whitespaces) },
                                     "\(result.stdout)")
        #expect(announced == "INBOX/cur/" + unique + ":2,F", "\(result.stdout)")
        try h.sync()
        #expect(FileManager.default.fileExists(atPath: h.maildir + "/" + announced), "the sync put it elsewhere")
    }
}

#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import WildDuckSim

/// Issue 24 items 3, 4, 7 and 8: what a person sees of the daemon and of failures in daily use.
@Suite(.serialized) struct DailyUseTests {
    typealias NotifySocket = ReportingTests.NotifySocket

    /// The daemon as a person or systemd runs it: no --debug, so the default level is tested.
    static func daemonArguments(_ h: Harness) -> [String] {
        h.baseArguments.filter { $0 != "--once" }
            + ["--reconnect-delay", "50", "--max-reconnect-delay", "200", "--ping-interval", "1", "--poll-interval", "1",
               "--ws-retry-interval", "1"]
    }

    static func count(_ text: String, in log: String) -> Int { log.components(separatedBy: text).count - 1 }

    /// Item 3: with the server gone, systemd's STATUS= and --status say "reconnecting since",
    /// and one line at the default level says the connection was lost, one that it is back.
    @Test func aLostConnectionIsToldAndSoIsItsReturn() throws {
        let h = try Harness()
        try h.seedStandard(generated: 5)
        let socket = try NotifySocket(abstract: false, dir: h.dir)
        let d = try h.startDaemon(arguments: Self.daemonArguments(h), environment: ["NOTIFY_SOCKET": socket.name])
        #expect(socket.wait(timeout: 30) { $0.contains { $0.hasPrefix("STATUS=WebSocket since") } }, "\(socket.received) \(d.log)")
        #expect(d.waitForLog("keeping \(h.maildir) in sync with demo at \(h.server.baseURL)"), "\(d.log)")
        let port = h.server.port
        h.server.stop()
        #expect(d.waitForLog("lost the connection to the server"), "\(d.log)")
        #expect(socket.wait(timeout: 20) { $0.contains { $0.hasPrefix("STATUS=reconnecting since") } }, "\(socket.received)")
        let status = try h.run(["--status", "--db", h.db, "--maildir", h.maildir])
        #expect(status.stdout.contains("; reconnecting since"), "\(status.stdout)")
        // A while of failed tries (several fallbacks and polls) is still one line.
        Thread.sleep(forTimeInterval: 3)
        try h.server.start(port: port)
        #expect(d.waitForLog("connected again after"), "\(d.log)")
        #expect(socket.wait(timeout: 20) { $0.last.map { $0.hasPrefix("STATUS=") && !$0.contains("reconnecting") } ?? false },
                "\(socket.received)")
        let inbox = try #require(h.account.mailboxId(path: "INBOX"))
        try h.account.deliver(Array("Subject: back\r\nMessage-ID: <back@x>\r\n\r\nx\r\n".utf8), to: inbox)
        try h.expectMirrorEventually()
        #expect(d.terminate() == 0)
        let log = d.log
        #expect(Self.count("lost the connection", in: log) == 1, "\(log)")
        #expect(Self.count("connected again", in: log) == 1, "\(log)")
        #expect(log.hasSuffix("stopped\n"), "\(log.suffix(300))")
    }

    /// Item 4: a server that is down when the daemon starts does not hold systemd's start:
    /// READY=1 comes with an "offline" status, and the first sync follows when it answers.
    @Test func startingOfflineIsReadyAndSaysOffline() throws {
        let h = try Harness()
        try h.seedStandard(generated: 5)
        let port = h.server.port
        h.server.stop()
        let socket = try NotifySocket(abstract: false, dir: h.dir)
        let d = try h.startDaemon(arguments: Self.daemonArguments(h), environment: ["NOTIFY_SOCKET": socket.name])
        #expect(socket.wait(timeout: 30) { $0.contains { $0.contains("READY=1") && $0.contains("STATUS=offline since") && $0.contains("retrying") } },
                "\(socket.received) \(d.log)")
        #expect(d.waitForLog("offline: cannot reach"), "\(d.log)")
        Thread.sleep(forTimeInterval: 2)
        try h.server.start(port: port)
        #expect(d.waitForLog("connected again after"), "\(d.log)")
        try h.expectMirrorEventually()
        #expect(socket.wait(timeout: 20) { $0.last?.hasPrefix("STATUS=WebSocket since") ?? false }, "\(socket.received)")
        #expect(d.terminate() == 0)
        #expect(socket.received.filter { $0.contains("READY=1") }.count == 1)
        let log = d.log
        // One line for being offline, whatever the number of tries; never "re-run" advice.
        #expect(Self.count("offline:", in: log) == 1, "\(log)")
        #expect(!log.contains("re-run"), "\(log)")
    }

    /// Item 8: SIGHUP reads the config file again (it used to kill the daemon silently).
    @Test func sighupReadsTheConfigAgain() throws {
        let h = try Harness()
        try h.seedStandard(generated: 5)
        let config = h.dir + "/config/wdsync/config"
        try FileManager.default.createDirectory(atPath: h.dir + "/config/wdsync", withIntermediateDirectories: true)
        func write(maildir: String, db: String) throws {
            try """
            server = \(h.server.baseURL)
            user = demo
            password-file = \(h.passwordFile)
            maildir = \(maildir)
            db = \(db)
            """.write(toFile: config, atomically: true, encoding: .utf8)
        }
        try write(maildir: h.maildir, db: h.db)
        let d = try h.startDaemon(arguments: [])
        #expect(d.waitForLog("keeping \(h.maildir) in sync"), "\(d.log)")
        try h.expectMirrorEventually()
        let pid = d.process.processIdentifier
        try write(maildir: h.dir + "/mail2", db: h.dir + "/cache2.sqlite")
        d.signal(SIGHUP)
        #expect(d.waitForLog("stopped to read the configuration again"), "\(d.log)")
        #expect(d.waitForLog("keeping \(h.dir)/mail2 in sync"), "\(d.log)")
        h.maildir = h.dir + "/mail2"
        try h.expectMirrorEventually()
        #expect(d.process.isRunning && d.process.processIdentifier == pid)
        #expect(d.terminate() == 0, "\(d.log)")
        #expect(d.log.hasSuffix("stopped\n"), "\(d.log.suffix(300))")

        // On a terminal, SIGHUP is the terminal hanging up: the daemon stops cleanly and says so.
        let command = "'\(wdsyncBinary)' & pid=$!; sleep 2; kill -HUP $pid; wait $pid; echo exit=$?"
        let (status, screen) = try shell("script -qfec \"$CMD\" /dev/null",
                                         env: ["CMD": command, "HOME": h.dir, "XDG_CONFIG_HOME": h.dir + "/config"])
        #expect(status == 0, "\(screen)")
        #expect(screen.contains("stopped: the terminal hung up (SIGHUP)") && screen.contains("exit=0"), "\(screen)")
        #expect(!screen.contains("read the configuration again"), "\(screen)")
    }

    /// Item 7: a host the resolver says does not exist fails at once, not after a minute of
    /// retries; on a terminal a retry is visible without -v; a 404 on /authenticate asks
    /// whether --server is the API base URL.
    @Test func permanentErrorsFailFastAndRetriesAreVisibleOnATerminal() throws {
        let h = try Harness()
        try h.seedStandard(generated: 5)
        // A 64-byte label: glibc's resolver refuses it itself (EAI_NONAME), with no DNS query.
        let noSuchHost = "http://" + String(repeating: "a", count: 64) + ".invalid/api"
        let r = try h.run(["--once", "-v", "--server", noSuchHost, "--user", "demo", "--password-file", h.passwordFile,
                           "--maildir", h.maildir, "--db", h.db])
        #expect(r.status == 69, "\(r.stderr)")
        #expect(r.stderr.contains("cannot resolve"), "\(r.stderr)")
        #expect(!r.stderr.contains("trying again"), "\(r.stderr)")

        let wrongBase = try h.run(["--once", "--server", h.server.baseURL + "/wrong", "--user", "demo", "--password-file", h.passwordFile,
                                   "--maildir", h.maildir, "--db", h.db])
        #expect(wrongBase.status != 0)
        #expect(wrongBase.stderr.contains("is --server the WildDuck API base URL (often ending in /api)?"), "\(wrongBase.stderr)")

        h.server.injectFault(.status(503, body: #"{"error":"busy"}"#), on: "mailboxes", count: 1)
        let command = h.baseArguments.map { "'\($0)'" }.joined(separator: " ")
        let (status, screen) = try shell("script -qfec \"$CMD\" /dev/null",
                                         env: ["CMD": "'\(wdsyncBinary)' " + command, "HOME": h.dir, "XDG_CONFIG_HOME": h.dir + "/config",
                                               "WDSYNC_RETRY_DELAYS": Harness.retryDelays])
        #expect(status == 0, "\(screen)")
        #expect(screen.contains("HTTP 503; trying again in"), "\(screen)")
        // Without a terminal and without -v, a retry that worked is not news.
        h.server.injectFault(.status(503, body: #"{"error":"busy"}"#), on: "mailboxes", count: 1)
        let quiet = try h.sync()
        #expect(!quiet.stderr.contains("trying again"), "\(quiet.stderr)")
    }

    /// Item 8: a password command that prints nothing is an error, not an empty password
    /// sent to the server; -v lines carry a time.
    @Test func anEmptyPasswordIsRefusedAndVerboseLinesHaveATime() throws {
        let h = try Harness()
        try h.seedStandard(generated: 5)
        let before = h.server.stats().perRoute["authenticate", default: 0]
        let r = try h.run(["--once", "--server", h.server.baseURL, "--user", "demo", "--password-command", "true",
                           "--maildir", h.maildir, "--db", h.db])
        #expect(r.status == 64, "\(r.stderr)")
        #expect(r.stderr.contains("the password command printed nothing"), "\(r.stderr)")
        #expect(h.server.stats().perRoute["authenticate", default: 0] == before)

        let v = try h.sync(extra: ["-v"])
        let lines = v.stderr.split(separator: "\n")
        #expect(!lines.isEmpty)
        // 2026-12-07T05:48:27.344+00:00 …
        #expect(lines.allSatisfy { $0.count > 24 && $0.dropFirst(4).first == "-" && $0.dropFirst(10).first == "T" }, "\(v.stderr)")
    }
}

/// Issue 24 item 8: the simulator's --help says how to log in and deliver a message, and the
/// delivery lines it prints work (run here against a simulator).
@Suite struct SimulatorHelpTests {
    @Test func helpSaysHowToSyncAndDeliverAndItWorks() throws {
        let sim = URL(fileURLWithPath: wdsyncBinary).deletingLastPathComponent().appendingPathComponent("wdsync-sim").path
        let (status, help) = try shell("'\(sim)' --help")
        #expect(status == 0)
        #expect(help.contains("wdsync --server http://127.0.0.1:8080 --user demo --password-file pw"), "\(help)")
        let lines = help.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let start = try #require(lines.firstIndex { $0.hasPrefix("Deliver a message") })
        let snippet = lines[(start + 1)...].prefix { !$0.isEmpty }
            .map { $0.hasPrefix("  URL=") ? "" : $0 }.joined(separator: "\n")
        let h = try Harness(password: "demo")
        let inbox = try #require(h.account.mailboxId(path: "INBOX"))
        let before = h.account.messages(mailboxId: inbox).count
        let (ran, output) = try shell(snippet, env: ["URL": h.server.baseURL])
        #expect(ran == 0 && output.contains("\"success\":true"), "\(output)\n\(snippet)")
        let after = h.account.messages(mailboxId: inbox)
        #expect(after.count == before + 1)
        #expect(after.contains { String(decoding: $0.raw, as: UTF8.self).contains("Subject: hello") })
    }
}

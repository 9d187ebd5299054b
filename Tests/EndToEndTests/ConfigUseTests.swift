#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import WildDuckSim

/// Issue 24 items 5 and 6: the command line and the config file work together, and paths in
/// the config file mean the same wherever wdsync starts.
@Suite(.serialized) struct ConfigUseTests {
    /// The default config file of the harness's environment (`$XDG_CONFIG_HOME/wdsync/config`).
    static func writeDefaultConfig(_ h: Harness, _ text: String) throws -> String {
        let path = h.dir + "/config/wdsync/config"
        try FileManager.default.createDirectory(atPath: h.dir + "/config/wdsync", withIntermediateDirectories: true)
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// `--server` and `--user` on the command line no longer make wdsync ignore the config
    /// file: the account keeps the file's Maildir and cache (a fresh cache on an existing
    /// Maildir used to follow), and `$HOME` / `~` in them are expanded.
    @Test func commandLineOverridesTheConfigForItsAccount() throws {
        let h = try Harness()
        try h.seedStandard(generated: 10)
        let config = try Self.writeDefaultConfig(h, """
        [account work]
        server = http://127.0.0.1:1/api
        user = somebody-else
        password-command = false
        maildir = $HOME/Mail/work
        db = ~/state/${USER_SUFFIX}.sqlite
        """)
        let run = try h.run(["--once", "-v", "--server", h.server.baseURL, "--user", "demo", "--password-file", h.passwordFile],
                            environment: ["USER_SUFFIX": "work"])
        #expect(run.status == 0, "\(run.stderr)")
        #expect(run.stderr.contains("read the config file \(config); accounts: work"), "\(run.stderr)")
        h.maildir = h.dir + "/Mail/work"
        h.db = h.dir + "/state/work.sqlite"
        #expect(FileManager.default.fileExists(atPath: h.db))
        try h.expectMirror()
        // No directory literally named `$HOME` anywhere (the working directory is the test's).
        #expect(!FileManager.default.fileExists(atPath: "$HOME"))
        #expect(!FileManager.default.fileExists(atPath: h.dir + "/data/wdsync/default"))

        // Accounts as plain arguments, as mbsync takes channels.
        #expect(try h.run(["--once", "work", "--password-file", h.passwordFile, "--server", h.server.baseURL, "--user", "demo"],
                          environment: ["USER_SUFFIX": "work"]).status == 0)
        let unknown = try h.run(["--once", "wrok"])
        #expect(unknown.status == 64)
        #expect(unknown.stderr.contains("no account wrok in \(config) (it has: work)"), "\(unknown.stderr)")
    }

    /// A relative path or an unset variable in the config file is refused, with the file, the
    /// account and what to write instead; nothing is created.
    @Test func relativePathsAndUnsetVariablesAreRefused() throws {
        let h = try Harness()
        let config = try Self.writeDefaultConfig(h, """
        server = \(h.server.baseURL)
        user = demo
        password-file = \(h.passwordFile)
        [account work]
        maildir = Mail/work
        """)
        let relative = try h.run(["--once"])
        #expect(relative.status == 64)
        #expect(relative.stderr.contains("\(config), account work: maildir = Mail/work is a relative path"), "\(relative.stderr)")
        _ = try Self.writeDefaultConfig(h, """
        server = \(h.server.baseURL)
        user = demo
        password-file = \(h.passwordFile)
        [account work]
        maildir = $NO_SUCH_VARIABLE/Mail
        """)
        let unset = try h.run(["--once"])
        #expect(unset.status == 64)
        #expect(unset.stderr.contains("$NO_SUCH_VARIABLE is not set"), "\(unset.stderr)")
        #expect(!FileManager.default.fileExists(atPath: h.dir + "/data"))
    }

    /// One account's settings on the command line cannot silently apply to several accounts;
    /// without a config file, the first-run error says where it was looked for.
    @Test func accountSettingsNeedOneAccountAndErrorsNameTheConfigFile() throws {
        let h = try Harness()
        let missing = try h.run(["--once", "--user", "demo", "--password-file", h.passwordFile])
        #expect(missing.status == 64)
        #expect(missing.stderr.contains("no --server given for account default (no config file at \(h.dir)/config/wdsync/config"), "\(missing.stderr)")
        let noFile = try h.run(["--once", "work"])
        #expect(noFile.status == 64)
        #expect(noFile.stderr.contains("account work needs a config file"), "\(noFile.stderr)")

        _ = try Self.writeDefaultConfig(h, """
        server = \(h.server.baseURL)
        user = demo
        password-file = \(h.passwordFile)
        [account a]
        maildir = \(h.dir)/a/mail
        db = \(h.dir)/a/cache.sqlite
        [account b]
        maildir = \(h.dir)/b/mail
        db = \(h.dir)/b/cache.sqlite
        """)
        let both = try h.run(["--once", "--maildir", h.maildir])
        #expect(both.status == 64)
        #expect(both.stderr.contains("--maildir on the command line would apply to all 2 accounts"), "\(both.stderr)")
        let one = try h.run(["--once", "b", "--maildir", h.maildir, "--db", h.db])
        #expect(one.status == 0, "\(one.stderr)")
        try h.expectMirror()
        #expect(!FileManager.default.fileExists(atPath: h.dir + "/a"))
    }
}

// A private dovecot (no system configuration) serving the same messages over IMAP on loopback,
// and the mbsync configuration that pulls them.
#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// Finds an executable: an explicit path, or a name looked up in PATH (+ sbin directories).
func findExecutable(_ nameOrPath: String) -> String? {
    if nameOrPath.contains("/") {
        return access(nameOrPath, X_OK) == 0 ? nameOrPath : nil
    }
    let path = (ProcessInfo.processInfo.environment["PATH"] ?? "") + ":/usr/local/sbin:/usr/sbin:/sbin:/usr/bin:/bin"
    for dir in path.split(separator: ":") {
        let p = "\(dir)/\(nameOrPath)"
        if access(p, X_OK) == 0 { return p }
    }
    return nil
}

func freeLoopbackPort() throws -> UInt16 {
    let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard s >= 0 else { throw BenchError("socket failed") }
    defer { close(s) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = 0
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let rc = withUnsafeMutablePointer(to: &addr) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sp -> Int32 in
            guard bind(s, sp, len) == 0 else { return -1 }
            return getsockname(s, sp, &len)
        }
    }
    guard rc == 0 else { throw BenchError("bind failed") }
    return UInt16(bigEndian: addr.sin_port)
}

func canConnect(port: UInt16) -> Bool {
    let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard s >= 0 else { return false }
    defer { close(s) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = port.bigEndian
    return withUnsafePointer(to: &addr) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
        }
    }
}

/// Maildir info suffix for the flags, in Maildir's alphabetical order.
func maildirFlags(draft: Bool, flagged: Bool, forwarded: Bool, answered: Bool, seen: Bool, deleted: Bool) -> String {
    var s = ""
    if draft { s += "D" }
    if flagged { s += "F" }
    if forwarded { s += "P" }
    if answered { s += "R" }
    if seen { s += "S" }
    if deleted { s += "T" }
    return s
}

final class Dovecot {
    let dir: String
    let binary: String
    let doveadm: String?
    let port: UInt16
    var mailRoot: String { dir + "/mail" }
    var config: String { dir + "/dovecot.conf" }
    private(set) var running = false

    init(binary: String, dir: String) throws {
        self.binary = binary
        self.doveadm = findExecutable("doveadm")
        self.dir = dir
        self.port = try freeLoopbackPort()
    }

    /// Dovecot refuses mail access as root, so the mail store belongs to the `mail` user (uid 8
    /// on Debian); the master runs as root with private base/state directories.
    /// `fsync: false` (`mail_fsync = never`): for comparisons with the in-process simulator,
    /// which keeps messages in memory.
    func writeConfig(fsync: Bool = true) throws {
        for d in ["run", "state", "log", "home", "mail"] { try makeDirs(dir + "/" + d) }
        let conf = """
        # Private dovecot for wdsync-bench. No system configuration is read.
        instance_name = wdsync-bench-\(port)
        base_dir = \(dir)/run
        state_dir = \(dir)/state
        log_path = \(dir)/log/dovecot.log
        protocols = imap
        \(fsync ? "" : "mail_fsync = never")
        listen = 127.0.0.1
        ssl = no
        disable_plaintext_auth = no
        auth_mechanisms = plain login
        first_valid_uid = 1
        default_login_user = dovenull
        default_internal_user = dovecot
        mail_location = maildir:\(dir)/mail:LAYOUT=fs:INBOX=\(dir)/mail/INBOX
        passdb {
          driver = static
          args = password=demo
        }
        userdb {
          driver = static
          args = uid=mail gid=mail home=\(dir)/home
        }
        service imap-login {
          inet_listener imap {
            address = 127.0.0.1
            port = \(port)
          }
          inet_listener imaps {
            port = 0
          }
        }
        service imap {
          process_limit = 16
        }

        """
        try writeFile(config, Array(conf.utf8))
    }

    /// Writes each message as a file in the dovecot Maildir (flags in the name) and hands the
    /// tree to the mail user.
    func preDeliver(_ boxes: [(folder: String, messages: [(raw: [UInt8], flags: String, idate: Date)])]) throws {
        var n = 0
        for box in boxes {
            let base = mailRoot + "/" + box.folder
            for sub in ["cur", "new", "tmp"] { try makeDirs(base + "/" + sub) }
            for m in box.messages {
                n += 1
                let t = Int(m.idate.timeIntervalSince1970)
                let path = "\(base)/cur/\(t).M\(n)P1.wdsync-bench,S=\(m.raw.count):2,\(m.flags)"
                try writeFile(path, m.raw, mode: 0o600)
                var tv = [timespec(tv_sec: t, tv_nsec: 0), timespec(tv_sec: t, tv_nsec: 0)]
                _ = utimensat(AT_FDCWD, path, &tv, 0)
            }
        }
        try runQuiet(["/bin/chown", "-R", "mail:mail", mailRoot, dir + "/home"])
    }

    func start() throws {
        let r = try runQuiet([binary, "-c", config])
        guard r.status == 0 else { throw BenchError("dovecot failed to start: \(r.output)") }
        running = true
        cleanup.setDovecot([binary, "-c", config, "stop"])
        let deadline = monotonicNs() + 10_000_000_000
        while !canConnect(port: port) {
            if monotonicNs() > deadline { throw BenchError("dovecot does not listen on \(port); see \(dir)/log/dovecot.log") }
            usleep(50_000)
        }
    }

    /// Builds dovecot's indexes so that the timed run does not pay for them.
    func index() {
        guard let doveadm else { return }
        _ = try? runQuiet([doveadm, "-c", config, "force-resync", "-u", "demo", "*"])
    }

    func stop() {
        guard running else { return }
        _ = try? runQuiet([binary, "-c", config, "stop"])
        running = false
        cleanup.setDovecot(nil)
    }
}

func mbsyncConfig(port: UInt16, maildir: String) -> String {
    """
    # mbsync configuration written by wdsync-bench
    FSync yes

    IMAPAccount bench
    Host 127.0.0.1
    Port \(port)
    User demo
    Pass demo
    SSLType None
    AuthMechs PLAIN LOGIN

    IMAPStore bench-remote
    Account bench

    MaildirStore bench-local
    Path \(maildir)/
    Inbox \(maildir)/INBOX
    SubFolders Verbatim

    Channel bench
    Far :bench-remote:
    Near :bench-local:
    Patterns *
    Sync Pull
    Create Near
    SyncState *

    """
}

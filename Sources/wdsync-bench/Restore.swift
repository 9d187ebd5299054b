// Restore (`--only restore`): a backup put back on a server, wdsync --restore next to mbsync
// pushing the same Maildir into a private dovecot.
#if canImport(Glibc)
import Glibc
#endif
import Foundation
import WildDuckSim

extension Bench {
    /// One round each, in one run: a generated account backed up by `wdsync --once` (untimed),
    /// then that Maildir and cache restored by `wdsync --restore` into an empty simulator account,
    /// and a copy of the same Maildir pushed by mbsync into an empty dovecot (the copy, because
    /// mbsync writes its sync state into the Maildir).
    func restore(wdsync: String) throws {
        eprint("restore: \(o.messages) messages\n")
        let dir = work + "/restore"
        try makeDirs(dir)
        guard findExecutable(wdsync) != nil else {
            var r = Row("restore", "wdsync --restore"); r.status = "not built (\(wdsync))"; rows.append(r)
            return
        }
        let (account, _) = try makeAccount(messages: o.messages, mailboxes: o.mailboxes, seed: o.seed + 21)
        let source = SimServer(account: account)
        try source.start()
        defer { source.stop() }
        let backup = dir + "/backup", backupDB = dir + "/backup.sqlite"
        let prepared = try measure(try wdsyncArgs(wdsync, server: source, maildir: backup, db: backupDB, once: true), name: "restore-backup")
        guard prepared.ok else { throw BenchError("the backup for the restore benchmark failed: \(lastLine("restore-backup") ?? "")") }
        let files = snapshot(backup).filter { k, _ in
            let parts = k.split(separator: "/")
            return parts.count >= 2 && (parts[parts.count - 2] == "cur" || parts[parts.count - 2] == "new")
        }
        // Empty messages: WildDuck refuses them, and the restore lists them instead.
        let count = files.values.filter { $0.size > 0 }.count
        let bytes = files.values.reduce(0) { $0 + Int($1.size) }
        notes.append("restore corpus: the Maildir of a wdsync --once of \(count) generated messages (\(String(format: "%.1f", Double(bytes) / 1e6)) MB, \(o.mailboxes) mailboxes); wdsync --restore uploads it into an empty account of the in-process simulator with its default 4 connections, mbsync (Sync Push, Create Far) into an empty private dovecot told not to fsync (mail_fsync = never: the simulator keeps messages in memory; dovecot still writes each one to its Maildir and indexes). One round each.")

        // wdsync --restore into an empty account.
        let target = SimAccount(username: "demo", password: "demo")
        let server = SimServer(account: target)
        try server.start()
        defer { server.stop() }
        var args = try wdsyncArgs(wdsync, server: server, maildir: backup, db: backupDB, once: false)
        args.insert("--restore", at: 1)
        settleDisk()
        let r = try measure(args, name: "wdsync-restore")
        var row = Row("restore", "wdsync --restore")
        row.fill(r, messages: count, bytes: bytes)
        row.requests = server.stats().totalRequests
        let restored = target.mailboxes().reduce(0) { $0 + target.messages(mailboxId: $1.id).count }
        if row.status == "ok" && restored != count {
            row.status = "incomplete"
            row.note = "\(restored) of \(count) messages on the server"
        }
        if !r.ok { row.note = lastLine("wdsync-restore") }
        rows.append(row)

        // mbsync pushing a copy of the same Maildir into an empty dovecot.
        var mb = Row("restore", "mbsync -> dovecot")
        guard let mbsync = findExecutable(o.mbsync) else { mb.status = "not installed (apt-get install isync)"; rows.append(mb); return }
        guard let dovecotBin = findExecutable(o.dovecot) else { mb.status = "not installed (apt-get install dovecot-imapd)"; rows.append(mb); return }
        let copy = dir + "/mbsync-maildir"
        _ = try runQuiet(["/bin/cp", "-a", backup, copy])
        let d = try Dovecot(binary: dovecotBin, dir: dir + "/dovecot")
        try d.writeConfig(fsync: false)
        try d.preDeliver([("INBOX", [])])
        try d.start()
        defer { d.stop() }
        let rc = dir + "/mbsyncrc-push"
        try writeFile(rc, Array(mbsyncPushConfig(port: d.port, maildir: copy).utf8), mode: 0o600)
        settleDisk()
        let m = try measure([mbsync, "-c", rc, "-a", "-q"], name: "mbsync-push")
        mb.fill(m, messages: count, bytes: bytes)
        let pushed = countMaildirMessages(d.mailRoot)
        if mb.status == "ok" && pushed < count {
            mb.status = "incomplete"
            mb.note = "\(pushed) of \(count) messages in dovecot"
        }
        if !m.ok { mb.note = lastLine("mbsync-push") }
        rows.append(mb)
        if row.status == "ok", mb.status == "ok", let w = row.msgPerSecond, let b = mb.msgPerSecond, b > 0 {
            ratios["restore.wdsync/mbsync"] = w / b
            targets.append(Target(name: "restore vs mbsync push", goal: "wdsync --restore msg/s >= mbsync pushing into dovecot",
                                  measured: String(format: "%.2fx", w / b), met: w >= b))
        }
        removeTree(copy)
    }
}

/// mbsync pushing a Maildir (verbatim folders, INBOX a folder like the others) into the server.
func mbsyncPushConfig(port: UInt16, maildir: String) -> String {
    mbsyncConfig(port: port, maildir: maildir)
        .replacingOccurrences(of: "Sync Pull\nCreate Near", with: "Sync Push\nCreate Far")
}

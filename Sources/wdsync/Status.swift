#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Store
import Sync

/// `wdsync --status [--json]`: what each account's cache says, read without the network and
/// without the lock (a read-only connection; WAL lets it read while a daemon writes).
func showStatus(_ accounts: [AccountConfig], json: Bool) -> ExitCode {
    var result = ExitCode.ok
    var documents: [[String: Any]] = []
    var text = ""
    for account in accounts {
        var doc: [String: Any] = ["account": account.name, "cache": account.db, "maildir": account.maildir]
        do {
            try status(of: account, into: &doc)
        } catch {
            let (code, message) = classify(error)
            doc["unreadable"] = message
            if result == .ok { result = code }
        }
        documents.append(doc)
        text += render(doc)
    }
    if json {
        let root: [String: Any] = ["accounts": documents]
        if let data = try? JSONSerialization.data(withJSONObject: root, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]) {
            print(String(decoding: data, as: UTF8.self))
        }
    } else {
        print(text, terminator: "")
    }
    return result
}

private func iso(_ ms: Int) -> String {
    ISO8601DateFormatter.string(from: Date(timeIntervalSince1970: Double(ms) / 1000), timeZone: TimeZone(identifier: "UTC") ?? .current,
                                formatOptions: [.withInternetDateTime])
}

private func counts(_ c: ChangeCounts, bytes: Bool) -> [String: Any] {
    var d: [String: Any] = ["new": c.new, "changed": c.changed, "removed": c.removed]
    if bytes { d["bytes"] = c.bytes }
    return d
}

/// Fills `doc` with the account's status (the JSON document's keys; `render` prints them).
private func status(of account: AccountConfig, into doc: inout [String: Any]) throws {
    guard FileManager.default.fileExists(atPath: account.db) else {
        doc["synced"] = false
        return
    }
    let store = try Store(readOnlyPath: account.db)
    if let record = try store.account() {
        doc["server"] = record.server
        doc["user"] = record.username
        doc["maildir"] = record.maildir
    }
    let c = try store.counts()
    doc["mailboxes"] = c.mailboxes
    doc["messages"] = c.messages
    doc["bytes"] = c.bytes
    doc["pendingDownloads"] = c.pendingDownloads
    doc["pendingDownloadBytes"] = c.pendingBytes
    doc["pendingPushes"] = c.pendingPushes.map { $0 as Any } ?? NSNull()
    // What the mass-delete breaker holds back, and how to decide about it.
    doc["held"] = try store.heldChanges().map { h -> [String: Any] in
        ["mailbox": h.path, "deletes": h.deletes, "movesToTrash": h.moves, "deletedFlags": h.flags]
    }
    let status = try store.status() ?? StatusRecord()
    doc["synced"] = status.syncAt != nil
    if let at = status.syncAt {
        var sync = counts(status.sync, bytes: true)
        sync["at"] = iso(at)
        sync["seconds"] = Double(status.syncMilliseconds ?? 0) / 1000
        doc["lastSync"] = sync
    } else {
        doc["lastSync"] = NSNull()
    }
    if let message = status.error, let at = status.errorAt {
        doc["lastError"] = ["at": iso(at), "message": message]
    } else {
        doc["lastError"] = NSNull()
    }
    // Who holds the account's lock: the daemon that recorded itself, or a `--once`.
    let holder = lockHolder(account.db + ".lock")
    if let pid = status.daemonPid, holder.map({ $0 == pid }) ?? (kill(pid_t(pid), 0) == 0) {
        var daemon: [String: Any] = ["pid": pid]
        if let since = status.daemonStartedAt { daemon["since"] = iso(since) }
        daemon["transport"] = status.transport ?? NSNull()
        daemon["transportSince"] = status.transportSince.map { iso($0) as Any } ?? NSNull()
        if let at = status.batchAt {
            var batch = counts(status.batch, bytes: false)
            batch["at"] = iso(at)
            batch["events"] = status.batchEvents ?? 0
            daemon["lastBatch"] = batch
        } else {
            daemon["lastBatch"] = NSNull()
        }
        doc["daemon"] = daemon
    } else {
        doc["daemon"] = NSNull()
        if let holder { doc["syncingPid"] = holder }
    }
}

/// The pid holding the `flock` on `path`, from /proc/locks (nil: none, or not Linux). Reading it
/// takes no lock, so a `--once` starting at the same moment is not disturbed.
func lockHolder(_ path: String) -> Int? {
    var st = stat()
    guard stat(path, &st) == 0, let text = try? String(contentsOfFile: "/proc/locks", encoding: .utf8) else { return nil }
    let dev = UInt64(st.st_dev)
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & ~0xfff)
    let minor = (dev & 0xff) | ((dev >> 12) & ~0xff)
    for line in text.split(separator: "\n") {
        // "1: FLOCK  ADVISORY  WRITE 1234 08:01:123456 0 EOF"; waiters have "->" after the number.
        let fields = line.split(separator: " ")
        guard fields.count >= 6, fields[1] == "FLOCK" else { continue }
        let id = fields[5].split(separator: ":")
        guard id.count == 3, UInt64(id[2]) == UInt64(st.st_ino),
              UInt64(id[0], radix: 16) == major, UInt64(id[1], radix: 16) == minor else { continue }
        return Int(fields[4])
    }
    return nil
}

private func when(_ isoText: Any?) -> String {
    guard let text = isoText as? String,
          let date = ISO8601DateFormatter().date(from: text) else { return "?" }
    let formatter = DateFormatter()
    formatter.dateFormat = "yyyy-MM-dd HH:mm:ss"
    let ago = Int(Date().timeIntervalSince(date))
    let relative = ago < 60 ? "\(max(ago, 0)) s ago" : ago < 3600 ? "\(ago / 60) min ago"
        : ago < 86400 ? "\(ago / 3600) h \(ago % 3600 / 60) min ago" : "\(ago / 86400) days ago"
    return "\(formatter.string(from: date)) (\(relative))"
}

private func megabytes(_ bytes: Any?) -> String {
    String(format: "%.1f MB", Double(bytes as? Int ?? 0) / 1_000_000)
}

private func changes(_ d: [String: Any]) -> String {
    "\(d["new"] as? Int ?? 0) new, \(d["changed"] as? Int ?? 0) changed, \(d["removed"] as? Int ?? 0) removed"
}

/// The human-readable form of one account's document.
private func render(_ doc: [String: Any]) -> String {
    func line(_ label: String, _ value: String) -> String {
        "  " + (label + ":").padding(toLength: 13, withPad: " ", startingAt: 0) + value + "\n"
    }
    var out = "account \(doc["account"] as? String ?? "")"
    if let user = doc["user"] as? String, let server = doc["server"] as? String { out += " (\(user) at \(server))" }
    out += "\n"
    if let unreadable = doc["unreadable"] as? String { return out + line("error", unreadable) }
    guard doc["mailboxes"] != nil else {
        return out + line("last sync", "never (no cache at \(doc["cache"] as? String ?? ""))")
    }
    if let sync = doc["lastSync"] as? [String: Any] {
        out += line("last sync", "\(when(sync["at"])), took \(String(format: "%.1f", sync["seconds"] as? Double ?? 0)) s: "
                    + changes(sync) + " (\(megabytes(sync["bytes"])) downloaded)")
    } else {
        out += line("last sync", "none completed")
    }
    out += line("cache", "\(doc["mailboxes"] as? Int ?? 0) mailboxes, \(doc["messages"] as? Int ?? 0) messages, \(megabytes(doc["bytes"]))")
    var pending = "\(doc["pendingDownloads"] as? Int ?? 0) downloads (\(megabytes(doc["pendingDownloadBytes"])))"
    if let pushes = doc["pendingPushes"] as? Int { pending += ", \(pushes) pushes" }
    out += line("pending", pending)
    for held in doc["held"] as? [[String: Any]] ?? [] {
        let h = HeldChanges(mailboxId: "", path: held["mailbox"] as? String ?? "", deletes: held["deletes"] as? Int ?? 0,
                            moves: held["movesToTrash"] as? Int ?? 0, flags: held["deletedFlags"] as? Int ?? 0)
        out += line("held", "\(h.description), by the mass-delete breaker (nothing sent)")
    }
    if !(doc["held"] as? [Any] ?? []).isEmpty {
        out += String(repeating: " ", count: 15) + "send them: wdsync --allow-mass-delete; undo them: wdsync --discard-held\n"
    }
    if let error = doc["lastError"] as? [String: Any] {
        out += line("last error", "\(when(error["at"])): \(error["message"] as? String ?? "")")
    }
    if let daemon = doc["daemon"] as? [String: Any] {
        var text = "running (pid \(daemon["pid"] as? Int ?? 0)) since \(when(daemon["since"]))"
        if let transport = daemon["transport"] as? String { text += "; \(transport) since \(when(daemon["transportSince"]))" }
        out += line("daemon", text)
        if let batch = daemon["lastBatch"] as? [String: Any] {
            out += line("last batch", "\(when(batch["at"])): \(batch["events"] as? Int ?? 0) updates, " + changes(batch))
        }
    } else if let pid = doc["syncingPid"] as? Int {
        out += line("running", "a sync is under way (pid \(pid))")
    } else {
        out += line("daemon", "not running")
    }
    return out
}

/// `--dry-run`: what a sync of each account would do. The pull runs against a copy of the cache
/// (taken with SQLite's backup API from a read-only connection: no lock, a running daemon is not
/// disturbed) in a private temporary folder that is removed afterwards; the copy is told to push
/// nothing and the exporter is only asked what it would do.
func dryRun(_ accounts: [AccountConfig], level: LogLevel) -> ExitCode {
    var result = ExitCode.ok
    for account in accounts {
        let log = StderrLog(level: level, timestamps: level >= .verbose, account: accounts.count > 1 ? account.name : nil)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("wdsync-dry-run-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        do {
            do {
                try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
            } catch {
                throw SyncError.localIO("cannot create the temporary folder \(dir): \((error as NSError).localizedDescription)")
            }
            var copy = account
            copy.db = dir + "/cache.sqlite"
            copy.pullOnly = true
            copy.dryRun = true
            if FileManager.default.fileExists(atPath: account.db) {
                try Database(path: account.db, readOnly: true).backup(to: copy.db)
            }
            let report = try AccountSync(config: copy, log: log).dryRun()
            print(render(report, account: accounts.count > 1 ? account.name : nil, verbose: level >= .verbose), terminator: "")
        } catch {
            let (code, message) = classify(error)
            log.log(.error, message)
            if result == .ok { result = code }
        }
    }
    return result
}

private func render(_ r: DryRunReport, account: String?, verbose: Bool) -> String {
    var out = (account.map { "account \($0): " } ?? "") + "dry run, nothing was written\n"
    let count = r.downloads.values.reduce(0) { $0 + $1.count }
    let bytes = r.downloads.values.reduce(0) { $0 + $1.bytes }
    out += "  download \(count) messages (\(String(format: "%.1f", Double(bytes) / 1_000_000)) MB)"
    if !r.downloads.isEmpty {
        out += ": " + r.downloads.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value.count)" }.joined(separator: ", ")
    }
    out += "\n"
    let created = r.folders.filter { $0.from == nil }.count
    out += "  rename \(r.renames.count) files and \(r.folders.count - created) folders, create \(created) folders\n"
    out += "  remove \(r.removals.count) files and \(r.folderRemovals.count) folders\n"
    let kinds = ["flags", "move", "delete", "upload"]
    out += "  push " + kinds.map { "\(r.pushes[$0] ?? 0) \($0 == "flags" ? "flag changes" : $0 + "s")" }.joined(separator: ", ") + "\n"
    if verbose {
        for (from, to) in r.folders { out += "    folder \(from ?? "(new)") → \(to)\n" }
        for (from, to) in r.renames { out += "    rename \(from) → \(to)\n" }
        for file in r.removals { out += "    remove \(file)\n" }
        for folder in r.folderRemovals { out += "    remove folder \(folder)\n" }
    }
    return out
}

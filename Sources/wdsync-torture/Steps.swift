#if canImport(Glibc)
import Glibc
#endif
import Foundation
import WildDuckSim

/// The operations, done the way the real programs do them. Every choice comes from the run's
/// generator; targets are chosen by Message-ID (sorted), so a seed picks the same messages as
/// long as wdsync's timing leaves the same ones in place.
extension TortureRun {
    func perform(_ kind: OpKind) throws -> String {
        switch kind {
        case .once:
            let status = try runWdsync(extra: [], killAfterMs: nil)
            if status == 66 { oracle.breakerHeld = true }
            return "exit \(status.map(String.init) ?? "?")"
        case .onceKill9:
            // Mostly within the first 150 ms (a release --once of a small account is that
            // short), sometimes later (a debug build, a loaded machine).
            let ms = rng.chance(70) ? rng.int(0...150) : rng.int(0...900)
            let status = try runWdsync(extra: [], killAfterMs: ms)
            if status == 66 { oracle.breakerHeld = true }
            return "kill -9 after \(ms) ms: " + (status.map { "had exited \($0)" } ?? "killed")
        case .daemonStart:
            try checkDaemon()
            guard daemon == nil else { return "already running" }
            try startDaemon()
            return "started"
        case .daemonStop:
            guard daemon != nil else { return "none running" }
            try stopDaemon(kill9: false)
            return "stopped"
        case .daemonStopEarly:
            try stopDaemon(kill9: false)
            try startDaemon()
            let ms = rng.int(0...60)
            usleep(UInt32(ms) * 1000)
            try stopDaemon(kill9: false)
            return "started, SIGTERM after \(ms) ms, stopped"
        case .daemonKill9:
            guard daemon != nil else { return "none running" }
            let ms = rng.int(0...500)
            usleep(UInt32(ms) * 1000)
            try stopDaemon(kill9: true)
            return "killed after \(ms) ms"
        case .pause:
            let ms = rng.int(20...600)
            usleep(UInt32(ms) * 1000)
            return "\(ms) ms"
        case .muttFlag: return try flag(notmuch: false)
        case .notmuchTag: return try flag(notmuch: true)
        case .rm:
            guard let f = pickLocal(), let id = f.id else { return "nothing to delete" }
            guard unlink(maildir + "/" + f.path) == 0 else { return "\(f.path) vanished first" }
            oracle.personDeleted(id)
            return "rm \(f.path)"
        case .rmMany:
            let byFolder = Dictionary(grouping: pickable(), by: \.folder)
            guard let folder = rng.pick(byFolder.keys.sorted()), let files = byFolder[folder] else { return "nothing to delete" }
            var n = 0
            for f in files {
                guard let id = f.id, unlink(maildir + "/" + f.path) == 0 else { continue }
                oracle.personDeleted(id)
                n += 1
            }
            return "rm of all \(n) files of \(folder)"
        case .mvFolder, .mvTrash:
            guard let f = pickLocal(), let id = f.id else { return "nothing to move" }
            let target = kind == .mvTrash ? "Trash" : rng.pick(Self.folders.filter { $0 != f.folder }) ?? "INBOX"
            guard target != f.folder else { return "already in Trash" }
            let to = "\(target)/\(f.sub)/\(f.name)"
            guard rename(maildir + "/" + f.path, maildir + "/" + to) == 0 else { return "\(f.path) vanished first" }
            oracle.personMoved(id, to: target)
            return "mv \(f.path) \(to)"
        case .muttSave, .neomuttSave:
            return try save(rewrite: kind == .neomuttSave)
        case .muttSync:
            guard !pendingUnlinks.isEmpty else { return "no save pending" }
            return try muttSync(rng.below(pendingUnlinks.count))
        case .cpInPlace:
            return try writeNew(chunked: true)
        case .muttRecord:
            return try writeNew(chunked: false)
        case .restoreMaildir:
            guard let backup = rng.pick(snapshots) else { return "no backup yet" }
            try shell("/bin/cp", ["-a", backup + "/mail", maildir + ".new"])
            try replaceRoot(with: maildir + ".new")
            forgetIntents()
            return "cp -a \(backup.split(separator: "/").last ?? "")/mail over the Maildir"
        case .restoreCache:
            guard let backup = rng.pick(snapshots) else { return "no backup yet" }
            try stopDaemon(kill9: false)
            for suffix in ["", "-wal", "-shm"] {
                try? FileManager.default.removeItem(atPath: db + suffix)
                if FileManager.default.fileExists(atPath: backup + "/cache.sqlite" + suffix) {
                    try shell("/bin/cp", ["-a", backup + "/cache.sqlite" + suffix, db + suffix])
                }
            }
            forgetIntents(maildirReplaced: false)
            return "the cache restored from \(backup.split(separator: "/").last ?? "")"
        case .emptyRoot:
            try FileManager.default.createDirectory(atPath: maildir + ".new", withIntermediateDirectories: false)
            try replaceRoot(with: maildir + ".new")
            forgetIntents()
            return "the Maildir root is now an empty directory"
        case .serverFlag:
            guard let s = rng.pick(serverMessages()) else { return "no message" }
            let which = rng.below(3)
            try account.setFlags(mailboxId: s.mailboxId, uid: s.message.uid,
                                 seen: which == 0 ? !s.message.seen : nil,
                                 flagged: which == 1 ? !s.message.flagged : nil,
                                 deleted: which == 2 ? !s.message.deleted : nil)
            oracle.conflict(s.id)
            return "\(s.id) in \(s.mailbox): \(["seen", "flagged", "deleted"][which]) toggled"
        case .serverMove:
            guard let s = rng.pick(serverMessages()),
                  let target = rng.pick(Self.folders.filter { $0 != s.mailbox }),
                  let targetId = account.mailboxId(path: target) else { return "no message" }
            _ = try account.move(mailboxId: s.mailboxId, uid: s.message.uid, to: targetId)
            oracle.conflict(s.id)
            return "\(s.id) moved \(s.mailbox) -> \(target)"
        case .serverDelete:
            guard let s = rng.pick(serverMessages()) else { return "no message" }
            try account.expunge(mailboxId: s.mailboxId, uid: s.message.uid)
            oracle.alive.remove(s.id)
            oracle.conflict(s.id)
            return "\(s.id) deleted from \(s.mailbox)"
        case .serverDeliver:
            let id = newId("d")
            let target = rng.pick(["INBOX", "INBOX", "Work"]) ?? "INBOX"
            guard let mailbox = account.mailboxId(path: target) else { return "no \(target)" }
            _ = try account.deliver(message(id: id), to: mailbox, seen: rng.chance(20))
            oracle.alive.insert(id)
            return "\(id) delivered to \(target)"
        case .gatewayError:
            // A gateway's 502 before the request reached WildDuck, or its 502/504 page after
            // WildDuck carried a write out (nginx's proxy_read_timeout).
            let route = rng.pick(["messages", "messages", "message.eml", "mailboxes"]) ?? "messages"
            let (count, after) = (rng.int(1...3), rng.int(0...4))
            if route == "messages" && rng.chance(50) {
                let status = rng.pick([502, 504]) ?? 502
                server.injectFault(.gatewayAfterWrite(status: status), on: route, count: count, after: after)
                return "\(status) page after the next \(count) writes (after \(after)) were carried out"
            }
            server.injectFault(.status(502, body: "{\"error\":\"Bad Gateway\"}"), on: route, count: count, after: after)
            return "502 for \(count) \(route) requests after \(after)"
        case .lostReply:
            let after = rng.int(0...3)
            if rng.chance(60) {
                server.injectFault(.lostReplyAfterWrite, on: "messages", count: 1, after: after)
                return "the reply to a write after \(after) is lost (the write is carried out)"
            }
            server.injectFault(.closeMidBody(reset: true), on: "messages", count: 1, after: after)
            return "the reply to a messages request after \(after) is cut off"
        case .dropConnection:
            let route = rng.pick(["messages", "message.eml", "mailboxes"]) ?? "messages"
            let after = rng.int(0...4)
            server.injectFault(.dropConnection, on: route, count: 1, after: after)
            return "a \(route) request after \(after) gets no answer"
        case .truncatedDownload:
            let fault = rng.pick([SimFault.truncateBody, .closeMidBody(reset: false), .closeDelimited(truncated: true)]) ?? .truncateBody
            let after = rng.int(0...6)
            server.injectFault(fault, on: "message.eml", count: 1, after: after)
            return "a download after \(after) is cut off (\(fault))"
        }
    }

    /// The Maildir was swapped under wdsync: what the person did since the last quiet point may
    /// or may not be in it, so only the safety invariants are expected from here on.
    /// `maildirReplaced`: mutt notices its folders changed under it and reloads them, so its
    /// pending unlinks are gone too (after a cache restore it still makes them).
    func forgetIntents(maildirReplaced: Bool = true) {
        oracle.intents.removeAll()
        oracle.restored = true
        if maildirReplaced { pendingUnlinks.removeAll() }
    }

    /// Puts `directory` where the Maildir root is, the old root moved aside and removed. A
    /// daemon may recreate the root between the two renames; then that one is moved aside too.
    func replaceRoot(with directory: String) throws {
        for attempt in 0..<10 {
            let aside = "\(maildir).old\(attempt)"
            _ = rename(maildir, aside)
            let moved = rename(directory, maildir) == 0
            try? FileManager.default.removeItem(atPath: aside)
            if moved { return }
        }
        throw fail("harness", "could not replace the Maildir root")
    }

    /// Files of messages the person may act on: alive, and not half-way through a mutt save.
    func pickable() -> [LocalFile] {
        let pending = Set(pendingUnlinks.map(\.id))
        return localFiles().filter { f in f.id.map { oracle.alive.contains($0) && !pending.contains($0) } ?? false }
    }

    func pickLocal() -> LocalFile? {
        let files = pickable()
        let ids = Set(files.compactMap(\.id)).sorted()
        guard let id = rng.pick(ids) else { return nil }
        return files.first { $0.id == id }
    }

    /// mutt toggles one flag; notmuch's tag sync sets S and F from the tags at once. Either way
    /// the file is renamed into cur/ with the letters in ASCII order.
    func flag(notmuch: Bool) throws -> String {
        guard let f = pickLocal(), let id = f.id else { return "nothing to flag" }
        var letters = Set(f.letters)
        var changes: [Character: Bool] = [:]
        if notmuch {
            for flag in ["S", "F"] as [Character] {
                let value = rng.chance(50)
                if letters.contains(flag) != value { changes[flag] = value }
                if value { letters.insert(flag) } else { letters.remove(flag) }
            }
        } else {
            let flag: Character = rng.pick(["S", "S", "S", "F", "F", "T"]) ?? "S"
            let value = !letters.contains(flag)
            changes[flag] = value
            if value { letters.insert(flag) } else { letters.remove(flag) }
        }
        let to = "\(f.folder)/cur/\(f.unique):2,\(String(letters.sorted()))"
        guard to != f.path else { return "\(f.path) unchanged" }
        guard rename(maildir + "/" + f.path, maildir + "/" + to) == 0 else { return "\(f.path) vanished first" }
        oracle.personFlagged(id, changes)
        return "\(f.path) -> \(to)"
    }

    /// mutt's save: the copy is written (tmp/, then renamed into cur/) under a new name at once;
    /// the original is unlinked only when the folder is synced (`muttSync`). neomutt rewrites
    /// the message on the way: LF line endings and its own status header.
    func save(rewrite: Bool) throws -> String {
        guard let f = pickLocal(), let id = f.id, let target = rng.pick(Self.folders.filter({ $0 != f.folder })),
              var bytes = FileManager.default.contents(atPath: maildir + "/" + f.path).map(Array.init) else { return "nothing to save" }
        if rewrite {
            var text = String(decoding: bytes, as: UTF8.self).replacingOccurrences(of: "\r\n", with: "\n")
            if let end = text.range(of: "\n\n") { text.replaceSubrange(end, with: "\nStatus: RO\n\n") }
            bytes = Array(text.utf8)
        }
        counter += 1
        let name = "\(1_750_000_000 + counter).M\(rng.int(1...999_999))P\(rng.int(100...99_999)).torture"
        let tmp = "\(maildir)/\(target)/tmp/\(name)"
        let to = "\(target)/cur/\(name):2,\(f.letters)"
        guard FileManager.default.createFile(atPath: tmp, contents: Data(bytes), attributes: [.posixPermissions: 0o600]),
              rename(tmp, maildir + "/" + to) == 0 else { return "no \(target) folder to save into" }
        pendingUnlinks.append((id, f.folder, name))
        lastPersonWrite = Date()
        oracle.personMoved(id, to: target)
        return "\(rewrite ? "neomutt" : "mutt") saved \(f.path) as \(to)"
    }

    /// mutt syncs the folder of an earlier save: the original goes.
    func muttSync(_ index: Int) throws -> String {
        let (id, folder, copy) = pendingUnlinks.remove(at: index)
        // mutt deletes the message it saved; if another client moved it meanwhile and wdsync
        // followed, it is the same message in its new folder (else the copy would stay a copy).
        let others = localFiles().filter { $0.id == id && $0.unique != copy }
        let inPlace = others.filter { $0.folder == folder }
        let originals = inPlace.isEmpty ? others : inPlace
        for f in originals { unlink(maildir + "/" + f.path) }
        return "unlinked the original of \(id) in \(folder) (\(originals.count) file\(originals.count == 1 ? "" : "s"))"
    }

    /// A new message: `cp` straight into cur/, in a few chunks with pauses (what a copy of a
    /// larger file looks like to a scan), or mutt's record: complete in tmp/, then renamed.
    func writeNew(chunked: Bool) throws -> String {
        let id = newId("p")
        let folder = chunked ? (rng.pick(["INBOX", "Work", "Archive", "Drafts"]) ?? "INBOX") : "Sent Mail"
        let bytes = message(id: id, lineEnd: "\n")
        counter += 1
        let name = "\(1_750_000_000 + counter).M\(rng.int(1...999_999))P\(rng.int(100...99_999)).torture:2,S"
        let path = "\(folder)/cur/\(name)"
        if chunked {
            let chunks = rng.int(2...4)
            var pauses: [Int] = []
            for _ in 1..<chunks { pauses.append(rng.int(5...120)) }
            let fd = open(maildir + "/" + path, O_WRONLY | O_CREAT | O_EXCL, 0o600)
            guard fd >= 0 else { return "no \(folder) folder to write into" }
            let size = bytes.count / chunks
            for i in 0..<chunks {
                let end = i == chunks - 1 ? bytes.count : (i + 1) * size
                _ = bytes[i * size..<end].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                if i < chunks - 1 { usleep(UInt32(pauses[i]) * 1000) }
            }
            close(fd)
        } else {
            let tmp = "\(maildir)/\(folder)/tmp/\(name)"
            guard FileManager.default.createFile(atPath: tmp, contents: Data(bytes), attributes: [.posixPermissions: 0o600]),
                  rename(tmp, maildir + "/" + path) == 0 else { return "no \(folder) folder to write into" }
        }
        oracle.personCreated(id, in: folder)
        lastPersonWrite = Date()
        return "\(chunked ? "cp (in chunks)" : "mutt record") \(path)"
    }
}

import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
@testable import Maildir

@Suite("Delivery and file operations")
struct DeliveryTests {
    @Test("streamed delivery: bytes, hash, size, mode, mtime, placement", arguments: MaildirLayout.allCases)
    func delivery(layout: MaildirLayout) throws {
        let tmp = TempDir()
        let md = Maildir(root: tmp.path + "/mail", layout: layout)
        let folder = md.folderDirectory(for: "Work/Projects")
        // A body larger than the write buffer, fed in odd-sized chunks.
        var rng = SplitMix64(seed: 7)
        let body = (0..<(300 * 1024 + 17)).map { _ in UInt8.random(in: 0...255, using: &rng) }
        let unique = Maildir.uniqueName(time: 1_700_000_000, key: "abc123", host: "host")
        let pending = try md.beginDelivery(folder: folder, unique: unique)
        var offset = 0
        var sizes = [1, 4096, 200_000, 3, 131_072]
        while offset < body.count {
            let n = min(sizes.removeFirst(), body.count - offset)
            sizes.append(n + 1)
            try body[offset..<(offset + n)].withUnsafeBytes { try pending.write($0) }
            offset += n
        }
        let delivered = try pending.commit(flags: [], mtime: 1_600_000_000)
        #expect(delivered.relativePath == joinPath(folder, "new", unique + ":2,"))
        #expect(delivered.size == Int64(body.count))
        #expect(delivered.sha256 == sha256Hex(body))
        let path = md.absolutePath(delivered.relativePath)
        #expect(fileATime(path) == 1_600_000_000)  // before anything reads it
        #expect(readBytes(path) == body)
        #expect(fileMode(path) == 0o600)
        #expect(fileMTime(path) == 1_600_000_000)
        #expect(fileMode(md.absolutePath(folder)) == 0o700)
        #expect(fileMode(md.absolutePath(joinPath(folder, "cur"))) == 0o700)
        #expect(listing(md.absolutePath(joinPath(folder, "tmp"))).isEmpty)
        let check = try Maildir.sha256(file: path)
        #expect(check.hex == delivered.sha256 && check.size == delivered.size)
        if layout == .maildirPlusPlus {
            #expect(listing(md.absolutePath(folder)).contains("maildirfolder"))
        }
        // Seen mail goes to cur/.
        let seen = try body.withUnsafeBytes {
            try md.deliver(folder: folder, unique: "2.k.h", contents: $0, flags: [.seen, .replied], mtime: nil)
        }
        #expect(seen.relativePath == joinPath(folder, "cur", "2.k.h:2,RS"))
        try md.syncFolder(folder)
    }

    @Test("the recorded hash is SHA-256 (FIPS 180-2 test vectors)")
    func knownHashes() throws {
        let tmp = TempDir()
        let md = Maildir(root: tmp.path + "/mail", layout: .verbatim)
        let vectors = [("abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
                       ("", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")]
        for (i, (text, digest)) in vectors.enumerated() {
            let delivered = try Array(text.utf8).withUnsafeBytes {
                try md.deliver(folder: "INBOX", unique: "\(i).k.h", contents: $0, flags: [], mtime: nil)
            }
            #expect(delivered.sha256 == digest)
            #expect(try Maildir.sha256(file: md.absolutePath(delivered.relativePath)).hex == digest)
        }
        #expect(hex(SHA256Hasher.digest(Array("abc".utf8))) == vectors[0].1)
    }

    @Test("modes are 0600/0700 even with a permissive umask")
    func umaskIgnored() throws {
        let tmp = TempDir()
        let md = Maildir(root: tmp.path + "/m")
        // umask is process-wide; 022 is the common default and only removes group/other write.
        let old = umask(0o022)
        defer { umask(old) }
        let d = try [UInt8](repeating: 65, count: 10).withUnsafeBytes {
            try md.deliver(folder: "INBOX", unique: "1.a.h", contents: $0, flags: [], mtime: nil)
        }
        #expect(fileMode(md.absolutePath(d.relativePath)) == 0o600)
        #expect(fileMode(md.absolutePath("INBOX/new")) == 0o700)
        #expect(fileMode(md.root) == 0o700)
    }

    @Test("abort and dropping a delivery leave nothing behind")
    func abortLeavesNothing() throws {
        let tmp = TempDir()
        let md = Maildir(root: tmp.path + "/m")
        let p = try md.beginDelivery(folder: "INBOX", unique: "1.a.h")
        try p.write(message("x"))
        #expect(listing(md.absolutePath("INBOX/tmp")) == ["1.a.h"])
        p.abort()
        p.abort()
        #expect(throws: MaildirError.self) { try p.write([1]) }
        #expect(throws: MaildirError.self) { _ = try p.commit(flags: [], mtime: nil) }
        do {
            let q = try md.beginDelivery(folder: "INBOX", unique: "2.a.h")
            try q.write(message("y"))
        }
        for sub in ["tmp", "new", "cur"] { #expect(listing(md.absolutePath("INBOX/" + sub)).isEmpty) }
    }

    @Test("disk full while writing leaves nothing in tmp, new or cur")
    func diskFullSimulated() throws {
        let tmp = TempDir()
        // A write that accepts 1000 bytes, then short-writes, then fails with ENOSPC.
        final class Budget: @unchecked Sendable { var left = 1000 }  // used from this test only
        let budget = Budget()
        let io = FileIO(write: { fd, buffer, count in
            if budget.left == 0 { errno = ENOSPC; return -1 }
            let n = min(count, budget.left, 300)
            budget.left -= n
            return write(fd, buffer, n)
        })
        let md = Maildir(root: tmp.path + "/m", layout: .verbatim, io: io)
        let p = try md.beginDelivery(folder: "INBOX", unique: "1.a.h")
        try p.write([UInt8](repeating: 1, count: 500))
        var caught: MaildirError?
        do {
            try p.write([UInt8](repeating: 2, count: 200 * 1024))
            _ = try p.commit(flags: [.seen], mtime: nil)
        } catch {
            caught = error
        }
        guard case .diskFull(_, .writing) = caught else { Issue.record("expected diskFull, got \(String(describing: caught))"); return }
        #expect(caught?.description.contains("nothing was half-delivered") == true)
        #expect(caught?.description.contains("free some space") == true)
        for sub in ["tmp", "new", "cur"] { #expect(listing(md.absolutePath("INBOX/" + sub)).isEmpty) }
    }

    @Test("a failing publish step removes the temporary file")
    func publishFailure() throws {
        let tmp = TempDir()
        let md = Maildir(root: tmp.path + "/m")
        try md.ensureFolder("INBOX")
        // new/ replaced by a regular file: link() fails with ENOTDIR.
        #expect(rmdir(md.absolutePath("INBOX/new")) == 0)
        #expect(FileManager.default.createFile(atPath: md.absolutePath("INBOX/new"), contents: Data()))
        let p = try md.beginDelivery(folder: "INBOX", unique: "1.a.h")
        try p.write(message("x"))
        #expect(throws: MaildirError.notADirectory(path: md.absolutePath("INBOX/new/1.a.h:2,"))) {
            _ = try p.commit(flags: [], mtime: nil)
        }
        #expect(listing(md.absolutePath("INBOX/tmp")).isEmpty)
        #expect(listing(md.absolutePath("INBOX/cur")).isEmpty)
    }

    @Test("permission denied is reported and leaves nothing (skipped as root)")
    func permissionDenied() throws {
        guard getuid() != 0 else { return }  // root ignores directory permissions
        let tmp = TempDir()
        let md = Maildir(root: tmp.path + "/m")
        try md.ensureFolder("INBOX")
        #expect(chmod(md.absolutePath("INBOX/cur"), 0o500) == 0)
        defer { chmod(md.absolutePath("INBOX/cur"), 0o700) }
        let p = try md.beginDelivery(folder: "INBOX", unique: "1.a.h")
        try p.write(message("x"))
        #expect(throws: MaildirError.permissionDenied(path: md.absolutePath("INBOX/cur/1.a.h:2,S"), operation: .delivering)) {
            _ = try p.commit(flags: [.seen], mtime: nil)
        }
        #expect(listing(md.absolutePath("INBOX/tmp")).isEmpty)
    }

    @Test("an existing target is never overwritten")
    func noClobber() throws {
        let tmp = TempDir()
        let md = Maildir(root: tmp.path + "/m")
        let first = try message("one").withUnsafeBytes {
            try md.deliver(folder: "INBOX", unique: "1.a.h", contents: $0, flags: [], mtime: nil)
        }
        #expect(throws: MaildirError.alreadyExists(path: md.absolutePath(first.relativePath))) {
            try message("two").withUnsafeBytes {
                _ = try md.deliver(folder: "INBOX", unique: "1.a.h", contents: $0, flags: [], mtime: nil)
            }
        }
        #expect(readBytes(md.absolutePath(first.relativePath)) == message("one"))
        #expect(listing(md.absolutePath("INBOX/tmp")).isEmpty)
    }

    /// Whether the temp dir's file system takes one sync for a batch (Linux ≥ 5.8 on ext2/3/4,
    /// XFS, btrfs or tmpfs); elsewhere every sealed file is fsynced and there is no batch.
    static let batchSyncs = DeliveryBatch(maildir: Maildir(root: NSTemporaryDirectory())) != nil

    @Test("a batch: every body is durable before any is visible, by one sync for all",
          .enabled(if: batchSyncs, "the temp dir's file system keeps one fsync per file"))
    func batchPublish() throws {
        let tmp = TempDir()
        let root = tmp.path + "/m"
        final class Syncs: @unchecked Sendable { var count = 0; var visible: [String] = [] }  // this test only
        let syncs = Syncs()
        let io = FileIO(write: FileIO.system.write, syncFilesystem: { fd in
            syncs.count += 1
            for folder in ["INBOX", "Work"] { for sub in ["new", "cur"] { syncs.visible += listing(root + "/" + folder + "/" + sub) } }
            return Sys.syncFilesystem(fd)
        })
        let md = Maildir(root: root, layout: .verbatim, io: io)
        try md.ensureFolder("INBOX")
        let batch = try #require(DeliveryBatch(maildir: md))
        var sealed: [SealedDelivery] = []
        for i in 0..<6 {
            let p = try md.beginDelivery(folder: i % 2 == 0 ? "INBOX" : "Work", unique: "\(i).a.h")
            try p.write(message("m\(i)"))
            sealed.append(try p.seal(flags: i % 3 == 0 ? [.seen] : [], mtime: 1_600_000_000, batch: batch))
        }
        #expect(syncs.count == 0)
        let results = md.publish(sealed, batch: batch)
        #expect(syncs.count == 1)
        #expect(syncs.visible.isEmpty, "renamed before the sync: \(syncs.visible)")
        for (i, result) in results.enumerated() {
            let delivered = try result.get()
            #expect(delivered.relativePath.contains(i % 3 == 0 ? "/cur/" : "/new/"))
            #expect(readBytes(md.absolutePath(delivered.relativePath)) == message("m\(i)"))
            #expect(delivered.sha256 == sha256Hex(message("m\(i)")))
            #expect(fileMTime(md.absolutePath(delivered.relativePath)) == 1_600_000_000)
        }
        #expect(listing(root + "/INBOX/tmp").isEmpty && listing(root + "/Work/tmp").isEmpty)
        // The renames are made durable the same way: one more sync for both folders.
        try md.syncFolders(["INBOX", "Work"], batch: batch)
        #expect(syncs.count == 2)
    }

    @Test("a batch whose sync fails publishes none of it and leaves no tmp file",
          .enabled(if: batchSyncs, "the temp dir's file system keeps one fsync per file"))
    func batchSyncFailure() throws {
        let tmp = TempDir()
        let md = Maildir(root: tmp.path + "/m", layout: .verbatim, io: FileIO(write: FileIO.system.write, syncFilesystem: { _ in EIO }))
        try md.ensureFolder("INBOX")
        let batch = try #require(DeliveryBatch(maildir: md))
        var sealed: [SealedDelivery] = []
        for i in 0..<3 {
            let p = try md.beginDelivery(folder: "INBOX", unique: "\(i).a.h")
            try p.write(message("m\(i)"))
            sealed.append(try p.seal(flags: [], mtime: nil, batch: batch))
        }
        for result in md.publish(sealed, batch: batch) {
            #expect(throws: MaildirError.from(errno: EIO, path: md.root, operation: .syncing)) { try result.get() }
        }
        for sub in ["tmp", "new", "cur"] { #expect(listing(md.absolutePath("INBOX/" + sub)).isEmpty) }
        #expect(throws: MaildirError.from(errno: EIO, path: md.root, operation: .syncingFolder)) {
            try md.syncFolders(["INBOX"], batch: batch)
        }
    }

    @Test("sealed without a batch, a delivery is fsynced on its own and publishing needs no sync")
    func sealWithoutBatch() throws {
        let tmp = TempDir()
        final class Syncs: @unchecked Sendable { var count = 0 }  // this test only
        let syncs = Syncs()
        let md = Maildir(root: tmp.path + "/m", layout: .verbatim,
                         io: FileIO(write: FileIO.system.write, syncFilesystem: { _ in syncs.count += 1; return EIO }))
        let p = try md.beginDelivery(folder: "INBOX", unique: "1.a.h")
        try p.write(message("one"))
        let sealed = try p.seal(flags: [.seen], mtime: nil)
        let batch = DeliveryBatch(maildir: md)
        let delivered = try #require(md.publish([sealed], batch: batch).first).get()
        #expect(syncs.count == 0)
        #expect(readBytes(md.absolutePath(delivered.relativePath)) == message("one"))
    }

    @Test("a committed delivery, when dropped, does not touch a later delivery of the same name")
    func committedThenRedelivered() throws {
        let tmp = TempDir()
        let md = Maildir(root: tmp.path + "/m")
        var first: PendingDelivery? = try md.beginDelivery(folder: "INBOX", unique: "1.a.h")
        try first?.write([1, 2, 3])
        _ = try first?.commit(flags: [.seen], mtime: nil)
        let second = try md.beginDelivery(folder: "INBOX", unique: "1.a.h")
        try second.write([4])
        first = nil
        #expect(first == nil)
        #expect(listing(md.absolutePath("INBOX/tmp")) == ["1.a.h"])
        let d = try second.commit(flags: [], mtime: nil)
        #expect(readBytes(md.absolutePath(d.relativePath)) == [4])
    }

    @Test("bad unique names and over-long names are refused")
    func badNames() throws {
        let tmp = TempDir()
        let md = Maildir(root: tmp.path + "/m")
        for bad in ["", ".x", "a/b", "a:b", "a\u{0}b", String(repeating: "u", count: 250)] {
            #expect(throws: MaildirError.self) { _ = try md.beginDelivery(folder: "INBOX", unique: bad) }
        }
        // A folder path beyond what the file system accepts: ENAMETOOLONG, reported as such.
        let deep = (0..<40).map { _ in String(repeating: "d", count: 200) }.joined(separator: "/")
        let folder = md.folderDirectory(for: deep)
        let result = Result { () throws(MaildirError) in _ = try md.beginDelivery(folder: folder, unique: "1.a.h") }
        guard case .failure(.nameTooLong(_, _)) = result else { Issue.record("expected nameTooLong: \(result)"); return }
    }

    @Test("flag renames keep the unique part and follow files moved by a MUA")
    func flagRename() throws {
        let tmp = TempDir()
        let md = Maildir(root: tmp.path + "/m")
        let d = try message("a").withUnsafeBytes {
            try md.deliver(folder: "INBOX", unique: "1.a.h", contents: $0, flags: [], mtime: nil)
        }
        let p1 = try md.renameForFlags(d.relativePath, flags: [.flagged])
        #expect(p1 == "INBOX/new/1.a.h:2,F")
        let p2 = try md.renameForFlags(p1, flags: [.flagged, .seen])
        #expect(p2 == "INBOX/cur/1.a.h:2,FS")
        #expect(try md.renameForFlags(p2, flags: [.flagged, .seen]) == p2)
        // Unseen again: stays in cur/ (a MUA's cur/ without S is "old unread").
        let p3 = try md.renameForFlags(p2, flags: [])
        #expect(p3 == "INBOX/cur/1.a.h:2,")
        // A MUA renames it behind our back; we find it by the unique part.
        #expect(rename(md.absolutePath(p3), md.absolutePath("INBOX/cur/1.a.h:2,Sa")) == 0)
        let p4 = try md.renameForFlags(p3, flags: [.replied])
        #expect(p4 == "INBOX/cur/1.a.h:2,R")
        #expect(readBytes(md.absolutePath(p4)) == message("a"))
        #expect(listing(md.absolutePath("INBOX/cur")) == ["1.a.h:2,R"])
        #expect(throws: MaildirError.self) { _ = try md.renameForFlags("INBOX/cur/9.z.h:2,", flags: [.seen]) }
    }

    @Test("moves, removals and scans", arguments: MaildirLayout.allCases)
    func moveRemoveScan(layout: MaildirLayout) throws {
        let tmp = TempDir()
        let md = Maildir(root: tmp.path + "/m", layout: layout)
        let inbox = md.folderDirectory(for: "INBOX")
        let archive = md.folderDirectory(for: "Archive/2024")
        var paths: [String: String] = [:]
        for i in 0..<5 {
            let d = try message("m\(i)").withUnsafeBytes {
                try md.deliver(folder: inbox, unique: "\(i).k.h", contents: $0, flags: i % 2 == 0 ? [.seen] : [], mtime: nil)
            }
            paths[d.unique] = d.relativePath
        }
        #expect(try md.scanUniqueNames(folder: inbox) == paths)
        let moved = try md.moveFile(from: paths["0.k.h"] ?? "", to: archive, flags: [.seen, .flagged])
        #expect(moved == joinPath(archive, "cur", "0.k.h:2,FS"))
        #expect(readBytes(md.absolutePath(moved)) == message("m0"))
        #expect(try md.scanUniqueNames(folder: archive) == ["0.k.h": moved])
        // A file renamed by a MUA is still found for a move and a removal.
        let p1 = paths["1.k.h"] ?? ""
        #expect(rename(md.absolutePath(p1), md.absolutePath(joinPath(inbox, "cur", "1.k.h:2,S"))) == 0)
        let moved1 = try md.moveFile(from: p1, to: archive, flags: [])
        #expect(moved1 == joinPath(archive, "new", "1.k.h:2,"))
        #expect(try md.removeFile(moved1))
        #expect(try md.removeFile(moved1) == false)
        let p2 = paths["2.k.h"] ?? ""
        #expect(rename(md.absolutePath(p2), md.absolutePath(joinPath(inbox, "cur", "2.k.h:2,ST"))) == 0)
        #expect(try md.removeFile(p2))
        #expect(Set(try md.scanUniqueNames(folder: inbox).keys) == ["3.k.h", "4.k.h"])
        #expect(try md.scanUniqueNames(folder: md.folderDirectory(for: "Nope")).isEmpty)
        // A move that reached the disk but was never recorded (a power cut before the commit):
        // moving again from the recorded place finds the file in the destination.
        let p3 = paths["3.k.h"] ?? ""
        #expect(rename(md.absolutePath(p3), md.absolutePath(joinPath(archive, "cur", "3.k.h:2,S"))) == 0)
        let again = try md.moveFile(from: p3, to: archive, flags: [.seen, .replied])
        #expect(again == joinPath(archive, "cur", "3.k.h:2,RS"))
        #expect(readBytes(md.absolutePath(again)) == message("m3"))
        #expect(Set(try md.scanUniqueNames(folder: inbox).keys) == ["4.k.h"])
    }

    @Test("hidden files leave cur/ and new/ at once and come back by a move or go by a removal", arguments: MaildirLayout.allCases)
    func hideMoveRemove(layout: MaildirLayout) throws {
        let tmp = TempDir()
        let md = Maildir(root: tmp.path + "/m", layout: layout)
        let inbox = md.folderDirectory(for: "INBOX")
        let work = md.folderDirectory(for: "Work")
        var paths: [String] = []
        for i in 0..<4 {
            let d = try message("h\(i)").withUnsafeBytes {
                try md.deliver(folder: inbox, unique: "\(i).k.h", contents: $0, flags: i % 2 == 0 ? [.seen] : [], mtime: nil)
            }
            paths.append(d.relativePath)
        }
        // Hidden: no longer in cur/ or new/, kept whole in tmp/ under its name.
        let hidden0 = try Maildir.hiddenPath(of: paths[0])
        #expect(hidden0 == joinPath(inbox, "tmp", "0.k.h:2,S") && Maildir.isHidden(hidden0) && !Maildir.isHidden(paths[0]))
        #expect(try md.hideFile(paths[0]))
        #expect(try md.scanUniqueNames(folder: inbox)["0.k.h"] == nil)
        #expect(readBytes(md.absolutePath(hidden0)) == message("h0"))
        // It comes back into another folder by a move (a move split across batches)…
        let moved = try md.moveFile(from: hidden0, to: work, flags: [.seen, .replied])
        #expect(moved == joinPath(work, "cur", "0.k.h:2,RS") && readBytes(md.absolutePath(moved)) == message("h0"))
        // …or goes by a removal.
        #expect(try md.hideFile(paths[1]))
        #expect(try md.removeFile(try Maildir.hiddenPath(of: paths[1])))
        #expect(listing(md.absolutePath(joinPath(inbox, "tmp"))).isEmpty)
        // A file a MUA renamed is hidden under the recorded name.
        #expect(rename(md.absolutePath(paths[2]), md.absolutePath(joinPath(inbox, "cur", "2.k.h:2,FS"))) == 0)
        #expect(try md.hideFile(paths[2]))
        #expect(listing(md.absolutePath(joinPath(inbox, "tmp"))) == ["2.k.h:2,S"])
        // Killed after the cache said "hidden" but before the rename: the file is still found
        // in cur/ or new/ for a move and for a removal.
        let notYet = try Maildir.hiddenPath(of: paths[3])
        let moved3 = try md.moveFile(from: notYet, to: work, flags: [])
        #expect(moved3 == joinPath(work, "new", "3.k.h:2,"))
        #expect(try md.removeFile(try Maildir.hiddenPath(of: moved3)))
        #expect(try md.scanUniqueNames(folder: work).keys.sorted() == ["0.k.h"])
        // Gone altogether: nothing to hide.
        #expect(try md.hideFile(joinPath(inbox, "new", "9.k.h:2,")) == false)
    }

    @Test("cleanTmp removes only our leftovers")
    func cleanTmp() throws {
        let tmp = TempDir()
        let md = Maildir(root: tmp.path + "/m")
        try md.ensureFolder("INBOX")
        for name in ["1.ours.h", "2.ours.h", "3.theirs.h"] {
            #expect(FileManager.default.createFile(atPath: md.absolutePath("INBOX/tmp/" + name), contents: Data([1])))
        }
        #expect(try md.cleanTmp(folder: "INBOX", owns: { $0.hasSuffix(".h") && $0.contains(".ours.") }) == 2)
        #expect(listing(md.absolutePath("INBOX/tmp")) == ["3.theirs.h"])
        // A stale tmp file with the same unique name is replaced by a new delivery.
        #expect(FileManager.default.createFile(atPath: md.absolutePath("INBOX/tmp/4.a.h"), contents: Data([9, 9])))
        let d = try [UInt8]([7]).withUnsafeBytes {
            try md.deliver(folder: "INBOX", unique: "4.a.h", contents: $0, flags: [], mtime: nil)
        }
        #expect(readBytes(md.absolutePath(d.relativePath)) == [7])
    }

    @Test("renameFolder creates parents and never clobbers", arguments: MaildirLayout.allCases)
    func renameFolder(layout: MaildirLayout) throws {
        let tmp = TempDir()
        let md = Maildir(root: tmp.path + "/m", layout: layout)
        let work = md.folderDirectory(for: "Work")
        let target = md.folderDirectory(for: "Old/Stuff/Work")
        let d = try message("w").withUnsafeBytes {
            try md.deliver(folder: work, unique: "1.w.h", contents: $0, flags: [], mtime: nil)
        }
        try md.renameFolder(from: work, to: target)
        #expect(try md.scanUniqueNames(folder: target) == ["1.w.h": joinPath(target, "new", "1.w.h:2,")])
        #expect(!FileManager.default.fileExists(atPath: md.absolutePath(d.relativePath)))
        // Back onto an existing, non-empty folder: refused, both kept.
        try md.ensureFolder(work)
        #expect(throws: MaildirError.folderExists(path: md.absolutePath(work))) {
            try md.renameFolder(from: target, to: work)
        }
        #expect(try md.scanUniqueNames(folder: target).count == 1)
        #expect(throws: MaildirError.self) { try md.renameFolder(from: md.folderDirectory(for: "Missing"), to: md.folderDirectory(for: "X")) }
    }

    @Test("removeFolder removes only owned files and keeps folders with foreign content", arguments: MaildirLayout.allCases)
    func removeFolder(layout: MaildirLayout) throws {
        let tmp = TempDir()
        let md = Maildir(root: tmp.path + "/m", layout: layout)
        let a = md.folderDirectory(for: "A")
        let b = md.folderDirectory(for: "B")
        for f in [a, b] {
            for i in 0..<3 {
                _ = try message("\(f)\(i)").withUnsafeBytes {
                    try md.deliver(folder: f, unique: "\(i).ours.h", contents: $0, flags: i == 0 ? [.seen] : [], mtime: nil)
                }
            }
        }
        #expect(FileManager.default.createFile(atPath: md.absolutePath(joinPath(b, "cur", "9.foreign.h:2,S")), contents: Data([1])))
        let owns: (String) -> Bool = { $0.contains(".ours.") }
        #expect(try md.removeFolder(a, owns: owns))
        #expect(!FileManager.default.fileExists(atPath: md.absolutePath(a)))
        #expect(try md.removeFolder(b, owns: owns) == false)
        #expect(try md.scanUniqueNames(folder: b) == ["9.foreign.h": joinPath(b, "cur", "9.foreign.h:2,S")])
        #expect(listing(md.absolutePath(b)).contains("new"))
        #expect(try md.removeFolder(md.folderDirectory(for: "Gone"), owns: owns))
        if layout == .maildirPlusPlus {
            // The root (INBOX) is never removed.
            try md.ensureFolder("")
            #expect(try md.removeFolder("", owns: owns) == false)
            #expect(FileManager.default.fileExists(atPath: md.absolutePath("cur")))
        }
    }

    @Test("Python's mailbox.Maildir reads what we wrote", arguments: MaildirLayout.allCases)
    func pythonReads(layout: MaildirLayout) throws {
        let tmp = TempDir()
        let md = Maildir(root: tmp.path + "/m", layout: layout)
        let inbox = md.folderDirectory(for: "INBOX")
        let flagSets: [MessageFlags] = [[], [.seen], [.seen, .flagged], [.replied], [.draft, .trashed, .passed]]
        for (i, flags) in flagSets.enumerated() {
            _ = try message("p\(i)").withUnsafeBytes {
                try md.deliver(folder: inbox, unique: "\(1_700_000_000 + i).k\(i).host", contents: $0, flags: flags, mtime: 1_700_000_000)
            }
        }
        _ = try message("sub").withUnsafeBytes {
            try md.deliver(folder: md.folderDirectory(for: "Work/Projects"), unique: "1.s.h", contents: $0, flags: [.seen], mtime: nil)
        }
        try md.syncFolder(inbox)
        let script = """
        import mailbox, sys
        md = mailbox.Maildir(sys.argv[1], factory=None, create=False)
        rows = sorted((m['Subject'], m.get_subdir(), m.get_flags()) for m in md)
        print(len(rows))
        for r in rows: print(' '.join(r) if r[2] else r[0] + ' ' + r[1] + ' -')
        if sys.argv[2] == 'pp':
            print(','.join(sorted(md.list_folders())))
        """
        let (status, out) = try runPython(script, [md.absolutePath(inbox), layout == .maildirPlusPlus ? "pp" : "v"])
        #expect(status == 0)
        var expected = "5\np0 new -\np1 cur S\np2 cur FS\np3 new R\np4 new DPT\n"
        if layout == .maildirPlusPlus { expected += "Work.Projects\n" }
        #expect(out == expected)
    }

    @Test("many deliveries, one folder sync per batch")
    func manyDeliveries() throws {
        let tmp = TempDir()
        let md = Maildir(root: tmp.path + "/m")
        let body = message("bulk", bodyLines: 50)
        try body.withUnsafeBytes { raw in
            for i in 0..<500 {
                _ = try md.deliver(folder: "INBOX", unique: "\(i).bulk.h", contents: raw, flags: i % 3 == 0 ? [.seen] : [], mtime: 1_700_000_000)
            }
        }
        try md.syncFolder("INBOX")
        #expect(try md.scanUniqueNames(folder: "INBOX").count == 500)
        #expect(listing(md.absolutePath("INBOX/new")).count == 333)
        #expect(listing(md.absolutePath("INBOX/tmp")).isEmpty)
    }

    @Test("error messages say what happened and what to do")
    func errorMessages() {
        let e = MaildirError.diskFull(path: "/m/INBOX/tmp/x", operation: .writing)
        #expect(e.description == "disk full (or quota exceeded) while writing /m/INBOX/tmp/x: free some space and re-run wdsync; nothing was half-delivered (the temporary file was removed)")
        #expect(MaildirError.from(errno: EROFS, path: "/p", operation: .renaming) == .readOnlyFileSystem(path: "/p", operation: .renaming))
        #expect(MaildirError.from(errno: EACCES, path: "/p", operation: .renaming) == .permissionDenied(path: "/p", operation: .renaming))
        #expect(MaildirError.from(errno: ENAMETOOLONG, path: "/p", operation: .creatingFolder) == .nameTooLong(path: "/p", operation: .creatingFolder))
        #expect(MaildirError.from(errno: ENOSPC, path: "/p", operation: .creatingFolder).description.contains("free some space"))
        #expect(!MaildirError.readOnlyFileSystem(path: "/p", operation: .renaming).description.contains("half-delivered"))
        #expect(MaildirError.system(path: "/p", operation: .reading, errno: EIO).description.contains("errno \(EIO)"))
    }
}

@Suite struct RedeliveryTests {
    @Test func deliveringTheSameBytesUnderTheSameNameAgainIsIdempotent() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("wdsync-redeliver-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        let maildir = Maildir(root: root)
        let body = Array("Subject: x\r\n\r\nhello\r\n".utf8)
        let first = try body.withUnsafeBytes { try maildir.deliver(folder: "INBOX", unique: "1.k.h", contents: $0, flags: [.seen], mtime: nil) }
        let again = try body.withUnsafeBytes { try maildir.deliver(folder: "INBOX", unique: "1.k.h", contents: $0, flags: [.seen], mtime: nil) }
        #expect(again == first)
        #expect(try FileManager.default.contentsOfDirectory(atPath: root + "/INBOX/tmp").isEmpty)
        // Different bytes under that name are refused, and nothing is left behind.
        let other = Array("Subject: y\r\n\r\nother\r\n".utf8)
        #expect(throws: MaildirError.self) {
            try other.withUnsafeBytes { try maildir.deliver(folder: "INBOX", unique: "1.k.h", contents: $0, flags: [.seen], mtime: nil) }
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: root + "/INBOX/tmp").isEmpty)
        #expect(FileManager.default.contents(atPath: root + "/" + first.relativePath) == Data(body))
    }
}

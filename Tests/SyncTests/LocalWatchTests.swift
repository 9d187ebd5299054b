#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
@testable import Sync

/// The daemon's inotify watch tells wdsync's own writes from the user's. `drain` reads what
/// the kernel queued synchronously, so none of this depends on timing.
@Suite struct LocalWatchTests {
    let root: String

    init() throws {
        root = FileManager.default.temporaryDirectory.appendingPathComponent("localwatch-\(UUID().uuidString)").path
        for dir in ["INBOX/cur", "INBOX/new", "INBOX/tmp", "Work/cur", "Work/new", "Work/tmp"] {
            try FileManager.default.createDirectory(atPath: root + "/" + dir, withIntermediateDirectories: true)
        }
    }

    func write(_ rel: String) {
        #expect(FileManager.default.createFile(atPath: root + "/" + rel, contents: Data("x".utf8)))
    }

    func move(_ from: String, _ to: String) {
        #expect(rename(root + "/" + from, root + "/" + to) == 0)
    }

    func watcher() throws -> LocalWatch {
        guard let w = LocalWatch(root: root, onChange: {}) else { throw CancellationError() }
        w.watch(["INBOX/cur", "INBOX/new", "Work/cur", "Work/new"])
        return w
    }

    @Test func ownRenamesAndDeliveriesAreNotChanges() throws {
        let w = try watcher()
        defer { w.stop(); try? FileManager.default.removeItem(atPath: root) }
        write("INBOX/new/1.a:2,")
        _ = w.drain()
        // The exporter: a flag rename, a delivery through tmp/, an unlink.
        move("INBOX/new/1.a:2,", "INBOX/cur/1.a:2,S")
        w.expect("INBOX/new/1.a:2,", appeared: false)
        w.expect("INBOX/cur/1.a:2,S", appeared: true)
        write("Work/tmp/2.b")
        move("Work/tmp/2.b", "Work/new/2.b:2,")
        w.expect("Work/new/2.b:2,", appeared: true)
        unlink(root + "/Work/new/2.b:2,")
        w.expect("Work/new/2.b:2,", appeared: false)
        let changes = w.drain()
        #expect(changes.changed.isEmpty)
        #expect(changes.watched == ["INBOX", "Work"])
        #expect(!changes.overflow)
    }

    /// A long run (a first sync of 100,000 messages) must not hold one entry per file it wrote
    /// until its last scan: own writes and their events cancel as they meet, and writes into a
    /// folder nobody watches are not expected at all.
    @Test func ownWritesAreForgottenAsTheirEventsArrive() throws {
        let w = try watcher()
        defer { w.stop(); try? FileManager.default.removeItem(atPath: root) }
        try FileManager.default.createDirectory(atPath: root + "/New/new", withIntermediateDirectories: true)
        for i in 0..<500 {
            write("Work/tmp/\(i).b")
            move("Work/tmp/\(i).b", "Work/new/\(i).b:2,")
            w.expect("Work/new/\(i).b:2,", appeared: true)
            write("New/new/\(i).c:2,")
            w.expect("New/new/\(i).c:2,", appeared: true)   // not watched
        }
        // The watch's thread reads the events as they come.
        let deadline = Date().addingTimeInterval(30)
        while w.waiting > 0 && Date() < deadline { usleep(10_000) }
        #expect(w.waiting == 0)
    }

    @Test func theUsersChangesAreSeenEvenNextToOwnOnes() throws {
        let w = try watcher()
        defer { w.stop(); try? FileManager.default.removeItem(atPath: root) }
        write("INBOX/new/1.a:2,")
        _ = w.drain()
        // wdsync renames it; the user (mutt) renames it again before the engine looks.
        move("INBOX/new/1.a:2,", "INBOX/cur/1.a:2,S")
        w.expect("INBOX/new/1.a:2,", appeared: false)
        w.expect("INBOX/cur/1.a:2,S", appeared: true)
        move("INBOX/cur/1.a:2,S", "INBOX/cur/1.a:2,FS")
        #expect(w.drain().changed == ["INBOX"])
        // A move into another folder marks both; a new file its folder; dot files nothing.
        move("INBOX/cur/1.a:2,FS", "Work/cur/1.a:2,FS")
        #expect(w.drain().changed == ["INBOX", "Work"])
        write("Work/new/3.c")
        #expect(w.drain().changed == ["Work"])
        write("INBOX/cur/.hidden")
        #expect(w.drain().changed.isEmpty)
        // An expectation is forgotten at the drain: it cannot hide a later change.
        w.expect("Work/new/3.c", appeared: false)
        _ = w.drain()
        unlink(root + "/Work/new/3.c")
        #expect(w.drain().changed == ["Work"])
    }
}

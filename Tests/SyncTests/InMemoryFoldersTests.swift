#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import Testing
@testable import Maildir

/// `InMemoryFolders` against the real `Maildir`: the same steps (what the engine calls, what a
/// reader or `mv` does) on a Maildir in a temporary directory and on the double with the same
/// root, and after each step the same results, errors included (their paths are the same), and
/// the same everything a caller can see: the whole tree with the files' bytes, each folder's
/// listing and unique names, and whether its `cur/` and `new/` mtimes moved. This is what lets
/// the engine's tests (`LocalFoldersTests`, `PushTests`) trust the double: the steps go through
/// the edges the real one handles (a file found again by its unique part after a rename, a
/// unique part in both `new/` and `cur/`, dot files, a missing `cur/` or `tmp/`, a directory
/// where a file should be, foreign files keeping a folder in place, a folder renamed onto an
/// empty or a non-empty one, into itself, with its children).
@Suite struct InMemoryFoldersTests {
    typealias Step = (name: String, run: (any LocalFolders, any UserFiles) throws -> Any)

    /// Ours: unique parts (and tmp/ names) starting with "w"; "u…" are someone else's.
    static func owns(_ name: String) -> Bool { name.hasPrefix("w") }

    /// The folders of these mailboxes are looked at after each step.
    static let mailboxes = ["INBOX", "Archive", "Archive/2024", "Lists", "Deep/Er", "Empty", "Archive/2024/x"]

    static func steps(_ layout: MaildirLayout) -> [Step] {
        func folder(_ mailbox: String) -> String { FolderNames.encode(mailbox, layout: layout) }
        let (i, a, a24, l, d, e) = (folder("INBOX"), folder("Archive"), folder("Archive/2024"), folder("Lists"),
                                    folder("Deep/Er"), folder("Empty"))
        func p(_ folder: String, _ sub: String, _ name: String = "") -> String { joinPath(folder, sub, name) }
        func text(_ s: String) -> [UInt8] { Array(s.utf8) }
        func read(_ f: any LocalFolders, _ file: String, limit: Int = 1 << 20) throws -> String {
            let c = try f.readFile(file, limit: limit)
            return "\(String(decoding: c.bytes, as: UTF8.self)) \(c.sha256) unchanged: \(c.unchangedWhileRead)"
        }
        func size(_ f: any LocalFolders, _ file: String) -> String {
            guard let s = f.fileSize(file) else { return "nil" }
            return s.regular ? "file of \(s.size)" : "not a file"   // a directory's size is the file system's
        }
        return [
            // Folders, and files as readers leave them.
            ("ensureFolder", { f, _ in try f.ensureFolder(i) }),
            ("ensureFolder again changes nothing", { f, _ in try f.ensureFolder(i) }),
            ("ensureFolder of a child first (mkdir -p)", { f, _ in try f.ensureFolder(a24) }),
            ("ensureFolder of its parent", { f, _ in try f.ensureFolder(a) }),
            ("a file in new/ without flags", { _, u in try u.write(p(i, "new", "w1.h:2,"), bytes: text("one")) }),
            ("a file without an info", { _, u in try u.write(p(i, "new", "w2.h"), bytes: text("two")) }),
            ("a seen file in cur/", { _, u in try u.write(p(i, "cur", "w3.h:2,S"), bytes: text("three")) }),
            ("keyword letters", { _, u in try u.write(p(i, "cur", "w4.h:2,FSab"), bytes: text("four")) }),
            ("the experimental info", { _, u in try u.write(p(i, "cur", "u5.h:1,S"), bytes: text("five")) }),
            ("a seen file in new/", { _, u in try u.write(p(i, "new", "w6.h:2,S"), bytes: text("six")) }),
            ("a unique part in new/", { _, u in try u.write(p(i, "new", "w7.h:2,"), bytes: text("seven new")) }),
            ("and in cur/: cur/ wins", { _, u in try u.write(p(i, "cur", "w7.h:2,RS"), bytes: text("seven cur")) }),
            ("a dot file in cur/", { _, u in try u.write(p(i, "cur", ".w8.h:2,S"), bytes: text("dot")) }),
            ("a dot file in new/", { _, u in try u.write(p(i, "new", ".hidden"), bytes: text("dot")) }),
            ("an old message in cur/ without S", { _, u in try u.write(p(i, "cur", "w10.h:2,"), bytes: text("ten")) }),
            ("a file written again in place", { _, u in try u.write(p(i, "cur", "w3.h:2,S"), bytes: text("three again")) }),
            ("a file into a folder that is not there", { _, u in try u.write(p(l, "new", "w9.h"), bytes: text("nine")) }),

            // Reading.
            ("fileSize", { f, _ in size(f, p(i, "cur", "w3.h:2,S")) }),
            ("fileSize of a directory", { f, _ in size(f, p(i, "cur")) }),
            ("fileSize of nothing", { f, _ in size(f, p(i, "cur", "w0.h:2,")) }),
            ("readFile", { f, _ in try read(f, p(i, "cur", "w3.h:2,S")) }),
            ("readFile at the limit", { f, _ in try read(f, p(i, "new", "w2.h"), limit: 3) }),
            ("readFile over the limit", { f, _ in try read(f, p(i, "new", "w2.h"), limit: 2) }),
            ("readFile of nothing", { f, _ in try read(f, p(i, "cur", "w0.h:2,")) }),
            ("readFile of a directory", { f, _ in try read(f, p(i, "cur")) }),
            ("readFile under a file", { f, _ in try read(f, p(i, "cur", "w3.h:2,S") + "/x") }),
            ("sha256", { f, _ in try f.sha256(p(i, "cur", "w4.h:2,FSab")) }),
            ("sha256 of nothing", { f, _ in try f.sha256(p(i, "cur", "w0.h:2,")) }),
            ("sha256 of a directory", { f, _ in try f.sha256(p(i, "new")) }),

            // find, after what readers do.
            ("find a file where it is", { f, _ in try f.find(p(i, "new", "w1.h:2,"), movingTo: a) as Any }),
            ("a reader marks it seen", { _, u in try u.rename(p(i, "new", "w1.h:2,"), to: p(i, "cur", "w1.h:2,FS")) }),
            ("find it by its unique part", { f, _ in try f.find(p(i, "new", "w1.h:2,"), movingTo: a) as Any }),
            ("a user moves one to another folder", { _, u in try u.rename(p(i, "new", "w2.h"), to: p(a, "cur", "w2.h:2,S")) }),
            ("find it in the destination", { f, _ in try f.find(p(i, "new", "w2.h"), movingTo: a) as Any }),
            ("not when the destination is its folder", { f, _ in try f.find(p(i, "new", "w2.h"), movingTo: i) as Any }),
            ("find a hidden one in cur/", { f, _ in try f.find(p(i, "tmp", "w3.h:2,"), movingTo: i) as Any }),
            ("find nothing", { f, _ in try f.find(p(i, "cur", "w0.h:2,"), movingTo: a) as Any }),
            ("find with a path that is no message's", { f, _ in try f.find(p(i, "junk", "w1.h"), movingTo: a) as Any }),

            // moveFile.
            ("moveFile of a renamed file, S kept", { f, _ in try f.moveFile(from: p(i, "new", "w1.h:2,"), to: i, flags: [.seen]) }),
            ("moveFile in cur/ without S stays in cur/",
             { f, _ in try f.moveFile(from: p(i, "cur", "w10.h:2,"), to: i, flags: [.flagged]) }),
            ("moveFile unseen goes to new/", { f, _ in try f.moveFile(from: p(i, "cur", "w3.h:2,S"), to: i, flags: []) }),
            ("moveFile seen in new/ stays", { f, _ in try f.moveFile(from: p(i, "new", "w6.h:2,S"), to: i, flags: [.seen]) }),
            ("moveFile into a folder that is not there",
             { f, _ in try f.moveFile(from: p(i, "cur", "w4.h:2,FSab"), to: l, flags: [.seen]) }),
            ("moveFile of one already there", { f, _ in try f.moveFile(from: p(i, "cur", "w4.h:2,FSab"), to: l, flags: [.seen]) }),
            ("moveFile of nothing", { f, _ in try f.moveFile(from: p(i, "cur", "w0.h:2,"), to: a, flags: []) }),
            ("moveFile of nothing to its own place", { f, _ in try f.moveFile(from: p(i, "cur", "w0.h:2,S"), to: i, flags: [.seen]) }),
            ("moveFile with a path that is no message's", { f, _ in try f.moveFile(from: p(i, "junk", "w1.h"), to: a, flags: []) }),
            ("a directory with a message's name", { _, u in try u.makeDirectory(p(a, "cur", "w11.h:2,S")) }),
            ("a file to be moved onto it", { _, u in try u.write(p(i, "new", "w11.h"), bytes: text("eleven")) }),
            ("moveFile onto a directory", { f, _ in try f.moveFile(from: p(i, "new", "w11.h"), to: a, flags: [.seen]) }),

            // hideFile, and back.
            ("hideFile", { f, _ in try f.hideFile(p(i, "cur", "w10.h:2,F")) }),
            ("a reader renames one", { _, u in try u.rename(p(i, "new", "w6.h:2,S"), to: p(i, "cur", "w6.h:2,RS")) }),
            ("hideFile by its old name", { f, _ in try f.hideFile(p(i, "new", "w6.h:2,S")) }),
            ("hideFile of nothing", { f, _ in try f.hideFile(p(i, "cur", "w0.h:2,")) }),
            ("hideFile of a path in tmp/", { f, _ in try f.hideFile(p(i, "tmp", "w1.h:2,S")) }),
            ("moveFile out of tmp/", { f, _ in try f.moveFile(from: p(i, "tmp", "w10.h:2,F"), to: a, flags: [.flagged]) }),
            ("a file that is not hidden", { _, u in try u.write(p(i, "cur", "w12.h:2,"), bytes: text("twelve")) }),
            ("moveFile from tmp/ finds it in cur/", { f, _ in try f.moveFile(from: p(i, "tmp", "w12.h:2,"), to: i, flags: [.seen]) }),
            ("removeFile of a hidden one", { f, _ in try f.removeFile(p(i, "tmp", "w6.h:2,S")) }),
            ("tmp/ removed by hand", { _, u in try u.removeDirectory(p(i, "tmp")) }),
            ("hideFile without tmp/", { f, _ in try f.hideFile(p(i, "cur", "w1.h:2,S")) }),

            // removeFile.
            ("removeFile", { f, _ in try f.removeFile(p(i, "cur", "w12.h:2,S")) }),
            ("a reader renames the cur/ one of a pair",
             { _, u in try u.rename(p(i, "cur", "w7.h:2,RS"), to: p(i, "cur", "w7.h:2,RST")) }),
            ("removeFile by its old name takes cur/'s", { f, _ in try f.removeFile(p(i, "cur", "w7.h:2,RS")) }),
            ("removeFile of nothing", { f, _ in try f.removeFile(p(i, "cur", "w0.h:2,")) }),
            ("removeFile of a directory", { f, _ in try f.removeFile(p(a, "cur", "w11.h:2,S")) }),
            ("removeFile with a path that is no message's", { f, _ in try f.removeFile(p(i, "junk", "w1.h")) }),

            // cleanTmp.
            ("a leftover of ours in tmp/", { _, u in try u.write(p(i, "tmp", "w20.h"), bytes: text("left")) }),
            ("someone else's", { _, u in try u.write(p(i, "tmp", "u21.h"), bytes: text("theirs")) }),
            ("a dot file", { _, u in try u.write(p(i, "tmp", ".w22.h"), bytes: text("dot")) }),
            ("a directory with our name", { _, u in try u.makeDirectory(p(i, "tmp", "w23.h")) }),
            ("cleanTmp", { f, _ in try f.cleanTmp(folder: i, owns: owns) }),
            ("cleanTmp without tmp/", { f, _ in try f.cleanTmp(folder: d, owns: owns) }),

            // Folders without cur/ or new/, or with something else there.
            ("a directory in cur/", { _, u in try u.makeDirectory(p(i, "cur", "w30.h:2,S")) }),
            ("cur/ removed", { _, u in try u.removeDirectory(p(a, "cur")) }),
            ("new/ removed", { _, u in try u.removeDirectory(p(a24, "new")) }),
            ("a file where cur/ was", { _, u in try u.write(p(a, "cur"), bytes: text("not a directory")) }),
            ("ensureFolder over it", { f, _ in try f.ensureFolder(a) }),
            ("moveFile into it", { f, _ in try f.moveFile(from: p(i, "new", "w7.h:2,"), to: a, flags: [.seen]) }),
            ("removeFolder with it", { f, _ in try f.removeFolder(a, owns: owns) }),
            ("it goes", { _, u in try u.remove(p(a, "cur")) }),
            ("ensureFolder puts cur/ back", { f, _ in try f.ensureFolder(a) }),

            // renameFolder.
            ("renameFolder onto itself", { f, _ in try f.renameFolder(from: l, to: l) }),
            ("renameFolder of the root", { f, _ in try f.renameFolder(from: "", to: e) }),
            ("renameFolder of nothing", { f, _ in try f.renameFolder(from: e, to: d) }),
            ("renameFolder onto a folder", { f, _ in try f.renameFolder(from: l, to: a24) }),
            ("renameFolder to missing parents", { f, _ in try f.renameFolder(from: l, to: d) }),
            ("an empty directory", { _, u in try u.makeDirectory(e) }),
            ("renameFolder onto it", { f, _ in try f.renameFolder(from: d, to: e) }),
            ("renameFolder with a child", { f, _ in try f.renameFolder(from: a, to: l) }),
            ("and back", { f, _ in try f.renameFolder(from: l, to: a) }),
            ("renameFolder into a child", { f, _ in try f.renameFolder(from: a, to: folder("Archive/2024/x")) }),
            ("and out of it (maildir++: it is no child there)", { f, _ in try f.renameFolder(from: folder("Archive/2024/x"), to: a) }),

            // removeFolder.
            ("removeFolder of ours only", { f, _ in try f.removeFolder(e, owns: owns) }),
            ("removeFolder of nothing", { f, _ in try f.removeFolder(e, owns: owns) }),
            ("removeFolder with a subfolder (verbatim)", { f, _ in try f.removeFolder(a, owns: owns) }),
            ("removeFolder of the root", { f, _ in try f.removeFolder("", owns: owns) }),
            ("a foreign file", { _, u in try u.write(p(a24, "cur", "u40.h:2,S"), bytes: text("theirs")) }),
            ("one of ours", { _, u in try u.write(p(a24, "cur", "w41.h:2,S"), bytes: text("ours")) }),
            ("removeFolder with a foreign file", { f, _ in try f.removeFolder(a24, owns: owns) }),
            ("it goes", { _, u in try u.remove(p(a24, "cur", "u40.h:2,S")) }),
            ("a dot file", { _, u in try u.write(p(a24, "tmp", ".w42.h"), bytes: text("dot")) }),
            ("removeFolder with a dot file", { f, _ in try f.removeFolder(a24, owns: owns) }),
            ("it goes", { _, u in try u.remove(p(a24, "tmp", ".w42.h")) }),
            ("a file in the folder itself", { _, u in try u.write(joinPath(a24, "notes"), bytes: text("notes")) }),
            ("removeFolder with it", { f, _ in try f.removeFolder(a24, owns: owns) }),
            ("it goes", { _, u in try u.remove(joinPath(a24, "notes")) }),
            ("another program's directory in the folder", { _, u in try u.makeDirectory(joinPath(a24, "courierimapkeywords")) }),
            ("removeFolder with it keeps the maildir++ marker", { f, _ in try f.removeFolder(a24, owns: owns) }),
            ("removeFolder with a directory in cur/", { f, _ in try f.removeFolder(i, owns: owns) }),
            ("it goes", { _, u in try u.removeDirectory(p(i, "cur", "w30.h:2,S")) }),
            ("removeFolder", { f, _ in try f.removeFolder(i, owns: owns) }),
        ]
    }

    /// What a caller sees after a step: the result, each folder's listing, unique names and
    /// mtimes (moved or not since `before`), and the whole tree.
    static func observe(_ step: Step, _ f: any LocalFolders, _ u: any UserFiles, folders: [String],
                        tree: () -> [String], before: () -> Void) -> String {
        before()
        let times = folders.map { f.folderTimes($0) }
        var lines = ["\(step.name): " + outcome { try step.run(f, u) }]
        for (folder, was) in zip(folders, times) {
            let now = f.folderTimes(folder)
            let moved = now.map { now in
                was.map { "cur \($0.cur == now.cur ? "same" : "moved"), new \($0.new == now.new ? "same" : "moved")" } ?? "appeared"
            } ?? "none"
            lines.append("\(folder): times \(moved)")
            lines.append("  listed: " + outcome {
                try f.listFolder(folder)?.map { "\($0.file) [\($0.flags.letters)] \($0.unique)" }.sorted() as Any
            })
            lines.append("  unique: " + outcome { try f.scanUniqueNames(folder: folder).map { "\($0.key)=\($0.value)" }.sorted() })
        }
        lines.append("tree: " + tree().joined(separator: ", "))
        return lines.joined(separator: "\n")
    }

    static func outcome(_ body: () throws -> Any) -> String {
        do { return "\(try body())" } catch { return "threw \(error)" }
    }

    /// Everything under `root`, as `InMemoryFolders.tree` writes it.
    static func diskTree(_ root: String) -> [String] {
        var out: [String] = []
        func walk(_ rel: String) {
            let path = rel.isEmpty ? root : root + "/" + rel
            for name in (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? [] {
                let child = joinPath(rel, name)
                var isDirectory: ObjCBool = false
                _ = FileManager.default.fileExists(atPath: root + "/" + child, isDirectory: &isDirectory)
                if isDirectory.boolValue {
                    out.append(child + "/")
                    walk(child)
                } else {
                    let bytes = FileManager.default.contents(atPath: root + "/" + child) ?? Data()
                    out.append("\(child) \(String(decoding: bytes, as: UTF8.self))")
                }
            }
        }
        walk("")
        return out.sorted()
    }

    /// Sets the mtimes of the folders' `cur/` and `new/` back, so that any change in a step
    /// moves them (a change in the same clock tick as the last one would not).
    static func setBack(_ root: String, _ folders: [String]) {
        var old = [timespec(tv_sec: 1_000_000_000, tv_nsec: 0), timespec(tv_sec: 1_000_000_000, tv_nsec: 0)]
        for folder in folders {
            for sub in ["cur", "new"] { _ = utimensat(AT_FDCWD, root + "/" + joinPath(folder, sub), &old, 0) }
        }
    }

    @Test(arguments: MaildirLayout.allCases)
    func theDoubleSeesWhatTheMaildirSees(_ layout: MaildirLayout) throws {
        let disk = try TestFolders(.disk, layout: layout)
        let root = disk.folders.root
        let memory = InMemoryFolders(root: root, layout: layout)
        let folders = Array(Set(Self.mailboxes.map { FolderNames.encode($0, layout: layout) })).sorted()
        for step in Self.steps(layout) {
            let real = Self.observe(step, disk.folders, disk.user, folders: folders, tree: { Self.diskTree(root) },
                                    before: { Self.setBack(root, folders) })
            let double = Self.observe(step, memory, memory, folders: folders, tree: { memory.tree }, before: {})
            #expect(double == real)
            if double != real { break }   // later steps follow from a different state
        }
    }
}

// File helpers: directory snapshots ("files touched"), counting, the message pack for the floor.
#if canImport(Glibc)
import Glibc
#endif
import Foundation

struct FileStamp: Equatable {
    var inode: UInt64
    var mtimeSec: Int
    var mtimeNsec: Int
    var size: Int64
}

/// Every regular file under `root`, keyed by its path relative to `root`.
func snapshot(_ root: String) -> [String: FileStamp] {
    var out: [String: FileStamp] = [:]
    func walk(_ dir: String, _ rel: String) {
        guard let d = opendir(dir) else { return }
        defer { closedir(d) }
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { raw in
                String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
            }
            if name == "." || name == ".." { continue }
            let full = dir + "/" + name
            let r = rel.isEmpty ? name : rel + "/" + name
            var st = stat()
            guard lstat(full, &st) == 0 else { continue }
            if (st.st_mode & S_IFMT) == S_IFDIR {
                walk(full, r)
            } else if (st.st_mode & S_IFMT) == S_IFREG {
                out[r] = FileStamp(inode: UInt64(st.st_ino), mtimeSec: st.st_mtim.tv_sec,
                                   mtimeNsec: st.st_mtim.tv_nsec, size: Int64(st.st_size))
            }
        }
    }
    walk(root, "")
    return out
}

struct SnapshotDiff {
    var added = 0, removed = 0, changed = 0
    var total: Int { added + removed + changed }
    var text: String { total == 0 ? "0" : "\(total) (+\(added) -\(removed) ~\(changed))" }
}

func diff(_ a: [String: FileStamp], _ b: [String: FileStamp]) -> SnapshotDiff {
    var d = SnapshotDiff()
    for (k, v) in b {
        if let old = a[k] { if old != v { d.changed += 1 } } else { d.added += 1 }
    }
    for k in a.keys where b[k] == nil { d.removed += 1 }
    return d
}

/// Messages in a Maildir: regular files in any cur/ or new/ directory.
func countMaildirMessages(_ root: String) -> Int {
    snapshot(root).keys.filter { k in
        let parts = k.split(separator: "/")
        return parts.count >= 2 && (parts[parts.count - 2] == "cur" || parts[parts.count - 2] == "new")
    }.count
}

func removeTree(_ path: String) {
    try? FileManager.default.removeItem(atPath: path)
}

func makeDirs(_ path: String, mode: Int = 0o755) throws {
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true,
                                            attributes: [.posixPermissions: mode])
}

/// Writes a file in one go (setup only; not measured).
func writeFile(_ path: String, _ bytes: [UInt8], mode: mode_t = 0o644) throws {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
    guard fd >= 0 else { throw BenchError("cannot create \(path): \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var off = 0
    while off < bytes.count {
        let n = bytes[off...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        if n < 0 { if errno == EINTR { continue }; throw BenchError("write \(path) failed") }
        off += n
    }
}

func fsType(_ path: String) -> String {
    guard let r = try? runQuiet(["/usr/bin/stat", "-f", "-c", "%T", path]), r.status == 0 else { return "unknown" }
    return r.output.trimmingCharacters(in: .whitespacesAndNewlines)
}

// The floor: the simplest loop that puts the same bytes into the same Maildir folders safely.
// Runs as a child (`wdsync-bench --floor-child INDEX PACK DEST [THREADS [BATCH]]`) so it is
// measured exactly like the real clients. For each message: open tmp/<name> O_CREAT|O_EXCL,
// write, fsync, close, rename into new/. With BATCH, each worker writes and closes BATCH files,
// makes them durable with one syncfs(2), then renames them. One pread per message from a pack
// file (already in the page cache).
#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// One message of the pack: folder (relative Maildir path), offset, length.
struct PackEntry {
    var folder: String
    var offset: Int
    var length: Int
}

/// Writes all messages of the account into `pack` and an index (`folder\toffset\tlength` lines).
func writePack(_ boxes: [(folder: String, messages: [[UInt8]])], index: String, pack: String) throws -> (count: Int, bytes: Int) {
    let fd = open(pack, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw BenchError("cannot create \(pack)") }
    defer { close(fd) }
    var lines = ""
    var off = 0, count = 0
    for box in boxes {
        for raw in box.messages {
            var done = 0
            while done < raw.count {
                let n = raw[done...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                if n <= 0 { throw BenchError("write \(pack) failed") }
                done += n
            }
            lines += "\(box.folder)\t\(off)\t\(raw.count)\n"
            off += raw.count
            count += 1
        }
    }
    try writeFile(index, Array(lines.utf8))
    return (count, off)
}

func floorChildMain(_ args: [String]) -> Never {
    // INDEX PACK DEST [THREADS [BATCH]]
    guard (3...5).contains(args.count) else { eprint("usage: --floor-child INDEX PACK DEST [THREADS [BATCH]]\n"); exit(2) }
    let (index, pack, dest) = (args[0], args[1], args[2])
    let threads = args.count >= 4 ? max(1, Int(args[3]) ?? 1) : 1
    let batch = args.count == 5 ? max(1, Int(args[4]) ?? 1) : 0
    guard let text = try? String(contentsOfFile: index, encoding: .utf8) else { eprint("cannot read index\n"); exit(1) }
    let packFd = open(pack, O_RDONLY | O_CLOEXEC)
    guard packFd >= 0 else { eprint("cannot open pack\n"); exit(1) }
    var entries: [PackEntry] = []
    for line in text.split(separator: "\n") {
        let f = line.split(separator: "\t", omittingEmptySubsequences: false)
        guard f.count == 3, let off = Int(f[1]), let len = Int(f[2]) else { continue }
        entries.append(PackEntry(folder: dest + "/" + String(f[0]), offset: off, length: len))
    }
    for dir in Set(entries.map(\.folder)) {
        for sub in ["cur", "new", "tmp"] {
            try? FileManager.default.createDirectory(atPath: dir + "/" + sub, withIntermediateDirectories: true)
        }
    }
    let all = entries
    let pid = getpid()
    let stamp = time(nil)
    // Worker `w` writes entries w, w+threads, w+2*threads, ...: open tmp/ O_CREAT|O_EXCL, write,
    // fsync, close, rename into new/ (or: close, and per batch one syncfs, then the renames).
    let syncfs = unsafeBitCast(dlsym(UnsafeMutableRawPointer(bitPattern: 0), "syncfs"), to: (@convention(c) (Int32) -> Int32).self)
    @Sendable func work(_ w: Int) {
        var buf = [UInt8](repeating: 0, count: 1 << 20)
        var sealed: [(String, String)] = []
        let root = open(dest, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        defer { close(root) }
        func publish() {
            if syncfs(root) != 0 { eprint("syncfs failed\n"); exit(1) }
            for (tmp, target) in sealed where rename(tmp, target) != 0 { eprint("rename failed\n"); exit(1) }
            sealed.removeAll(keepingCapacity: true)
        }
        var i = w
        while i < all.count {
            let e = all[i]
            if buf.count < e.length { buf = [UInt8](repeating: 0, count: e.length) }
            var got = 0
            while got < e.length {
                let n = buf.withUnsafeMutableBytes { pread(packFd, $0.baseAddress! + got, e.length - got, off_t(e.offset + got)) }
                if n <= 0 { eprint("short read\n"); exit(1) }
                got += n
            }
            let name = "\(stamp).P\(pid)Q\(i).bench"
            let tmp = e.folder + "/tmp/" + name
            let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            if fd < 0 { eprint("open \(tmp): \(String(cString: strerror(errno)))\n"); exit(1) }
            var wr = 0
            while wr < e.length {
                let n = buf.withUnsafeBytes { write(fd, $0.baseAddress! + wr, e.length - wr) }
                if n < 0 { if errno == EINTR { continue }; eprint("write failed\n"); exit(1) }
                wr += n
            }
            i += threads
            if batch > 0 {
                close(fd)
                sealed.append((tmp, e.folder + "/new/" + name))
                if sealed.count == batch { publish() }
                continue
            }
            if fsync(fd) != 0 { eprint("fsync failed\n"); exit(1) }
            close(fd)
            if rename(tmp, e.folder + "/new/" + name) != 0 { eprint("rename failed\n"); exit(1) }
        }
        if !sealed.isEmpty { publish() }
    }
    if threads == 1 {
        work(0)
    } else {
        DispatchQueue.concurrentPerform(iterations: threads) { work($0) }
    }
    exit(0)
}

// Measured child processes.
//
// Peak RSS of a child must not include the memory of the benchmark itself, which hosts the
// simulator and may hold gigabytes of messages. Linux carries the parent's high-water RSS into
// the child's ru_maxrss when the child is created with vfork/posix_spawn (exec_mmap records the
// old mm's hiwater), and fork() copies the parent's anonymous pages. So every measured child is
// started by a small launcher process, spawned before anything big is allocated: it fork()s,
// exec()s, and reports wait4() rusage plus monotonic wall time back over a pipe.
#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Lock

struct LaunchRequest: Codable {
    var argv: [String]          // argv[0] is an absolute path
    var env: [String]           // KEY=VALUE
    var cwd: String?
    var stdout: String
    var stderr: String
}

struct LaunchReply: Codable {
    var pid: Int32
    var error: String?
    var done: Bool
    var exitCode: Int32?
    var signal: Int32?
    var wallNs: UInt64?
    var userUs: Int64?
    var sysUs: Int64?
    var maxrssKB: Int?
}

struct RunResult {
    var exitCode: Int32?
    var signal: Int32?
    var wall: Double          // seconds
    var user: Double
    var sys: Double
    var maxrssMiB: Double
    var ok: Bool { exitCode == 0 }
    var cpu: Double { user + sys }
    var statusText: String {
        if let s = signal { return "killed by signal \(s)" }
        return "exit \(exitCode ?? -1)"
    }
}

func monotonicNs() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

private func writeAll(_ fd: Int32, _ bytes: [UInt8]) {
    var off = 0
    while off < bytes.count {
        let n = bytes[off...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        if n < 0 { if errno == EINTR { continue }; return }
        off += n
    }
}

/// Reads newline-terminated lines from a file descriptor.
final class LineReader {
    private let fd: Int32
    private var buf: [UInt8] = []
    init(fd: Int32) { self.fd = fd }
    func next() -> String? {
        while true {
            if let nl = buf.firstIndex(of: 10) {
                let line = String(decoding: buf[..<nl], as: UTF8.self)
                buf.removeSubrange(...nl)
                return line
            }
            var chunk = [UInt8](repeating: 0, count: 65536)
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return nil }
            buf += chunk[..<n]
        }
    }
}

/// The child the launcher is waiting for, shared with its orphan watcher.
final class CurrentChild: Sendable {
    private let pid = Mutex<pid_t>(0)
    func set(_ p: pid_t) { pid.withLock { $0 = p } }
    func get() -> pid_t { pid.withLock { $0 } }
}

/// The launcher side: `wdsync-bench --launcher`, stdin = requests, stdout = replies.
func launcherMain() -> Never {
    signal(SIGPIPE, SIG_IGN)
    signal(SIGINT, SIG_IGN)   // Ctrl-C is handled by the benchmark, which then exits
    // If the benchmark goes away (killed, interrupted), stop the running child and exit, so
    // no client keeps running unobserved. Five checks a second; the main thread stays in wait4.
    let current = CurrentChild()
    let parent = getppid()
    Thread.detachNewThread {
        while getppid() == parent { usleep(200_000) }
        let pid = current.get()
        if pid > 0 { kill(pid, SIGTERM); usleep(2_000_000); kill(pid, SIGKILL) }
        exit(1)
    }
    let reader = LineReader(fd: 0)
    let enc = JSONEncoder()
    func reply(_ r: LaunchReply) {
        guard var d = try? enc.encode(r) else { return }
        d.append(10)
        writeAll(1, [UInt8](d))
    }
    while let line = reader.next() {
        guard let req = try? JSONDecoder().decode(LaunchRequest.self, from: Data(line.utf8)), !req.argv.isEmpty else {
            reply(LaunchReply(pid: -1, error: "bad request", done: true)); continue
        }
        let outFd = open(req.stdout, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        let errFd = open(req.stderr, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        let inFd = open("/dev/null", O_RDONLY | O_CLOEXEC)
        if outFd < 0 || errFd < 0 || inFd < 0 {
            reply(LaunchReply(pid: -1, error: "cannot open output files", done: true)); continue
        }
        let cargv: [UnsafeMutablePointer<CChar>?] = req.argv.map { strdup($0) } + [nil]
        let cenv: [UnsafeMutablePointer<CChar>?] = req.env.map { strdup($0) } + [nil]
        let cwd: UnsafeMutablePointer<CChar>? = req.cwd.map { strdup($0) } ?? nil
        let t0 = monotonicNs()
        let pid = fork()
        if pid == 0 {
            // Child: async-signal-safe calls only.
            dup2(inFd, 0); dup2(outFd, 1); dup2(errFd, 2)
            if let cwd { _ = chdir(cwd) }
            cargv.withUnsafeBufferPointer { a in
                cenv.withUnsafeBufferPointer { e in
                    _ = execve(a[0]!, a.baseAddress!, e.baseAddress!)
                }
            }
            _exit(127)
        }
        close(outFd); close(errFd); close(inFd)
        cargv.forEach { free($0) }; cenv.forEach { free($0) }; free(cwd)
        if pid < 0 { reply(LaunchReply(pid: -1, error: "fork failed: \(errno)", done: true)); continue }
        current.set(pid)
        reply(LaunchReply(pid: pid, error: nil, done: false))
        var status: Int32 = 0
        var ru = rusage()
        while wait4(pid, &status, 0, &ru) < 0 && errno == EINTR {}
        let t1 = monotonicNs()
        current.set(0)
        let exited = (status & 0x7f) == 0
        reply(LaunchReply(pid: pid, error: nil, done: true,
                          exitCode: exited ? (status >> 8) & 0xff : nil,
                          signal: exited ? nil : status & 0x7f,
                          wallNs: t1 - t0,
                          userUs: Int64(ru.ru_utime.tv_sec) * 1_000_000 + Int64(ru.ru_utime.tv_usec),
                          sysUs: Int64(ru.ru_stime.tv_sec) * 1_000_000 + Int64(ru.ru_stime.tv_usec),
                          maxrssKB: ru.ru_maxrss))
    }
    exit(0)
}

struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ s: String) { description = s }
}

/// Spawns a process directly (not measured). Returns the pid.
func spawnDirect(_ argv: [String], stdin: Int32, stdout: Int32, stderr: Int32, env: [String]? = nil) throws -> pid_t {
    var fa = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&fa)
    defer { posix_spawn_file_actions_destroy(&fa) }
    posix_spawn_file_actions_adddup2(&fa, stdin, 0)
    posix_spawn_file_actions_adddup2(&fa, stdout, 1)
    posix_spawn_file_actions_adddup2(&fa, stderr, 2)
    let cargv: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
    let envList = env ?? ProcessInfo.processInfo.environment.map { "\($0.key)=\($0.value)" }
    let cenv: [UnsafeMutablePointer<CChar>?] = envList.map { strdup($0) } + [nil]
    defer { cargv.forEach { free($0) }; cenv.forEach { free($0) } }
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, argv[0], &fa, nil, cargv, cenv)
    if rc != 0 { throw BenchError("cannot start \(argv[0]): \(String(cString: strerror(rc)))") }
    return pid
}

/// Runs a helper command (setup, not measured) and returns exit status and combined output.
@discardableResult
func runQuiet(_ argv: [String], env: [String]? = nil) throws -> (status: Int32, output: String) {
    let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("wdsync-bench-\(getpid())-\(monotonicNs()).out").path
    let fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    guard fd >= 0 else { throw BenchError("cannot create \(tmp)") }
    defer { close(fd); unlink(tmp) }
    let devnull = open("/dev/null", O_RDONLY | O_CLOEXEC)
    defer { close(devnull) }
    let pid = try spawnDirect(argv, stdin: devnull, stdout: fd, stderr: fd, env: env)
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    let out = (try? String(contentsOfFile: tmp, encoding: .utf8)) ?? ""
    let code: Int32 = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    return (code, out)
}

/// The benchmark's side of the launcher.
final class Launcher {
    private let toLauncher: Int32
    private let reader: LineReader
    private let pid: pid_t

    init(selfPath: String) throws {
        var a: [Int32] = [0, 0], b: [Int32] = [0, 0]
        guard pipe(&a) == 0, pipe(&b) == 0 else { throw BenchError("pipe failed") }
        for fd in a + b { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        pid = try spawnDirect([selfPath, "--launcher"], stdin: a[0], stdout: b[1], stderr: 2)
        Glibc.close(a[0]); Glibc.close(b[1])
        toLauncher = a[1]
        reader = LineReader(fd: b[0])
    }

    /// Runs `argv` to completion; `started` is called with the child's pid once it runs.
    func run(_ argv: [String], env: [String]? = nil, cwd: String? = nil, stdout: String, stderr: String,
             started: (pid_t) -> Void = { _ in }) throws -> RunResult {
        let environment = env ?? ProcessInfo.processInfo.environment.map { "\($0.key)=\($0.value)" }
        let req = LaunchRequest(argv: argv, env: environment, cwd: cwd, stdout: stdout, stderr: stderr)
        var d = try JSONEncoder().encode(req)
        d.append(10)
        writeAll(toLauncher, [UInt8](d))
        let dec = JSONDecoder()
        while true {
            guard let line = reader.next(), let r = try? dec.decode(LaunchReply.self, from: Data(line.utf8)) else {
                throw BenchError("launcher died")
            }
            if let e = r.error { throw BenchError("\(argv[0]): \(e)") }
            if !r.done { started(r.pid); continue }
            return RunResult(exitCode: r.exitCode, signal: r.signal,
                             wall: Double(r.wallNs ?? 0) / 1e9,
                             user: Double(r.userUs ?? 0) / 1e6, sys: Double(r.sysUs ?? 0) / 1e6,
                             maxrssMiB: Double(r.maxrssKB ?? 0) / 1024)
        }
    }

    func close() {
        Glibc.close(toLauncher)
        var st: Int32 = 0
        waitpid(pid, &st, 0)
    }
}

/// Writes to standard error (fd 2) without touching the C `stderr` global.
func eprint(_ s: String) {
    writeAll(2, Array(s.utf8))
}

import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
@testable import Maildir

/// A fresh directory under the system temp dir, removed when the value is dropped.
final class TempDir {
    let path: String
    init() {
        path = NSTemporaryDirectory() + "/maildir-test-" + UUID().uuidString
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
}

/// Deterministic PRNG (SplitMix64) so randomized tests are reproducible.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Random mailbox paths as bytes, biased towards hostile pieces.
func randomPathBytes(_ rng: inout SplitMix64) -> [UInt8] {
    let pieces: [[UInt8]] = [
        Array(".".utf8), Array("..".utf8), Array("/".utf8), Array("%".utf8), Array("%2E".utf8),
        Array("%25".utf8), Array("cur".utf8), Array("new".utf8), Array("tmp".utf8), Array("INBOX".utf8),
        Array("a".utf8), Array("B".utf8), Array(" ".utf8), Array("ä".utf8), Array("日本".utf8),
        [0], [0x0A], [0x7F], [0xC2, 0x85], [0xFF], [0xC3], [0xED, 0xA0, 0x80], Array("~".utf8),
        Array("maildirfolder".utf8), Array("\\".utf8), Array(":".utf8), Array("%~".utf8),
    ]
    let count = Int.random(in: 0...7, using: &rng)
    var out: [UInt8] = []
    for _ in 0..<count {
        out += pieces[Int.random(in: 0..<pieces.count, using: &rng)]
    }
    // Sometimes an over-long segment.
    if Int.random(in: 0..<40, using: &rng) == 0 {
        out += [UInt8](repeating: UInt8(ascii: "x"), count: Int.random(in: 200...600, using: &rng))
        out += pieces[Int.random(in: 0..<pieces.count, using: &rng)]
    }
    return out
}

func fileMode(_ path: String) -> mode_t? {
    var st = stat()
    guard lstat(path, &st) == 0 else { return nil }
    return st.st_mode & 0o7777
}

func fileMTime(_ path: String) -> Int? {
    var st = stat()
    guard stat(path, &st) == 0 else { return nil }
    #if canImport(Darwin)
    return Int(st.st_mtimespec.tv_sec)
    #else
    return Int(st.st_mtim.tv_sec)
    #endif
}

func fileATime(_ path: String) -> Int? {
    var st = stat()
    guard stat(path, &st) == 0 else { return nil }
    #if canImport(Darwin)
    return Int(st.st_atimespec.tv_sec)
    #else
    return Int(st.st_atim.tv_sec)
    #endif
}

func listing(_ path: String) -> [String] {
    ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted()
}

func readBytes(_ path: String) -> [UInt8]? {
    FileManager.default.contents(atPath: path).map { Array($0) }
}

func realPath(_ path: String) -> String? {
    guard let p = realpath(path, nil) else { return nil }
    defer { free(p) }
    return String(cString: p)
}

/// Runs python3 with a script and arguments; returns (exit status, stdout).
func runPython(_ script: String, _ args: [String]) throws -> (Int32, String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["python3", "-c", script] + args
    let out = Pipe()
    process.standardOutput = out
    try process.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
}

func message(_ subject: String, bodyLines: Int = 3) -> [UInt8] {
    var s = "From: a@example.com\r\nTo: b@example.com\r\nSubject: \(subject)\r\nMessage-ID: <\(subject)@example.com>\r\n\r\n"
    for i in 0..<bodyLines { s += "line \(i) of \(subject)\r\n" }
    return Array(s.utf8)
}

func sha256Hex(_ bytes: [UInt8]) -> String {
    hex(SHA256Hasher.digest(bytes))
}

import Foundation
import Testing

/// The short run of the sync torture test (`wdsync-torture`, contrib/torture.sh): a few fixed
/// seeds with the operations enabled by default must break no invariant. The long runs, and
/// the operations still off by default, are contrib/torture.sh's.
@Suite(.serialized) struct TortureTests {
    /// `wdsync-torture` is built next to `wdsync`.
    static let binary = URL(fileURLWithPath: wdsyncBinary).deletingLastPathComponent().appendingPathComponent("wdsync-torture").path

    static func torture(_ arguments: [String]) throws -> RunResult {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: binary)
        p.arguments = arguments + ["--wdsync", wdsyncBinary]
        let home = FileManager.default.temporaryDirectory.appendingPathComponent("wdsync-torture-home-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: home, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: home) }
        var env = ProcessInfo.processInfo.environment
        env["HOME"] = home
        p.environment = env
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        p.standardInput = FileHandle.nullDevice
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return RunResult(status: p.terminationStatus, stdout: String(decoding: data, as: UTF8.self), stderr: "")
    }

    @Test func aShortSeededRunBreaksNoInvariant() throws {
        let r = try Self.torture(["--seed", "1", "--runs", "3", "--steps", "36"])
        #expect(r.status == 0, "\(r.stdout)")
        #expect(r.stdout.contains("3 runs, 0 failures"), "\(r.stdout)")
        // Every step taken and every quiet point reached (a run that stopped early checked less).
        #expect(r.stdout.contains("108 steps, 9 quiet points checked"), "\(r.stdout)")
    }

    /// Not left to chance: mail arrives, the person restores last week's Maildir (the backup
    /// taken before that mail) and wdsync runs, --once and as the daemon. A wdsync that took the
    /// old Maildir as a source of changes would delete the new mail on the server ([lost]); this
    /// one refuses (74) until the person runs --adopt-maildir, and the mirror then equals the
    /// server.
    @Test func aRestoredOldMaildirDeletesNothing() throws {
        let script = "serverDeliver,serverDeliver,serverDeliver,once,muttFlag,restoreMaildir,once,daemonStart,pause,daemonStop,once"
        let r = try Self.torture(["--seed", "3", "--runs", "1", "--script", script, "-v"])
        #expect(r.status == 0, "\(r.stdout)")
        #expect(r.stdout.contains("step 7: once: exit 74"), "\(r.stdout)")
        #expect(r.stdout.contains("the person runs --adopt-maildir"), "\(r.stdout)")
        #expect(r.stdout.contains("1 runs, 0 failures"), "\(r.stdout)")
        #expect(r.stdout.contains("1 quiet points checked"), "\(r.stdout)")
    }

    /// The checker is not a rubber stamp: a message removed from the server behind the oracle's
    /// back is reported as lost, at the step it happened, with the seed to replay.
    @Test func theCheckerReportsALostMessage() throws {
        let r = try Self.torture(["--seed", "7", "--runs", "1", "--steps", "8", "--inject-loss", "4"])
        #expect(r.status == 1, "\(r.stdout)")
        #expect(r.stdout.contains("seed 7: FAIL step 4 [lost]"), "\(r.stdout)")
        #expect(r.stdout.contains("1 runs, 1 failures"), "\(r.stdout)")
    }

    /// A seed replays the same operations: the kinds of step are the same in two runs.
    @Test func aSeedReplaysTheSameOperations() throws {
        /// "step N: KIND" of every operation line ("step 3: muttFlag: a -> b").
        func kinds(_ output: String) -> [String] {
            output.split(separator: "\n").compactMap { line -> String? in
                let parts = line.trimmingCharacters(in: .whitespaces).split(separator: ":", maxSplits: 2)
                guard parts.count == 3, parts[0].hasPrefix("step "),
                      parts[1].dropFirst().allSatisfy({ $0.isLetter || $0.isNumber }) else { return nil }
                return parts[0] + ":" + parts[1]
            }
        }
        let first = try Self.torture(["--seed", "5", "--runs", "1", "--steps", "16", "-v"])
        let second = try Self.torture(["--seed", "5", "--runs", "1", "--steps", "16", "-v"])
        #expect(first.status == 0 && second.status == 0, "\(first.stdout)\n\(second.stdout)")
        #expect(kinds(first.stdout).count >= 16)
        #expect(kinds(first.stdout) == kinds(second.stdout), "\(first.stdout)\n\(second.stdout)")
    }
}

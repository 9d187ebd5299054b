import Foundation
import Lock
import Testing
@testable import WebSocket

/// A test gave up waiting.
struct TestTimeout: Error, CustomStringConvertible {
    let what: String
    var description: String { "timed out waiting for \(what)" }
}

/// The time limit of the suites here: a guard against a hang, not a speed check. Swift Testing
/// runs the other targets' blocking end-to-end tests on the same few cooperative threads (two on
/// a 2-core machine), which can hold these async tests back for minutes in a full run: under
/// ThreadSanitizer (contrib/sanitize.sh) the interop echo test went past 5 minutes that way,
/// while it takes 10 s alone.
let hangGuard: TimeLimitTrait.Duration = .minutes(10)

/// How long a test waits for something that normally takes milliseconds (a message, the end of
/// a stream, a fixture's port). Long for the same reason as `hangGuard`: a starved test must
/// not read as a broken one.
let patience: Double = 120

/// Runs `body` and fails with `TestTimeout` if it takes longer than `seconds`. This is the
/// only way tests wait: on a condition, bounded by a deadline — never a fixed sleep.
func within<T: Sendable>(_ seconds: Double, _ what: String = "a condition",
                         _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(nanoseconds: UInt64(seconds * 1_000_000_000))
            throw TestTimeout(what: what)
        }
        defer { group.cancelAll() }
        guard let first = try await group.next() else { throw TestTimeout(what: what) }
        return first
    }
}

/// Runs blocking `body` on its own thread (never on the cooperative pool).
func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { (cont: CheckedContinuation<T, any Error>) in
        Thread {
            do { cont.resume(returning: try body()) } catch { cont.resume(throwing: error) }
        }.start()
    }
}

extension WebSocketClient {
    /// The next message, or nil at the end (errors are thrown), within `seconds`.
    func next(_ seconds: Double = patience) async throws -> WebSocketMessage? {
        try await within(seconds, "the next WebSocket message") {
            var iterator = self.messages.makeAsyncIterator()
            return try await iterator.next()
        }
    }

    /// The next text message (fails on anything else).
    func nextText(_ seconds: Double = patience) async throws -> String {
        let m = try await next(seconds)
        guard case .text(let s)? = m else {
            Issue.record("expected a text message, got \(String(describing: m))")
            return ""
        }
        return s
    }

    /// How `messages` ends: nil if it finishes normally, else the error.
    func ending(_ seconds: Double = patience) async throws -> WebSocketError? {
        try await within(seconds, "the end of the message stream") {
            do {
                for try await _ in self.messages {}
                return nil
            } catch let e as WebSocketError {
                return e
            }
        }
    }
}

let fixturesDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")

/// A fixture server in Python, started for one test. It prints "PORT n" when ready and exits
/// when its stdin closes, so it cannot outlive the test process.
final class PythonServer: @unchecked Sendable { // Process and Pipe are thread-safe enough: only stop() touches them after start
    let port: Int
    private let process: Process
    private let stdin: Pipe

    private init(port: Int, process: Process, stdin: Pipe) {
        self.port = port
        self.process = process
        self.stdin = stdin
    }

    /// Starts `Fixtures/<script>` with `arguments`. Fails (never skips) if python3 or the
    /// `websockets` package is missing: CI installs them.
    static func start(_ script: String, _ arguments: [String] = []) async throws -> PythonServer {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", fixturesDirectory.appendingPathComponent(script).path] + arguments
        let stdin = Pipe(), stdout = Pipe(), stderr = Pipe()
        process.standardInput = stdin
        process.standardOutput = stdout
        process.standardError = stderr
        try process.run()
        let handle = stdout.fileHandleForReading
        let errHandle = stderr.fileHandleForReading
        let line: String
        do {
            line = try await within(patience, "\(script) to print its port") {
                try await onThread { () -> String in
                    var bytes: [UInt8] = []
                    while true {
                        let chunk = handle.readData(ofLength: 1)
                        if chunk.isEmpty { break }
                        if chunk.first == 10 { break }
                        bytes.append(contentsOf: chunk)
                    }
                    return String(decoding: bytes, as: UTF8.self)
                }
            }
        } catch {
            process.terminate()
            throw error
        }
        guard line.hasPrefix("PORT "), let port = Int(line.dropFirst(5)) else {
            process.terminate()
            process.waitUntilExit()
            let err = String(decoding: errHandle.readDataToEndOfFile(), as: UTF8.self)
            throw PythonServerError(detail: "\(script) did not start (is `pip install websockets` done?): \(line) \(err)")
        }
        return PythonServer(port: port, process: process, stdin: stdin)
    }

    func stop() {
        try? stdin.fileHandleForWriting.close()
        if process.isRunning { process.terminate() }
    }

    deinit { stop() }
}

struct PythonServerError: Error, CustomStringConvertible {
    let detail: String
    var description: String { detail }
}

/// Runs a command to completion (for openssl in the TLS tests).
@discardableResult
func run(_ arguments: [String]) throws -> String {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = arguments
    let out = Pipe()
    p.standardOutput = out
    p.standardError = out
    try p.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    let text = String(decoding: data, as: UTF8.self)
    guard p.terminationStatus == 0 else { throw PythonServerError(detail: "\(arguments.joined(separator: " ")) failed: \(text)") }
    return text
}

func hex(_ s: String) -> [UInt8] {
    var out: [UInt8] = []
    var chars = Array(s.filter { !$0.isWhitespace })
    while chars.count >= 2 {
        out.append(UInt8(String(chars[0...1]), radix: 16) ?? 0)
        chars.removeFirst(2)
    }
    return out
}

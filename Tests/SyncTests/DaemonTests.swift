import Foundation
import Lock
import Testing
@testable import Sync
import Maildir
import WildDuck

/// The daemon (`LiveSync`, `DaemonRun`) against a server in memory (`InMemoryServer`) and a
/// Maildir in a temporary directory, on a thread of its own as `wdsync` runs it: what comes in
/// on the update stream reaches the files, what a reader does to the files reaches the server,
/// and without any update stream the daemon polls. No socket, no simulator; each test waits
/// for an outcome (up to a minute, so a slow machine does not fail it), not for a time.
@Suite struct DaemonTests {
    static let inbox = "aaaaaaaaaaaaaaaaaaaaaa01"
    static let date = 1_700_000_000

    final class Fixture {
        let dir: String
        let server: InMemoryServer
        var config: AccountConfig

        init(streams: Bool) {
            dir = FileManager.default.temporaryDirectory.appendingPathComponent("daemon-\(UUID().uuidString)").path
            server = InMemoryServer(streams: streams)
            config = InMemoryServer.config(in: dir)
            config.live.pollInterval = 0.2
            config.live.reconnectDelay = 0.05
            server.withAccount { $0.addMailbox(DaemonTests.inbox, path: "INBOX") }
        }

        deinit { try? FileManager.default.removeItem(atPath: dir) }

        /// A delivery. `unlisted`: the mailbox's modifyIndex stays, so no reconcile lists it and
        /// only an event can bring it.
        @discardableResult
        func deliver(_ messageId: String, unlisted: Bool = false) -> Int {
            server.withAccount { account in
                let index = account.boxes[DaemonTests.inbox]?.modifyIndex ?? 0
                let uid = account.deliver(Array("Message-ID: <\(messageId)>\r\nSubject: \(messageId)\r\n\r\nbody\r\n".utf8),
                                          to: DaemonTests.inbox, date: DaemonTests.date)
                if unlisted { account.boxes[DaemonTests.inbox]?.modifyIndex = index }
                return uid
            }
        }

        var files: [String] { InMemoryServer.files(in: dir + "/mail", folder: "INBOX") }

        func seenOnServer(_ uid: Int) -> Bool? { server.withAccount { $0.boxes[DaemonTests.inbox]?.messages[uid]?.seen } }

        /// The transports the daemon said it switched to, in order.
        let transports = Mutex<[Transport]>([])

        /// Runs the daemon until `body` returns, then stops it; what ended it (nil: the stop).
        func running(_ body: () throws -> Void) throws -> Error? {
            let transports = self.transports
            let live = LiveSync(config: config, log: PushTests.NoLog(), remote: server) { event in
                if case .transport(let t) = event { transports.withLock { $0.append(t) } }
            }
            let ended = DispatchSemaphore(value: 0)
            let failure = Mutex<Error?>(nil)
            let thread = Thread {
                do { try live.run() } catch { failure.withLock { $0 = error } }
                ended.signal()
            }
            thread.start()
            defer {
                live.stop()
                ended.wait()
            }
            try body()
            return failure.withLock { $0 }
        }
    }

    struct TimedOut: Error, CustomStringConvertible { var description: String }

    /// Waits until `condition` holds, up to a minute.
    static func eventually(_ what: String, _ condition: () -> Bool) throws {
        let deadline = Date().addingTimeInterval(60)
        while !condition() {
            guard Date() < deadline else { throw TimedOut(description: "never: \(what)") }
            usleep(10_000)
        }
    }

    @Test func anEventOnTheStreamAndARenameInTheMaildirEachReachTheOtherSide() throws {
        let f = Fixture(streams: true)
        f.deliver("one")
        let ended = try f.running {
            try Self.eventually("the first sync writes the message") { f.files.count == 1 }
            try Self.eventually("the daemon follows the stream") { f.server.openStreams == 1 }
            // A delivery only the stream announces.
            let uid = f.deliver("two", unlisted: true)
            f.server.send([.messageAdded(mailbox: Self.inbox, uid: uid)])
            try Self.eventually("the announced message arrives") { f.files.count == 2 }
            // The reader reads it: the server has it as seen.
            guard let file = f.files.first(where: { $0.contains("_\(uid).") }) else { throw TimedOut(description: "no file") }
            let name = Maildir.uniquePart(ofFileName: (file as NSString).lastPathComponent) + ":2,S"
            try FileManager.default.moveItem(atPath: "\(f.dir)/mail/\(file)", toPath: "\(f.dir)/mail/INBOX/cur/\(name)")
            try Self.eventually("the server has it as seen") { f.seenOnServer(uid) == true }
        }
        #expect(ended == nil)
        // Sent once: the rename is one request, not one per reconcile.
        let flagRequests = f.server.withAccount { $0.calls.filter { if case .setFlags = $0 { true } else { false } }.count }
        #expect(flagRequests == 1)
    }

    @Test func withoutUpdateStreamsTheDaemonPolls() throws {
        let f = Fixture(streams: false)
        let ended = try f.running {
            try Self.eventually("the daemon falls back to polling") { f.transports.withLock { $0.last } == .polling }
            // Announced nowhere: each comes with a poll (the second after the switch's
            // reconcile, whichever of the two brought the first).
            f.deliver("one")
            try Self.eventually("a poll brings the message") { f.files.count == 1 }
            f.deliver("two")
            try Self.eventually("the next poll brings the next") { f.files.count == 2 }
        }
        #expect(ended == nil)
        // It says it polls, and never that it follows a stream.
        #expect(f.transports.withLock { $0 } == [.polling])
    }
}

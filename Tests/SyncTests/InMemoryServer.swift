import Foundation
import Lock
@testable import Sync
import WildDuck

/// The server behind an `InMemoryAccount`, for running whole passes of the engine
/// (`AccountSync.syncOnce`) without sockets: every connection is the one account, the journal
/// has no entries (so the pass lists what changed, as against an upstream WildDuck whose
/// journal proves nothing), and there are no live update streams (the daemon would poll).
///
/// One connection at a time: the tests run with `connections: 1`, where the engine's only
/// download thread runs while the engine's own thread waits for it.
final class InMemoryServer: RemoteServer, @unchecked Sendable {
    let account = InMemoryAccount()
    private let cancelled = Mutex<@Sendable () -> Bool>({ false })

    var userId: String? { "5f0000000000000000000001" }
    var isCancelled: @Sendable () -> Bool {
        get { cancelled.withLock { $0 } }
        set { cancelled.withLock { $0 = newValue } }
    }

    func connect() -> any RemoteAccount { account }

    func readJournal(after lastEventId: String?, handle: CloseHandle, timeout: Double,
                     onOpen: () -> Void, onEntry: (JournalEntry) -> Void,
                     onComment: () -> Void) throws -> JournalStream.End {
        onOpen()
        return .ended
    }

    func webSocketUpdates(mailboxes: [String], options: WebSocketStreamOptions, sink: UpdateSink,
                          log: @escaping @Sendable (StreamLogLevel, String) -> Void) -> any UpdateStream {
        Absent(sink: sink)
    }

    func journalUpdates(after lastEventId: String?, sink: UpdateSink) -> any UpdateStream { Absent(sink: sink) }

    /// A stream the server does not have: it says so at once, as a 404 would.
    final class Absent: UpdateStream {
        init(sink: UpdateSink) { sink.failed(reason: "no update stream in memory", unavailable: true, auth: false) }
        func stop() {}
        func follow(mailboxes: [String]) -> Bool { false }
    }
}

import Net

/// WildDuck's journal, read over `GET /users/:user/updates` (Server-Sent Events). The daemon's
/// SSE stream (`SSEUpdateStream`) and `--once` (`Session.readJournal`, whose entries the engine's
/// `JournalReplay` makes its proof of) both read it here. The server's behaviour this relies on, in
/// https://github.com/nodemailer/wildduck/blob/08c5804798e7ffe1b281859c4edcec2465d058c2/lib/api/updates.js and
/// https://github.com/nodemailer/wildduck/blob/08c5804798e7ffe1b281859c4edcec2465d058c2/lib/imap-notifier.js (see also
/// docs/incremental-sync.md):
/// - with a `Last-Event-ID` (header or query, 24 hex) the server first sends every journal entry
///   of the user with `_id` greater than it, oldest first (updates.js#L187-L199, #L238-L246);
///   without one it sends no backlog at all (updates.js#L200-L213);
/// - after those entries it sends one `COUNTERS` per mailbox the replay touched, with the last
///   entry's id (updates.js#L253-L296). The listener that reads live changes is only added
///   once the replay is written (updates.js#L193 calls `setup`), so the first `COUNTERS` on a
///   connection comes after every replayed entry. Live reads send `COUNTERS` too
///   (updates.js#L144), and the first of them starts again from the id the client sent, as the
///   replay does not move it (updates.js#L148 vs #L187-L199): replayed entries come twice;
/// - a failed replay is an `event: error` frame (updates.js#L189-L191);
/// - journal ids are ObjectIds made by whichever process writes the entry
///   (imap-notifier.js#L223, `insertMany`), so across processes they are only roughly ordered;
/// - entries live 3 hours (the `journal_autoexpire` TTL index on `created`,
///   https://github.com/nodemailer/wildduck/blob/08c5804798e7ffe1b281859c4edcec2465d058c2/indexes.yaml#L560-L566).
public enum JournalStream {
    public enum End: Sendable {
        /// The server closed the stream (or `handle` was closed).
        case ended
        /// Not a 200: 404/405 mean the server has no such endpoint.
        case refused(status: Int, code: String?)
    }

    /// Opens the stream and hands every entry to `onEntry` until it ends or `handle` is closed.
    /// `onComment` is told when a comment (the server's heartbeat) arrived.
    static func run(session: Session, lastEventId: String?, handle: CloseHandle, timeout: Double,
                    onOpen: () -> Void, onEntry: (JournalEntry) -> Void, onComment: () -> Void = {}) throws -> End {
        let connector = session.connector
        let connection = HTTPConnection(endpoint: session.endpoint, timeout: timeout) { endpoint in
            let s = try connector(endpoint)
            handle.set(s)
            return s
        }
        defer { connection.close() }
        var headers = [("X-Access-Token", session.token ?? ""), ("Accept", "text/event-stream")]
        var path = "/users/\(session.userId ?? "me")/updates"
        if let lastEventId {
            headers.append(("Last-Event-ID", lastEventId))
            // Also as a query parameter: WildDuck reads either, and some of its versions read
            // only the query string (lib/api/updates.js).
            if ServerID.isObjectId(lastEventId) { path += "?Last-Event-ID=" + lastEventId }
        }
        var parser = SSEParser()
        var status = 0
        var errorBody = [UInt8]()
        _ = try connection.stream("GET", path, headers: headers, onHead: { head in
            status = head.status
            if status == 200 { onOpen() }
        }, sink: { chunk in
            guard status == 200 else { if errorBody.count < 4096 { errorBody += chunk }; return }
            let comments = parser.comments
            for event in try parser.feed(chunk) { onEntry(JournalEntry(event)) }
            if parser.comments != comments { onComment() }
        })
        if status == 200 { return .ended }
        return .refused(status: status, code: (try? JSON.parse(errorBody))?["code"]?.string)
    }
}

/// The account's event stream from a position (the journal's replay, then what comes next), as
/// `--once` reads it to its end: part of `RemoteServer`. `Session` is the real one; the tests
/// give the journal replay an in-memory one.
public protocol JournalSource: Sendable {
    /// Reads the journal from after `lastEventId` (none: no backlog, only what comes next),
    /// handing every entry to `onEntry`, until the stream ends or `handle` is closed (from
    /// another thread). `timeout` bounds each wait for the server.
    func readJournal(after lastEventId: String?, handle: CloseHandle, timeout: Double,
                     onOpen: () -> Void, onEntry: (JournalEntry) -> Void,
                     onComment: () -> Void) throws -> JournalStream.End
}

extension Session: JournalSource {
    public func readJournal(after lastEventId: String?, handle: CloseHandle, timeout: Double,
                            onOpen: () -> Void, onEntry: (JournalEntry) -> Void,
                            onComment: () -> Void) throws -> JournalStream.End {
        try JournalStream.run(session: self, lastEventId: lastEventId, handle: handle, timeout: timeout,
                              onOpen: onOpen, onEntry: onEntry, onComment: onComment)
    }
}

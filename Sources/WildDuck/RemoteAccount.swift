/// The account on the server, as the sync engine calls it: the seam between the engine and
/// the REST API, so that the engine's steps can run against something else than a WildDuck
/// over HTTP (the tests' in-memory server). `WildDuckClient` is the one real implementation;
/// the methods' documentation is there. Like it, one per thread.
///
/// What all connections share (the login, the journal, the update streams) is the
/// `RemoteServer` each account connection comes from.
public protocol RemoteAccount: AnyObject {
    /// The server's clock at its last answer, when it sent one.
    var serverTime: Int? { get }
    /// Told about every object of a listing that is left out because it is not valid.
    var onSkipped: (String) -> Void { get set }
    func close()
    func authenticate() throws

    // Settings and filters.
    func fetchUser() throws -> JSON
    func fetchAutoreply() throws -> JSON
    func fetchFilters() throws -> (limits: JSON?, filters: [(id: String, json: JSON)])
    func fetchFilter(id: String) throws -> JSON
    func createFilter(_ fields: [(String, JSON)]) throws
    func updateSettings(_ fields: [(String, JSON)]) throws
    func updateAutoreply(_ fields: [(String, JSON)]) throws

    // Mailboxes and listings.
    func fetchMailboxes() throws -> [Mailbox]
    func createMailbox(path: String, hidden: Bool, retention: Int?) throws -> String
    func setSubscribed(mailbox: String, _ subscribed: Bool) throws
    func listMessages(mailbox: String, cursor: String?, limit: Int) throws -> MessagePage
    func searchNew(mailbox: String, fromUid: Int, cursor: String?, limit: Int) throws -> MessagePage
    func searchUids(mailbox: String, uids: String, cursor: String?, limit: Int) throws -> MessagePage
    func uidLists(mailbox: String, _ uids: [Int]) -> [String]
    func searchNewest(cursor: String?, limit: Int) throws -> MessagePage
    func searchByDate(mailbox: String?, from: Int, to: Int, cursor: String?, limit: Int) throws -> MessagePage

    // Writing (two-way sync).
    @discardableResult
    func setFlags(mailbox: String, uids: String, _ update: FlagUpdate) throws -> Int
    func moveMessages(mailbox: String, uids: String, to target: String, _ update: FlagUpdate) throws -> [(Int, Int)]
    func deleteMessage(mailbox: String, uid: Int) throws
    func uploadMessage(mailbox: String, raw: [UInt8], seen: Bool, flagged: Bool, draft: Bool,
                       date: Int) throws -> (uid: Int, size: Int)

    // Downloads.
    func downloadMessage(mailbox: String, uid: Int, maxBytes: Int, begin: () throws -> Void,
                         sink: (UnsafeRawBufferPointer) throws -> Void) throws
    func downloadMessages(_ messages: [(mailbox: String, uid: Int, maxBytes: Int)],
                          begin: (Int) throws -> Void,
                          sink: (Int, UnsafeRawBufferPointer) throws -> Void,
                          end: (Int) throws -> Void) -> (done: Int, stoppedBy: Error?)
}

/// The client's defaults, for callers that hold only the protocol.
extension RemoteAccount {
    public func listMessages(mailbox: String, cursor: String?) throws -> MessagePage {
        try listMessages(mailbox: mailbox, cursor: cursor, limit: 250)
    }

    public func searchNew(mailbox: String, fromUid: Int, cursor: String?) throws -> MessagePage {
        try searchNew(mailbox: mailbox, fromUid: fromUid, cursor: cursor, limit: 250)
    }

    public func searchUids(mailbox: String, uids: String, cursor: String?) throws -> MessagePage {
        try searchUids(mailbox: mailbox, uids: uids, cursor: cursor, limit: 250)
    }

    public func searchNewest(cursor: String?) throws -> MessagePage {
        try searchNewest(cursor: cursor, limit: 250)
    }

    public func searchByDate(mailbox: String?, from: Int, to: Int, cursor: String?) throws -> MessagePage {
        try searchByDate(mailbox: mailbox, from: from, to: to, cursor: cursor, limit: 250)
    }
}

extension WildDuckClient: RemoteAccount {}

/// The server behind the account, as the engine holds it: what its connections share (the
/// login, the cancellation of a pass), where a thread gets a connection of its own, and the
/// server's changes from a position: the journal read to its end (`JournalSource`, for
/// `--once`) and the live update streams (for the daemon). `Session` is the one real
/// implementation; the wire (SSE framing, the WebSocket's subscriptions) stays behind it.
public protocol RemoteServer: AnyObject, JournalSource {
    /// The account's id once authenticated.
    var userId: String? { get }
    /// Checked between retries: true stops the waiting (the daemon's SIGTERM).
    var isCancelled: @Sendable () -> Bool { get set }
    /// A connection of its own, for one thread (each download thread opens one).
    func connect() -> any RemoteAccount
    /// The server's updates over its WebSocket, following `mailboxes` (and the new ones
    /// `UpdateStream.follow` adds). The stream reports to `sink` until it is stopped.
    func webSocketUpdates(mailboxes: [String], options: WebSocketStreamOptions, sink: UpdateSink,
                          log: @escaping @Sendable (StreamLogLevel, String) -> Void) -> any UpdateStream
    /// The server's journal as it grows, from after `lastEventId` (none: only what comes next).
    func journalUpdates(after lastEventId: String?, sink: UpdateSink) -> any UpdateStream
}

extension Session: RemoteServer {
    public func connect() -> any RemoteAccount { WildDuckClient(session: self) }

    public func webSocketUpdates(mailboxes: [String], options: WebSocketStreamOptions, sink: UpdateSink,
                                 log: @escaping @Sendable (StreamLogLevel, String) -> Void) -> any UpdateStream {
        WebSocketUpdateStream(session: self, options: options, mailboxes: mailboxes, sink: sink, log: log)
    }

    public func journalUpdates(after lastEventId: String?, sink: UpdateSink) -> any UpdateStream {
        SSEUpdateStream(session: self, lastEventId: lastEventId, sink: sink)
    }
}

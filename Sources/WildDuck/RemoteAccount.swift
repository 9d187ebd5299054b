/// The account on the server, as the sync engine calls it: the seam between the engine and
/// the REST API, so that the engine's steps can run against something else than a WildDuck
/// over HTTP (the tests' in-memory server). `WildDuckClient` is the one real implementation;
/// the methods' documentation is there. Like it, one per thread.
///
/// Left out, because they need the `Session` itself and not one connection's calls: the
/// journal and the update streams (`Session.readJournal`, `SSEUpdateStream`,
/// `WebSocketUpdateStream`), and the parallel downloads, whose threads each open a
/// `WildDuckClient` of their own on the session.
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

import Foundation
import Lock
@testable import Sync
import WildDuck

/// The server behind an `InMemoryAccount`, for running the engine without sockets: whole passes
/// (`AccountSync.syncOnce`) and the daemon (`LiveSync`). Every connection is the one account,
/// each call made under one lock, so a test can change the account (`withAccount`) while the
/// daemon's thread runs. The journal has no entries (so a pass lists what changed, as against an
/// upstream WildDuck whose journal proves nothing). The update streams: none (`streams` false:
/// the server answers as one without `/ws` or `/updates`, and the daemon polls), or streams the
/// test feeds (`send`), which say they are connected at once.
final class InMemoryServer: RemoteServer, @unchecked Sendable {
    private let account = InMemoryAccount()
    private let lock = Mutex(())
    private let state = Mutex<(cancelled: @Sendable () -> Bool, streams: [Stream])>(({ false }, []))
    /// Whether the update streams exist.
    let streams: Bool

    init(streams: Bool = false) { self.streams = streams }

    /// The account, under the connections' lock.
    func withAccount<T>(_ body: (InMemoryAccount) throws -> T) rethrows -> T {
        try lock.withLock { _ in try body(account) }
    }

    /// How many streams are open (a daemon follows the account once one is).
    var openStreams: Int { state.withLock { $0.streams.filter { !$0.stopped.withLock { $0 } }.count } }

    /// Sends events on every open stream, as the server's change notifications.
    func send(_ events: [RemoteEvent]) {
        for stream in state.withLock({ $0.streams }) where !stream.stopped.withLock({ $0 }) {
            stream.sink.push(events, lastEventId: nil)
        }
    }

    var userId: String? { "5f0000000000000000000001" }
    var isCancelled: @Sendable () -> Bool {
        get { state.withLock { $0.cancelled } }
        set { state.withLock { $0.cancelled = newValue } }
    }

    func connect() -> any RemoteAccount { Connection(server: self) }

    func readJournal(after lastEventId: String?, handle: CloseHandle, timeout: Double,
                     onOpen: () -> Void, onEntry: (JournalEntry) -> Void,
                     onComment: () -> Void) throws -> JournalStream.End {
        onOpen()
        return .ended
    }

    func webSocketUpdates(mailboxes: [String], options: WebSocketStreamOptions, sink: UpdateSink,
                          log: @escaping @Sendable (StreamLogLevel, String) -> Void) -> any UpdateStream {
        open(sink)
    }

    func journalUpdates(after lastEventId: String?, sink: UpdateSink) -> any UpdateStream { open(sink) }

    private func open(_ sink: UpdateSink) -> any UpdateStream {
        let stream = Stream(sink: sink)
        guard streams else {
            sink.failed(reason: "no update stream in memory", unavailable: true, auth: false)
            return stream
        }
        state.withLock { $0.streams.append(stream) }
        sink.connected()
        return stream
    }

    final class Stream: UpdateStream {
        let sink: UpdateSink
        let stopped = Mutex(false)
        init(sink: UpdateSink) { self.sink = sink }
        func stop() { stopped.withLock { $0 = true } }
        func follow(mailboxes: [String]) -> Bool { false }
    }

    /// One connection: the account's calls, each under the server's lock.
    final class Connection: RemoteAccount {
        let server: InMemoryServer
        init(server: InMemoryServer) { self.server = server }
        private func call<T>(_ body: (InMemoryAccount) throws -> T) rethrows -> T { try server.withAccount(body) }

        var serverTime: Int? { call { $0.serverTime } }
        var onSkipped: (String) -> Void = { _ in }
        func close() { call { $0.close() } }
        func authenticate() throws { try call { try $0.authenticate() } }
        func fetchUser() throws -> JSON { try call { try $0.fetchUser() } }
        func fetchAutoreply() throws -> JSON { try call { try $0.fetchAutoreply() } }
        func fetchFilters() throws -> (limits: JSON?, filters: [(id: String, json: JSON)]) { try call { try $0.fetchFilters() } }
        func fetchFilter(id: String) throws -> JSON { try call { try $0.fetchFilter(id: id) } }
        func createFilter(_ fields: [(String, JSON)]) throws { try call { try $0.createFilter(fields) } }
        func updateSettings(_ fields: [(String, JSON)]) throws { try call { try $0.updateSettings(fields) } }
        func updateAutoreply(_ fields: [(String, JSON)]) throws { try call { try $0.updateAutoreply(fields) } }
        func fetchMailboxes() throws -> [Mailbox] { try call { try $0.fetchMailboxes() } }
        func createMailbox(path: String, hidden: Bool, retention: Int?) throws -> String {
            try call { try $0.createMailbox(path: path, hidden: hidden, retention: retention) }
        }
        func setSubscribed(mailbox: String, _ subscribed: Bool) throws { try call { try $0.setSubscribed(mailbox: mailbox, subscribed) } }
        func listMessages(mailbox: String, cursor: String?, limit: Int) throws -> MessagePage {
            try call { try $0.listMessages(mailbox: mailbox, cursor: cursor, limit: limit) }
        }
        func searchNew(mailbox: String, fromUid: Int, cursor: String?, limit: Int) throws -> MessagePage {
            try call { try $0.searchNew(mailbox: mailbox, fromUid: fromUid, cursor: cursor, limit: limit) }
        }
        func searchUids(mailbox: String, uids: String, cursor: String?, limit: Int) throws -> MessagePage {
            try call { try $0.searchUids(mailbox: mailbox, uids: uids, cursor: cursor, limit: limit) }
        }
        func uidLists(mailbox: String, _ uids: [Int]) -> [String] { call { $0.uidLists(mailbox: mailbox, uids) } }
        func searchNewest(cursor: String?, limit: Int) throws -> MessagePage {
            try call { try $0.searchNewest(cursor: cursor, limit: limit) }
        }
        func searchByDate(mailbox: String?, from: Int, to: Int, cursor: String?, limit: Int) throws -> MessagePage {
            try call { try $0.searchByDate(mailbox: mailbox, from: from, to: to, cursor: cursor, limit: limit) }
        }
        func setFlags(mailbox: String, uids: String, _ update: FlagUpdate) throws -> Int {
            try call { try $0.setFlags(mailbox: mailbox, uids: uids, update) }
        }
        func moveMessages(mailbox: String, uids: String, to target: String, _ update: FlagUpdate) throws -> [(Int, Int)] {
            try call { try $0.moveMessages(mailbox: mailbox, uids: uids, to: target, update) }
        }
        func deleteMessage(mailbox: String, uid: Int) throws { try call { try $0.deleteMessage(mailbox: mailbox, uid: uid) } }
        func uploadMessage(mailbox: String, raw: [UInt8], seen: Bool, flagged: Bool, draft: Bool,
                           date: Int) throws -> (uid: Int, size: Int) {
            try call { try $0.uploadMessage(mailbox: mailbox, raw: raw, seen: seen, flagged: flagged, draft: draft, date: date) }
        }
        func downloadMessage(mailbox: String, uid: Int, maxBytes: Int, begin: () throws -> Void,
                             sink: (UnsafeRawBufferPointer) throws -> Void) throws {
            try call { try $0.downloadMessage(mailbox: mailbox, uid: uid, maxBytes: maxBytes, begin: begin, sink: sink) }
        }
        func downloadMessages(_ messages: [(mailbox: String, uid: Int, maxBytes: Int)], begin: (Int) throws -> Void,
                              sink: (Int, UnsafeRawBufferPointer) throws -> Void,
                              end: (Int) throws -> Void) -> (done: Int, stoppedBy: Error?) {
            call { $0.downloadMessages(messages, begin: begin, sink: sink, end: end) }
        }
    }
}

extension InMemoryServer {
    /// An account in `dir` for this server: its Maildir `dir/mail`, its cache `dir/cache.db`, one
    /// connection (the account serves one at a time), and a password file that is never read
    /// (the server in memory takes no password).
    static func config(in dir: String) -> AccountConfig {
        AccountConfig(name: "test", server: "http://127.0.0.1:9", username: "user", password: .file(dir + "/no-password"),
                      maildir: dir + "/mail", db: dir + "/cache.db", connections: 1)
    }

    /// The message files of `folder` under the Maildir `root`, relative to it, sorted.
    static func files(in root: String, folder: String) -> [String] {
        ["new", "cur"].flatMap { sub in
            ((try? FileManager.default.contentsOfDirectory(atPath: "\(root)/\(folder)/\(sub)")) ?? [])
                .filter { !$0.hasPrefix(".") }.map { "\(folder)/\(sub)/\($0)" }
        }.sorted()
    }
}

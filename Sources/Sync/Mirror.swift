#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Maildir
import Net
import Store
import WildDuck

/// What one sync pass did (for the summary line, tests and benchmarks).
public struct SyncSummary: Sendable, Equatable {
    public var mailboxesListed = 0
    public var mailboxesChanged = 0
    public var downloaded = 0
    public var bytesDownloaded = 0
    public var reused = 0          // moves satisfied by renaming an existing file
    public var renamed = 0         // flag or folder changes applied by rename
    public var removed = 0         // files unlinked
    public var recovered = 0       // files adopted after an interrupted run
    public var vanished = 0        // messages gone from the server while being fetched
    public var failed = 0          // messages whose body was refused (too large, cut off); tried again next pass
    public init() {}
}

/// Mirrors one account: server → Store → Maildir. One instance per account, used by one thread.
///
/// The order of every step keeps the cache and the Maildir consistent whatever moment the
/// process is killed at: metadata from the server is committed first (messages without a file
/// are "pending"); files are written to tmp/, fsynced and renamed into place; then the store
/// records the file. A file that is in place but not yet recorded is found again by its unique
/// name on the next run (`recoverPending`), so nothing is downloaded twice or left behind.
public final class Mirror {
    public let config: AccountConfig
    public let store: Store
    public let maildir: Maildir
    public let session: Session
    let log: SyncLog
    let client: WildDuckClient
    public internal(set) var summary = SyncSummary()
    /// fsync the folders after a batch of deliveries. The live engine turns it off: its batches
    /// are one or two files, and a lost rename is re-downloaded anyway.
    public var syncFolders = true
    /// Checked between pages and between downloads; when it says true the pass stops with
    /// `SyncError.cancelled`, keeping everything done so far (the daemon's SIGTERM).
    public var isCancelled: @Sendable () -> Bool = { false } {
        didSet { session.isCancelled = isCancelled }
    }

    public init(config: AccountConfig, log: SyncLog) throws {
        self.config = config
        self.log = log
        guard let endpoint = HTTPEndpoint(url: config.server) else {
            throw SyncError.config("--server \(config.server) is not an http:// or https:// URL")
        }
        let root = URL(fileURLWithPath: config.maildir).standardizedFileURL.path
        let dbDir = (config.db as NSString).deletingLastPathComponent
        if !dbDir.isEmpty { try Mirror.makeDirectory(dbDir) }
        try Mirror.makeDirectory(root)
        store = try Store(path: config.db)
        maildir = Maildir(root: root, layout: config.layout)
        let password = config.password
        session = Session(endpoint: endpoint, username: config.username, password: { try password.read() },
                          connector: Connectors.make(caFile: config.caFile, insecure: config.insecure),
                          retry: config.retry)
        session.retryLog = { [log] message in log.log(.verbose, message) }
        client = WildDuckClient(session: session)
        if let account = try store.account(), account.layout != config.layout.rawValue {
            throw SyncError.config("the cache \(config.db) was exported with layout \(account.layout); use --layout \(account.layout) or a new --maildir and --db")
        }
    }

    static func makeDirectory(_ path: String) throws {
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
        } catch {
            throw SyncError.localIO("cannot create \(path): \((error as NSError).localizedDescription); check the path and permissions")
        }
    }

    // MARK: - One complete pass

    /// Authenticates, refreshes settings, filters, autoreply and mailboxes, re-lists mailboxes whose
    /// modifyIndex changed, then exports. Safe to call again at any time.
    public func syncOnce() throws -> SyncSummary {
        summary = SyncSummary()
        if session.userId == nil { try client.authenticate() }
        try store.setAccount(AccountRecord(server: config.server, username: config.username, userId: session.userId,
                                           maildir: maildir.root, layout: config.layout.rawValue))
        try syncSettings()
        let changed = try syncMailboxList()
        for mailbox in changed { try syncMessages(of: mailbox) }
        try export()
        try store.setSyncedNow()
        return summary
    }

    /// Settings (the user object), filters and autoreply: small, fetched whole every pass.
    public func syncSettings() throws {
        let user = try client.fetchUser()
        let autoreply = try client.fetchAutoreply()
        let filters = try client.fetchFilters()
        try store.transaction {
            try store.setUserJSON(user.text)
            try store.setAutoreplyJSON(autoreply.text)
            try store.replaceFilters(filters.filters.map { ($0.id, $0.json.text) }, limitsJSON: filters.limits?.text)
        }
    }

    /// Lists mailboxes, records them, forgets the ones the server no longer has, and returns
    /// those whose modifyIndex differs from what was last mirrored.
    public func syncMailboxList() throws -> [MailboxRecord] {
        let remote = try client.fetchMailboxes()
        summary.mailboxesListed = remote.count
        let local = try store.mailboxes()
        let remoteIds = Set(remote.map(\.id))
        try store.transaction {
            for m in remote {
                try store.upsertMailbox(MailboxRecord(id: m.id, path: m.path, specialUse: m.specialUse,
                                                      modifyIndex: m.modifyIndex, total: m.total, unseen: m.unseen,
                                                      json: m.json.text))
            }
            for m in local where !remoteIds.contains(m.id) {
                log.log(.verbose, "mailbox \(m.path) was deleted on the server")
                try store.removeMailbox(id: m.id)
            }
        }
        let changed = try store.mailboxes().filter { $0.syncedIndex != $0.modifyIndex }
        summary.mailboxesChanged = changed.count
        return changed
    }

    /// Re-lists one mailbox page by page and applies new, changed and vanished messages.
    public func syncMessages(of mailbox: MailboxRecord) throws {
        var known = try store.messageFlags(mailboxId: mailbox.id)
        var seen = Set<Int>()
        var cursor: String?
        var highest = mailbox.highestUid
        var restarted = false
        log.log(.verbose, "listing \(mailbox.path)")
        while true {
            if isCancelled() { throw SyncError.cancelled }
            let page: MessagePage
            do {
                page = try client.listMessages(mailbox: mailbox.id, cursor: cursor)
            } catch let error as WildDuckError where cursor != nil && error.isInputValidation && !restarted {
                log.log(.warning, "the server rejected a listing cursor for \(mailbox.path); listing it again from the start")
                restarted = true
                cursor = nil
                seen.removeAll()
                continue
            } catch let error as WildDuckError where error.isNotFound {
                log.log(.verbose, "mailbox \(mailbox.path) disappeared while listing; the next pass removes it")
                return
            }
            try store.transaction {
                for item in page.items {
                    seen.insert(item.uid)
                    highest = max(highest, item.uid)
                    let flags = Mirror.flags(of: item)
                    if let old = known[item.uid] {
                        if old != flags {
                            try store.updateFlags(mailboxId: mailbox.id, uid: item.uid, flags: flags, json: item.json.text)
                            known[item.uid] = flags
                        }
                    } else {
                        try store.insertMessage(MessageRecord(
                            mailboxId: mailbox.id, uid: item.uid, messageId: item.messageId, size: item.size,
                            idate: item.idate, flags: flags, json: item.json.text,
                            uniq: Mirror.uniqueName(mailboxId: mailbox.id, uid: item.uid, idate: item.idate)))
                        known[item.uid] = flags
                    }
                }
            }
            guard let next = page.nextCursor, !page.items.isEmpty else { break }
            cursor = next
        }
        try store.transaction {
            for uid in known.keys where !seen.contains(uid) {
                try store.removeMessage(mailboxId: mailbox.id, uid: uid)
            }
            try store.setMailboxSynced(id: mailbox.id, index: mailbox.modifyIndex, highestUid: highest)
        }
    }

    static func flags(of item: MessageItem) -> MessageFlags {
        var f: MessageFlags = []
        if item.draft { f.insert(.draft) }
        if item.flagged { f.insert(.flagged) }
        if item.forwarded { f.insert(.passed) }
        if item.answered { f.insert(.replied) }
        if item.seen { f.insert(.seen) }
        if item.deleted { f.insert(.trashed) }
        return f
    }

    /// `<idate>.wd<mailboxId>_<uid>.<host>`: fixed when the message is first seen, never changed.
    static func uniqueName(mailboxId: String, uid: Int, idate: Int?) -> String {
        Maildir.uniqueName(time: idate ?? 0, key: "wd\(mailboxId)_\(uid)", host: hostName)
    }

    /// Whether a file name is one wdsync writes (so foreign files are never touched).
    static func ownsFile(_ name: String) -> Bool {
        let parts = Maildir.uniquePart(ofFileName: name).split(separator: ".", maxSplits: 2)
        return parts.count == 3 && parts[0].allSatisfy(\.isNumber) && parts[1].hasPrefix("wd") && parts[1].contains("_")
    }

    static let hostName: String = {
        var buffer = [UInt8](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return "localhost" }
        let name = String(decoding: buffer.prefix { $0 != 0 }, as: UTF8.self)
        return name.isEmpty ? "localhost" : name
    }()
}

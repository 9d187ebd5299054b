#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Maildir
import Store
import WildDuck

/// Where a pass is, for the progress line.
public struct SyncProgress: Sendable, Equatable {
    public enum Phase: Sendable, Equatable { case listing, downloading, uploading }
    public var phase: Phase
    public var mailbox: String
    /// Messages listed, downloaded or (restore) uploaded so far, of `total`.
    public var done: Int
    public var total: Int
    public var bytes = 0
    public var totalBytes = 0
    public init(phase: Phase, mailbox: String, done: Int, total: Int, bytes: Int = 0, totalBytes: Int = 0) {
        self.phase = phase; self.mailbox = mailbox; self.done = done; self.total = total
        self.bytes = bytes; self.totalBytes = totalBytes
    }
}

/// What one sync pass did (for the summary line, tests and benchmarks).
public struct SyncSummary: Sendable, Equatable {
    public var mailboxesListed = 0
    public var mailboxesChanged = 0
    public var downloaded = 0
    public var bytesDownloaded = 0
    public var moved = 0           // messages moved on the server: their file renamed, not downloaded
    public var renamed = 0         // flag or folder changes applied by rename
    public var removed = 0         // files unlinked
    public var recovered = 0       // files adopted after an interrupted run
    public var vanished = 0        // messages gone from the server while being fetched
    public var failed = 0          // messages whose body was refused (too large, cut off); tried again next pass
    // Two-way: what the scan found and the push sent.
    public var localChanges = 0    // flag changes, moves, deletes and uploads the scan queued
    public var pushedFlags = 0
    public var pushedMoves = 0
    public var pushedDeletes = 0
    public var uploaded = 0
    public var pushRequests = 0
    public var pending = 0         // mutations still in the outbox after the pass
    /// Mailboxes brought up to date from the server's journal instead of a listing.
    public var fromJournal = 0
    /// Files not uploaded because they are larger than the server accepts.
    public var tooLarge: [String] = []
    /// What the mass-delete breaker holds back after the pass, per mailbox (`Breaker`).
    public var heldDeletes: [HeldChanges] = []
    /// Whether this pass did the full check, and how many differences it repaired.
    public var fullCheck = false
    public var fullCheckDifferences = 0
    public init() {}
}

extension SyncSummary {
    /// Adds what an export changed.
    mutating func add(_ export: Export.Counts) {
        downloaded += export.downloaded; bytesDownloaded += export.bytesDownloaded
        moved += export.moved; renamed += export.renamed; removed += export.removed
        recovered += export.recovered; vanished += export.vanished; failed += export.failed
    }

    /// What the pass changed in the Maildir.
    public var changes: ChangeCounts {
        ChangeCounts(new: downloaded + recovered, bytes: bytesDownloaded, changed: renamed + moved, removed: removed)
    }
}

/// How the engine is run; the differences between the two are read from this value, never
/// set from outside.
public enum RunMode: Sendable, Equatable {
    /// `--once` (and `--dry-run`, `--verify`): every pass is whole on its own.
    case once
    /// The daemon: its event source follows the journal, it retries pushes on its own schedule,
    /// and a mailbox's deletes must have settled for `settle` seconds before they are sent.
    case daemon(settle: Int)
}

/// Syncs one account: the steps around the store (scan, push, pull, export; `syncOnce` runs
/// them as one pass, `DaemonRun` as changes come) and what they share: the account's cache,
/// Maildir and server session. One instance per account, used by one thread.
///
/// The order of every step keeps the cache and the Maildir consistent whatever moment the
/// process is killed at: metadata from the server is committed first (messages without a file
/// are "pending"); files are written to tmp/, fsynced and renamed into place; then the store
/// records the file. A file that is in place but not yet recorded is found again by its unique
/// name on the next run (`recoverPending`), so nothing is downloaded twice or left behind.
public final class AccountSync {
    public let config: AccountConfig
    public let store: Store
    public let maildir: Maildir
    /// The server behind the account; `client` is this thread's connection to it.
    let server: any RemoteServer
    public let mode: RunMode
    let log: SyncLog
    let client: any RemoteAccount
    public internal(set) var summary = SyncSummary()
    /// Make the folders durable after a batch of deliveries (`Maildir.syncFolders`), before the
    /// cache records them. The live engine keeps it on too: a delivery whose rename a power cut
    /// lost while the cache kept its record would be read by the next scan as a message the user
    /// deleted (docs/durability.md). Off only for measurements.
    public var syncFolders = true
    /// Checked between pages and between downloads; when it says true the pass stops with
    /// `SyncError.cancelled`, keeping everything done so far (the daemon's SIGTERM).
    public var isCancelled: @Sendable () -> Bool = { false } {
        didSet { server.isCancelled = isCancelled }
    }
    /// `syncOnce` catches up from the server's journal (see `JournalReplay`) and keeps a journal
    /// position. Not in the daemon: its own event source follows the journal.
    var readsJournal: Bool { mode == .once }
    /// `syncOnce` ends with the push's error when local changes could not be sent (after
    /// pulling all the same), so `--once` exits with it. Not in the daemon: it retries the push
    /// on its own schedule, and a reconcile must not fail because of it.
    var stopsOnFailedPush: Bool { mode == .once }
    var journal = JournalReplay()
    /// Seconds a mailbox's deletes (moves to Trash or Junk, T flags) must have settled before
    /// they are sent (`Breaker`); `--once` reads a snapshot.
    var settleSeconds: Int {
        if case .daemon(let settle) = mode { return settle }
        return 0
    }
    /// When the push last held back settling changes: the next push is due then (unix seconds).
    public internal(set) var settleUntil: Int?
    /// Log what the breaker holds at every push (`--once`), not only when it starts holding it.
    var remindsOfHeld: Bool { mode == .once }
    /// What this pass's push sent, for the journal proof.
    var sentThisPass: [SentRequest] = []
    /// `--full-check` asks for one full check, not one per pass: a daemon reconciles every few
    /// minutes (every poll, without an update stream), and only its first pass does it.
    lazy var fullCheckAsked = config.fullCheckNow
    /// Folders the last scan could not settle (`LocalScan.Result.readAgain`): read at every
    /// scan until they are, whatever inotify says.
    private(set) var readAgain: Set<String> = []
    /// New files the last scan or push left alone because they were still being written: the
    /// daemon looks again once they may have stopped (`LocalScan.quietSeconds`).
    private(set) var unstableFiles = 0
    /// Told how a pass advances (the progress line on a terminal): per listing page and per
    /// batch of recorded downloads, on this mirror's thread.
    public var onProgress: ((SyncProgress) -> Void)?
    /// Told of every file the exporter (or the push) makes appear (true) or go away (false) in
    /// a folder's cur/ or new/, relative to the root, right after it did: the daemon's inotify
    /// watch tells these from the user's changes (`LocalWatch`).
    var onOwnWrite: ((String, Bool) -> Void)?
    /// Told of each folder the export creates for a mailbox that had none, before it writes
    /// into it: `--once` watches it from then on (`LocalWatch.watchNew`).
    var onNewFolder: ((String) -> Void)?
    /// The marker the Maildir must have (`MaildirMarker`), from the check at the start of the
    /// last pass; nil before the first.
    var expectedMarker: MaildirMarker? { didSet { if expectedMarker?.id != oldValue?.id { expectedRoot = nil } } }
    /// The root directory's device and inode when the marker was first found there: a copy with
    /// the same marker put in its place (`cp -a` of a backup) is another directory all the same.
    var expectedRoot: [UInt64]?
    /// This process moved the generation forward before changing the Maildir and has not
    /// closed it yet (`openGeneration`).
    var generationOpen = false

    /// `remote`: the server to sync with; nil, the WildDuck at `config.server` (the tests pass
    /// one that is not).
    public init(config: AccountConfig, log: SyncLog, mode: RunMode = .once, remote: (any RemoteServer)? = nil) throws {
        self.config = config
        self.mode = mode
        self.log = log
        CrashRecorder.startTrace(config)
        guard let url = ServerURL(config.server) else {
            throw SyncError.config("--server \(config.server) is not an http:// or https:// URL")
        }
        let root = URL(fileURLWithPath: config.maildir).standardizedFileURL.path
        let dbDir = (config.db as NSString).deletingLastPathComponent
        if !dbDir.isEmpty { try AccountSync.makeDirectory(dbDir) }
        store = try Store(path: config.db)
        if FileTrace.isOn { CrashRecorder.start(store: store, db: config.db, maildir: root, states: config.fileTraceStates) }
        // A root that vanished after files were written is a disk that did not mount, not a
        // user who deleted all mail: write nothing, on either side (`checkMaildir` says more).
        if !FileManager.default.fileExists(atPath: root), !config.adoptMaildir,
           try store.hasExportedFiles() || store.maildirState() != nil {
            throw SyncError.localIO("the Maildir \(root) is missing (a disk that is not mounted?); nothing was changed on the server or on disk. Mount it, or run wdsync --once --adopt-maildir to have every message downloaded into a new one")
        }
        if !config.dryRun { try AccountSync.makeDirectory(root) }
        maildir = Maildir(root: root, layout: config.layout)
        self.server = remote ?? AccountSync.wildDuck(url, config: config, log: log)
        client = self.server.connect()
        client.onSkipped = { [log] in log.log(.warning, $0) }
        if let t = config.journalTimeout { journal.timeout = t }
        if let account = try store.account(), account.layout != config.layout.rawValue {
            throw SyncError.config("the cache \(config.db) was exported with layout \(account.layout); use --layout \(account.layout) or a new --maildir and --db")
        }
    }

    /// The WildDuck at `url`: the one place the engine names the WildDuck module's session.
    static func wildDuck(_ url: ServerURL, config: AccountConfig, log: SyncLog) -> any RemoteServer {
        let password = config.password
        let session = Session(server: url, username: config.username, password: { try password.read() },
                              caFile: config.caFile, insecure: config.insecure, retry: config.retry)
        session.retryLog = { [log, level = config.retriesVisible ? LogLevel.info : .verbose] message in log.log(level, message) }
        return session
    }

    /// The export step over this account's store and Maildir.
    var exporter: Export {
        Export(store: store, maildir: maildir, log: log,
               downloads: Downloads(server: server, client: client, maildir: maildir, connections: config.connections,
                                    log: log, isCancelled: isCancelled),
               isCancelled: isCancelled, syncFolders: syncFolders, onOwnWrite: onOwnWrite, onNewFolder: onNewFolder,
               onProgress: onProgress)
    }

    /// Makes the Maildir match the store (`Export`). Files of messages that left the server are
    /// unlinked unless they became orphans less than `keepOrphans` seconds ago: the live engine
    /// keeps them for a while, so a move whose two halves arrive in different batches is still
    /// a rename — but out of the readers' view at once (see `Export.hideOrphans`).
    public func export(keepOrphans: Double = 0) throws {
        // Never into a Maildir that is not the one the pass started with (a root moved away
        // under the daemon is not created again); the generation moves before the first change.
        try requireSameMaildir()
        if try exportHasWork() { try openGeneration() }
        var export = exporter
        defer { summary.add(export.counts) }
        try export.run(keepOrphans: keepOrphans)
    }

    /// The pull step over this account's store and server.
    var pull: Pull {
        Pull(store: store, client: client, server: server, config: config, log: log, readsJournal: readsJournal,
             journal: journal, isCancelled: isCancelled, onProgress: onProgress)
    }

    /// Creates a directory and its parents, mode 0700, with an error the user can act on.
    public static func makeDirectory(_ path: String) throws {
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
    ///
    /// Two-way, the four steps run around the store: scan (Maildir → outbox, before any
    /// request, so changes made offline are queued even when the server is unreachable), push
    /// (outbox → server; not with `pullOnly`), pull (server → store, merging into what is still
    /// pending) and export (store → Maildir). A last scan records the folders as they are now.
    public func syncOnce() throws -> SyncSummary {
        summary = SyncSummary()
        sentThisPass = []
        // Outside the daemon (which watches all the time), the pass watches the folders itself:
        // what it saw besides its own writes tells the last scan which folders to read.
        let watch = try watchThisPass()
        defer { if let watch { watch.stop(); onOwnWrite = nil; onNewFolder = nil } }
        // A Maildir that is not the one this cache last wrote is refused here (74, nothing
        // changed); one whose files the cache does not know is adopted: not read as local
        // changes, its files matched to the server's messages after the pull.
        let check = try log.timed("maildir check") { try checkMaildir() }
        if check == .same { try log.timed("local scan") { try scanLocal() } }
        if server.userId == nil { try log.timed("authenticate") { try client.authenticate() } }
        try store.setAccount(AccountRecord(server: config.server, username: config.username, userId: server.userId,
                                           maildir: maildir.root, layout: config.layout.rawValue))
        var pushFailure: WildDuckError?
        do { try log.timed("push") { try push() } } catch let error as WildDuckError where AccountSync.pullsAfter(error) {
            // What could not be sent waits in the outbox, and what the server changed is still
            // pulled: the outbox rule holds back what would conflict with it.
            log.log(.warning, "sending local changes: \(error); they are kept and sent by a later run")
            pushFailure = error
        }
        let pulled = try pull.run(sent: sentThisPass, fullCheck: fullCheckAsked)
        summary.mailboxesListed = pulled.mailboxes
        summary.mailboxesChanged = pulled.changed.count
        summary.fromJournal = pulled.caught.fromJournal
        if let differences = pulled.fullCheck {
            // `--full-check` asks for one, not one per pass (the daemon reconciles often).
            fullCheckAsked = false
            summary.fullCheck = true
            summary.fullCheckDifferences = differences
        }
        if check == .adopt { try log.timed("adopt files") { try adoptFiles() } }
        try log.timed("export") { try export() }
        try lastScan(adopting: check == .adopt, watch: watch)
        try store.setSyncedNow()
        if check == .adopt { try finishAdoption() }
        try closeGeneration()
        try keepJournalPosition(after: pulled)
        summary.pending = try store.outboxCount()
        if let pushFailure, stopsOnFailedPush { throw pushFailure }
        return summary
    }

    /// A watch of every folder for this pass (nil in the daemon, which watches all the time).
    private func watchThisPass() throws -> LocalWatch? {
        guard onOwnWrite == nil, let watch = LocalWatch(root: maildir.root, onChange: {}) else { return nil }
        watch.watch(try folderDirectories())
        onOwnWrite = { path, appeared in watch.expect(path, appeared: appeared) }
        onNewFolder = { [maildir] folder in
            watch.watchNew(folder) { (try? maildir.listFolder(folder))?.isEmpty == true }
        }
        return watch
    }

    /// The scan after the export: records the folders as the export left them, and reads what
    /// the user changed meanwhile. After an adoption every folder is read: what was not matched
    /// is the user's new mail, uploaded now.
    private func lastScan(adopting: Bool, watch: LocalWatch?) throws {
        if adopting {
            try log.timed("last local scan") { try scanLocal(force: true) }
            try log.timed("push") { try push() }
        } else if let watch, watch.complete {
            // A folder the export wrote to is recorded as scanned only once its mtimes are a
            // tick old (see `LocalScan.snapshot`): wait until the newest one is, so that this pass
            // records them (at most a tick: a folder whose mtime is ahead of the clock, on a
            // network file system, is left to the next pass).
            var quietSince = Int(Date().timeIntervalSince1970 * 1e9)
            if summary.downloaded + summary.moved + summary.renamed + summary.removed > 0 {
                let newest = try store.mailboxes().compactMap { $0.folder.flatMap(maildir.folderTimes) }
                    .map { max($0.cur, $0.new) }.max() ?? 0
                let wait = newest + LocalScan.tickNanoseconds + 1_000_000 - quietSince
                if wait > 0 {
                    usleep(useconds_t(min(wait, LocalScan.tickNanoseconds + 1_000_000) / 1000))
                    quietSince = Int(Date().timeIntervalSince1970 * 1e9)
                }
            }
            let scope = scanScope(watch.drain())
            try log.timed("last local scan") { try scanLocal(scope: scope, quietSince: scope == nil ? nil : quietSince) }
        } else {
            try log.timed("last local scan") { try scanLocal() }
        }
    }

    /// Keeps the journal position a later pass replays from. It is kept by every complete pass,
    /// the daemon's reconciles too (which do not read the journal): a `--once` after the daemon
    /// starts from its last reconcile.
    private func keepJournalPosition(after pulled: Pull.Pulled) throws {
        var from = pulled.caught.read
        let stored = try store.lastEventId().flatMap { ObjectIdTime.seconds(of: $0) != nil ? $0.lowercased() : nil }
        if from == nil, pulled.changed.isEmpty, pulled.synced.isEmpty, let stored {
            // Nothing changed since the last pass and nothing was left to confirm: every entry
            // the journal wrote before this pass's listing was already accounted for, so the
            // stored position and the ids seen after it still hold (and may move up to
            // `overlap` before this pass).
            from = (stored, try store.journalSeen(), true)
        }
        var seen = from?.seen ?? []
        if from == nil { seen = try store.journalSeen() }
        var next = journal.nextPosition(listed: pulled.listed, readFrom: from?.from, seen: seen, complete: from?.complete ?? true)
        try store.transaction {
            // What this pass synced is final only once a later pass has read the journal from
            // here and found nothing new for it (see `JournalReplay`); what it confirmed is.
            // The daemon's passes are followed by its own update stream, which brings whatever
            // a change under way during their listings writes afterwards.
            for id in pulled.synced { try store.setMailboxUnsettled(id: id, from: readsJournal ? next.position : nil) }
            for id in pulled.caught.settled where !pulled.synced.contains(id) { try store.setMailboxUnsettled(id: id, from: nil) }
        }
        // The position never passes a mailbox still waiting to be confirmed.
        if let oldest = try store.mailboxes().compactMap(\.unsettledFrom).min(), oldest < next.position {
            next = (oldest, seen.filter { $0 > oldest }.sorted())
        }
        try store.setJournalPosition(next.position, seen: next.seen)
    }

    /// A push that failed this way does not stop the pull: the server answered (an error, or
    /// a connection that broke during one request). One that cannot be reached at all is not
    /// tried a second time in the same pass.
    static func pullsAfter(_ error: WildDuckError) -> Bool {
        let failure = error.failure
        return failure.remedy == .retry && failure.scope != .account
    }

    /// `cur/` and `new/` of every folder, relative to the root: what `LocalWatch` watches.
    func folderDirectories() throws -> [String] {
        try store.mailboxes().compactMap(\.folder).flatMap(LocalWatch.directories(of:))
    }

    /// The scope of a scan from what the watch saw: the folders someone else changed and those
    /// the last scan could not settle are read, the other watched ones are not.
    func scanScope(_ changes: LocalWatch.Changes, full: Bool = false) -> LocalScan.Scope? {
        guard !changes.overflow else { return nil }
        let changed = changes.changed.union(readAgain)
        return LocalScan.Scope(changed: changed, unchanged: full ? [] : changes.watched.subtracting(changed))
    }

    /// scan: what the user's programs changed in the Maildir becomes pending mutations.
    /// Returns how many it queued.
    @discardableResult
    func scanLocal(force: Bool = false, scope: LocalScan.Scope? = nil, quietSince: Int? = nil) throws -> Int {
        try requireSameMaildir()
        let scan = LocalScan(store: store, maildir: maildir, log: log)
        // Once more after the folders are read, before what they hold is recorded: a root
        // replaced during the scan (an unmounted disk, a restore) may have shown some folders
        // before and some after, and a message moved between them would read as a delete.
        let confirm = { try self.requireSameMaildir() }
        // The generation moves before the cache records a change read from the Maildir: from
        // then on a copy taken before the change is older than the cache, and refused — not
        // read again as the Maildir the cache knows (whose folders' times it may even share).
        let result: LocalScan.Result
        do {
            result = try scan.run(force: force, scope: scope, quietSince: quietSince, confirm: confirm, mayRecord: { self.generationOpen || self.expectedMarker == nil || self.config.dryRun })
        } catch let first as LocalScan.GenerationFirst {
            try openGeneration()
            result = try scan.run(confirm: confirm, snapshot: first.snapshot)
        }
        readAgain = result.readAgain
        unstableFiles = result.unstable
        let queued = result.flagChanges + result.moves + result.deletes + result.uploads
        summary.localChanges += queued
        summary.tooLarge += result.tooLarge
        if result.scanned > 0 {
            log.log(.verbose, "scanned \(result.scanned) folders: \(result.flagChanges) renamed, \(result.moves) moved, \(result.deletes) deleted, \(result.uploads) new")
        }
        return queued
    }

    /// push: pending mutations go to the server (nothing with `pullOnly`).
    public func push() throws {
        guard !config.pullOnly else { return }
        if try store.outboxCount() > 0 {
            try requireSameMaildir()
            try openGeneration()
        }
        // What `--allow-mass-delete` or `--discard-held` decided while this process held the lock.
        let decisions = HeldDecisions.take(db: config.db)
        if !decisions.isEmpty {
            try store.transaction {
                for (decision, mailbox, uid) in decisions { try store.setHeld(mailboxId: mailbox, uid: uid, decision, from: .held) }
            }
        }
        let result = try Push(store: store, maildir: maildir, client: client, log: log, isCancelled: isCancelled,
                              allowMassDelete: config.allowMassDelete, massDeleteExempt: config.massDeleteExempt,
                              settle: settleSeconds).run()
        settleUntil = result.settleUntil
        summary.pushedFlags += result.flags
        summary.pushedMoves += result.moves
        summary.pushedDeletes += result.deletes
        summary.uploaded += result.uploads
        summary.pushRequests += result.requests
        unstableFiles += result.unstable
        if readsJournal { sentThisPass += result.sent }
        if result.released > 0 { log.log(.info, "sending \(result.released) changes released by --allow-mass-delete") }
        if result.discarded > 0 { log.log(.info, "\(result.discarded) held changes discarded (--discard-held); their messages are restored") }
        let held = try store.heldChanges()
        summary.heldDeletes = held
        let newly = Set(result.newlyHeld.map(\.mailboxId))
        for h in held where remindsOfHeld || newly.contains(h.mailboxId) {
            log.log(.error, "mass-delete breaker: \(h.description) held back, nothing of it sent to the server (10 or more and over 25 % of a mailbox within 24 h). If you meant it: wdsync --allow-mass-delete (it also reaches a running daemon); to undo it: wdsync --discard-held")
        }
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

extension Duration {
    /// "12.3 ms", for the debug log.
    var logText: String {
        String(format: "%.1f ms", Double(components.seconds) * 1000 + Double(components.attoseconds) / 1e15)
    }
}

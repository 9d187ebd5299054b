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
    /// The downloads of the current export, for `onProgress`.
    var downloadProgress: (progress: SyncProgress, base: Int, baseBytes: Int, paths: [String: String])?

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
        let check = try phase("maildir check") { try checkMaildir() }
        if check == .same { try phase("local scan") { try scanLocal() } }
        if server.userId == nil { try phase("authenticate") { try client.authenticate() } }
        try store.setAccount(AccountRecord(server: config.server, username: config.username, userId: server.userId,
                                           maildir: maildir.root, layout: config.layout.rawValue))
        var pushFailure: WildDuckError?
        do { try phase("push") { try push() } } catch let error as WildDuckError where AccountSync.pullsAfter(error) {
            // What could not be sent waits in the outbox, and what the server changed is still
            // pulled: the outbox rule holds back what would conflict with it.
            log.log(.warning, "sending local changes: \(error); they are kept and sent by a later run")
            pushFailure = error
        }
        let pulled = try pull()
        if check == .adopt { try phase("adopt files") { try adoptFiles() } }
        try phase("export") { try export() }
        try lastScan(adopting: check == .adopt, watch: watch)
        try store.setSyncedNow()
        if check == .adopt { try finishAdoption() }
        try closeGeneration()
        try keepJournalPosition(after: pulled)
        summary.pending = try store.outboxCount()
        if let pushFailure, stopsOnFailedPush { throw pushFailure }
        return summary
    }

    /// What a pass's pull did, for the journal position it keeps.
    struct Pulled {
        /// The mailboxes whose modifyIndex had changed.
        var changed: [MailboxRecord]
        var caught: CatchUp
        /// The mailboxes this pass listed or brought up to date.
        var synced: Set<String>
        /// The server's second of the mailbox listing.
        var listed: Int
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

    /// pull: server → store. Settings, the mailbox list, the journal since the last pass, the
    /// listings of what it cannot account for, and the full check when it is due.
    private func pull() throws -> Pulled {
        try phase("settings") { try syncSettings() }
        let changed = try phase("mailbox list") { try syncMailboxList() }
        // The journal's ids carry the server's clock, so the position is taken from it: the
        // second in which the server answered the listing (the client's clock, after the
        // listing, when it sends no Date). A client clock behind the server's would start the
        // next replay before the listing, and entries counted twice could hide a missing one.
        let listed = client.serverTime ?? Int(Date().timeIntervalSince1970)
        let caught = try phase("journal") { try catchUpFromJournal(changed) }
        var synced = caught.synced
        try phase("listings") {
            for mailbox in caught.relist {
                try syncMessages(of: mailbox)
                synced.insert(mailbox.id)
            }
        }
        if try fullCheckDue(now: listed) {
            // Mailboxes brought up to date from the journal are checked too: that is what it checks.
            let listedNow = Set(caught.relist.map(\.id))
            try phase("full check") { synced.formUnion(try fullCheck(except: listedNow, now: listed)) }
        }
        return Pulled(changed: changed, caught: caught, synced: synced, listed: listed)
    }

    /// The scan after the export: records the folders as the export left them, and reads what
    /// the user changed meanwhile. After an adoption every folder is read: what was not matched
    /// is the user's new mail, uploaded now.
    private func lastScan(adopting: Bool, watch: LocalWatch?) throws {
        if adopting {
            try phase("last local scan") { try scanLocal(force: true) }
            try phase("push") { try push() }
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
            try phase("last local scan") { try scanLocal(scope: scope, quietSince: scope == nil ? nil : quietSince) }
        } else {
            try phase("last local scan") { try scanLocal() }
        }
    }

    /// Keeps the journal position a later pass replays from. It is kept by every complete pass,
    /// the daemon's reconciles too (which do not read the journal): a `--once` after the daemon
    /// starts from its last reconcile.
    private func keepJournalPosition(after pulled: Pulled) throws {
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

    /// Runs one phase of a pass and logs how long it took (`--debug`): where a slow run's time
    /// goes, without a profiler.
    @discardableResult
    private func phase<T>(_ name: String, _ body: () throws -> T) rethrows -> T {
        let start = ContinuousClock.now
        defer { log.log(.debug, "\(name) took \((ContinuousClock.now - start).logText)") }
        return try body()
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
        // Each new or changed filter whole, once: the listing has query and action only in
        // words, and `--restore` needs them as objects. An unchanged listing costs no request.
        // One that cannot be read now is read by a later pass; the mail goes on either way.
        for filter in try store.filterDetails() where filter.detail == nil {
            do {
                try store.setFilterDetail(id: filter.id, json: try client.fetchFilter(id: filter.id).text)
            } catch let error as WildDuckError {
                log.log(.verbose, "filter \(filter.id) could not be read whole: \(error); a later pass tries again")
                // Deleted since the listing, or refused alone: the next; anything else, later.
                guard case .server(_, let status, _, _) = error, status < 500, status != 429 else { break }
            }
        }
    }

    /// Lists mailboxes, records them, forgets the ones the server no longer has, and returns
    /// those whose modifyIndex differs from what was last mirrored.
    ///
    /// A list that cannot be the account's is refused before anything is recorded (see
    /// `checkMailboxList`): removing a mailbox discards its pending changes and its files.
    public func syncMailboxList() throws -> [MailboxRecord] {
        let remote = try client.fetchMailboxes()
        summary.mailboxesListed = remote.count
        let local = try store.mailboxes()
        let remoteIds = Set(remote.map(\.id))
        try AccountSync.checkMailboxList(remote.map(\.path), dropping: local.filter { !remoteIds.contains($0.id) }.map(\.path),
                                    of: local.count, allowed: config.allowMassDelete)
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

    /// Refuses a mailbox list that is bad data rather than the account's mailboxes: one without
    /// INBOX (WildDuck creates it with the user and refuses to rename or delete it:
    /// https://github.com/nodemailer/wildduck/blob/08c5804798e7ffe1b281859c4edcec2465d058c2/lib/mailbox-handler.js,
    /// `rename` and `del`; an empty success from a broken proxy has none), or one that drops
    /// more than half of at least 4 known mailboxes at once (unless `--allow-mass-delete`).
    /// Acting on either would remove the mailboxes from the cache, discard their pending changes
    /// and delete every file, to download them again when the server answers properly.
    static func checkMailboxList(_ paths: [String], dropping dropped: [String], of known: Int, allowed: Bool) throws {
        let route = "GET /users/:user/mailboxes"
        let kept = "nothing was removed locally and pending changes are kept"
        guard paths.contains(where: { $0.uppercased() == "INBOX" }) else {
            throw WildDuckError.malformed(route: route, detail: "the server listed \(paths.count) mailboxes and no INBOX, which WildDuck always has (a proxy answering for it?); \(kept); re-run when the server answers properly")
        }
        if !allowed && known >= 4 && dropped.count * 2 > known {
            throw WildDuckError.malformed(route: route, detail: "the server no longer lists \(dropped.count) of the \(known) mailboxes (\(dropped.prefix(5).joined(separator: ", "))\(dropped.count > 5 ? ", …" : "")); \(kept). If they were deleted on the server, run once with --allow-mass-delete")
        }
    }

    /// What `catchUpFromJournal` did: the mailboxes still to list, the mailboxes it brought up to
    /// date (`synced`: proven, or unsettled ones it applied new entries to) and those it confirmed
    /// (`settled`), and, when the replay was read, where from, the ids applied (for the next
    /// position) and whether it was read to a mark of its end.
    struct CatchUp {
        var relist: [MailboxRecord]
        var synced: Set<String> = []
        var settled: Set<String> = []
        var read: (from: String, seen: Set<String>, complete: Bool)?
    }

    /// Brings the changed mailboxes the journal can account for up to date from its replay
    /// (through the same path as the daemon's events, so pending local changes are merged as a
    /// listing would), confirms or completes the unsettled ones, and returns what must still be
    /// listed: the changed mailboxes it could not prove, and the unsettled ones it could not
    /// confirm (no journal to read them from).
    func catchUpFromJournal(_ changed: [MailboxRecord]) throws -> CatchUp {
        let changedIds = Set(changed.map(\.id))
        let unsettled = try store.mailboxes().filter { $0.unsettledFrom != nil && !changedIds.contains($0.id) && $0.syncedIndex != nil }
        // The daemon reads no replay here: what it cannot confirm it lists (and its own update
        // stream follows what comes after).
        guard readsJournal else { return CatchUp(relist: changed + unsettled) }
        guard changed.contains(where: { $0.syncedIndex != nil }) || !unsettled.isEmpty else { return CatchUp(relist: changed) }
        let now = client.serverTime.map(Double.init) ?? Date().timeIntervalSince1970
        guard let resume = journal.resumeId(position: try store.lastEventId(), now: now) else {
            log.log(.verbose, "no journal position from the last \(Int(journal.journalLife - journal.ageMargin)) minutes; listing the changed mailboxes")
            return CatchUp(relist: changed + unsettled)
        }
        let seen = try store.journalSeen()
        let outcome = journal.read(session: server, resumeId: resume, changed: changed, unsettled: unsettled + changed.filter { $0.unsettledFrom != nil },
                                   seen: seen, sent: sentThisPass, reflected: { [store] e in AccountSync.reflected(e, in: store) }, log: log)
        if let failure = outcome.failure {
            log.log(.verbose, "\(failure); listing the changed mailboxes")
            return CatchUp(relist: changed + unsettled)
        }
        if !outcome.proven.isEmpty || !outcome.touched.isEmpty {
            _ = try applyEvents(outcome.events)
            var highest: [String: Int] = [:]
            for case .messageAdded(let m, let uid) in outcome.events { highest[m] = max(highest[m] ?? 0, uid) }
            let touched = unsettled.filter { outcome.touched.contains($0.id) }
            try store.transaction {
                for (id, index) in outcome.proven {
                    try store.setMailboxSynced(id: id, index: index, highestUid: highest[id] ?? 0)
                }
                for m in touched { try store.setMailboxSynced(id: m.id, index: m.modifyIndex, highestUid: highest[m.id] ?? 0) }
            }
            log.log(.verbose, "\(outcome.proven.count) mailboxes brought up to date from the journal (\(outcome.events.count) events)")
        }
        summary.fromJournal = outcome.proven.count
        return CatchUp(relist: changed.filter { outcome.proven[$0.id] == nil },
                       synced: Set(outcome.proven.keys).union(outcome.touched), settled: outcome.settled,
                       read: (resume, seen.union(outcome.ids), outcome.complete))
    }

    /// Whether the cache already shows what a journal entry says: its message is there (EXISTS),
    /// gone (EXPUNGE), or has these flags as the server last gave them (FETCH).
    static func reflected(_ e: JournalEntry, in store: Store) -> Bool {
        guard let m = e.mailbox, let uid = e.uid, e.events.count == 1 else { return false }
        let row = try? store.message(mailboxId: m, uid: uid)
        switch e.events[0] {
        case .messageAdded: return row != nil
        case .messageRemoved: return row == nil
        case .messageFlags(_, _, let flags): return row.map { $0.baseFlags == MessageFlags(imap: flags) } ?? false
        default: return false
        }
    }

    /// How a listing differed from the cache.
    public struct ListingDifference: Sendable, Equatable {
        public var missing = 0      // messages the cache did not have
        public var staleFlags = 0   // messages whose flags the cache had wrong
        public var extra = 0        // messages the cache had that the server no longer lists
        public var total: Int { missing + staleFlags + extra }
    }

    /// Whether this pass does the full check: asked for (`--full-check`), or the last one is
    /// older than `fullCheckInterval` (a cache that never had one counts its first sync as one).
    func fullCheckDue(now: Int) throws -> Bool {
        guard !config.dryRun else { return false }
        if fullCheckAsked { return true }
        guard config.fullCheckInterval > 0 else { return false }
        guard let last = try store.lastFullCheck() else {
            try store.setLastFullCheck(now)
            return false
        }
        return Double(now - last) >= config.fullCheckInterval
    }

    /// The safety net, which depends on nothing the journal or `modifyIndex` say: every mailbox
    /// not listed by this pass is listed in full and compared with the cache. A difference is
    /// repaired like any listing's, and logged as a warning: the incremental sync missed it,
    /// which is a defect to report (or a change another client made while this pass ran).
    /// Returns the mailboxes it listed.
    func fullCheck(except listed: Set<String>, now: Int) throws -> Set<String> {
        var checked = Set<String>()
        var found = ListingDifference()
        for mailbox in try store.mailboxes() where !listed.contains(mailbox.id) && mailbox.syncedIndex != nil {
            let difference = try syncMessages(of: mailbox)
            checked.insert(mailbox.id)
            guard difference.total > 0 else { continue }
            found.missing += difference.missing; found.staleFlags += difference.staleFlags; found.extra += difference.extra
            log.log(.warning, "full check: \(mailbox.path) differed from the server although the incremental sync had it as current: \(difference.missing) messages missing, \(difference.staleFlags) with stale flags, \(difference.extra) no longer on the server; repaired. Please report this as a wdsync defect (unless another client was changing this mailbox during the run)")
        }
        try store.setLastFullCheck(now)
        fullCheckAsked = false
        log.log(found.total > 0 ? .warning : .verbose, "full check of \(checked.count) mailboxes: \(found.total == 0 ? "the cache matched the server" : "\(found.total) differences repaired")")
        summary.fullCheckDifferences = found.total
        summary.fullCheck = true
        return checked
    }

    /// Re-lists one mailbox page by page and applies new, changed and vanished messages; says
    /// how the listing differed from the cache.
    @discardableResult
    public func syncMessages(of mailbox: MailboxRecord) throws -> ListingDifference {
        var difference = ListingDifference()
        var known = try store.messageFlags(mailboxId: mailbox.id)
        var seen = Set<Int>()
        var cursor: String?
        var highest = mailbox.highestUid
        var restarted = false
        var incomplete = false   // the server listed items that are not valid
        let limit = Paging.limit(total: max(mailbox.total ?? 0, known.count))
        var paging = Paging(route: "GET messages", limit: limit, isCancelled: isCancelled)
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
                paging = Paging(route: "GET messages", limit: limit, isCancelled: isCancelled)
                seen.removeAll()
                incomplete = false
                continue
            } catch let error as WildDuckError where error.isNotFound {
                log.log(.verbose, "mailbox \(mailbox.path) disappeared while listing; the next pass removes it")
                return difference
            }
            if page.skipped > 0 { incomplete = true }
            onProgress?(SyncProgress(phase: .listing, mailbox: mailbox.path, done: seen.count + page.items.count,
                                     total: max(mailbox.total ?? 0, seen.count + page.items.count)))
            try store.transaction {
                for item in page.items {
                    let first = seen.insert(item.uid).inserted
                    highest = max(highest, item.uid)
                    let flags = MessageFlags(listing: item)
                    if let old = known[item.uid] {
                        if old != flags {
                            if first { difference.staleFlags += 1 }
                            try store.updateFlags(mailboxId: mailbox.id, uid: item.uid, flags: flags, json: item.json.text)
                            known[item.uid] = flags
                        }
                    } else {
                        difference.missing += 1
                        try store.insertMessage(MessageRecord(
                            mailboxId: mailbox.id, uid: item.uid, messageId: item.messageId, size: item.size,
                            idate: item.idate, flags: flags, json: item.json.text,
                            uniq: AccountSync.uniqueName(mailboxId: mailbox.id, uid: item.uid, idate: item.idate)))
                        known[item.uid] = flags
                    }
                }
            }
            do {
                guard let next = try paging.next(after: page) else { break }
                cursor = next
            } catch let error as WildDuckError {
                // What was read is kept; the mailbox is listed again next pass.
                try store.markMailboxStale(id: mailbox.id)
                throw error
            }
        }
        try store.transaction {
            // A listing with invalid items is not the whole truth: nothing is removed on its
            // word, and the mailbox is listed again next pass.
            if incomplete {
                try store.markMailboxStale(id: mailbox.id)
                return
            }
            for uid in known.keys where !seen.contains(uid) {
                difference.extra += 1
                try store.removeMessage(mailboxId: mailbox.id, uid: uid)
            }
            try store.setMailboxSynced(id: mailbox.id, index: mailbox.modifyIndex, highestUid: highest)
        }
        return difference
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

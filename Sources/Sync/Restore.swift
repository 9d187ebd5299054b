#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Lock
import Maildir
import Store
import WildDuck

/// `wdsync --restore`: puts a backup (a Maildir, with wdsync's cache when there is one) back
/// on a server, into the same account after a loss or into another one.
///
/// Three steps: read the backup (read-only: the cache is opened read-only, the Maildir only
/// read), plan against what the target holds (its mailboxes, and a listing of every mailbox the
/// backup sends messages to), apply (mailboxes, then the uploads on parallel connections, then
/// the `\Deleted` flags).
///
/// Exactly once: the plan is the lookup. A message goes up only when the target mailbox does
/// not already hold one like it — same Message-ID and internal date (± 1 s), or without a
/// Message-ID the same subject and internal date, the keys the push uses to find an upload
/// whose answer was lost — counted, so two identical messages in the backup are two on the
/// target, and one of the same stored size preferred, so two different messages sharing a
/// Message-ID and date are both restored. A run stopped anywhere (kill -9 included) lists again
/// and sends only what is missing; an upload it had recorded (`journal`) but does not find yet
/// is waited for a few seconds first.
///
/// Nothing already on the target is changed or deleted: existing mailboxes keep their
/// settings, existing messages their flags.
public final class Restore {
    /// One message of the backup.
    public struct Message: Sendable {
        /// Relative to the backup's Maildir root.
        public var file: String
        public var flags: MessageFlags
        /// Internal date, Unix seconds.
        public var idate: Int
        public var size: Int
        /// The subject the server showed, when the cache has it (compared with the target's
        /// listing, which shows subjects decoded).
        public var listedSubject: String?
        /// The Message-ID the server showed, when the cache has it.
        public var listedMessageId: String?
    }

    /// One mailbox of the backup.
    public struct Folder: Sendable {
        public var path: String
        public var specialUse: String?
        public var hidden = false
        public var subscribed = true
        /// Milliseconds, as WildDuck keeps it.
        public var retention: Int?
        public var messages: [Message] = []
    }

    /// What a restore did (or, with `--dry-run`, would do).
    public struct Summary: Sendable {
        public var mailboxesCreated: [String] = []
        public var messages = 0
        public var uploaded = 0
        public var bytes = 0
        /// Messages the target already had.
        public var present = 0
        /// Per mailbox path: messages to upload and their bytes (for `--dry-run`).
        public var planned: [String: (count: Int, bytes: Int)] = [:]
        /// Files that could not be uploaded, with why.
        public var failed: [String] = []
        /// What the API cannot carry: description → how many messages or mailboxes.
        public var notCarried: [String: Int] = [:]
        /// Settings set on the target ("autoreply" for the autoreply).
        public var settings: [String] = []
        /// Names of the filters created (or, with `--dry-run`, to create); "" for one without.
        public var filtersCreated: [String] = []
        /// The backup's filters the target already has (same name, query and action).
        public var filtersPresent = 0
        /// What the backup does not have whole enough to restore: description → how many.
        public var notRestored: [String: Int] = [:]
    }

    public let config: AccountConfig
    let log: SyncLog
    let server: any RemoteServer
    let maildir: Maildir
    /// Told how the uploads advance (the progress line), from the upload threads.
    public var onProgress: (@Sendable (SyncProgress) -> Void)?
    /// Every upload, recorded before it is sent. A rerun that does not find a recorded upload in
    /// the listing lists again for a few seconds (`settleSeconds`) before sending it again: the
    /// server may still be storing it. And `\Deleted` (T): the upload cannot set it, a second
    /// request does, and a run stopped between the two leaves a message that the next run finds
    /// already there; the journal says it is this restore's own upload, whose flag the next run
    /// completes (anything else on the target is never changed). Outside the backup (which is
    /// never written); removed after a complete run.
    let journal: RestoreJournal

    public init(config: AccountConfig, log: SyncLog) throws {
        self.config = config
        self.log = log
        CrashRecorder.startTrace(config)
        guard let url = ServerURL(config.server) else {
            throw SyncError.config("--server \(config.server) is not an http:// or https:// URL")
        }
        let root = URL(fileURLWithPath: config.maildir).standardizedFileURL.path
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: root, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw SyncError.config("the backup's Maildir \(root) does not exist; give the backup's directory with --maildir")
        }
        maildir = Maildir(root: root, layout: config.layout)
        server = AccountSync.wildDuck(url, config: config, log: log)
        journal = RestoreJournal(path: RestoreJournal.path(username: config.username, server: config.server))
    }

    // MARK: - Reading the backup

    /// The backup's mailboxes and messages: from wdsync's cache when `config.db` exists (paths,
    /// special use, hidden, subscribed, retention, internal dates), else from the directory tree
    /// of a Maildir another program made (see `plainFolders`). Flags always come from the file
    /// names: they are the backup's latest state, local changes included.
    public func readBackup() throws -> [Folder] {
        guard FileManager.default.fileExists(atPath: config.db) else { return try plainFolders() }
        let store = try Store(readOnlyPath: config.db)
        if let account = try store.account() {
            // A cache of another Maildir (say, the default --db next to an mbsync --maildir)
            // would restore nothing of this one.
            func real(_ path: String) -> String { URL(fileURLWithPath: path).resolvingSymlinksInPath().path }
            guard real(account.maildir) == real(maildir.root) else {
                throw SyncError.config("the cache \(config.db) belongs to the Maildir \(account.maildir), not \(maildir.root); give that Maildir's cache with --db, or a --db that does not exist to restore \(maildir.root) as a plain Maildir")
            }
            guard account.layout == config.layout.rawValue else {
                throw SyncError.config("the backup \(config.db) was made with layout \(account.layout); add --layout \(account.layout)")
            }
        }
        var folders: [Folder] = []
        for mailbox in try store.mailboxes() {
            guard let folderDirectory = mailbox.folder else { continue }
            let json = try? JSON.parse(mailbox.json)
            var folder = Folder(path: mailbox.path, specialUse: mailbox.specialUse)
            folder.hidden = json?["hidden"]?.bool ?? false
            folder.subscribed = json?["subscribed"]?.bool ?? true
            folder.retention = json?["retention"]?.int
            var byUnique: [String: MessageRecord] = [:]
            for record in try store.messages(mailboxId: mailbox.id) { byUnique[record.uniq] = record }
            for file in try maildir.listFolder(folderDirectory) ?? [] {
                guard let info = maildir.fileSize(file.file), info.regular else { continue }
                let record = byUnique[file.unique]
                let idate = record?.idate ?? mtime(file.file)
                folder.messages.append(Message(file: file.file, flags: file.flags,
                                               idate: idate, size: info.size,
                                               listedSubject: record.flatMap { (try? JSON.parse($0.json))?["subject"]?.string },
                                               listedMessageId: record?.messageId))
            }
            folder.messages.sort { $0.idate != $1.idate ? $0.idate < $1.idate : $0.file < $1.file }
            folders.append(folder)
        }
        return folders
    }

    /// The folders of a Maildir that wdsync did not make (mbsync, OfflineIMAP, notmuch): every
    /// directory with `cur/` and `new/`. A root that is itself a Maildir is Maildir++ (the root
    /// is INBOX, `.Work.Projects` is `Work/Projects`); otherwise directories nest
    /// (`Work/Projects`), and a top-level `Inbox` in any case is INBOX. Names wdsync's encoding
    /// produced are decoded; any other name is the mailbox name as it is. The internal date is
    /// the file's modification time, and a few usual names map to the target's special-use
    /// mailboxes (`specialUse(forName:)`).
    func plainFolders() throws -> [Folder] {
        let fm = FileManager.default
        func isMaildir(_ relative: String) -> Bool {
            let base = relative.isEmpty ? maildir.root : maildir.root + "/" + relative
            var d: ObjCBool = false
            return fm.fileExists(atPath: base + "/cur", isDirectory: &d) && d.boolValue
                && fm.fileExists(atPath: base + "/new", isDirectory: &d) && d.boolValue
        }
        var found: [(directory: String, path: String)] = []
        if isMaildir("") {
            found.append(("", "INBOX"))
            for name in (try? fm.contentsOfDirectory(atPath: maildir.root)) ?? [] where name.hasPrefix(".") && name.count > 1 {
                guard name != "..", isMaildir(name) else { continue }
                let path = FolderNames.decode(name, layout: .maildirPlusPlus)
                    ?? name.dropFirst().split(separator: ".", omittingEmptySubsequences: false).joined(separator: "/")
                found.append((name, path))
            }
        } else {
            var pending = [""]
            while let directory = pending.popLast() {
                let base = directory.isEmpty ? maildir.root : maildir.root + "/" + directory
                for name in (try? fm.contentsOfDirectory(atPath: base)) ?? [] {
                    guard !name.hasPrefix("."), !["cur", "new", "tmp"].contains(name) else { continue }
                    let relative = directory.isEmpty ? name : directory + "/" + name
                    var d: ObjCBool = false
                    guard fm.fileExists(atPath: base + "/" + name, isDirectory: &d), d.boolValue else { continue }
                    pending.append(relative)
                    guard isMaildir(relative) else { continue }
                    var path = FolderNames.decode(relative, layout: .verbatim) ?? relative
                    if path.uppercased() == "INBOX" { path = "INBOX" }
                    found.append((relative, path))
                }
            }
        }
        var folders: [Folder] = []
        for (directory, path) in found.sorted(by: { $0.path < $1.path }) {
            var folder = Folder(path: path, specialUse: path.contains("/") ? nil : Self.specialUse(forName: path))
            for file in try maildir.listFolder(directory) ?? [] {
                guard let info = maildir.fileSize(file.file), info.regular else { continue }
                folder.messages.append(Message(file: file.file, flags: file.flags,
                                               idate: mtime(file.file), size: info.size))
            }
            folder.messages.sort { $0.idate != $1.idate ? $0.idate < $1.idate : $0.file < $1.file }
            folders.append(folder)
        }
        return folders
    }

    /// The special use a folder of another program's Maildir most likely had, by its name, so
    /// that its messages go to the target's own Sent, Trash, … instead of a second one.
    static func specialUse(forName name: String) -> String? {
        switch name.lowercased() {
        case "sent", "sent mail", "sent items", "sent messages": return "\\Sent"
        case "trash", "deleted items", "deleted messages": return "\\Trash"
        case "drafts": return "\\Drafts"
        case "junk", "spam": return "\\Junk"
        case "archive", "archives": return "\\Archive"
        default: return nil
        }
    }

    private func mtime(_ relative: String) -> Int {
        var st = stat()
        guard stat(maildir.absolutePath(relative), &st) == 0 else { return Int(Date().timeIntervalSince1970) }
        return Int(st.st_mtim.tv_sec)
    }

    // MARK: - Planning

    /// How a message is recognised on the target: its Message-ID, or without one its subject;
    /// the internal date in whole seconds; and the size the server gives it (`Push.rebuiltSize`).
    struct Key: Hashable {
        var id: String
        var date: Int
        var size: Int
    }

    /// What the target's mailbox holds, by Message-ID (or subject) and date; a match is taken
    /// (each target message stands for one backup message only).
    struct Present {
        var byKey: [String: [(uid: Int, date: Int, size: Int)]] = [:]
        var taken = Set<Int>()
        /// Uids with `\Deleted`.
        var deleted = Set<Int>()
        var isEmpty: Bool { byKey.isEmpty }

        mutating func add(_ item: MessageItem) {
            guard let date = item.idate else { return }
            if item.deleted { deleted.insert(item.uid) }
            if let id = MessageHeaders.normalized(item.messageId) { byKey["m " + id, default: []].append((item.uid, date, item.size)) }
            if let subject = item.json["subject"]?.string { byKey["s " + StoredSubject.fold(subject), default: []].append((item.uid, date, item.size)) }
        }

        /// Takes the target's message for `key`, if there is one not taken yet: its uid. With
        /// `exactSize` only one of the same size; otherwise any (a server that rebuilds messages
        /// differently stores other sizes). The date may differ by a second (rounding).
        mutating func take(_ key: Key, exactSize: Bool) -> Int? {
            for candidate in byKey[key.id] ?? [] where abs(candidate.date - key.date) <= 1 && !taken.contains(candidate.uid) {
                if exactSize && candidate.size != key.size { continue }
                taken.insert(candidate.uid)
                return candidate.uid
            }
            return nil
        }
    }

    /// The key of a backup message, read from its file's header.
    func matchKey(_ message: Message) throws -> Key {
        Restore.key(message, bytes: try maildir.readFile(message.file, limit: LocalScan.uploadLimit).bytes)
    }

    /// The Message-ID as the server parsed it when the cache has it (the file's header says
    /// whether there is one: without, the server made one up, which another server does not
    /// repeat), else as the header has it.
    static func key(_ message: Message, bytes: [UInt8]) -> Key {
        let headers = MessageHeaders(bytes)
        let size = Push.rebuiltSize(bytes)
        if let id = MessageHeaders.normalized(headers.messageId) {
            return Key(id: "m " + (MessageHeaders.normalized(message.listedMessageId) ?? id), date: message.idate, size: size)
        }
        // The subject as WildDuck stores it (decoded, whitespace folded), as the push's lookup
        // compares it; the cache has the server's own.
        let subject = message.listedSubject.map(StoredSubject.fold) ?? StoredSubject.of(headers.subject)
        return Key(id: "s " + subject, date: message.idate, size: size)
    }


    /// One mailbox of the plan: where the backup's folder goes and what it must upload.
    struct Step {
        var folder: Folder
        /// The target mailbox's id; nil until created.
        var target: String?
        var uploads: [Message]
    }

    // MARK: - Running

    /// How long a rerun waits, at most, for the uploads an interrupted run recorded to show up
    /// in the listing (the server stores an upload whose client went away).
    static let settleSeconds = 5.0

    /// Plans, and unless `dryRun` applies. Stops with the first error that is not about one
    /// message (the network, authentication, a full account): run it again to go on.
    public func run(dryRun: Bool) throws -> Summary {
        var summary = Summary()
        let backup = try readBackup()
        let client = server.connect()
        defer { client.close() }
        client.onSkipped = { [log] in log.log(.warning, $0) }
        try client.authenticate()
        let targets = try client.fetchMailboxes()
        let recorded = try journal.entries()
        var settleDeadline: Date?
        var unfinishedDeletes: [String: [Int]] = [:]

        var steps: [Step] = []
        for folder in backup {
            steps.append(try plan(folder, targets: targets, recorded: recorded, client: client, settleDeadline: &settleDeadline,
                                  unfinishedDeletes: &unfinishedDeletes, into: &summary))
        }
        for step in steps {
            for message in step.uploads {
                if message.flags.contains(.replied) { summary.notCarried["\\Answered (R)", default: 0] += 1 }
                if message.flags.contains(.passed) { summary.notCarried["$Forwarded (P)", default: 0] += 1 }
            }
        }
        let settings = try plannedSettings(client, into: &summary)
        if dryRun {
            summary.mailboxesCreated = steps.filter { $0.target == nil }.map(\.folder.path)
            summary.settings = settings.user.map(\.0) + (settings.autoreply == nil ? [] : ["autoreply"])
            summary.filtersCreated = try plannedFilters(settings, steps: steps, client: client, recorded: recorded, dryRun: true,
                                                        into: &summary).map(\.name)
            return summary
        }

        try createMailboxes(&steps, targets: targets, client: client, into: &summary)

        try upload(steps, deleted: unfinishedDeletes, into: &summary)
        if !settings.user.isEmpty {
            try client.updateSettings(settings.user)
            summary.settings += settings.user.map(\.0)
        }
        if let autoreply = settings.autoreply {
            try client.updateAutoreply(autoreply)
            summary.settings.append("autoreply")
        }
        try createFilters(try plannedFilters(settings, steps: steps, client: client, recorded: recorded, dryRun: false, into: &summary),
                          client: client, into: &summary)
        journal.remove()
        return summary
    }

    /// Creates the mailboxes the target lacks (hidden, subscribed and retention as in the
    /// backup), parents before children.
    private func createMailboxes(_ steps: inout [Step], targets: [Mailbox], client: any RemoteAccount,
                                 into summary: inout Summary) throws {
        var targets = targets
    for i in steps.indices.sorted(by: { steps[$0].folder.path < steps[$1].folder.path }) where steps[i].target == nil {
        let folder = steps[i].folder
        if let found = targets.first(where: { $0.path == folder.path }) { steps[i].target = found.id; continue }
        do {
            let id = try client.createMailbox(path: folder.path, hidden: folder.hidden, retention: folder.retention)
            if !folder.subscribed { try client.setSubscribed(mailbox: id, false) }
            steps[i].target = id
            summary.mailboxesCreated.append(folder.path)
            log.log(.verbose, "created mailbox \(folder.path)")
        } catch let error as WildDuckError {
            // Refused: perhaps the path exists after all (made since the listing), which the
            // listing says. A lost answer stops the run; the next one lists what was made.
            guard case .server(_, let status, _, _) = error, status < 500 else { throw error }
            targets = try client.fetchMailboxes()
            guard let found = targets.first(where: { $0.path == folder.path }) else {
                summary.failed.append("mailbox \(folder.path) (\(folder.messages.count) messages): \(error)")
                continue
            }
            steps[i].target = found.id
        }
    }
    }

    /// How one folder of the backup goes onto the target: the mailbox it goes into (nil: to be
    /// created) and the messages the target lacks. A target message matched to a backup
    /// message with T whose delete a killed run did not do is added to `unfinishedDeletes`.
    private func plan(_ folder: Folder, targets: [Mailbox], recorded: Set<RestoreJournal.Entry>, client: any RemoteAccount,
                      settleDeadline: inout Date?, unfinishedDeletes: inout [String: [Int]],
                      into summary: inout Summary) throws -> Step {
        summary.messages += folder.messages.count
        // INBOX to INBOX; a special-use mailbox to the target's own (whatever its name);
        // anything else by path.
        let existing = folder.path == "INBOX" ? targets.first { $0.path == "INBOX" }
            : folder.specialUse.flatMap { use in targets.first { $0.specialUse == use } } ?? targets.first { $0.path == folder.path }
        if existing == nil, let use = folder.specialUse {
            summary.notCarried["special use \(use) (\(folder.path) is created as a plain mailbox)", default: 0] += 1
        }
        // Keys are read from the files only where there is something to compare with.
        let journaled = existing.map { mailbox in recorded.contains { $0.mailbox == mailbox.id } } ?? false
        var keyed: [(message: Message, key: Key?)] = []
        var present = Present()
        var matched: [Int: Int] = [:]     // index in keyed → target uid
        var firstPass = true
        while true {
            present = Present()
            if let existing {
                var cursor: String?
                var paging = Paging(route: "GET messages", limit: Paging.limit(total: existing.total ?? 0),
                                    isCancelled: server.isCancelled)
                repeat {
                    let page = try client.listMessages(mailbox: existing.id, cursor: cursor)
                    for item in page.items { present.add(item) }
                    cursor = try paging.next(after: page)
                } while cursor != nil
            }
            if firstPass {
                firstPass = false
                for message in folder.messages {
                    guard message.size > 0 else { continue }
                    guard !present.isEmpty || journaled else { keyed.append((message, nil)); continue }
                    do { keyed.append((message, try matchKey(message))) } catch {
                        summary.failed.append("\(message.file): \(error)")
                    }
                }
            }
            // Two passes: first the target's messages of the same size, then any of the same
            // Message-ID (or subject) and date, so that two different messages with one
            // Message-ID and date are told apart where sizes can.
            matched = [:]
            for exact in [true, false] {
                for (i, item) in keyed.enumerated() where matched[i] == nil {
                    if let key = item.key, let uid = present.take(key, exactSize: exact) { matched[i] = uid }
                }
            }
            // An upload an interrupted run recorded but the listing does not show may still
            // be in the server's hands (the client went away, the server goes on storing):
            // listed again for a few seconds before it is sent again.
            guard let target = existing?.id else { break }
            let missing = keyed.indices.filter { i in
                matched[i] == nil && keyed[i].key.map { recorded.contains(RestoreJournal.Entry(mailbox: target, key: $0)) } == true
            }
            guard !missing.isEmpty else { break }
            let deadline = settleDeadline ?? Date().addingTimeInterval(Self.settleSeconds)
            settleDeadline = deadline
            guard Date() < deadline else { break }
            log.log(.verbose, "\(missing.count) upload(s) of an interrupted run not in \(folder.path) yet; listing it again")
            Thread.sleep(forTimeInterval: 0.5)
        }
        let empty = folder.messages.filter { $0.size == 0 }.count
        if empty > 0 { summary.notCarried["empty messages (WildDuck refuses an empty upload)", default: 0] += empty }
        var uploads: [Message] = []
        for (i, item) in keyed.enumerated() {
            guard let uid = matched[i], let key = item.key else { uploads.append(item.message); continue }
            summary.present += 1
            if item.message.flags.contains(.trashed), !present.deleted.contains(uid), let target = existing?.id,
               recorded.contains(RestoreJournal.Entry(mailbox: target, key: key)) {
                unfinishedDeletes[target, default: []].append(uid)
            }
        }
        if !uploads.isEmpty { summary.planned[folder.path] = (uploads.count, uploads.reduce(0) { $0 + $1.size }) }
        return Step(folder: folder, target: existing?.id, uploads: uploads)
    }

    /// The user's settings that wdsync's cache holds, as the fields of a `PUT` for those the
    /// target has left unset (empty, or WildDuck's default): a setting someone made on the
    /// target is never changed. The same for the autoreply: only onto a target without one.
    /// And the backup's filters whole (the sync keeps them so since schema 13; see
    /// `plannedFilters`); one the backup has only as listed, in words, is listed as not restored.
    func plannedSettings(_ client: any RemoteAccount, into summary: inout Summary) throws -> PlannedSettings {
        guard FileManager.default.fileExists(atPath: config.db) else { return PlannedSettings() }
        let store = try Store(readOnlyPath: config.db)
        var planned = PlannedSettings()
        // A cache from before filters were kept whole has no detail column (read-only: not migrated).
        let filters = try (try? store.filterDetails()) ?? store.filters().map { ($0.id, $0.json, nil) }
        for filter in filters {
            guard let text = filter.detail, let detail = try? JSON.parse(text), detail["query"]?.object != nil,
                  detail["action"]?.object != nil else {
                summary.notRestored["filters the backup has only in words, as the server lists them (a wdsync --once of the old account, while it still has them, keeps them whole; else recreate them by hand)", default: 0] += 1
                continue
            }
            planned.filters.append(detail)
        }
        if !planned.filters.isEmpty {
            for mailbox in try store.mailboxes() { planned.mailboxPaths[mailbox.id] = mailbox.path }
        }
        var user: [(String, JSON)] = []
        if let text = try store.userJSON(), let backup = try? JSON.parse(text) {
            let target = try client.fetchUser()
            func unset(_ value: JSON?, default defaultValue: JSON? = nil) -> Bool {
                switch value {
                case nil, .null?: return true
                case .string(let s)?: return s.isEmpty
                case .array(let a)?: return a.isEmpty
                case .bool(let b)?: return !b
                case .number(let n)?: return n == 0 || value == defaultValue
                default: return false
                }
            }
            // spamLevel's default is 50 (lib/api/users.js, `spamLevel`).
            for (field, defaultValue) in [("name", nil), ("language", nil), ("retention", nil), ("spamLevel", JSON.number(50)),
                                          ("targets", nil), ("fromWhitelist", nil)] as [(String, JSON?)] {
                guard let value = backup[field], !unset(value, default: defaultValue), unset(target[field], default: defaultValue),
                      value != target[field] else { continue }
                user.append((field, value))
            }
        }
        var autoreply: [(String, JSON)]?
        if let text = try store.autoreplyJSON(), let backup = try? JSON.parse(text) {
            let target = try client.fetchAutoreply()
            let fields = ["status", "name", "subject", "text", "html", "start", "end"]
            let has = { (json: JSON) in fields.contains { !["status", "start", "end"].contains($0) && !(json[$0]?.string ?? "").isEmpty } }
            if has(backup) && !has(target) && target["status"]?.bool != true {
                autoreply = fields.compactMap { field in backup[field].flatMap { $0.isNull ? nil : (field, $0) } }
            }
        }
        planned.user = user
        planned.autoreply = autoreply
        return planned
    }

    /// What `plannedSettings` found to set on the target.
    struct PlannedSettings {
        var user: [(String, JSON)] = []
        var autoreply: [(String, JSON)]?
        /// The backup's filters whole, as `GET …/filters/:filter` gave them.
        var filters: [JSON] = []
        /// The backup's mailbox ids → paths, for a filter's "move to folder".
        var mailboxPaths: [String: String] = [:]
    }

    /// One filter to create: its name, the `POST …/filters` body, and what it is recognised by.
    struct FilterPlan {
        var name: String
        var fields: [(String, JSON)]
        var key: Restore.Key
    }

    /// The backup's filters the target lacks, as `POST …/filters` bodies, the `mailbox` of an
    /// action turned into the target's mailbox that the backup's mailbox goes to (`steps`).
    /// A target filter of the same name, query and action is the backup's (each one stands for
    /// one backup filter), so a rerun adds none twice; any other target filter is left as it
    /// is, one of the same name but other rules included (the backup's is added beside it).
    /// A filter an interrupted run recorded but the target does not list yet is waited for a
    /// few seconds, as an upload is: a creation is not sent twice blindly.
    func plannedFilters(_ planned: PlannedSettings, steps: [Step], client: any RemoteAccount, recorded: Set<RestoreJournal.Entry>,
                        dryRun: Bool, into summary: inout Summary) throws -> [FilterPlan] {
        guard !planned.filters.isEmpty else { return [] }
        var targetOf: [String: String?] = [:]     // backup path → target id, nil until created (dry run)
        for step in steps { targetOf.updateValue(step.target, forKey: step.folder.path) }
        var plans: [FilterPlan] = []
        for filter in planned.filters {
            let name = (filter["name"]?.string ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
            var action = filter["action"]?.object ?? []
            var comparable = true
            if let index = action.firstIndex(where: { $0.0 == "mailbox" }) {
                guard let old = action[index].1.string, let path = planned.mailboxPaths[old], let target = targetOf[path],
                      target != nil || dryRun else {
                    summary.failed.append("filter \"\(name)\": the mailbox it moves messages to is not restored")
                    continue
                }
                if let target { action[index].1 = .string(target) } else { comparable = false }
            }
            let query = filter["query"] ?? .object([])
            var fields: [(String, JSON)] = [("name", .string(name)), ("query", query), ("action", .object(action))]
            if filter["disabled"]?.bool == true { fields.append(("disabled", .bool(true))) }
            if let metaData = filter["metaData"], !metaData.isNull { fields.append(("metaData", metaData)) }
            // A filter into a mailbox still to be created (dry run) is created: none can match it.
            let id = comparable ? Self.filterKey(name: name, query: query, action: .object(action)) : "new \(plans.count)"
            plans.append(FilterPlan(name: name, fields: fields, key: Key(id: id, date: 0, size: 0)))
        }
        guard !plans.isEmpty else { return [] }
        let journaled = Set(recorded.filter { $0.mailbox == RestoreJournal.filters }.map(\.key))
        let deadline = Date().addingTimeInterval(Self.settleSeconds)
        var details: [String: JSON] = [:]    // target filter id → whole, read once
        while true {
            // The target's filters of the names the backup has, whole (the listing has them in words).
            var onTarget: [String: Int] = [:]
            let names = Set(plans.map(\.name))
            for (id, listed) in try client.fetchFilters().filters {
                let name = (listed["name"]?.string ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
                guard names.contains(name) else { continue }
                if details[id] == nil {
                    do { details[id] = try client.fetchFilter(id: id) } catch let error as WildDuckError where error.isNotFound { continue }
                }
                guard let whole = details[id] else { continue }
                onTarget[Self.filterKey(name: name, query: whole["query"] ?? .object([]), action: whole["action"] ?? .object([])), default: 0] += 1
            }
            var missing: [FilterPlan] = []
            var present = 0
            for plan in plans {
                if let count = onTarget[plan.key.id], count > 0 {
                    onTarget[plan.key.id] = count - 1
                    present += 1
                } else {
                    missing.append(plan)
                }
            }
            if missing.contains(where: { journaled.contains($0.key) }), Date() < deadline {
                log.log(.verbose, "a filter an interrupted run created is not listed yet; listing the filters again")
                Thread.sleep(forTimeInterval: 0.5)
                continue
            }
            summary.filtersPresent += present
            return missing
        }
    }

    /// What a filter is recognised by: its name, query and action, members in one order.
    static func filterKey(name: String, query: JSON, action: JSON) -> String {
        func sorted(_ json: JSON) -> JSON {
            switch json {
            case .object(let members): return .object(members.sorted { $0.0 < $1.0 }.map { ($0.0, sorted($0.1)) })
            case .array(let items): return .array(items.map(sorted))
            default: return json
            }
        }
        return "f " + JSON.array([.string(name), sorted(query), sorted(action)]).text
    }

    /// Creates the planned filters, each recorded in the journal before it is sent.
    func createFilters(_ plans: [FilterPlan], client: any RemoteAccount, into summary: inout Summary) throws {
        for plan in plans {
            try journal.record(RestoreJournal.Entry(mailbox: RestoreJournal.filters, key: plan.key), durable: false)
            do {
                try client.createFilter(plan.fields)
                summary.filtersCreated.append(plan.name)
                log.log(.verbose, "created filter \"\(plan.name)\"")
            } catch let error as WildDuckError {
                // Refused (too many filters, a rule this server does not take): the others go on.
                // A lost answer stops the run; the next one lists what was made.
                guard case .server(_, let status, _, _) = error, status < 500, status != 429 else { throw error }
                summary.failed.append("filter \"\(plan.name)\": \(error)")
            }
        }
    }

    /// The uploads, on up to `config.connections` connections, then the `\Deleted` flags (the
    /// upload cannot set them) with one request per mailbox and 500 messages.
    typealias UploadJob = (mailbox: String, path: String, message: Message)

    /// What the upload threads share.
    struct UploadState {
        var next = 0
        var done = 0
        var bytes = 0
        var failure: Error?
        var failed: [String] = []
        var deleted: [String: [Int]]
    }

    private func upload(_ steps: [Step], deleted unfinished: [String: [Int]], into summary: inout Summary) throws {
        var jobs: [UploadJob] = []
        for step in steps { if let target = step.target { jobs += step.uploads.map { (target, step.folder.path, $0) } } }
        let shared = Mutex(UploadState(deleted: unfinished))
        let totals = (count: jobs.count, bytes: jobs.reduce(0) { $0 + $1.message.size })
        let queued = jobs
        let worker = UploadWorker(server: server, maildir: maildir, journal: journal, log: log, onProgress: onProgress)
        let group = DispatchGroup()
        for _ in 0..<min(config.connections, jobs.count) {
            group.enter()
            let thread = Thread {
                defer { group.leave() }
                worker.run(queued, shared: shared, totals: totals)
            }
            thread.stackSize = 1 << 20
            thread.start()
        }
        group.wait()
        let result = shared.withLock { $0 }
        summary.uploaded += result.done
        summary.bytes += result.bytes
        summary.failed += result.failed
        let client = server.connect()
        defer { client.close() }
        for (mailbox, uids) in result.deleted.sorted(by: { $0.key < $1.key }) {
            for chunk in Push.chunks(uids.sorted()) {
                try client.setFlags(mailbox: mailbox, uids: chunk.map(String.init).joined(separator: ","), FlagUpdate(deleted: true))
            }
        }
        if let failure = result.failure { throw failure }
    }

}

/// One upload thread of a restore: takes the next job until none is left or one failed for
/// good. Each upload is recorded in the journal before it is sent (durably when a T is to follow).
struct UploadWorker: Sendable {
    let server: any RemoteServer
    let maildir: Maildir
    let journal: RestoreJournal
    let log: SyncLog
    let onProgress: (@Sendable (SyncProgress) -> Void)?

    func run(_ queued: [Restore.UploadJob], shared: Mutex<Restore.UploadState>, totals: (count: Int, bytes: Int)) {
        let client = server.connect()
        defer { client.close() }
        while true {
            let index: Int? = shared.withLock { s in
                guard s.failure == nil, s.next < queued.count else { return nil }
                s.next += 1
                return s.next - 1
            }
            guard let index else { return }
            let job = queued[index]
            do {
                let content = try maildir.readFile(job.message.file, limit: LocalScan.uploadLimit)
                let flags = job.message.flags
                try journal.record(RestoreJournal.Entry(mailbox: job.mailbox, key: Restore.key(job.message, bytes: content.bytes)),
                                   durable: flags.contains(.trashed))
                let reply = try client.uploadMessage(mailbox: job.mailbox, raw: content.bytes, seen: flags.contains(.seen),
                                                     flagged: flags.contains(.flagged), draft: flags.contains(.draft),
                                                     date: job.message.idate)
                let progress = shared.withLock { s -> SyncProgress in
                    s.done += 1
                    s.bytes += content.bytes.count
                    if flags.contains(.trashed) { s.deleted[job.mailbox, default: []].append(reply.uid) }
                    return SyncProgress(phase: .uploading, mailbox: job.path, done: s.done, total: totals.count,
                                        bytes: s.bytes, totalBytes: totals.bytes)
                }
                onProgress?(progress)
            } catch let error as MaildirError {
                log.log(.warning, "cannot read \(job.message.file): \(error); not uploaded")
                shared.withLock { $0.failed.append("\(job.message.file): \(error)") }
            } catch let error as WildDuckError {
                // Refused for this message alone (too large, not a message): the others go on.
                // A lost answer, a full account or a broken server stops the run.
                if case .server(_, let status, let code, _) = error, status >= 400, status < 500,
                   status != 429, code != "OverQuotaError", !error.isNotFound {
                    log.log(.warning, "the server refused \(job.message.file): \(error)")
                    shared.withLock { $0.failed.append("\(job.message.file): \(error)") }
                } else {
                    shared.withLock { if $0.failure == nil { $0.failure = error } }
                }
            } catch {
                shared.withLock { if $0.failure == nil { $0.failure = error } }
            }
        }
    }
}

/// The restore's record of its uploads (see `Restore.journal`): one JSON array per line,
/// `[mailbox id, key, date, size]`, appended before the upload goes out.
struct RestoreJournal: Sendable {
    struct Entry: Hashable {
        var mailbox: String
        var key: Restore.Key
    }

    /// The "mailbox" of a filter's entry (no mailbox id looks like it).
    static let filters = "filters"

    let path: String
    private let lock = Mutex(())

    init(path: String) { self.path = path }

    /// `$XDG_STATE_HOME/wdsync/restore-USER@HOST.journal` (default `~/.local/state`): per target,
    /// and never in the backup.
    static func path(username: String, server: String) -> String {
        let environment = ProcessInfo.processInfo.environment
        let home = environment["HOME"] ?? NSHomeDirectory()
        let state = environment["XDG_STATE_HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? home + "/.local/state"
        let host = ServerURL(server).map { "\($0.host)_\($0.port)" } ?? "server"
        let name = String("\(username)@\(host)".map { $0.isLetter || $0.isNumber || "@._-".contains($0) ? $0 : "_" })
        return state + "/wdsync/restore-" + name + ".journal"
    }

    func entries() throws -> Set<Entry> {
        guard let data = FileManager.default.contents(atPath: path) else { return [] }
        var out = Set<Entry>()
        // A line cut by a crash is not a recorded upload: it was never sent.
        for line in data.split(separator: UInt8(ascii: "\n")) {
            guard let items = (try? JSON.parse(Array(line)))?.array, items.count == 4, let mailbox = items[0].string,
                  let key = items[1].string, let date = items[2].int, let size = items[3].int else { continue }
            out.insert(Entry(mailbox: mailbox, key: Restore.Key(id: key, date: date, size: size)))
        }
        return out
    }

    /// `durable`: synced to disk too (the `\\Deleted` uploads, whose record must outlive a power
    /// loss); otherwise written (a kill -9 does not lose it; after a power loss the rerun comes
    /// late enough for the listing to show the upload).
    func record(_ entry: Entry, durable: Bool) throws {
        let line = JSON.array([.string(entry.mailbox), .string(entry.key.id), .number(Double(entry.key.date)), .number(Double(entry.key.size))]).text + "\n"
        try lock.withLock { _ in
            try AccountSync.makeDirectory((path as NSString).deletingLastPathComponent)
            let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw SyncError.localIO("cannot write \(path): \(String(cString: strerror(errno)))") }
            defer { close(fd) }
            let bytes = Array(line.utf8)
            let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            guard written == bytes.count, !durable || fsync(fd) == 0 else {
                throw SyncError.localIO("cannot write \(path): \(String(cString: strerror(errno)))")
            }
        }
    }

    func remove() { unlink(path) }
}

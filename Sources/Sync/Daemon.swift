import Foundation
import Failures
import Store
import WildDuck

/// One run of the daemon for one account, on `LiveSync`'s thread: the first sync (waited for
/// while the server is down), then the loop that waits for work and does it — local changes
/// (scan → push), server events (apply), reconciles, the event source's connections
/// (`TransportPlan`), the sweep of kept orphans and the Maildir's generation. Each kind of work
/// is one method; the loop only decides what is due.
final class DaemonRun {
    typealias Instant = ContinuousClock.Instant

    let engine: LiveSync
    let mirror: AccountSync
    let options: LiveOptions
    var log: SyncLog { engine.log }
    var inbox: Inbox { engine.inbox }

    /// Since when the server cannot be reached (nil while it answers): said once at the
    /// default level when it starts and when it ends, and told to systemd and --status.
    private var lostSince: Date?
    private var plan: TransportPlan
    private var source: EventSource?
    private var nextReconcile: Instant
    /// When kept orphans must be unlinked.
    private var nextSweep: Instant?
    /// When the Maildir's generation moves forward after changes.
    private var nextGeneration: Instant?
    /// Local changes: inotify on every cur/ and new/, and a periodic scan.
    private var watcher: LocalWatch?
    private var nextScan: Instant
    /// A push that failed is tried again after a backoff (or with the next local change).
    private var pushFailures = 0
    private var nextPush: Instant

    init(engine: LiveSync, mirror: AccountSync) {
        self.engine = engine
        self.mirror = mirror
        self.options = engine.options
        plan = TransportPlan(.init(engine.options), now: .now)
        nextReconcile = .now + .seconds(engine.options.reconcileInterval)
        nextScan = .now
        nextPush = .now
    }

    // MARK: - The connection, as the user sees it

    func lost(_ kind: Disconnection, _ reason: String) {
        guard lostSince == nil else { return }
        let since = Date()
        lostSince = since
        try? mirror.store.recordTransport(kind.rawValue)
        engine.observer(.disconnected(kind, since: since))
        log.log(.info, kind == .offline ? "offline: \(reason); retrying in the background (local changes are kept until the server answers)"
                : "lost the connection to the server: \(reason); reconnecting")
    }

    func back(_ t: Transport?) {
        if let since = lostSince {
            lostSince = nil
            log.log(.info, "connected again after \(Int(Date().timeIntervalSince(since).rounded())) s" + (t.map { " (\($0.rawValue))" } ?? ""))
        }
        if let t {
            try? mirror.store.recordTransport(t.rawValue)
            engine.observer(.transport(t))
        }
    }

    // MARK: - Running

    /// The first complete sync; a server that is down when the daemon starts is waited for,
    /// not given up on. False when a stop was asked for meanwhile.
    func firstSync() throws -> Bool {
        log.log(.verbose, "initial sync")
        mirror.onProgress = engine.progress
        defer { mirror.onProgress = nil }
        var failures = 0
        while true {
            var failure: String?
            if try engine.step(mirror, completeSync: true, {
                failure = try engine.attempt("initial sync", quiet: true) { _ = try mirror.syncOnce() }
                return failure == nil
            }) { break }
            if let failure { lost(.offline, failure) }
            failures += 1
            let delay = engine.backoff.delay(beforeTry: failures + 1)
            log.log(.verbose, "trying again in \(String(format: "%.1f", delay)) s")
            inbox.wait(seconds: delay)
            if inbox.stopRequested { return false }
        }
        back(nil)
        engine.observer(.ready)
        return true
    }

    /// Follows the account until a stop is asked for.
    func follow() throws {
        let inbox = self.inbox
        watcher = LocalWatch(root: mirror.maildir.root, onChange: { inbox.noteLocal() })
        defer { watcher?.stop() }
        mirror.onOwnWrite = watcher.map { w in { path, appeared in w.expect(path, appeared: appeared) } }
        try watchFolders()
        if watcher == nil || watcher?.complete == false {
            log.log(.verbose, "inotify is not available for every folder; scanning for local changes every \(Int(options.unwatchedScanInterval)) s")
        }
        nextScan = .now + .seconds(scanInterval())
        defer { source?.stop() }
        while true {
            if plan.wantsSource(running: source != nil, now: .now) {
                log.log(.debug, "connecting (\(plan.transport.rawValue))")
                source = try engine.makeSource(plan.transport, mirror: mirror)
                plan.started(now: .now)
            }
            guard let taken = waitForWork() else { continue }
            if taken.stop {
                try stop(applying: taken)
                return
            }
            for note in taken.notes { try handle(note) }
            // Local changes first (scan → push), so server updates merge into them and the
            // exporter never reverts a change it has not seen yet.
            let scanDue = ContinuousClock.now >= nextScan
            if taken.local || !taken.events.isEmpty || scanDue || settled() {
                if scanDue { nextScan = .now + .seconds(scanInterval()) }
                try sendLocalChanges(full: scanDue)
            }
            try apply(taken)
            try sweepOrphans(afterEvents: !taken.events.isEmpty)
            try reconcileIfDue(asked: taken.reconcile)
            if !taken.events.isEmpty || taken.reconcile || !taken.notes.isEmpty { try watchFolders() }
            try moveGenerationIfDue()
            // Try the WebSocket again now and then (and on SIGUSR1) while on a fallback.
            let previous = plan.transport
            if plan.probe(now: .now, requested: taken.reconcile) {
                switched(from: previous, because: "probing whether the WebSocket works again")
            }
        }
    }

    /// Sleeps until something is due or arrives; nil while a batch of events is still filling.
    private func waitForWork() -> Inbox.Taken? {
        var deadline = min(nextReconcile, plan.deadline(running: source != nil), nextScan)
        if let sweep = nextSweep { deadline = min(deadline, sweep) }
        if let due = nextGeneration { deadline = min(deadline, due) }
        if let settle = settleDeadline() { deadline = min(deadline, settle) }
        if let pending = inbox.batchWait(quiet: options.quietWindow, max: options.batchWindow) {
            deadline = min(deadline, .now + pending)
        }
        let wait = ContinuousClock.now.duration(to: deadline)
        if wait > .zero { inbox.wait(seconds: Double(wait.components.seconds) + Double(wait.components.attoseconds) / 1e18) }
        if let pending = inbox.batchWait(quiet: options.quietWindow, max: options.batchWindow), pending > .zero,
           !inbox.stopRequested { return nil }
        return inbox.take()
    }

    private func stop(applying taken: Inbox.Taken) throws {
        log.log(.verbose, "stopping")
        source?.stop()
        source = nil
        guard !taken.events.isEmpty else { return }
        _ = try engine.step(mirror, events: taken.events.count) {
            try engine.guarded("applying the last batch") {
                try engine.applyBatch(taken.events, received: taken.received, lastEventId: taken.lastEventId, mirror: mirror, source: nil)
            }
        }
    }

    // MARK: - The event source

    private func handle(_ note: SourceNote) throws {
        switch note {
        case .connected(let t):
            guard plan.connected(t) else { return }
            log.log(.verbose, "connected (\(t.rawValue)); reconciling")
            // After a loss, the connection counts once the server answered its reconcile.
            if lostSince == nil { back(t) }
            if try engine.step(mirror, completeSync: true, { try engine.guarded("reconciling", { _ = try mirror.syncOnce() }) }) {
                if lostSince != nil { back(t) }
                if let s = source { s.follow(mailboxes: try mirror.store.mailboxes().map(\.id)) }
                nextReconcile = .now + .seconds(options.reconcileInterval)
            } else {
                // Reconnect (and so reconcile again) once the server answers.
                inbox.note(.failed(t, reason: "reconciling failed", unavailable: false, auth: false))
            }
        case .failed(let t, let reason, let unavailable, let auth):
            let wasUp = plan.up
            guard let reaction = plan.failed(t, unavailable: unavailable, now: .now) else { return }
            source?.stop()
            source = nil
            // A server that answers "no WebSocket here", or a token to renew, is no loss.
            if wasUp && !unavailable && !auth { lost(.reconnecting, reason) }
            if auth {
                log.log(.verbose, "\(t.rawValue): \(reason); authenticating again")
                // A refusal ends the daemon (exit code 77); a network failure is retried.
                _ = try engine.guarded("authenticating again") { try mirror.client.authenticate() }
            }
            switch reaction {
            case .switched:
                switched(from: t, because: reason)
            case .giveUp(let attempts):
                throw WildDuckError.unreachable(server: engine.config.server, detail: "gave up after \(attempts) reconnection attempts (\(reason))")
            case .reconnect(let delay):
                log.log(.verbose, "\(t.rawValue) failed (\(reason)); reconnecting in \(String(format: "%.1f", delay)) s")
            }
        }
    }

    /// Says that the plan moved from `previous` to another transport (its source is stopped).
    private func switched(from previous: Transport, because reason: String) {
        source?.stop()
        source = nil
        let next = plan.transport
        log.log(.verbose, "switching from \(previous.rawValue) to \(next.rawValue): \(reason)")
        if next == .polling && lostSince == nil {
            try? mirror.store.recordTransport(next.rawValue)
            engine.observer(.transport(next))
        }
    }

    // MARK: - Work

    /// scan → push for what changed locally. Folders where inotify saw nothing but wdsync's
    /// own writes are not read (every folder by its mtimes when `full`, or when inotify
    /// cannot say); the push runs when the scan queued something or a retry is due.
    private func sendLocalChanges(full: Bool) throws {
        let scope = watcher.flatMap { mirror.scanScope($0.drain(), full: full) }
        var waiting = false
        let ok = try engine.guarded("sending local changes") {
            let queued = try mirror.scanLocal(scope: scope)
            guard try mirror.store.outboxCount() > 0 else { mirror.settleUntil = nil; return }
            guard queued > 0 || ContinuousClock.now >= nextPush || settled() else { waiting = true; return }
            let before = mirror.summary.pushRequests
            try mirror.push()
            if mirror.summary.pushRequests != before {
                try mirror.export(keepOrphans: options.orphanGrace)
                // A copy the push found to be a duplicate is an orphan for the sweep.
                if nextSweep == nil, try mirror.store.orphanCount() > 0 { nextSweep = .now + .seconds(options.orphanGrace + 0.1) }
            }
        }
        if mirror.unstableFiles > 0 {
            // A file still being written: looked at again once it may have stopped.
            nextScan = min(nextScan, .now + .seconds(Double(LocalScan.quietSeconds) + 0.5))
        }
        if waiting {
            // A retry after a failed push is still waiting out its backoff: the engine wakes
            // for it (a scan that was due meanwhile put the next scan a minute away).
            nextScan = min(nextScan, nextPush)
        } else if ok {
            pushFailures = 0
            nextPush = .now
        } else {
            pushFailures += 1
            nextPush = .now + .seconds(min(engine.backoff.delay(beforeTry: pushFailures + 1), options.scanInterval))
            nextScan = min(nextScan, nextPush)
        }
    }

    /// When the destructive changes the last push held back to settle may go (`Breaker`).
    private func settleDeadline() -> Instant? {
        guard let until = mirror.settleUntil else { return nil }
        return max(.now + .seconds(Double(until) - Date().timeIntervalSince1970), nextPush)
    }

    private func settled() -> Bool { settleDeadline().map { ContinuousClock.now >= $0 } ?? false }

    private func apply(_ taken: Inbox.Taken) throws {
        guard !taken.events.isEmpty else {
            if let id = taken.lastEventId { engine.resumeSSE(at: id) }
            return
        }
        let applied = try engine.step(mirror, events: taken.events.count) {
            try engine.guarded("applying updates") {
                try engine.applyBatch(taken.events, received: taken.received, lastEventId: taken.lastEventId, mirror: mirror, source: source)
            }
        }
        // What failed is recovered by the reconcile that follows the next connection.
        if !applied, let s = source { inbox.note(.failed(s.transport, reason: "applying updates failed", unavailable: false, auth: false)) }
    }

    /// Files of messages that left a mailbox are kept out of view for `orphanGrace` (a move's
    /// other half may still come), then unlinked.
    private func sweepOrphans(afterEvents: Bool) throws {
        if afterEvents, try mirror.store.orphanCount() > 0 {
            nextSweep = .now + .seconds(options.orphanGrace + 0.1)
        } else if let sweep = nextSweep, ContinuousClock.now >= sweep {
            _ = try engine.step(mirror) { try mirror.export(keepOrphans: options.orphanGrace); return true }
            nextSweep = try mirror.store.orphanCount() > 0 ? .now + .seconds(options.orphanGrace) : nil
        }
    }

    /// A full pass when asked (SIGUSR1), on schedule, or at every poll without an event source.
    private func reconcileIfDue(asked: Bool) throws {
        guard asked || ContinuousClock.now >= nextReconcile || plan.pollDue(now: .now) else { return }
        let polling = plan.transport == .polling
        log.log(.debug, "reconciling (\(polling ? "poll" : "scheduled"))")
        plan.polled(now: .now)
        var failure: String?
        if try engine.step(mirror, completeSync: true, {
            failure = try engine.attempt("reconciling", quiet: polling) { _ = try mirror.syncOnce() }
            return failure == nil
        }) {
            if polling && lostSince != nil { back(.polling) }
            if let s = source { s.follow(mailboxes: try mirror.store.mailboxes().map(\.id)) }
            nextReconcile = .now + .seconds(options.reconcileInterval)
        } else if polling, let failure {
            lost(.reconnecting, failure)
        }
    }

    /// A copy of the Maildir taken before the changes is older than the cache from now on.
    private func moveGenerationIfDue() throws {
        if mirror.generationOpen, nextGeneration == nil { nextGeneration = .now + .seconds(1) }
        if let due = nextGeneration, ContinuousClock.now >= due {
            try mirror.closeGeneration()
            nextGeneration = nil
        }
    }

    private func watchFolders() throws {
        try watcher?.watch(mirror.folderDirectories())
    }

    private func scanInterval() -> Double {
        watcher?.complete == true ? options.scanInterval : options.unwatchedScanInterval
    }
}

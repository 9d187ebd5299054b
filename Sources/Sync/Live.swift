#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Failures
import Store
import Lock
import WildDuck

/// Settings of the live engine (docs/protocol.md explains the defaults).
public struct LiveOptions: Sendable {
    public var reconnectDelay: Double = 1
    public var maxReconnectDelay: Double = 32
    /// 0 = unlimited.
    public var reconnectAttempts = 0
    /// Consecutive WebSocket failures before falling back to SSE.
    public var wsFailuresBeforeFallback = 5
    public var pollInterval: Double = 30
    public var wsProbeInterval: Double = 300
    public var pingInterval: Double = 10
    public var pongTimeout: Double = 5
    public var replyTimeout: Double = 5
    /// Batching: events are applied once no new one came for `quietWindow`, or at the latest
    /// `batchWindow` after the first; a burst becomes one transaction and one export pass while a
    /// lone event is applied almost at once.
    public var batchWindow: Double = 0.05
    public var quietWindow: Double = 0.0005
    /// A full REST reconcile at least this often, whatever the transport says.
    public var reconcileInterval: Double = 900
    public var compression = true
    /// How long the file of a message that left a mailbox is kept for a possible move. It is
    /// out of the readers' view during that time (in its folder's tmp/), so the hold costs only
    /// disk space for a while, and is long enough that a move whose halves arrive seconds apart
    /// (a slow REST read, a reconnect) is still a rename.
    public var orphanGrace: Double = 30
    /// Local changes: inotify wakes the engine within milliseconds; a scan also runs this often
    /// as a backstop, and `unwatchedScanInterval` when inotify is missing or out of watches.
    public var scanInterval: Double = 60
    public var unwatchedScanInterval: Double = 5
    /// A mailbox's deletes, moves to Trash or Junk and T flags are sent once no new one came
    /// for this many seconds, so the mass-delete breaker sees a burst whole (`Breaker`).
    public var massDeleteSettle = 5
    public init() {}
}

/// How the engine hears about changes.
public enum Transport: String, Sendable {
    case webSocket = "WebSocket"
    case sse = "SSE"
    case polling = "REST polling"
}

/// What the engine reports to whoever runs it (systemd notifications).
public enum LiveEvent: Sendable {
    /// The first complete sync is done.
    case ready
    case transport(Transport)
    /// The server cannot be reached and the engine keeps trying: `offline` before the first
    /// complete sync, `reconnecting` after a connection was lost. Ends with `.transport`.
    case disconnected(Disconnection, since: Date)
    /// A batch (or reconcile) changed the Maildir.
    case changed(ChangeCounts)
}

public enum Disconnection: String, Sendable {
    case offline
    case reconnecting
}

/// What a source tells the engine besides events.
enum SourceNote: Sendable {
    case connected(Transport)
    case failed(Transport, reason: String, unavailable: Bool, auth: Bool)
}

/// Events and notes from sources, waited on by the engine thread.
///
/// Bounded: when more than `maxEvents` wait (a server flooding updates faster than they can be
/// applied), the pending events are dropped and replaced by one `.resync`. Events are hints and
/// REST is the truth, so one reconcile replaces any number of them; blocking the sources
/// instead would stall the WebSocket's pings and the SSE stream until the server gives up on us.
final class Inbox: Sendable {
    let maxEvents: Int
    init(maxEvents: Int = 10_000) { self.maxEvents = maxEvents }

    private struct State {
        var events: [RemoteEvent] = []
        var notes: [SourceNote] = []
        var lastEventId: String?
        var firstEvent: ContinuousClock.Instant?
        var lastEvent: ContinuousClock.Instant?
        var reconcileRequested = false
        var stopRequested = false
        var localChanged = false
    }
    private let state = Mutex(State())
    private let signal = DispatchSemaphore(value: 0)

    func push(_ events: [RemoteEvent], lastEventId: String? = nil) {
        guard !events.isEmpty || lastEventId != nil else { return }
        state.withLock { s in
            if s.events == [.resync] {
                // Overflowed already: the reconcile covers these too.
            } else if s.events.count + events.count > maxEvents {
                s.events = [.resync]
            } else {
                s.events += events
            }
            if let lastEventId { s.lastEventId = lastEventId }
            let now = ContinuousClock.now
            if s.firstEvent == nil { s.firstEvent = now }
            s.lastEvent = now
        }
        signal.signal()
    }

    func note(_ note: SourceNote) {
        state.withLock { $0.notes.append(note) }
        signal.signal()
    }

    /// Something changed in the Maildir (batched like server events).
    func noteLocal() {
        state.withLock { s in
            s.localChanged = true
            let now = ContinuousClock.now
            if s.firstEvent == nil { s.firstEvent = now }
            s.lastEvent = now
        }
        signal.signal()
    }

    func requestReconcile() {
        state.withLock { $0.reconcileRequested = true }
        signal.signal()
    }

    func requestStop() {
        state.withLock { $0.stopRequested = true }
        signal.signal()
    }

    var stopRequested: Bool { state.withLock { $0.stopRequested } }

    func wait(seconds: Double) {
        _ = signal.wait(timeout: .now() + max(0, seconds))
    }

    /// How long to keep collecting before applying the pending events (nil: none pending).
    func batchWait(quiet: Double, max: Double) -> Duration? {
        state.withLock { s in
            guard let first = s.firstEvent, let last = s.lastEvent else { return nil }
            let now = ContinuousClock.now
            let untilQuiet = last + .seconds(quiet) - now
            let untilMax = first + .seconds(max) - now
            return Swift.max(.zero, Swift.min(untilQuiet, untilMax))
        }
    }

    /// What arrived since the last `take`.
    typealias Taken = (events: [RemoteEvent], received: ContinuousClock.Instant?, notes: [SourceNote],
                       lastEventId: String?, reconcile: Bool, stop: Bool, local: Bool)

    func take() -> Taken {
        state.withLock { s in
            defer {
                s.events.removeAll(); s.notes.removeAll(); s.lastEventId = nil; s.firstEvent = nil; s.lastEvent = nil
                s.reconcileRequested = false; s.localChanged = false
            }
            return (s.events, s.firstEvent, s.notes, s.lastEventId, s.reconcileRequested, s.stopRequested, s.localChanged)
        }
    }
}

/// A running source of events (one of the server's update streams), with the transport it is.
struct EventSource {
    let stream: any UpdateStream
    let transport: Transport

    func stop() { stream.stop() }
    @discardableResult
    func follow(mailboxes: [String]) -> Bool { stream.follow(mailboxes: mailboxes) }
}

/// Where a source delivers: the inbox, its notes naming the source's transport.
struct InboxSink: UpdateSink {
    let inbox: Inbox
    let transport: Transport

    func push(_ events: [RemoteEvent], lastEventId: String?) { inbox.push(events, lastEventId: lastEventId) }
    func connected() { inbox.note(.connected(transport)) }
    func failed(reason: String, unavailable: Bool, auth: Bool) {
        inbox.note(.failed(transport, reason: reason, unavailable: unavailable, auth: auth))
    }
}

/// The live engine for one account: keeps the cache and Maildir current, switching between
/// WebSocket, SSE and REST polling, reconnecting with backoff and reconciling after every
/// (re)connection. Runs on the calling thread until `stop()`.
public final class LiveSync: Sendable {
    let config: AccountConfig
    let options: LiveOptions
    let log: SyncLog
    let inbox = Inbox()
    let observer: @Sendable (LiveEvent) -> Void
    /// The progress of the initial sync (a terminal's progress line).
    let progress: (@Sendable (SyncProgress) -> Void)?
    /// The last failure `guarded` saw, recorded in the cache by the next `step`.
    private let lastFailure = Mutex<String?>(nil)
    /// The id of the last SSE entry applied, where a reconnected SSE stream resumes (in memory
    /// only: a daemon that starts has its first stream send no backlog).
    private let sseResumeId = Mutex<String?>(nil)

    /// The server to follow; nil: the WildDuck at `config.server` (the tests pass one that is not).
    let remote: (any RemoteServer)?

    public init(config: AccountConfig, log: SyncLog, progress: (@Sendable (SyncProgress) -> Void)? = nil,
                remote: (any RemoteServer)? = nil, observer: @escaping @Sendable (LiveEvent) -> Void = { _ in }) {
        self.remote = remote
        self.progress = progress
        self.config = config
        self.options = config.live
        self.log = log
        self.observer = observer
    }

    /// Asks the engine to finish its current batch, close its connections and return.
    public func stop() { inbox.requestStop() }

    /// Asks for a full reconcile now and a WebSocket probe (SIGUSR1).
    public func reconcileNow() { inbox.requestReconcile() }

    /// Runs until `stop()`. Throws only for what retrying cannot fix (authentication, local I/O).
    public func run() throws {
        do { try loop() } catch SyncError.cancelled {
            log.log(.verbose, "stopped during a sync; the next run continues from there")
        } catch {
            // What ends the daemon is the last error `wdsync --status` shows.
            if let store = try? Store(path: config.db) { try? store.recordError("\(error)") }
            throw error
        }
    }

    /// Runs one step of the engine and reports what it changed in the Maildir: to the status in
    /// the cache (`wdsync --status`), and the observer (which runs the post-sync hook). `events` marks a batch
    /// of updates, `completeSync` a full sync or reconcile.
    func step(_ mirror: AccountSync, events: Int? = nil, completeSync: Bool = false, _ body: () throws -> Bool) throws -> Bool {
        mirror.summary = SyncSummary()
        let start = ContinuousClock.now
        let ok = try body()
        let counts = mirror.summary.changes
        if let failure = lastFailure.withLock({ f in defer { f = nil }; return f }) {
            try mirror.store.recordError(failure)
        }
        if ok && completeSync {
            let elapsed = ContinuousClock.now - start
            let ms = Int(elapsed.components.seconds) * 1000 + Int(elapsed.components.attoseconds / 1_000_000_000_000_000)
            try mirror.store.recordSync(milliseconds: ms, counts: counts)
        }
        if !counts.isEmpty {
            if let events { try mirror.store.recordBatch(events: events, counts: counts) }
            observer(.changed(counts))
        }
        return ok
    }

    private func loop() throws {
        let mirror = try AccountSync(config: config, log: log, mode: .daemon(settle: options.massDeleteSettle), remote: remote)
        let inbox = self.inbox
        mirror.isCancelled = { inbox.stopRequested }
        // The Maildir's generation moves forward before the first change of a burst, and again
        // within a second after it (`moveGenerationIfDue`) and when it stops: a copy taken
        // during a burst is older than the cache once it is over.
        defer { try? mirror.closeGeneration() }
        try mirror.store.recordDaemon(pid: Int(getpid()))
        defer { try? mirror.store.recordDaemon(pid: nil) }
        // However the engine ends (SIGTERM included), the files it kept out of view for a
        // possible move are settled: a stopped daemon leaves nothing in tmp/.
        defer {
            do { try mirror.exporter.removeKeptOrphans() } catch { log.log(.warning, "removing the files of expunged messages: \(error)") }
        }
        let run = DaemonRun(engine: self, mirror: mirror)
        guard try run.firstSync() else { return }
        try run.follow()
    }

    /// Where a reconnected SSE stream resumes.
    func resumeSSE(at id: String) { sseResumeId.withLock { $0 = id } }

    func applyBatch(_ events: [RemoteEvent], received: ContinuousClock.Instant?, lastEventId: String?,
                            mirror: AccountSync, source: EventSource?) throws {
        let start = ContinuousClock.now
        // A mailbox created on the server is subscribed to first and listed when the
        // subscription is settled, as after a reconnect; without a WebSocket it is listed now.
        let timing = try mirror.apply(events, keepOrphans: options.orphanGrace,
                                      subscribe: { [source] in source?.follow(mailboxes: $0) ?? false })
        // Only the SSE reconnect resumes from here. The cache's journal position is the passes'
        // (AccountSync.syncOnce): applied events do not move a mailbox's synced modifyIndex, so the
        // journal entries after the last pass must stay ahead of that position for `--once`.
        if let lastEventId { sseResumeId.withLock { $0 = lastEventId } }
        let first = received ?? start
        log.log(.debug, "batch of \(events.count) events: received → committed \((timing.committed - first).logText), → exported \((timing.exported - first).logText)")
    }

    /// Runs one step that talks to the server. A temporary failure (network, 5xx, an answer that
    /// is not WildDuck's) is logged and returns false: the engine retries later, and the reconcile
    /// after the next connection repairs whatever the step did not do. Anything else (the
    /// password refused, a local disk or cache error) ends the daemon.
    func guarded(_ what: String, _ body: () throws -> Void) throws -> Bool {
        try attempt(what, body) == nil
    }

    /// `guarded` that returns what failed (nil when it worked), logged at verbose when `quiet`
    /// (the caller says it in its own line: offline, lost).
    func attempt(_ what: String, quiet: Bool = false, _ body: () throws -> Void) throws -> String? {
        do {
            try body()
            return nil
        } catch {
            let failure = Failure(of: error)
            guard failure.isRemote else { throw error }
            lastFailure.withLock { $0 = "\(what): \(error)" }
            guard failure.remedy != .stop else { throw error }
            let summary = (error as? WildDuckError)?.summary ?? "\(error)"
            log.log(quiet ? .verbose : .warning, "\(what): \(summary); will retry")
            return summary
        }
    }

    var backoff: Backoff { TransportPlan.Limits(options).backoff }

    func makeSource(_ transport: Transport, mirror: AccountSync) throws -> EventSource? {
        let sink = InboxSink(inbox: inbox, transport: transport)
        switch transport {
        case .webSocket:
            let wsOptions = WebSocketStreamOptions(compression: options.compression, pingInterval: options.pingInterval,
                                                   pongTimeout: options.pongTimeout, replyTimeout: options.replyTimeout,
                                                   caFile: config.caFile, insecure: config.insecure)
            return EventSource(stream: mirror.server.webSocketUpdates(mailboxes: try mirror.store.mailboxes().map(\.id),
                                                                      options: wsOptions, sink: sink,
                                                                      log: { [log] level, message in log.log(LogLevel(level), message) }),
                               transport: transport)
        case .sse:
            // Not the cache's journal position: that may lie up to a second ahead (a pass that
            // read nothing puts it at the second after its start), and a stream resumed there
            // would skip live changes made before it. Without an id the stream sends no backlog;
            // the reconcile after every connection covers what came before.
            return EventSource(stream: mirror.server.journalUpdates(after: sseResumeId.withLock { $0 }, sink: sink),
                               transport: transport)
        case .polling:
            return nil
        }
    }
}

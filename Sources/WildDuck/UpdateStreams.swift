import Foundation
import Net
import Lock
import WebSocket

/// Where an update stream delivers what it hears (the engine's inbox, in the Sync module).
/// Called from the stream's own thread or task.
public protocol UpdateSink: Sendable {
    /// Events, with the id of the journal entry they came in (SSE), where a stream resumes.
    func push(_ events: [RemoteEvent], lastEventId: String?)
    /// The stream is up: the engine reconciles over REST now.
    func connected()
    /// The stream ended or failed. `unavailable`: the server has no such endpoint (try another
    /// transport); `auth`: the token or password is no longer accepted.
    func failed(reason: String, unavailable: Bool, auth: Bool)
}

/// How much a stream's log line matters (the engine maps it to its own levels).
public enum StreamLogLevel: Sendable {
    case warning, verbose, debug
}

/// A running stream of the server's updates; `stop` ends it and returns quickly.
public protocol UpdateStream: AnyObject, Sendable {
    func stop()
    /// Follow these mailboxes too. The WebSocket subscribes to the new ones and has each listed
    /// (a `mailboxDirty` event) once its subscription is settled; it returns true when it will.
    /// False (no connection, or a stream that needs no subscription): list them now.
    @discardableResult
    func follow(mailboxes: [String]) -> Bool
}

/// The WebSocket stream's settings (the daemon's `LiveOptions` and the account's TLS settings).
public struct WebSocketStreamOptions: Sendable {
    /// Offer permessage-deflate.
    public var compression: Bool
    /// Seconds between our pings; a pong missing `pongTimeout` after one ends the connection.
    public var pingInterval: Double
    public var pongTimeout: Double
    /// Seconds a subscription may wait for its reply.
    public var replyTimeout: Double
    public var caFile: String?
    public var insecure: Bool

    public init(compression: Bool, pingInterval: Double, pongTimeout: Double, replyTimeout: Double,
                caFile: String?, insecure: Bool) {
        self.compression = compression
        self.pingInterval = pingInterval
        self.pongTimeout = pongTimeout
        self.replyTimeout = replyTimeout
        self.caFile = caFile
        self.insecure = insecure
    }
}

/// `GET /users/:user/updates`: WildDuck's journal as Server-Sent Events, resumed with
/// Last-Event-ID. A stream that ends, breaks or stays silent for 120 s (the server writes
/// `: idling` every 15 s, which also keeps its 30-minute inactivity timeout from firing; see
/// docs/wildduck-api.md) is a reconnect for the engine.
///
/// Both update streams run the same way: one task per connection, started by `init` and
/// reporting to the sink; the blocking reads on a thread of their own (here the journal's
/// reader, for the WebSocket its client's reader thread), so nothing blocks the cooperative
/// pool; the end reported once, and never after `stop`, which closes the connection from any
/// thread and returns quickly.
public final class SSEUpdateStream: UpdateStream {
    private let handle = CloseHandle()
    private let task: Task<Void, Never>

    init(session: Session, lastEventId: String?, sink: UpdateSink) {
        task = Task.detached { [handle] in
            let failure = await withTaskCancellationHandler {
                await withCheckedContinuation { (done: CheckedContinuation<(String, Bool, Bool), Never>) in
                    let thread = Thread {
                        done.resume(returning: Self.read(session, after: lastEventId, handle: handle, sink: sink))
                    }
                    thread.name = "journal-stream"
                    thread.start()
                }
            } onCancel: {
                handle.close()
            }
            if !handle.isClosed { sink.failed(reason: failure.0, unavailable: failure.1, auth: failure.2) }
        }
    }

    /// Reads the journal until it ends; what ended it, for the sink.
    private static func read(_ session: Session, after lastEventId: String?, handle: CloseHandle,
                             sink: UpdateSink) -> (reason: String, unavailable: Bool, auth: Bool) {
        do {
            let end = try JournalStream.run(session: session, lastEventId: lastEventId, handle: handle, timeout: 120,
                                            onOpen: { sink.connected() },
                                            onEntry: { sink.push($0.events, lastEventId: $0.id) })
            switch end {
            case .ended:
                return ("the server ended the update stream", false, false)
            case .refused(let status, let code):
                return ("the update stream was refused (HTTP \(status)\(code.map { ", \($0)" } ?? ""))",
                        status == 404 || status == 405, code == "InvalidToken")
            }
        } catch {
            return ("update stream: \(error)", false, false)
        }
    }

    public func stop() { task.cancel() }

    public func follow(mailboxes: [String]) -> Bool { false }
}

/// Lets another thread close a blocking stream (ByteStream.close is safe from any thread).
public final class CloseHandle: Sendable {
    private let state = Mutex<(stream: ByteStream?, closed: Bool)>((nil, false))

    public init() {}

    func set(_ stream: ByteStream) {
        state.withLock { if $0.closed { stream.close() } else { $0.stream = stream } }
    }

    public var isClosed: Bool { state.withLock { $0.closed } }

    public func close() {
        state.withLock { $0.closed = true; $0.stream?.close() }
    }
}

/// The `/ws` endpoint: subscribes to every channel and every mailbox, answers liveness with its
/// own pings, and maps updates to remote events.
/// Runs as `SSEUpdateStream` says: a task per connection, the reads on the client's thread.
public final class WebSocketUpdateStream: UpdateStream {
    private struct State {
        var client: WebSocketClient?
        var stopped = false
        var subscribed = Set<String>()
        /// Subscriptions sent and not yet answered, by "channel/mailbox", with when they were sent.
        var pending: [String: ContinuousClock.Instant] = [:]
        /// Mailboxes subscribed after the connection was announced (new mailboxes): each is
        /// listed once its subscription is answered — refused, or not answered in time, too.
        var listOnReply = Set<String>()
        var mailboxesReplied = false
        var lastPong = ContinuousClock.now
        var announced = false
    }
    private let state = Mutex(State())
    private let session: Session
    private let sink: UpdateSink
    private let log: @Sendable (StreamLogLevel, String) -> Void
    private let options: WebSocketStreamOptions
    private let task = Mutex<Task<Void, Never>?>(nil)

    /// Connects to the session's server's `/ws` and subscribes to `mailboxes` and every channel.
    init(session: Session, options: WebSocketStreamOptions, mailboxes: [String],
         sink: UpdateSink, log: @escaping @Sendable (StreamLogLevel, String) -> Void) {
        self.session = session
        self.sink = sink
        self.log = log
        self.options = options
        let url = WebSocketUpdateStream.url(for: session.endpoint)
        let wsOptions = WebSocketOptions(compression: options.compression, timeout: 10,
                                         tls: WebSocketTLSOptions(caFile: options.caFile, insecure: options.insecure))
        let t = Task.detached { [self] in await self.run(url: url, options: wsOptions, mailboxes: mailboxes) }
        task.withLock { $0 = t }
    }

    /// `http://host/api` → `ws://host/api/ws` (the port only when it is not the default, so
    /// the Host header is the one the REST requests send).
    static func url(for endpoint: HTTPEndpoint) -> String {
        let host = endpoint.host.contains(":") ? "[\(endpoint.host)]" : endpoint.host
        let port = endpoint.port == (endpoint.tls ? 443 : 80) ? "" : ":\(endpoint.port)"
        return "\(endpoint.tls ? "wss" : "ws")://\(host)\(port)\(endpoint.prefix)/ws"
    }

    private func fail(_ reason: String, unavailable: Bool = false, auth: Bool = false) {
        let report = state.withLock { s -> Bool in
            defer { s.stopped = true }
            return !s.stopped
        }
        if report { sink.failed(reason: reason, unavailable: unavailable, auth: auth) }
    }

    private func run(url: String, options wsOptions: WebSocketOptions, mailboxes: [String]) async {
        let client: WebSocketClient
        do {
            client = try await WebSocketClient.connect(url: url, options: wsOptions)
        } catch let error as WebSocketError {
            if case .handshakeRejected(let status, _) = error {
                // 404/405/501, or a plain answer without an upgrade: there is no /ws here.
                // Anything else (503, 502 from a proxy…) is a failure worth retrying.
                let absent = [200, 404, 405, 501].contains(status)
                fail(absent ? "the server has no WebSocket endpoint (HTTP \(status))" : "the WebSocket upgrade was refused (HTTP \(status))",
                     unavailable: absent)
            } else {
                fail("cannot open the WebSocket: \(error)")
            }
            return
        } catch {
            fail("cannot open the WebSocket: \(error)")
            return
        }
        let alreadyStopped = state.withLock { s -> Bool in s.client = client; return s.stopped }
        if alreadyStopped { await client.close(); return }
        log(.debug, "WebSocket open (\(client.compression == nil ? "no compression" : "permessage-deflate"))")

        // Subscribe, then list: the messages subscriptions go first, and the engine reconciles
        // over REST only once they and `mailboxes` are answered (see `announceIfReady`), so no
        // change falls between a listing and the subscription that follows its mailbox.
        for mailbox in mailboxes { await subscribe(client, .messages, mailbox) }
        for channel in [WSChannel.mailboxes, .settings, .filters, .autoreply] { await subscribe(client, channel, nil) }
        let pinger = Task { [self] in await self.keepAlive(client) }
        defer { pinger.cancel() }
        do {
            for try await message in client.messages {
                switch message {
                case .pong:
                    state.withLock { $0.lastPong = .now }
                case .binary:
                    log(.warning, "ignored a binary WebSocket message")
                case .text(let text):
                    log(.debug, "ws ← \(text.prefix(300))")
                    if handle(WSProtocol.decode(text), client: client) == false { await client.close(); return }
                }
            }
            fail("the WebSocket closed")
        } catch let error as WebSocketError {
            if case .closedByPeer(let code, let reason) = error {
                let auth = code == 4001 || code == 4002
                fail("the server closed the WebSocket (\(code.map(String.init) ?? "no code")\(reason.isEmpty ? "" : ": \(reason)"))", auth: auth)
            } else {
                fail("WebSocket: \(error)")
            }
        } catch {
            fail("WebSocket: \(error)")
        }
    }

    /// Returns false when the connection must end.
    private func handle(_ message: WSProtocol.ServerMessage, client: WebSocketClient) -> Bool {
        switch message {
        case .data(let channel, let mailboxId, let code, let error):
            if code == 401 || code == 403 {
                fail("the server refused the subscription to \(channel) (\(code): \(error ?? "")); the token is no longer valid", auth: true)
                return false
            }
            if code >= 400 {
                if channel == "messages" {
                    log(.verbose, "the server refused a messages subscription (\(error ?? "error \(code)")); that mailbox follows mailbox-level updates and REST reconciliation")
                } else {
                    log(.warning, "subscription to \(channel) failed: \(error ?? "error \(code)")")
                }
            }
            // Match the reply to what is pending: by channel and mailbox, else the oldest of the channel.
            let answered = state.withLock { s -> String? in
                let exact = channel + "/" + (mailboxId ?? "")
                if s.pending.removeValue(forKey: exact) != nil { return exact }
                guard let oldest = s.pending.filter({ $0.key.hasPrefix(channel + "/") }).min(by: { $0.value < $1.value })?.key
                else { return nil }
                s.pending.removeValue(forKey: oldest)
                return oldest
            }
            if channel == "mailboxes" { state.withLock { $0.mailboxesReplied = true } }
            if let answered { listAfterSubscribing([answered]) }
            announceIfReady()
            return true
        case .update(_, let events):
            sink.push(events, lastEventId: nil)
            return true
        case .disconnect(let reason):
            fail("the server ended the session (\(reason))", auth: reason == "token_expired")
            return false
        case .invalid(let why):
            log(.warning, "ignored a WebSocket message that does not decode (\(why)); reconciling over REST")
            sink.push([.resync], lastEventId: nil)
            return true
        }
    }

    private func subscribe(_ client: WebSocketClient, _ channel: WSChannel, _ mailbox: String?) async {
        let key = channel.rawValue + "/" + (mailbox ?? "")
        let fresh = state.withLock { s -> Bool in
            guard s.subscribed.insert(key).inserted else { return false }
            s.pending[key] = .now
            if s.announced, let mailbox { s.listOnReply.insert(mailbox) }
            return true
        }
        guard fresh else { return }
        guard let token = session.token, let userId = session.userId else {
            state.withLock { _ = $0.pending.removeValue(forKey: key) }
            listAfterSubscribing([key])
            return
        }
        let text = WSProtocol.subscribe(channel, userId: userId, token: token, mailboxId: mailbox)
        log(.debug, "ws → \(WSProtocol.redacted(text))")
        do { try await client.send(text: text) } catch {
            // The connection is going down; its reconnect reconciles everything anyway.
            state.withLock { _ = $0.pending.removeValue(forKey: key) }
            listAfterSubscribing([key])
        }
    }

    /// A new mailbox is listed only once its subscription is settled (answered, refused or
    /// timed out): what arrives before the subscription is in that listing, what arrives after
    /// comes as updates — or, if the server refused, as mailbox-level updates and reconciles.
    private func listAfterSubscribing(_ keys: [String]) {
        let mailboxes = state.withLock { s -> [String] in
            keys.compactMap { key -> String? in
                guard key.hasPrefix("messages/") else { return nil }
                let mailbox = String(key.dropFirst("messages/".count))
                return s.listOnReply.remove(mailbox)
            }
        }
        if !mailboxes.isEmpty { sink.push(mailboxes.map { .mailboxDirty($0) }, lastEventId: nil) }
    }

    /// The connection counts as up (and the engine reconciles over REST) once `mailboxes` and
    /// every `messages` subscription sent on opening are answered or timed out.
    private func announceIfReady() {
        let announce = state.withLock { s -> Bool in
            guard !s.announced, s.mailboxesReplied, !s.pending.keys.contains(where: { $0.hasPrefix("messages/") })
            else { return false }
            s.announced = true
            return true
        }
        if announce { sink.connected() }
    }

    /// Our own pings: a missing pong or a missing reply to the subscriptions means the
    /// connection is dead (a laptop waking from suspend notices within seconds).
    private func keepAlive(_ client: WebSocketClient) async {
        let started = ContinuousClock.now
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(min(options.pingInterval, options.replyTimeout)))
            if Task.isCancelled { return }
            let late = state.withLock { s -> [String] in
                let keys = s.pending.filter { ContinuousClock.now - $0.value > .seconds(options.replyTimeout) }.map(\.key)
                for key in keys { s.pending.removeValue(forKey: key) }
                return keys
            }
            for key in late.sorted() {
                log(.warning, "no reply to the subscription \(key) within \(Int(options.replyTimeout)) s; it follows REST reconciliation")
            }
            listAfterSubscribing(late)
            announceIfReady()
            let (announced, lastPong) = state.withLock { ($0.announced, $0.lastPong) }
            if !announced && ContinuousClock.now - started > .seconds(options.replyTimeout) {
                fail("no reply to the subscriptions within \(Int(options.replyTimeout)) s")
                await client.close()
                return
            }
            let sent = ContinuousClock.now
            do { try await client.ping() } catch { return }
            try? await Task.sleep(for: .seconds(options.pongTimeout))
            if Task.isCancelled { return }
            if state.withLock({ $0.lastPong }) < sent && lastPong < sent {
                fail("no pong within \(Int(options.pongTimeout)) s")
                await client.close()
                return
            }
        }
    }

    public func stop() {
        let client = state.withLock { s -> WebSocketClient? in s.stopped = true; return s.client }
        task.withLock { $0?.cancel() }
        guard let client else { return }
        let done = DispatchSemaphore(value: 0)
        Task.detached { await client.close(code: 1000); done.signal() }
        _ = done.wait(timeout: .now() + 3)
    }

    /// Subscribes to the mailboxes not yet followed; each is listed once its subscription is
    /// settled. Returns false when there is no connection (its reconnect subscribes and reconciles).
    @discardableResult
    public func follow(mailboxes: [String]) -> Bool {
        guard let client = state.withLock({ s in s.announced && !s.stopped ? s.client : nil }) else { return false }
        Task.detached { [self] in
            for mailbox in mailboxes { await self.subscribe(client, .messages, mailbox) }
        }
        return true
    }
}

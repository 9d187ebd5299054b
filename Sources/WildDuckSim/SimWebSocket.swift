import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Lock
import WebSocket

// `GET /ws` — the WebSocket protocol of wildduck_client (docs/wildduck-api.md), built on the journal that
// also feeds SSE. Only the frame codec is shared with the client (the WebSocket module).

/// Which of the unsettled payload shapes (docs/wildduck-api.md) the simulator sends.
public enum SimWSStyle: Sendable {
    /// wildduck_client's hooks: `event` + `message`/`mailbox` objects, `nextCursor`, nested autoreply.
    case perEvent
    /// mail_box_types: `updates:[{type:"message.added",…}]`, `hasMore`, top-level autoreply fields.
    case batched
}

public struct SimWSConfig: Sendable {
    public var style: SimWSStyle = .perEvent
    /// Offer permessage-deflate when the client asks for it.
    public var compression = true
    /// Seconds between server pings (0 = none).
    public var pingInterval: Double = 0
    /// When false, the server ignores the client's pings (a half-dead connection).
    public var answerPings = true
    /// When false, a second `messages` subscription on one connection is refused.
    public var multipleMessageSubscriptions = true
    /// When true, a message change in a mailbox that has no `messages` subscription is announced
    /// on the `mailboxes` channel as that mailbox being `updated`; when false it is not announced
    /// at all (a server whose `mailboxes` channel only reports created, renamed and deleted).
    public var mailboxUpdatesForUnsubscribed = true
    public init() {}
}

/// Misbehaviour on demand, delivered to every open WebSocket session.
public enum SimWSAction: Sendable {
    /// `{type:"disconnect"}` with a reason (`server_shutdown`, `timeout`, `token_expired`), in the
    /// nested shape (`data.response.reason`) or the flat one (`data.reason`); then close.
    case disconnect(reason: String, nested: Bool, closeCode: UInt16)
    /// Close with a code and reason.
    case close(code: UInt16, reason: String)
    /// Cut the TCP connection without a close frame.
    case drop
    /// A text frame that is not JSON.
    case garbageText
    /// A message with an unknown `type`.
    case unknownType
    /// A frame with a reserved opcode (a protocol violation).
    case badFrame
    /// `count` pings as fast as the socket takes them (pongs are counted in `webSocketPongs`).
    case pingFlood(count: Int)
    /// A text message that inflates to `bytes` bytes and is tiny on the wire (sent plain when
    /// compression was not negotiated).
    case deflateBomb(bytes: Int)
}

/// The open sessions and the WebSocket settings of one server.
final class WebSocketHub: Sendable {
    struct Session: Sendable {
        let fd: Int32
        let wakeWrite: Int32
    }
    let config = Mutex(SimWSConfig())
    let sessions = Mutex<[Int32: Session]>([:])
    let actions = Mutex<[Int32: [SimWSAction]]>([:])
    let pongs = Mutex(0)

    func broadcast(_ action: SimWSAction) {
        let list = sessions.withLock { Array($0.values) }
        actions.withLock { a in for s in list { a[s.fd, default: []].append(action) } }
        var b: UInt8 = 1
        for s in list { _ = write(s.wakeWrite, &b, 1) }
    }
}

extension SimServer {
    public func configureWebSocket(_ change: (inout SimWSConfig) -> Void) { webSockets.config.withLock { change(&$0) } }
    /// Number of WebSocket sessions open now.
    public var openWebSockets: Int { webSockets.sessions.withLock { $0.count } }
    /// Pongs received from clients, over all sessions.
    public var webSocketPongs: Int { webSockets.pongs.withLock { $0 } }
    /// Makes every open session misbehave once.
    public func webSocketAction(_ action: SimWSAction) { webSockets.broadcast(action) }
}

extension Routes {
    func webSocketRoute(_ req: HTTPRequest) -> RouteResult {
        var head = "GET \(req.target) HTTP/1.1\r\n"
        for (name, value) in req.headers { head += "\(name): \(value)\r\n" }
        head += "\r\n"
        let config = server.webSockets.config.withLock { $0 }
        guard let parsed = try? HTTPHead.parse(Array(head.utf8))?.head,
              let (response, deflate) = try? WebSocketHandshake.serverResponse(for: parsed, compression: config.compression) else {
            return .response(Routes.error(400, "Expected a WebSocket upgrade", code: "InputValidationError"))
        }
        let server = self.server
        return .stream { fd in
            guard Sock.writeAll(fd, Array(response.utf8)) else { return false }
            SimWSSession(fd: fd, server: server, deflate: deflate).run()
            return false
        }
    }
}

/// One `/ws` connection, run on its connection's thread.
final class SimWSSession {
    let fd: Int32
    let server: SimServer
    let account: SimAccount
    let receiver: WebSocketReceiver
    let sender: WebSocketSender
    var subscriptions: [String: String] = [:]   // channel or "messages/<mailbox>" → token
    var journalCursor: String
    var channelState: [String: String] = [:]
    var closing = false

    init(fd: Int32, server: SimServer, deflate: PerMessageDeflateParameters?) {
        self.fd = fd
        self.server = server
        account = server.account
        receiver = WebSocketReceiver(role: .server, maxMessageSize: 1 << 20, deflate: deflate)
        sender = WebSocketSender(role: .server, deflate: deflate)
        journalCursor = account.latestJournalId ?? ""
        channelState = channelSnapshot()
    }

    var config: SimWSConfig { server.webSockets.config.withLock { $0 } }

    func send(_ bytes: [UInt8]) -> Bool {
        server.sent(bytes.count)
        return Sock.writeAll(fd, bytes)
    }

    func sendJSON(_ value: JSONValue) -> Bool {
        send(sender.text(String(decoding: value.serialized(), as: UTF8.self)))
    }

    func reply(_ type: String, _ channel: String, code: Int, _ response: [(String, JSONValue)]) -> Bool {
        sendJSON(.object([("type", .string(type)), ("channel", .string(channel)),
                          ("data", .object([("code", .int(code)), ("response", .object(response))]))]))
    }

    func run() {
        guard let wake = account.journalSignal.register() else { return }
        var pipeFDs: [Int32] = [0, 0]
        guard pipe(&pipeFDs) == 0 else { account.journalSignal.unregister(wake); return }
        for f in pipeFDs { _ = fcntl(f, F_SETFL, fcntl(f, F_GETFL) | O_NONBLOCK) }
        server.webSockets.sessions.withLock { $0[fd] = WebSocketHub.Session(fd: fd, wakeWrite: pipeFDs[1]) }
        defer {
            server.webSockets.sessions.withLock { _ = $0.removeValue(forKey: fd) }
            server.webSockets.actions.withLock { _ = $0.removeValue(forKey: fd) }
            account.journalSignal.unregister(wake)
            close(pipeFDs[0]); close(pipeFDs[1])
        }
        var buffer = [UInt8](repeating: 0, count: 65536)
        var lastPing = Date()
        while server.isRunning && !closing {
            let interval = config.pingInterval
            var timeout: Int32 = 1000
            if interval > 0 { timeout = Int32(max(1, min(1000, (interval - Date().timeIntervalSince(lastPing)) * 1000))) }
            var fds = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0), pollfd(fd: wake, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: pipeFDs[0], events: Int16(POLLIN), revents: 0)]
            let rc = poll(&fds, 3, timeout)
            if rc < 0 && errno != EINTR { return }
            if interval > 0 && Date().timeIntervalSince(lastPing) >= interval {
                lastPing = Date()
                guard let ping = try? sender.ping(), send(ping) else { return }
            }
            if fds[0].revents != 0 {
                let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if n <= 0 { return }
                let events: [WebSocketEvent]
                do { events = try receiver.receive(buffer[0..<n]) } catch {
                    if let close = try? sender.close(code: error.closeCode, reason: "") { _ = send(close) }
                    return
                }
                for event in events { guard handle(event) else { return } }
            }
            if fds[2].revents != 0 {
                JournalSignal.drain(pipeFDs[0])
                let pending = server.webSockets.actions.withLock { $0.removeValue(forKey: fd) } ?? []
                for action in pending { guard perform(action) else { return } }
            }
            if fds[1].revents != 0 { JournalSignal.drain(wake) }
            guard publishChanges() else { return }
        }
    }

    // MARK: Client messages

    func handle(_ event: WebSocketEvent) -> Bool {
        switch event {
        case .ping(let payload):
            guard config.answerPings else { return true }
            guard let pong = try? sender.pong(payload) else { return false }
            return send(pong)
        case .pong:
            server.webSockets.pongs.withLock { $0 += 1 }
            return true
        case .close:
            if let close = try? sender.close(code: 1000, reason: "") { _ = send(close) }
            return false
        case .text(let text):
            return request(text)
        default:
            return true
        }
    }

    func request(_ text: String) -> Bool {
        guard let json = JSONValue.parse(Array(text.utf8)), let type = json["type"]?.stringValue,
              let channel = json["channel"]?.stringValue else {
            return reply("data", "system", code: 400, [("success", .bool(false)), ("error", .string("BadRequest")), ("message", .string("Malformed message"))])
        }
        let data = json["data"]
        let mailbox = data?["mailboxId"]?.stringValue
        switch type {
        case "subscribe":
            guard let token = data?["token"]?.stringValue, account.isValid(token: token) else {
                return reply("data", channel, code: 401, [("success", .bool(false)), ("error", .string("Unauthorized")), ("message", .string("Invalid or expired token"))])
            }
            if channel == "messages" {
                guard let mailbox, account.mailboxes().contains(where: { $0.id == mailbox }) else {
                    return reply("data", channel, code: 404, [("success", .bool(false)), ("error", .string("NoSuchMailbox")), ("message", .string("This mailbox does not exist"))])
                }
                if !config.multipleMessageSubscriptions, subscriptions.keys.contains(where: { $0.hasPrefix("messages/") }) {
                    return reply("data", channel, code: 400, [("success", .bool(false)), ("error", .string("TooManySubscriptions")), ("message", .string("One messages subscription per connection"))])
                }
                subscriptions["messages/" + mailbox] = token
                return messagesPage(mailbox: mailbox, cursor: nil)
            }
            guard ["mailboxes", "settings", "filters", "autoreply"].contains(channel) else {
                return reply("data", channel, code: 400, [("success", .bool(false)), ("error", .string("BadRequest")), ("message", .string("Unknown channel"))])
            }
            subscriptions[channel] = token
            return reply("data", channel, code: 200, [("success", .bool(true))] + channelData(channel))
        case "fetch":
            guard let mailbox, subscriptions["messages/" + mailbox] != nil else {
                return reply("data", channel, code: 400, [("success", .bool(false)), ("error", .string("BadRequest")), ("message", .string("Not subscribed"))])
            }
            return messagesPage(mailbox: mailbox, cursor: data?["cursor"]?.stringValue)
        case "unsubscribe":
            subscriptions.removeValue(forKey: mailbox.map { "messages/" + $0 } ?? channel)
            return reply("data", channel, code: 200, [("success", .bool(true)), ("unsubscribed", .bool(true))])
        default:
            return reply("data", channel, code: 400, [("success", .bool(false)), ("error", .string("BadRequest")), ("message", .string("Unknown type"))])
        }
    }

    func messagesPage(mailbox: String, cursor: String?) -> Bool {
        let decoded = cursor.flatMap(PageCursor.decode)
        guard let page = try? account.listPage(mailboxId: mailbox, ascending: false, cursor: decoded, limit: 50, unseenOnly: false) else {
            return reply("data", "messages", code: 400, [("success", .bool(false)), ("error", .string("InputValidationError")), ("message", .string("Invalid cursor"))])
        }
        var items: [UInt8] = [UInt8(ascii: "[")]
        for (i, item) in page.items.enumerated() {
            if i > 0 { items.append(UInt8(ascii: ",")) }
            Routes.listItem(item, to: &items)
        }
        items.append(UInt8(ascii: "]"))
        var response: [(String, JSONValue)] = [("success", .bool(true)), ("mailboxId", .string(mailbox)), ("messages", .raw(items))]
        switch config.style {
        case .perEvent:
            response += [("total", .int(page.total)),
                         ("nextCursor", page.result.nextCursor.map { .string($0.encoded) } ?? .bool(false)),
                         ("previousCursor", page.result.previousCursor.map { .string($0.encoded) } ?? .bool(false))]
        case .batched:
            response += [("hasMore", .bool(page.result.nextCursor != nil))]
        }
        return reply("data", "messages", code: 200, response)
    }

    func channelData(_ channel: String) -> [(String, JSONValue)] {
        let s = account.state.withLock { $0 }
        switch (channel, config.style) {
        case ("mailboxes", _):
            return [("mailboxes", .array(account.mailboxes().map { .object([("id", .string($0.id)), ("path", .string($0.path)), ("modifyIndex", .int($0.modifyIndex))]) }))]
        case ("settings", .perEvent):
            return [("settings", .object(s.user.sorted { $0.key < $1.key }.map { ($0.key, .string($0.value)) }))]
        case ("settings", .batched):
            return [("id", .string(s.userId)), ("username", .string(s.username))] + s.user.sorted { $0.key < $1.key }.map { ($0.key, .string($0.value)) }
        case ("filters", _):
            let list = JSONValue.array(s.filters.map { .object([("id", .string($0.id)), ("name", .string($0.name)), ("disabled", .bool($0.disabled))]) })
            return config.style == .batched ? [("limits", .object([("allowed", .int(400)), ("used", .int(s.filters.count))])), ("filters", list)] : [("filters", list)]
        case ("autoreply", .perEvent):
            return [("autoreply", .object([("status", .bool(s.autoreply.status)), ("subject", .string(s.autoreply.subject)), ("text", .string(s.autoreply.text))]))]
        case ("autoreply", .batched):
            return [("status", .bool(s.autoreply.status)), ("subject", .string(s.autoreply.subject)), ("text", .string(s.autoreply.text))]
        default:
            return []
        }
    }

    // MARK: Server → client

    func channelSnapshot() -> [String: String] {
        account.state.withLock { s in
            ["settings": "\(s.user.sorted { $0.key < $1.key })",
             "filters": "\(s.filters.map { "\($0.id)|\($0.name)|\($0.disabled)" })",
             "autoreply": "\(s.autoreply.status)|\(s.autoreply.subject)|\(s.autoreply.text)"]
        }
    }

    /// Sends updates for journal entries and channel changes since the last call. A revoked
    /// token ends the session with `token_expired`.
    func publishChanges() -> Bool {
        if let token = subscriptions.values.first, !account.isValid(token: token) {
            _ = perform(.disconnect(reason: "token_expired", nested: true, closeCode: 4001))
            return false
        }
        let now = Int(Date().timeIntervalSince1970 * 1000)
        let entries = account.journal(after: journalCursor)
        if let last = entries.last { journalCursor = last.id }
        var batch: [String: [JSONValue]] = [:]   // channel → batched updates
        for e in entries {
            let mailbox = e.mailbox ?? ""
            let uid = e.fields.first { $0.0 == "uid" }?.1
            let flags = e.fields.first { $0.0 == "flags" }?.1
            let path = e.fields.first { $0.0 == "path" }?.1
            switch e.command {
            case "EXISTS", "EXPUNGE", "FETCH":
                guard subscriptions["messages/" + mailbox] != nil else {
                    // Not subscribed to that mailbox: a mailbox-level update only.
                    if subscriptions["mailboxes"] != nil && config.mailboxUpdatesForUnsubscribed {
                        guard perEventOrBatch(&batch, "mailboxes", event: "updated", key: "mailbox",
                                              object: .object([("id", .string(mailbox))]),
                                              batched: .object([("type", .string("mailbox.updated")), ("mailbox", .string(mailbox)), ("time", .int(now))]))
                        else { return false }
                    }
                    continue
                }
                let event = e.command == "EXISTS" ? "created" : e.command == "EXPUNGE" ? "deleted" : "updated"
                let type = e.command == "EXISTS" ? "message.added" : e.command == "EXPUNGE" ? "message.deleted" : "message.flags.changed"
                var object: [(String, JSONValue)] = [("id", uid ?? .null), ("mailbox", .string(mailbox))]
                var update: [(String, JSONValue)] = [("type", .string(type)), ("mailbox", .string(mailbox)), ("message", uid ?? .null)]
                if let flags { object.append(("flags", flags)); update.append(("flags", flags)) }
                update.append(("time", .int(now)))
                guard perEventOrBatch(&batch, "messages", event: event, key: "message", object: .object(object),
                                      batched: .object(update), extra: [("mailboxId", .string(mailbox))]) else { return false }
            case "CREATE", "RENAME", "DELETE":
                guard subscriptions["mailboxes"] != nil else { continue }
                let event = e.command == "CREATE" ? "created" : e.command == "RENAME" ? "updated" : "deleted"
                let type = e.command == "CREATE" ? "mailbox.created" : e.command == "RENAME" ? "mailbox.renamed" : "mailbox.deleted"
                var object: [(String, JSONValue)] = [("id", .string(mailbox))]
                if let path { object.append(("path", path)) }
                guard perEventOrBatch(&batch, "mailboxes", event: event, key: "mailbox", object: .object(object),
                                      batched: .object([("type", .string(type)), ("mailbox", .string(mailbox)), ("time", .int(now))]))
                else { return false }
            default:
                continue
            }
        }
        let snapshot = channelSnapshot()
        for channel in ["settings", "filters", "autoreply"] where snapshot[channel] != channelState[channel] {
            guard subscriptions[channel] != nil else { continue }
            let type = channel == "settings" ? "settings.updated" : channel == "filters" ? "filter.created" : "autoreply.user.enabled"
            let key = channel == "settings" ? "key" : channel == "filters" ? "filter" : "autoreply"
            guard perEventOrBatch(&batch, channel, event: "updated", key: key, object: .object(channelData(channel)),
                                  batched: .object([("type", .string(type)), ("time", .int(now))])) else { return false }
        }
        channelState = snapshot
        for (channel, updates) in batch.sorted(by: { $0.key < $1.key }) {
            guard reply("update", channel, code: 200, [("success", .bool(true)), ("updates", .array(updates))]) else { return false }
        }
        return true
    }

    /// Per-event style: sends one update now. Batched style: collects it for one message per channel.
    func perEventOrBatch(_ batch: inout [String: [JSONValue]], _ channel: String, event: String, key: String,
                         object: JSONValue, batched: JSONValue, extra: [(String, JSONValue)] = []) -> Bool {
        switch config.style {
        case .perEvent:
            return reply("update", channel, code: 200, [("success", .bool(true))] + extra + [("event", .string(event)), (key, object)])
        case .batched:
            batch[channel, default: []].append(batched)
            return true
        }
    }

    func perform(_ action: SimWSAction) -> Bool {
        switch action {
        case .disconnect(let reason, let nested, let code):
            let data: JSONValue = nested
                ? .object([("code", .int(200)), ("response", .object([("success", .bool(true)), ("reason", .string(reason))]))])
                : .object([("reason", .string(reason))])
            _ = sendJSON(.object([("type", .string("disconnect")), ("channel", .string("system")), ("data", data)]))
            if let close = try? sender.close(code: code, reason: reason) { _ = send(close) }
            closing = true
            return false
        case .close(let code, let reason):
            if let close = try? sender.close(code: code, reason: reason) { _ = send(close) }
            closing = true
            return false
        case .drop:
            shutdown(fd, Int32(SHUT_RDWR))
            return false
        case .garbageText:
            return send(sender.text("this is {not json"))
        case .unknownType:
            return sendJSON(.object([("type", .string("surprise")), ("channel", .string("messages")), ("data", .object([]))]))
        case .badFrame:
            return send([0x83, 0x00])   // FIN + reserved opcode 3
        case .pingFlood(let count):
            guard let ping = try? sender.ping(Array("flood".utf8)) else { return false }
            var left = count
            while left > 0 {
                let n = min(left, 1000)
                guard send(Array([[UInt8]](repeating: ping, count: n).joined())) else { return false }
                left -= n
            }
            return true
        case .deflateBomb(let bytes):
            return send(sender.text("\"" + String(repeating: "a", count: max(0, bytes - 2)) + "\""))
        }
    }
}

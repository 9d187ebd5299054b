import Foundation
import Lock
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

public struct SimStats: Sendable, Equatable {
    /// every request that was read, including faulted ones
    public var totalRequests: Int = 0
    /// keyed "authenticate", "mailboxes", "messages", "search", "message.eml", "user", "filters", "autoreply", "updates", "other",
    /// and "431" for requests refused for the size of their head
    public var perRoute: [String: Int] = [:]
    /// bytes written to sockets (headers included)
    public var bytesSent: Int = 0

    public subscript(route: String) -> Int { perRoute[route] ?? 0 }
}

public enum SimFault: Sendable, Equatable {
    /// answer with this status and (JSON) body instead of the real response
    case status(Int, body: String)
    /// answer 200 with a body that is not valid JSON
    case malformedJSON
    /// close the connection without answering
    case dropConnection
    /// wait, then answer normally
    case delay(milliseconds: Int)
    /// the next request *that carries a cursor* (`next`/`previous`) gets 400 InputValidationError
    case rejectCursor
    /// send the headers and half of the body, then close the connection
    case truncateBody
    /// send the headers (keep-alive) and half of the body, then close the connection as if the
    /// server died: with a FIN, or with a TCP reset (`reset: true`)
    case closeMidBody(reset: Bool)
    /// answer without Content-Length or chunked encoding, the body ending with the connection
    /// (as HTTP/1.0 allows); `truncated`: only the first half of the body before the close
    case closeDelimited(truncated: Bool)
    /// answer 200 with a chunked body that never ends (until the client goes away)
    case endlessBody
    /// send the normal response one byte at a time, `milliseconds` apart
    case drip(milliseconds: Int)
    /// send 10,000 `100 Continue` interim responses before the answer
    case interimFlood
    /// send the normal body, then 10,000 trailer lines
    case trailerFlood
    /// answer with this status, a `Retry-After: seconds` header and a JSON error body
    case retryAfter(status: Int, seconds: Int)
    /// revoke every access token (as an expiry or a password change does), then answer as the
    /// server now does: 403 InvalidToken to this request and every one with an old token
    case revokeTokens
    /// answer normally, with every occurrence of each key in the body replaced by its value
    /// (a server with broken data: ids that are not ObjectIds, uids out of range, …)
    case rewrite([String: String])
    /// an update stream (`/updates`) whose journal replay fails: WildDuck writes the error as an
    /// `event: error` frame (lib/api/updates.js) and sends nothing more
    case sseError
    /// an update stream whose replay never ends: a FETCH frame every 20 ms, no COUNTERS, until
    /// the client goes away
    case sseEndlessReplay
    /// a write (any method but GET) is carried out, then a reverse proxy answers this status
    /// with its HTML error page instead of WildDuck's answer: nginx, the usual front of
    /// WildDuck, answers 502 or 504 when the server was slow, after it may have stored the
    /// request (https://nginx.org/en/docs/http/ngx_http_proxy_module.html#proxy_read_timeout).
    /// GET requests pass unharmed and do not use the fault up.
    case gatewayAfterWrite(status: Int)
    /// a write is carried out, then the connection closes without an answer (the reply lost
    /// on the way); GET requests pass unharmed and do not use the fault up
    case lostReplyAfterWrite
    /// a listing whose cursor never advances: every answer is the first page, with a
    /// `nextCursor` that leads back to it (a broken proxy or cache in front of the server)
    case loopingCursor
    /// an update stream whose replay stops for `seconds` after `afterEntries` entries, then goes on (a
    /// MongoDB cursor whose next batch is slow to come: lib/api/updates.js reads the journal with a cursor)
    case sseStalledReplay(afterEntries: Int, seconds: Double)
}

struct ServerCore: Sendable {
    var listenFD: Int32 = -1
    var port: UInt16 = 0
    var host = "127.0.0.1"
    var running = false
    var connections: Set<Int32> = []
    var stats = SimStats()
    var faults: [String: [(fault: SimFault, remaining: Int, skip: Int)]] = [:]
    var sseIdleSeconds: Double = 15
}

struct StreamState: Sendable {
    var open: Set<Int32> = []
    var dropped: Set<Int32> = []
}

enum RouteResult {
    case response(HTTPResponse)
    /// takes over the connection (SSE); returns whether the connection may be reused
    case stream(@Sendable (Int32) -> Bool)
}

/// A WildDuck-compatible HTTP/1.1 server for one `SimAccount`.
public final class SimServer: Sendable {
    /// `/ws` sessions and settings (SimWebSocket.swift).
    let webSockets = WebSocketHub()
    public let account: SimAccount
    let core = Mutex(ServerCore())
    let acceptDone = Mutex<Bool>(true)
    let streams = Mutex(StreamState())
    public static let routeKinds = ["authenticate", "mailboxes", "messages", "search", "message.eml", "user", "filters", "autoreply", "updates", "other"]

    public init(account: SimAccount) {
        self.account = account
    }

    public var port: UInt16 { core.withLock { $0.port } }
    public var baseURL: String { core.withLock { "http://\($0.host):\($0.port)" } }

    /// Seconds without activity before an SSE stream sends `: idling` (the real server uses 15).
    public func setSSEHeartbeat(seconds: Double) { core.withLock { $0.sseIdleSeconds = seconds } }
    var sseIdleSeconds: Double { core.withLock { $0.sseIdleSeconds } }

    public func start(host: String = "127.0.0.1", port: UInt16 = 0) throws {
        let (fd, actual) = try Sock.listening(host: host, port: port)
        core.withLock { c in
            c.listenFD = fd
            c.port = actual
            c.host = host
            c.running = true
        }
        acceptDone.withLock { $0 = false }
        let t = Thread { [self] in self.acceptLoop(fd) }
        t.name = "wdsync-sim accept"
        t.start()
    }

    /// Closes the listener and every open connection; returns once the accept thread has ended.
    ///
    /// Descriptors are shut down under the lock that their closing takes too: a number closed
    /// meanwhile may already belong to another socket of the process (another test's server).
    public func stop() {
        core.withLock { c in
            c.running = false
            if c.listenFD >= 0 { shutdown(c.listenFD, Int32(SHUT_RDWR)) }
            for cfd in c.connections { shutdown(cfd, Int32(SHUT_RDWR)) }
        }
        while !acceptDone.withLock({ $0 }) { usleep(1000) }
    }

    public func stats() -> SimStats { core.withLock { $0.stats } }
    public func resetStats() { core.withLock { $0.stats = SimStats() } }

    /// Queues a fault for the next `count` requests of a route kind (see `SimStats.perRoute` for the names),
    /// after letting `after` of them through unharmed.
    public func injectFault(_ fault: SimFault, on route: String, count: Int = 1, after: Int = 0) {
        guard count > 0 else { return }
        core.withLock { $0.faults[route, default: []].append((fault, count, max(0, after))) }
    }

    public func clearFaults() { core.withLock { $0.faults.removeAll() } }

    func takeFault(kind: String, hasCursor: Bool, isWrite: Bool = false) -> SimFault? {
        core.withLock { c in
            guard var list = c.faults[kind], !list.isEmpty else { return nil }
            guard let i = list.firstIndex(where: { entry in
                switch entry.fault {
                case .rejectCursor: return hasCursor
                case .gatewayAfterWrite, .lostReplyAfterWrite: return isWrite
                default: return true
                }
            }) else { return nil }
            if list[i].skip > 0 {
                list[i].skip -= 1
                c.faults[kind] = list
                return nil
            }
            let f = list[i].fault
            list[i].remaining -= 1
            if list[i].remaining <= 0 { list.remove(at: i) }
            c.faults[kind] = list.isEmpty ? nil : list
            return f
        }
    }

    func count(kind: String) {
        core.withLock { c in
            c.stats.totalRequests += 1
            c.stats.perRoute[kind, default: 0] += 1
        }
    }

    func sent(_ n: Int) { core.withLock { $0.stats.bytesSent += n } }

    var isRunning: Bool { core.withLock { $0.running } }

    // MARK: sockets

    private func acceptLoop(_ listenFD: Int32) {
        while true {
            let cfd = accept(listenFD, nil, nil)
            if cfd < 0 {
                if errno == EINTR || errno == ECONNABORTED { continue }
                if errno == EMFILE || errno == ENFILE { usleep(10_000); if isRunning { continue } }
                break
            }
            let ok = core.withLock { c -> Bool in
                guard c.running else { return false }
                c.connections.insert(cfd)
                return true
            }
            guard ok else { close(cfd); break }
            Sock.setOption(cfd, Int32(IPPROTO_TCP), TCP_NODELAY, 1)
            let t = Thread { [self] in self.serve(cfd) }
            t.stackSize = 1 << 20
            t.start()
        }
        core.withLock { c in
            close(listenFD)
            c.listenFD = -1
        }
        acceptDone.withLock { $0 = true }
    }

    private func serve(_ fd: Int32) {
        var parser = HTTPRequestParser()
        var buf = [UInt8](repeating: 0, count: 64 * 1024)
        outer: while true {
            do {
                while let req = try parser.next() {
                    if !handle(fd, req) { break outer }
                }
                if parser.wantsContinue {
                    parser.wantsContinue = false
                    Sock.writeAll(fd, Array("HTTP/1.1 100 Continue\r\n\r\n".utf8))
                }
            } catch HTTPParseError.headerOverflow {
                // Node's answer, with no body, before the application sees anything; it then
                // destroys the socket, unread bytes and all (which may reset the connection).
                // WildDuck adds no `clientError` listener, which would replace this
                // (https://github.com/nodejs/node/blob/7d974bf2781e803bc3bc992d0f7cfa3e035cd559/lib/_http_server.js,
                // `socketOnError`).
                Sock.writeAll(fd, Array("HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\n\r\n".utf8))
                count(kind: "431")
                break
            } catch {
                let body = JSONValue.object([("code", .string("BadRequest")), ("message", .string("Malformed HTTP request"))])
                let r = HTTPResponse.json(400, body).encoded(keepAlive: false)
                Sock.writeAll(fd, r)
                break
            }
            let n = buf.withUnsafeMutableBytes { p in recv(fd, p.baseAddress, p.count, 0) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            buf.withUnsafeBytes { p in parser.append(UnsafeRawBufferPointer(rebasing: p[0..<n])) }
        }
        core.withLock { c in
            c.connections.remove(fd)
            close(fd)
        }
    }

    /// Handles one request; false closes the connection.
    private func handle(_ fd: Int32, _ req: HTTPRequest) -> Bool {
        let kind = SimServer.kind(of: req)
        count(kind: kind)
        let hasCursor = (req.query["next"].map { !$0.isEmpty } ?? false) || (req.query["previous"].map { !$0.isEmpty } ?? false)
        var truncate = false
        var fault = takeFault(kind: kind, hasCursor: hasCursor, isWrite: req.method != "GET")
        if case let .delay(ms)? = fault {
            usleep(UInt32(max(0, ms)) * 1000)
            fault = nil
        }
        if fault == .revokeTokens {
            account.revokeTokens()
            fault = nil
        }
        var rewrite: [String: String] = [:]
        if case let .rewrite(replacements)? = fault {
            rewrite = replacements
            fault = nil
        }
        var response: HTTPResponse
        switch fault {
        case .dropConnection?:
            return false
        case let .status(code, body)?:
            response = HTTPResponse.jsonBytes(code, Array(body.utf8))
        case .malformedJSON?:
            response = HTTPResponse.jsonBytes(200, Array("{\"success\":true,\"results\":[{\"id\":1,\"mailbox\":".utf8))
        case let .retryAfter(code, seconds)?:
            response = HTTPResponse.json(code, .object([("error", .string("Too busy, try again later")), ("code", .string("TooBusy"))]))
            response.headers.append(("Retry-After", String(seconds)))
        case .sseError?:
            // WildDuck writes the error and never starts listening: the stream stays open, silent.
            let bytes = SSE.head + SSE.chunk("event: error\ndata: MongoDB Error: cursor killed\n\n")
            sent(bytes.count)
            guard Sock.writeAll(fd, bytes) else { return false }
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            while isRunning && poll(&p, 1, 200) == 0 {}
            return false
        case .sseEndlessReplay?:
            guard Sock.writeAll(fd, SSE.head) else { return false }
            var n = 0
            while isRunning {
                n += 1
                let frame = SSE.chunk(SSE.frame(.object([("command", .string("FETCH")), ("uid", .int(n)), ("flags", .array([])),
                                                         ("mailbox", .string(String(repeating: "0", count: 24)))]),
                                                id: nil))
                guard Sock.writeAll(fd, frame) else { return false }
                sent(frame.count)
                usleep(20_000)
            }
            return false
        case .endlessBody?:
            writeEndless(fd, head: "HTTP/1.1 200 OK\r\nContent-Type: message/rfc822\r\nTransfer-Encoding: chunked\r\n\r\n",
                         unit: Array("400\r\n".utf8) + Array(repeating: UInt8(ascii: "x"), count: 1022) + Array("\r\n\r\n".utf8))
            return false
        case .rejectCursor?:
            let which = (req.query["next"].map { !$0.isEmpty } ?? false) ? "next" : "previous"
            response = Routes.validation(which, "\"\(which)\" must be a valid cursor")
        case .loopingCursor?:
            var first = req
            first.query["next"] = nil
            switch Routes(server: self, truncateStream: false).route(first) {
            case let .response(r):
                response = r
                if r.status == 200, let json = JSONValue.parse(r.body), case let .object(pairs) = json {
                    let looped = pairs.map { $0.0 == "nextCursor" ? ($0.0, JSONValue.string("bG9vcGluZw")) : $0 }
                    response.body = JSONValue.object(looped).serialized()
                }
            case let .stream(body):
                return body(fd) && req.keepAlive
            }
        case .truncateBody?:
            truncate = true
            fallthrough
        default:
            var routes = Routes(server: self, truncateStream: truncate)
            if case let .sseStalledReplay(after, seconds)? = fault { routes.replayStall = (after, seconds) }
            switch routes.route(req) {
            case let .response(r): response = r
            case let .stream(body):
                return body(fd) && req.keepAlive
            }
        }
        response.headers.append(("Date", HTTPResponse.date(seconds: account.serverMillis / 1000)))
        if !rewrite.isEmpty {
            var text = String(decoding: response.body, as: UTF8.self)
            for (old, new) in rewrite { text = text.replacingOccurrences(of: old, with: new) }
            response.body = Array(text.utf8)
        }
        if truncate {
            let bytes = response.encoded(keepAlive: false, truncateAt: max(0, response.body.count / 2))
            sent(bytes.count)
            Sock.writeAll(fd, bytes)
            return false
        }
        switch fault {
        case .lostReplyAfterWrite?:
            return false
        case let .gatewayAfterWrite(status)?:
            let page = "<html>\r\n<head><title>\(status) \(HTTPResponse.reason(status))</title></head>\r\n<body>\r\n<center><h1>\(status) \(HTTPResponse.reason(status))</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
            let bytes = HTTPResponse(status: status, headers: [("Server", "nginx"), ("Content-Type", "text/html")],
                                     body: Array(page.utf8)).encoded(keepAlive: req.keepAlive)
            sent(bytes.count)
            return Sock.writeAll(fd, bytes) && req.keepAlive
        case let .closeMidBody(reset)?:
            let bytes = response.encoded(keepAlive: true, truncateAt: max(1, response.body.count / 2))
            sent(bytes.count)
            Sock.writeAll(fd, bytes)
            if reset {
                // SO_LINGER 0: the close that follows sends RST instead of FIN.
                var option = linger(l_onoff: 1, l_linger: 0)
                _ = setsockopt(fd, SOL_SOCKET, SO_LINGER, &option, socklen_t(MemoryLayout<linger>.size))
            } else {
                shutdown(fd, Int32(SHUT_WR))
            }
            return false
        case let .closeDelimited(truncated)?:
            var bytes = response.encoded(keepAlive: false, lengthHeader: false)
            if truncated { bytes.removeLast(response.body.count - response.body.count / 2) }
            sent(bytes.count)
            Sock.writeAll(fd, bytes)
            return false
        case let .drip(ms)?:
            for byte in response.encoded(keepAlive: req.keepAlive) {
                guard isRunning, Sock.writeAll(fd, [byte]) else { return false }
                sent(1)
                usleep(UInt32(max(1, ms)) * 1000)
            }
            return req.keepAlive
        case .interimFlood?:
            let flood = Array(repeating: Array("HTTP/1.1 100 Continue\r\n\r\n".utf8), count: 10_000).flatMap { $0 }
            let bytes = flood + response.encoded(keepAlive: req.keepAlive)
            sent(bytes.count)
            return Sock.writeAll(fd, bytes) && req.keepAlive
        case .trailerFlood?:
            var bytes = response.encoded(keepAlive: req.keepAlive)
            guard response.chunked, bytes.count >= 2 else { break }
            bytes.removeLast(2)   // the blank line that ends the trailers
            bytes += Array(repeating: Array("X-Trailer: again\r\n".utf8), count: 10_000).flatMap { $0 } + [13, 10]
            sent(bytes.count)
            return Sock.writeAll(fd, bytes) && req.keepAlive
        default:
            break
        }
        let bytes = response.encoded(keepAlive: req.keepAlive)
        sent(bytes.count)
        guard Sock.writeAll(fd, bytes) else { return false }
        return req.keepAlive
    }

    /// Writes `head`, then `unit` over and over until the client goes away or the server stops.
    private func writeEndless(_ fd: Int32, head: String, unit: [UInt8]) {
        var batch = [UInt8]()
        while batch.count < 64 * 1024 { batch += unit }
        guard head.isEmpty || Sock.writeAll(fd, Array(head.utf8)) else { return }
        while isRunning && Sock.writeAll(fd, batch) { sent(batch.count) }
    }

    static func kind(of req: HTTPRequest) -> String {
        let s = req.segments
        if s.first == "authenticate" && s.count == 1 { return "authenticate" }
        if s == ["ws"] { return "ws" }
        guard s.first == "users", s.count >= 2 else { return "other" }
        if s.count == 2 { return "user" }
        switch s[2] {
        case "mailboxes":
            if s.count <= 4 { return "mailboxes" }
            guard s[4] == "messages" else { return "other" }
            if s.count == 7 && s[6] == "message.eml" { return "message.eml" }
            return s.count <= 6 ? "messages" : "other"
        case "search": return s.count == 3 ? "search" : "other"
        case "filters": return s.count <= 4 ? "filters" : "other"
        case "autoreply": return s.count == 3 ? "autoreply" : "other"
        case "updates": return s.count == 3 ? "updates" : "other"
        default: return "other"
        }
    }
}

import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// `GET /users/:user/updates` — the journal as Server-Sent Events (docs/wildduck-api.md).

extension SimAccount {
    /// Journal entries with an id greater than `id` (all of them for nil), oldest first, across all
    /// mailboxes. Entries past the TTL are gone.
    func journal(after id: String?) -> [JournalEntry] { journalRead(after: id).entries }

    /// `journal(after:)` and the journal's generation at the time of the read.
    func journalRead(after id: String?) -> (entries: [JournalEntry], generation: UInt64) {
        state.withLock { s in
            s.expireJournal(now: s.clock())
            guard let id else { return (s.journal, s.journalGeneration) }
            let i = Paging.lowerBound(s.journal.count) { s.journal[$0].id <= id }
            return (Array(s.journal[i...]), s.journalGeneration)
        }
    }

    /// Goes up by one with every journal entry.
    var journalGeneration: UInt64 { state.withLock { $0.journalGeneration } }

    var latestJournalId: String? { state.withLock { $0.journal.last?.id } }

    /// Number of journal entries currently kept.
    public var journalCount: Int { state.withLock { $0.journal.count } }

    func counters(mailboxId: String) -> (total: Int, unseen: Int)? {
        state.withLock { s in s.mailboxes[mailboxId].map { ($0.byDate.count, $0.unseen) } }
    }
}

/// The frames of one journal read, each a chunk.
struct Frames {
    var chunks: [[UInt8]] = []
    mutating func append(_ c: [UInt8]) { chunks.append(c) }
    var bytes: [UInt8] { chunks.flatMap { $0 } }
    /// The bytes of the first `n` frames, and of the rest.
    func split(after n: Int) -> (head: [UInt8], tail: [UInt8]) {
        (chunks.prefix(n).flatMap { $0 }, chunks.dropFirst(n).flatMap { $0 })
    }
}

enum SSE {
    static let head = Array(("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
        + "X-Accel-Buffering: no\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n").utf8)

    /// A MongoDB cursor's first batch is 101 documents; the next batch costs a round trip to the database
    /// (a `getMore`). The replay pauses that long there by default.
    static let cursorBatch: (entries: Int, seconds: Double) = (101, 0.02)

    static func chunk(_ text: String) -> [UInt8] {
        let body = Array(text.utf8)
        return Array(String(body.count, radix: 16).utf8) + [0x0D, 0x0A] + body + [0x0D, 0x0A]
    }

    /// `data:` lines of the pretty-printed payload, then `id:`.
    static func frame(_ payload: JSONValue, id: String?) -> String {
        var out = ""
        for line in payload.pretty().split(separator: "\n", omittingEmptySubsequences: false) { out += "data: \(line)\n" }
        if let id { out += "id: \(id)\n" }
        return out + "\n"
    }

    static func payload(_ e: JournalEntry) -> JSONValue {
        .object([("command", .string(e.command))] + e.fields)
    }

    /// The frames of one journal read, as WildDuck's `loadJournalStream` writes them: every entry, then a
    /// COUNTERS frame (with the id of the read's last entry) for each mailbox that an EXISTS, an EXPUNGE
    /// or a FETCH touching `seen` named.
    static func frames(_ entries: [JournalEntry], account: SimAccount) -> Frames {
        var out = Frames()
        var touched: [String] = []
        for e in entries {
            out.append(chunk(frame(payload(e), id: e.id)))
            if let m = e.mailbox, e.command == "EXISTS" || e.command == "EXPUNGE" || (e.command == "FETCH" && e.unseenChange),
               !touched.contains(m) { touched.append(m) }
        }
        if let last = entries.last {
            for m in touched {
                guard let c = account.counters(mailboxId: m) else { continue }
                let p = JSONValue.object([("command", .string("COUNTERS")), ("mailbox", .string(m)), ("total", .int(c.total)), ("unseen", .int(c.unseen))])
                out.append(chunk(frame(p, id: last.id)))
            }
        }
        return out
    }

    /// Runs one stream until the client goes away, the server stops, or the stream is dropped.
    ///
    /// As WildDuck's `/users/:user/updates` (lib/api/updates.js): with a Last-Event-ID the journal after it
    /// is replayed; without one the stream starts at the newest entry. Later reads happen only when the
    /// journal grows, and each reads from the stream's position. The replay does not move that position, so
    /// the first read after a replay sends the replayed entries again. Every read ends with COUNTERS. When
    /// the replay sent nothing, the first `: idling` comment goes out at once.
    static func run(fd: Int32, server: SimServer, lastEventId: String?, endAfterReplay: Bool,
                    stall: (entries: Int, seconds: Double) = cursorBatch) -> Bool {
        let account = server.account
        guard let wake = account.journalSignal.register() else { return false }
        server.streamOpened(fd)
        defer {
            server.streamClosed(fd)
            account.journalSignal.unregister(wake)
        }
        var sent = 0
        func send(_ bytes: [UInt8]) -> Bool {
            sent += bytes.count
            return Sock.writeAll(fd, bytes)
        }
        // Take the live position before the head goes out: a client may mutate as soon as it sees the head.
        var position = account.latestJournalId ?? ""
        var generation = account.journalGeneration
        guard send(head) else { server.sent(sent); return false }
        defer { server.sent(sent) }

        var replayed = false
        if let last = lastEventId {
            let read = account.journalRead(after: last)
            let replay = frames(read.entries, account: account)
            // The replay reads a cursor: after its first batch the rest comes when the next one does.
            if read.entries.count > stall.entries {
                let cut = replay.split(after: stall.entries)
                guard send(cut.head) else { return false }
                usleep(useconds_t(stall.seconds * 1e6))
                guard send(cut.tail) else { return false }
            } else {
                guard send(replay.bytes) else { return false }
            }
            replayed = !read.entries.isEmpty
            generation = read.generation
            position = last
        }
        if endAfterReplay { return false }

        var lastActivity = Date()
        var idleCount = 0
        if !replayed {
            idleCount = 1
            guard send(chunk(": idling 1\n\n")) else { return false }
        }
        while server.isRunning && !server.isDropped(fd) {
            if account.journalGeneration != generation {
                let read = account.journalRead(after: position)
                generation = read.generation
                if let last = read.entries.last {
                    guard send(frames(read.entries, account: account).bytes) else { return false }
                    position = last.id
                    lastActivity = Date()
                }
            }
            let idle = server.sseIdleSeconds
            let remaining = idle - Date().timeIntervalSince(lastActivity)
            if remaining <= 0 {
                idleCount += 1
                guard send(chunk(": idling \(idleCount)\n\n")) else { return false }
                lastActivity = Date()
                continue
            }
            var fds = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0), pollfd(fd: wake, events: Int16(POLLIN), revents: 0)]
            let rc = poll(&fds, 2, Int32(min(remaining * 1000 + 1, 60_000)))
            if rc < 0 && errno != EINTR { return false }
            if fds[0].revents != 0 {
                // the client sent something or went away
                var b = [UInt8](repeating: 0, count: 512)
                let n = b.withUnsafeMutableBytes { recv(fd, $0.baseAddress, 512, Int32(MSG_DONTWAIT)) }
                if n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) { return false }
                if fds[0].revents & Int16(POLLHUP | POLLERR) != 0 { return false }
            }
            if fds[1].revents != 0 { JournalSignal.drain(wake) }
        }
        return false
    }
}

extension SimServer {
    func streamOpened(_ fd: Int32) { streams.withLock { _ = $0.open.insert(fd) } }
    func streamClosed(_ fd: Int32) { streams.withLock { s in _ = s.open.remove(fd); _ = s.dropped.remove(fd) } }
    func isDropped(_ fd: Int32) -> Bool { streams.withLock { $0.dropped.contains(fd) } }

    /// Number of SSE streams currently open.
    public var openUpdateStreams: Int { streams.withLock { $0.open.count } }

    /// Cuts every open SSE stream now (the server closes the connection, as after a restart).
    public func dropUpdateStreams() {
        streams.withLock { s in
            for fd in s.open {
                s.dropped.insert(fd)
                shutdown(fd, Int32(SHUT_RDWR))
            }
        }
    }
}

extension Routes {
    func updatesStream(_ req: HTTPRequest) throws -> RouteResult {
        var last = req.header("last-event-id") ?? req.query["Last-Event-ID"]
        if last?.isEmpty == true { last = nil }
        if let l = last, !Hex.isHex(l, count: 24) {
            throw ResponseError(Routes.validation("Last-Event-ID", "\"Last-Event-ID\" must be a valid hex"))
        }
        let lastId = last?.lowercased()
        let server = self.server
        let endAfterReplay = truncateStream
        let stall = replayStall
        return .stream { fd in SSE.run(fd: fd, server: server, lastEventId: lastId, endAfterReplay: endAfterReplay, stall: stall) }
    }
}

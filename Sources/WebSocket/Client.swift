// The WebSocket client: blocking I/O on its own threads, an async API on top.
import Dispatch
import Foundation
import Net
import Lock

/// A message delivered by `WebSocketClient.messages`.
public enum WebSocketMessage: Equatable, Sendable {
    case text(String)
    case binary([UInt8])
    /// A pong from the server (the answer to `ping`, or an unsolicited one): use it for
    /// liveness checks. Pings from the server are answered automatically and not reported.
    case pong([UInt8])
}

/// TLS settings for `wss://`.
public struct WebSocketTLSOptions: Equatable, Sendable {
    /// A PEM file with extra trusted CA certificates (the system store is always used).
    public var caFile: String?
    /// Disable certificate and host name verification. Never in production.
    public var insecure: Bool

    public init(caFile: String? = nil, insecure: Bool = false) {
        self.caFile = caFile
        self.insecure = insecure
    }
}

/// How `WebSocketClient.connect` behaves.
public struct WebSocketOptions: Sendable {
    /// The largest message accepted from the server, after decompression (close 1009 above).
    public var maxMessageSize: Int
    /// Offer permessage-deflate (RFC 7692).
    public var compression: Bool
    /// Extra request headers for the upgrade request (e.g. a cookie or a user agent).
    public var headers: [(name: String, value: String)]
    /// Seconds allowed for each of: TCP connect, TLS handshake, HTTP upgrade, each blocked
    /// write, and the closing handshake.
    public var timeout: Double
    public var tls: WebSocketTLSOptions
    /// Backpressure: once this many bytes of messages wait in `messages` unconsumed, the reader
    /// stops reading the socket until the consumer catches up (TCP then slows the server down).
    /// One message is always accepted, so memory stays below this plus `maxMessageSize`.
    public var maxBufferedBytes = 4 << 20

    public init(maxMessageSize: Int = 16 << 20, compression: Bool = true,
                headers: [(name: String, value: String)] = [], timeout: Double = 10,
                tls: WebSocketTLSOptions = WebSocketTLSOptions()) {
        self.maxMessageSize = maxMessageSize
        self.compression = compression
        self.headers = headers
        self.timeout = timeout
        self.tls = tls
    }
}

/// How a connection ended: the status of the close frame received (or sent, when we failed the
/// connection), `code` nil when there was none.
public struct WebSocketCloseStatus: Equatable, Sendable {
    public var code: UInt16?
    public var reason: String

    public init(code: UInt16?, reason: String) {
        self.code = code
        self.reason = reason
    }
}

/// A WebSocket client connection (RFC 6455, with RFC 7692 compression).
///
/// ```swift
/// let ws = try await WebSocketClient.connect(url: "wss://host/ws")
/// try await ws.send(text: "{…}")
/// do {
///     for try await message in ws.messages { … }
///     // finished normally: we called close() and the handshake completed
/// } catch WebSocketError.closedByPeer(let code, let reason) { … 4001 → re-authenticate … }
/// ```
///
/// `messages` ends normally only after a close we started; every other end throws a
/// `WebSocketError`: `.closedByPeer(code:reason:)` when the server sent a close frame (any
/// code, 1000 included), `.protocolViolation` when we failed the connection (close code sent
/// in the error), `.connectionLost` when TCP dropped. `closeStatus` holds the code afterwards.
///
/// Threads: a dedicated reader thread blocks in `read`; writes run on a serial dispatch queue;
/// the connect runs on its own thread. Nothing blocks Swift concurrency's cooperative pool.
/// Releasing the last reference closes the connection abruptly; call `close` for a clean end.
public final class WebSocketClient: Sendable {
    /// Messages from the server, in order. Bounded: when `maxBufferedBytes` wait unconsumed,
    /// the connection stops reading until they are consumed.
    public let messages: WebSocketMessages
    /// The negotiated compression parameters, nil if not compressed.
    public let compression: PerMessageDeflateParameters?
    public let url: WebSocketURL
    private let connection: Connection

    /// Connects, upgrades and starts reading. Throws `WebSocketError` (`.invalidURL`,
    /// `.transport(NetError)` for TCP/TLS, `.handshakeRejected(status:reason:)` for a non-101
    /// answer, `.handshakeFailed`), or `CancellationError` if the task is cancelled.
    public static func connect(url: String, options: WebSocketOptions = WebSocketOptions()) async throws -> WebSocketClient {
        let parsed = try WebSocketURL(parsing: url)
        let attempt = ConnectAttempt()
        let established: Established = try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (cont: CheckedContinuation<Established, any Error>) in
                let thread = Thread {
                    do {
                        cont.resume(returning: try blockingConnect(parsed, options: options, attempt: attempt))
                    } catch {
                        cont.resume(throwing: error)
                    }
                }
                thread.name = "websocket-connect"
                thread.start()
            }
        } onCancel: {
            attempt.cancel()
        }
        return WebSocketClient(url: parsed, established: established, options: options)
    }

    private init(url: WebSocketURL, established: Established, options: WebSocketOptions) {
        self.url = url
        compression = established.deflate
        let (stream, continuation) = AsyncThrowingStream<WebSocketMessage, any Error>.makeStream()
        connection = Connection(io: established.io, deflate: established.deflate, timeout: options.timeout,
                                continuation: continuation, maxBufferedBytes: options.maxBufferedBytes)
        messages = WebSocketMessages(stream: stream, connection: connection)
        connection.startReader(leftover: established.leftover, maxMessageSize: options.maxMessageSize)
    }

    deinit {
        connection.abort()
    }

    /// Sends a text message (compressed if negotiated). Throws `.notOpen` once closing started,
    /// `.transport` if the write fails.
    public func send(text: String) async throws {
        try await connection.write { $0.text(text) }
    }

    /// Sends a binary message.
    public func send(binary: [UInt8]) async throws {
        try await connection.write { $0.binary(binary) }
    }

    /// Sends a ping (payload ≤ 125 bytes); the answer arrives as `.pong` in `messages`.
    public func ping(_ payload: [UInt8] = []) async throws {
        try await connection.write { sender in
            do throws(WebSocketProtocolError) { return try sender.ping(payload) } catch { throw WebSocketError.protocolViolation(error) }
        }
    }

    /// The close handshake: sends a close frame (an invalid `code` is replaced by 1000, the
    /// reason is cut to 123 bytes), waits up to the timeout for the server's close frame, then
    /// closes TCP. Returns when the reader has stopped and `messages` has finished. Safe to
    /// call more than once and after the server closed.
    public func close(code: UInt16 = WebSocketCloseCode.normal, reason: String = "") async {
        await connection.close(code: code, reason: reason)
    }

    /// The close status once the connection ended (see `WebSocketCloseStatus`), else nil.
    public var closeStatus: WebSocketCloseStatus? { connection.closeStatus }

    // MARK: - Connecting

    /// What the connect thread hands over.
    struct Established: Sendable {
        let io: StreamHandle
        let leftover: [UInt8]
        let deflate: PerMessageDeflateParameters?
    }

    private static func blockingConnect(_ url: WebSocketURL, options: WebSocketOptions, attempt: ConnectAttempt) throws -> Established {
        let stream: any ByteStream
        do {
            let tcp = try TCPStream(host: url.host, port: url.port, timeout: options.timeout)
            try attempt.check(StreamHandle(tcp))
            if url.secure {
                stream = try TLSStream(wrapping: tcp, host: url.host, caFile: options.tls.caFile,
                                       insecure: options.tls.insecure, timeout: options.timeout)
            } else {
                stream = tcp
            }
        } catch let error as NetError {
            throw attempt.isCancelled ? CancellationError() : WebSocketError.transport(error)
        }
        let io = StreamHandle(stream)
        try attempt.check(io)
        stream.setTimeout(options.timeout)
        let key = WebSocketHandshake.makeKey()
        let offer = options.compression ? PerMessageDeflateParameters.clientOffer : nil
        let request = WebSocketHandshake.clientRequest(url: url, key: key, extensions: offer, headers: options.headers)
        do {
            try stream.write(request)
            var received: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = try chunk.withUnsafeMutableBytes { try stream.read(into: $0) }
                guard n > 0 else { throw WebSocketError.handshakeFailed("connection closed during the handshake") }
                received.append(contentsOf: chunk[0..<n])
                if let (head, length) = try HTTPHead.parse(received) {
                    let deflate = try WebSocketHandshake.validateResponse(head, key: key, offeredCompression: options.compression)
                    return Established(io: io, leftover: Array(received[length...]), deflate: deflate)
                }
            }
        } catch {
            stream.close()
            if attempt.isCancelled { throw CancellationError() }
            if let net = error as? NetError { throw WebSocketError.transport(net) }
            throw error
        }
    }
}

/// Holds a stream so it can cross threads. ByteStream is not `Sendable`; this is sound because
/// the client uses each stream from exactly one reader thread and one writer queue (both TCP
/// and TLS streams are full duplex) plus `close()`, which the protocol allows from any thread.
final class StreamHandle: @unchecked Sendable {
    let stream: any ByteStream
    init(_ stream: any ByteStream) { self.stream = stream }
}

/// Lets a cancelled `connect` close the half-open stream, which unblocks the connect thread.
final class ConnectAttempt: Sendable {
    private let state = Mutex<(cancelled: Bool, io: StreamHandle?)>((false, nil))

    var isCancelled: Bool { state.withLock { $0.cancelled } }

    func cancel() {
        let io = state.withLock { s -> StreamHandle? in s.cancelled = true; return s.io }
        io?.stream.close()
    }

    /// Registers the current stream; throws if already cancelled.
    func check(_ io: StreamHandle) throws {
        let cancelled = state.withLock { s -> Bool in s.io = io; return s.cancelled }
        if cancelled {
            io.stream.close()
            throw CancellationError()
        }
    }
}

/// The connection's shared state: the stream, the writer queue, the phase, and the waiters
/// for the reader's end. The reader thread holds this, not the client, so dropping the client
/// can abort the connection.
final class Connection: Sendable {
    enum Phase: Sendable { case open, closing, closed }

    struct State: Sendable {
        var phase: Phase = .open
        var status: WebSocketCloseStatus?
        var readerDone = false
        var waiters: [Int: CheckedContinuation<Void, Never>] = [:]
        var nextWaiter = 0
        /// The payload of the newest ping not answered yet (RFC 6455 §5.5.3 allows answering
        /// only the most recent one): at most one pong is ever queued, whatever the ping rate.
        var pendingPong: [UInt8]?
    }

    let io: StreamHandle
    let timeout: Double
    private let sender: Mutex<WebSocketSender>
    private let writeQueue = DispatchQueue(label: "websocket-writer")
    private let state = Mutex(State())
    private let continuation: AsyncThrowingStream<WebSocketMessage, any Error>.Continuation
    private let deflate: PerMessageDeflateParameters?
    /// Bytes yielded to `messages` and not yet consumed, guarded by `room`.
    private let buffered = Mutex(0)
    private let room = DispatchSemaphore(value: 0)
    private let maxBufferedBytes: Int

    init(io: StreamHandle, deflate: PerMessageDeflateParameters?, timeout: Double,
         continuation: AsyncThrowingStream<WebSocketMessage, any Error>.Continuation, maxBufferedBytes: Int = 4 << 20) {
        self.io = io
        self.timeout = timeout
        self.deflate = deflate
        self.continuation = continuation
        self.maxBufferedBytes = maxBufferedBytes
        sender = Mutex(WebSocketSender(role: .client, deflate: deflate))
    }

    var closeStatus: WebSocketCloseStatus? { state.withLock { $0.phase == .closed ? $0.status : nil } }

    // MARK: Writing

    /// Encodes and writes a data or ping frame on the writer queue, if still open.
    func write(_ make: @escaping @Sendable (WebSocketSender) throws -> [UInt8]) async throws {
        try await withCheckedThrowingContinuation { (cont: CheckedContinuation<Void, any Error>) in
            writeQueue.async {
                do {
                    guard self.state.withLock({ $0.phase == .open }) else { throw WebSocketError.notOpen }
                    try self.writeNow(make)
                    cont.resume()
                } catch {
                    cont.resume(throwing: error)
                }
            }
        }
    }

    /// Encodes and writes on the current thread; call only on `writeQueue`.
    private func writeNow(_ make: (WebSocketSender) throws -> [UInt8]) throws {
        let bytes = try sender.withLock { sender throws -> [UInt8] in try make(sender) }
        do {
            try io.stream.write(bytes)
        } catch let error as NetError {
            throw WebSocketError.transport(error)
        }
    }

    /// Writes a control frame from the reader (pong, close reply); errors are ignored because
    /// the reader finds out about a broken connection by itself.
    private func writeControl(sync: Bool, _ make: @escaping @Sendable (WebSocketSender) throws -> [UInt8]) {
        let work: @Sendable () -> Void = { try? self.writeNow(make) }
        if sync { writeQueue.sync(execute: work) } else { writeQueue.async(execute: work) }
    }

    /// Queues a pong for the newest ping; a flood of pings costs one queued pong, not one each.
    private func answerPing(_ payload: [UInt8]) {
        let schedule = state.withLock { s -> Bool in
            defer { s.pendingPong = payload }
            return s.pendingPong == nil
        }
        guard schedule else { return }
        writeQueue.async {
            guard let newest = self.state.withLock({ s -> [UInt8]? in defer { s.pendingPong = nil }; return s.pendingPong }) else { return }
            try? self.writeNow { try $0.pong(newest) }
        }
    }

    // MARK: Closing

    func close(code: UInt16, reason: String) async {
        let send = state.withLock { s -> Bool in
            guard s.phase == .open else { return false }
            s.phase = .closing
            return true
        }
        room.signal()   // a reader waiting for buffer room reads on, to see the close reply
        if send {
            let code = WebSocketCloseCode.isValidOnWire(code) ? code : WebSocketCloseCode.normal
            var reasonBytes = Array(reason.utf8.prefix(123))
            while !reasonBytes.isEmpty && !UTF8Validator.isValid(reasonBytes) { reasonBytes.removeLast() }
            let reason = String(decoding: reasonBytes, as: UTF8.self)
            await withCheckedContinuation { (cont: CheckedContinuation<Void, Never>) in
                writeQueue.async {
                    do { try self.writeNow { try $0.close(code: code, reason: reason) } } catch { self.io.stream.close() }
                    cont.resume()
                }
            }
        }
        if await !waitForReader(timeout: timeout) {
            io.stream.close()
            _ = await waitForReader(timeout: max(timeout, 2))
        }
    }

    /// Closes the stream without a handshake (the client was released).
    func abort() {
        state.withLock { s in if s.phase == .open { s.phase = .closing } }
        room.signal()
        io.stream.close()
    }

    // MARK: Backpressure

    /// The size a message counts for in the buffer.
    private static func weight(_ message: WebSocketMessage) -> Int {
        switch message {
        case .text(let s): return s.utf8.count + 64
        case .binary(let b), .pong(let b): return b.count + 64
        }
    }

    /// Hands a message to the consumer; first waits (blocking the reader thread, so the socket
    /// is not read) while the buffer is full and the connection open.
    private func deliver(_ message: WebSocketMessage) {
        let weight = Self.weight(message)
        while true {
            let full = buffered.withLock { $0 > 0 && $0 + weight > maxBufferedBytes }
            if !full || state.withLock({ $0.phase != .open }) { break }
            _ = room.wait(timeout: .now() + 0.5)
        }
        buffered.withLock { $0 += weight }
        continuation.yield(message)
    }

    /// The consumer took a message.
    func consumed(_ message: WebSocketMessage) {
        buffered.withLock { $0 -= Self.weight(message) }
        room.signal()
    }

    /// Waits until the reader has finished, or `timeout` seconds. True if it finished.
    private func waitForReader(timeout: Double) async -> Bool {
        await withCheckedContinuation { (cont: CheckedContinuation<Void, Never>) in
            let id = state.withLock { s -> Int? in
                if s.readerDone { return nil }
                s.nextWaiter += 1
                s.waiters[s.nextWaiter] = cont
                return s.nextWaiter
            }
            guard let id else { cont.resume(); return }
            DispatchQueue.global().asyncAfter(deadline: .now() + max(timeout, 0.001)) {
                self.state.withLock { $0.waiters.removeValue(forKey: id) }?.resume()
            }
        }
        return state.withLock { $0.readerDone }
    }

    // MARK: Reading

    func startReader(leftover: [UInt8], maxMessageSize: Int) {
        let thread = Thread { [self] in
            self.runReader(leftover: leftover, maxMessageSize: maxMessageSize)
        }
        thread.name = "websocket-reader"
        thread.start()
    }

    private enum Ending {
        case closeFrame(code: UInt16?, reason: String)
        case violation(WebSocketProtocolError)
        case endOfStream(String)
    }

    private func runReader(leftover: [UInt8], maxMessageSize: Int) {
        let receiver = WebSocketReceiver(role: .client, maxMessageSize: maxMessageSize, deflate: deflate)
        var buffer = [UInt8](repeating: 0, count: 65536)
        var pending = leftover
        var ending: Ending
        reading: while true {
            do {
                if pending.isEmpty {
                    let n = try buffer.withUnsafeMutableBytes { try io.stream.read(into: $0) }
                    if n == 0 { ending = .endOfStream("connection closed without a close frame"); break }
                    pending = Array(buffer[0..<n])
                }
                let events = try receiver.receive(pending)
                pending = []
                for event in events {
                    switch event {
                    case .text(let s): deliver(.text(s))
                    case .binary(let b): deliver(.binary(b))
                    case .pong(let p): deliver(.pong(p))
                    case .ping(let p): answerPing(p)
                    case .close(let code, let reason):
                        ending = .closeFrame(code: code, reason: reason)
                        break reading
                    }
                }
            } catch let error as WebSocketProtocolError {
                ending = .violation(error)
                break
            } catch NetError.timedOut {
                // The read timeout only bounds writes; idle connections are normal.
                if state.withLock({ $0.phase == .closed }) { ending = .endOfStream("closed"); break }
                continue
            } catch {
                ending = .endOfStream("\(error)")
                break
            }
        }
        finish(ending)
    }

    private func finish(_ ending: Ending) {
        let previous = state.withLock { s -> Phase in
            let p = s.phase
            s.phase = .closed
            switch ending {
            case .closeFrame(let code, let reason): s.status = WebSocketCloseStatus(code: code, reason: reason)
            case .violation(let e): s.status = WebSocketCloseStatus(code: e.closeCode, reason: e.detail)
            case .endOfStream: if s.status == nil { s.status = WebSocketCloseStatus(code: WebSocketCloseCode.abnormal, reason: "") }
            }
            return p
        }
        var result: WebSocketError?
        switch ending {
        case .closeFrame(let code, let reason):
            if previous == .open {
                // The server started the close: echo its code (RFC 6455 §5.5.1), then drop TCP.
                writeControl(sync: true) { try $0.close(code: code) }
                result = .closedByPeer(code: code, reason: reason)
            }
        case .violation(let error):
            if previous == .open {
                let reason = String(error.detail.utf8.prefix(100).filter { $0 < 0x80 }.map { Character(UnicodeScalar($0)) })
                writeControl(sync: true) { try $0.close(code: error.closeCode, reason: reason) }
            }
            result = .protocolViolation(error)
        case .endOfStream(let detail):
            if previous == .open { result = .connectionLost(detail) }
        }
        io.stream.close()
        if let result { continuation.finish(throwing: result) } else { continuation.finish() }
        let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.readerDone = true
            defer { s.waiters = [:] }
            return Array(s.waiters.values)
        }
        for w in waiters { w.resume() }
    }
}

/// `WebSocketClient.messages`: the messages in order; consuming one makes room for the reader.
public struct WebSocketMessages: AsyncSequence, Sendable {
    public typealias Element = WebSocketMessage
    let stream: AsyncThrowingStream<WebSocketMessage, any Error>
    let connection: Connection

    public struct AsyncIterator: AsyncIteratorProtocol {
        var base: AsyncThrowingStream<WebSocketMessage, any Error>.AsyncIterator
        let connection: Connection

        public mutating func next() async throws -> WebSocketMessage? {
            let message = try await base.next()
            if let message { connection.consumed(message) }
            return message
        }
    }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(base: stream.makeAsyncIterator(), connection: connection)
    }
}

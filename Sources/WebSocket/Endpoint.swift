// The message layer on top of frames: reassembly, control frames, close payloads, UTF-8 and
// permessage-deflate. Still pure (bytes in, events or bytes out), so a server can use it too.

/// Which end of the connection an endpoint is: decides masking and which deflate parameters
/// apply to its compressor.
public enum WebSocketRole: Sendable {
    case client
    case server
}

/// What a `WebSocketReceiver` reports, in wire order.
public enum WebSocketEvent: Equatable, Sendable {
    case text(String)
    case binary([UInt8])
    /// The peer pinged: answer with `WebSocketSender.pong(_:)` carrying the same payload
    /// (RFC 6455 §5.5.2). `WebSocketClient` does this automatically.
    case ping([UInt8])
    case pong([UInt8])
    /// The peer's close frame: `code` is nil when the frame had no payload (status 1005). After
    /// this event the receiver ignores all further bytes. An endpoint that did not start the
    /// close answers with a close frame (typically echoing `code`) and closes TCP.
    case close(code: UInt16?, reason: String)
}

/// Turns received bytes into messages (RFC 6455 §5.4–5.6, §8.1; RFC 7692 §6.2):
/// - fragmented messages are reassembled; control frames may arrive between fragments;
/// - a continuation without a message in progress, or a new message before the previous one
///   ended, fails with 1002;
/// - a message larger than `maxMessageSize` fails with 1009 — also after decompression, so
///   a "zip bomb" stops at the limit;
/// - text must be valid UTF-8, checked as fragments arrive (a code point may be split across
///   fragments) — else 1007;
/// - close payloads: 1 byte, an invalid code (`WebSocketCloseCode.isValidOnWire`) → 1002; a
///   reason that is not UTF-8 → 1007.
///
/// A thrown error means the connection must be failed: send a close frame with
/// `error.closeCode`, then close TCP. Not thread-safe: one reader at a time.
public final class WebSocketReceiver {
    public let role: WebSocketRole
    public let maxMessageSize: Int
    private var decoder: WebSocketFrameDecoder
    private let inflater: PerMessageInflater?
    private var message: (opcode: WebSocketOpcode, compressed: Bool, data: [UInt8], compressedSize: Int, utf8: UTF8Validator)?
    private var closed = false

    /// - Parameters:
    ///   - role: `.client` expects unmasked frames, `.server` masked ones.
    ///   - maxMessageSize: the largest message (and frame) accepted, after decompression.
    ///   - deflate: the negotiated permessage-deflate parameters, nil if not negotiated.
    public init(role: WebSocketRole, maxMessageSize: Int = 16 << 20, deflate: PerMessageDeflateParameters? = nil) {
        self.role = role
        self.maxMessageSize = maxMessageSize
        // A compressed frame may be slightly larger than its text (stored blocks).
        let frameLimit = deflate == nil ? maxMessageSize : maxMessageSize + maxMessageSize / 64 + 1024
        decoder = WebSocketFrameDecoder(maxPayloadSize: frameLimit, masking: role == .client ? .forbidden : .required,
                                        allowRSV1: deflate != nil)
        inflater = deflate.map { PerMessageInflater(noContextTakeover: $0.peerNoContextTakeover(for: role)) }
    }

    /// Whether a close frame has been received (later bytes are ignored).
    public var receivedClose: Bool { closed }

    /// Feeds received bytes and returns the complete events they finish.
    public func receive<C: Collection>(_ bytes: C) throws(WebSocketProtocolError) -> [WebSocketEvent] where C.Element == UInt8 {
        if closed { return [] }
        decoder.append(bytes)
        var events: [WebSocketEvent] = []
        while !closed, let frame = try decoder.nextFrame() {
            if let event = try handle(frame) { events.append(event) }
        }
        return events
    }

    private func handle(_ frame: WebSocketFrame) throws(WebSocketProtocolError) -> WebSocketEvent? {
        switch frame.opcode {
        case .ping: return .ping(frame.payload)
        case .pong: return .pong(frame.payload)
        case .close:
            closed = true
            let p = frame.payload
            if p.isEmpty { return .close(code: nil, reason: "") }
            guard p.count >= 2 else { throw .protocolError("close frame with a 1-byte payload") }
            let code = UInt16(p[0]) << 8 | UInt16(p[1])
            guard WebSocketCloseCode.isValidOnWire(code) else { throw .protocolError("invalid close code \(code)") }
            let reason = p[2...]
            guard UTF8Validator.isValid(reason) else { throw .badUTF8("close reason is not valid UTF-8") }
            return .close(code: code, reason: String(decoding: reason, as: UTF8.self))
        case .text, .binary:
            guard message == nil else {
                throw .protocolError("new \(frame.opcode) message while a fragmented message is in progress")
            }
            message = (frame.opcode, frame.rsv1, [], 0, UTF8Validator())
            return try appendFragment(frame)
        case .continuation:
            guard message != nil else { throw .protocolError("continuation frame without a message in progress") }
            return try appendFragment(frame)
        }
    }

    private func appendFragment(_ frame: WebSocketFrame) throws(WebSocketProtocolError) -> WebSocketEvent? {
        guard var m = message else { return nil }
        message = nil // keep the buffer uniquely referenced while we append
        let before = m.data.count
        if m.compressed {
            guard let inflater else { throw .protocolError("compressed message without permessage-deflate") }
            m.compressedSize += frame.payload.count
            guard m.compressedSize <= maxMessageSize + maxMessageSize / 64 + 1024 else {
                throw .tooBig("compressed message exceeds the limit of \(maxMessageSize) bytes")
            }
            try inflater.decompress(frame.payload, final: frame.fin, into: &m.data, limit: maxMessageSize)
        } else {
            guard m.data.count + frame.payload.count <= maxMessageSize else {
                throw .tooBig("message exceeds the limit of \(maxMessageSize) bytes")
            }
            m.data.append(contentsOf: frame.payload)
        }
        if m.opcode == .text {
            guard m.utf8.feed(m.data[before...]) else { throw .badUTF8("text message is not valid UTF-8") }
        }
        guard frame.fin else {
            message = m
            return nil
        }
        if m.opcode == .text {
            guard m.utf8.isComplete else { throw .badUTF8("text message ends inside a UTF-8 sequence") }
            return .text(String(decoding: m.data, as: UTF8.self))
        }
        return .binary(m.data)
    }
}

/// Builds outgoing frames: masks them (client) or not (server), compresses data messages when
/// permessage-deflate was negotiated, validates control payloads. Not thread-safe: with
/// context takeover the compressor's state depends on message order, so serialize sends.
public final class WebSocketSender {
    public let role: WebSocketRole
    private let deflater: PerMessageDeflater?
    /// Messages shorter than this are sent uncompressed (RFC 7692 allows it per message).
    public var compressionThreshold: Int

    /// - Parameters:
    ///   - deflate: the negotiated parameters, nil for no compression. If our side must use an
    ///     8-bit window (zlib cannot), messages are sent uncompressed, which RFC 7692 permits.
    public init(role: WebSocketRole, deflate: PerMessageDeflateParameters? = nil, compressionThreshold: Int = 0) {
        self.role = role
        self.compressionThreshold = compressionThreshold
        if let deflate {
            let c = deflate.compressor(for: role)
            deflater = c.windowBits >= 9 ? PerMessageDeflater(windowBits: c.windowBits, noContextTakeover: c.noContextTakeover) : nil
        } else {
            deflater = nil
        }
    }

    private func maskingKey() -> UInt32? {
        role == .client ? WebSocketFrameEncoder.randomMaskingKey() : nil
    }

    /// A text message, as one frame (or several of at most `fragmentSize` payload bytes).
    public func text(_ text: String, fragmentSize: Int? = nil) -> [UInt8] {
        message(opcode: .text, payload: Array(text.utf8), fragmentSize: fragmentSize)
    }

    /// A binary message, as one frame (or several of at most `fragmentSize` payload bytes).
    public func binary(_ bytes: [UInt8], fragmentSize: Int? = nil) -> [UInt8] {
        message(opcode: .binary, payload: bytes, fragmentSize: fragmentSize)
    }

    /// A data message (`.text` or `.binary`), compressed if negotiated, optionally fragmented.
    public func message(opcode: WebSocketOpcode, payload: [UInt8], fragmentSize: Int? = nil) -> [UInt8] {
        precondition(opcode == .text || opcode == .binary, "message(opcode:) takes .text or .binary")
        var body = payload
        var compressed = false
        if let deflater, payload.count >= compressionThreshold {
            body = deflater.compress(payload)
            compressed = true
        }
        var out: [UInt8] = []
        let size = max(1, fragmentSize ?? max(body.count, 1))
        var offset = 0
        var first = true
        repeat {
            let end = min(body.count, offset + size)
            let frame = WebSocketFrame(fin: end == body.count, rsv1: first && compressed,
                                       opcode: first ? opcode : .continuation, payload: Array(body[offset..<end]))
            WebSocketFrameEncoder.encode(frame, maskingKey: maskingKey(), into: &out)
            offset = end
            first = false
        } while offset < body.count
        return out
    }

    /// A ping; the payload is at most 125 bytes.
    public func ping(_ payload: [UInt8] = []) throws(WebSocketProtocolError) -> [UInt8] {
        try control(.ping, payload)
    }

    /// A pong; answer a ping with its payload.
    public func pong(_ payload: [UInt8] = []) throws(WebSocketProtocolError) -> [UInt8] {
        try control(.pong, payload)
    }

    /// A close frame. `code` nil sends an empty payload (then `reason` must be empty). The code
    /// must be valid on the wire; the reason is at most 123 UTF-8 bytes.
    public func close(code: UInt16?, reason: String = "") throws(WebSocketProtocolError) -> [UInt8] {
        guard let code else {
            guard reason.isEmpty else { throw .protocolError("a close reason needs a code") }
            return try control(.close, [])
        }
        guard WebSocketCloseCode.isValidOnWire(code) else { throw .protocolError("close code \(code) may not be sent") }
        return try control(.close, [UInt8(code >> 8), UInt8(code & 0xFF)] + Array(reason.utf8))
    }

    private func control(_ opcode: WebSocketOpcode, _ payload: [UInt8]) throws(WebSocketProtocolError) -> [UInt8] {
        guard payload.count <= 125 else { throw .protocolError("\(opcode) payload longer than 125 bytes") }
        return WebSocketFrameEncoder.encode(WebSocketFrame(opcode: opcode, payload: payload), maskingKey: maskingKey())
    }
}

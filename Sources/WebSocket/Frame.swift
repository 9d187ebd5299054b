// RFC 6455 §5: the frame layer. Everything here is a pure function of bytes: no sockets, no
// threads, no clocks. The client (`WebSocketClient`) and a server (the simulator's `/ws`) both
// build on these pieces.

/// A frame's opcode (RFC 6455 §5.2). Reserved opcodes (0x3–0x7, 0xB–0xF) have no case: the
/// decoder rejects them with close code 1002.
public enum WebSocketOpcode: UInt8, Sendable, CustomStringConvertible {
    case continuation = 0x0
    case text = 0x1
    case binary = 0x2
    case close = 0x8
    case ping = 0x9
    case pong = 0xA

    /// Close, ping and pong: at most 125 bytes of payload and never fragmented.
    public var isControl: Bool { rawValue & 0x8 != 0 }

    public var description: String {
        switch self {
        case .continuation: return "continuation"
        case .text: return "text"
        case .binary: return "binary"
        case .close: return "close"
        case .ping: return "ping"
        case .pong: return "pong"
        }
    }
}

/// One frame, with its payload already unmasked.
public struct WebSocketFrame: Equatable, Sendable {
    public var fin: Bool
    /// RSV1: set on the first frame of a message compressed with permessage-deflate (RFC 7692).
    public var rsv1: Bool
    public var rsv2: Bool
    public var rsv3: Bool
    public var opcode: WebSocketOpcode
    public var payload: [UInt8]

    public init(fin: Bool = true, rsv1: Bool = false, rsv2: Bool = false, rsv3: Bool = false,
                opcode: WebSocketOpcode, payload: [UInt8]) {
        self.fin = fin
        self.rsv1 = rsv1
        self.rsv2 = rsv2
        self.rsv3 = rsv3
        self.opcode = opcode
        self.payload = payload
    }
}

/// A violation of RFC 6455 / RFC 7692 by the peer, or a limit it exceeded. `closeCode` is the
/// status code the endpoint must send in its close frame before dropping the connection
/// (1002 protocol error, 1007 invalid UTF-8, 1009 message too big).
public struct WebSocketProtocolError: Error, Equatable, Sendable, CustomStringConvertible {
    public var closeCode: UInt16
    public var detail: String

    public init(closeCode: UInt16, detail: String) {
        self.closeCode = closeCode
        self.detail = detail
    }

    static func protocolError(_ detail: String) -> Self { .init(closeCode: WebSocketCloseCode.protocolError, detail: detail) }
    static func tooBig(_ detail: String) -> Self { .init(closeCode: WebSocketCloseCode.messageTooBig, detail: detail) }
    static func badUTF8(_ detail: String) -> Self { .init(closeCode: WebSocketCloseCode.invalidPayload, detail: detail) }

    public var description: String { "WebSocket protocol error \(closeCode): \(detail)" }
}

/// Close status codes (RFC 6455 §7.4) and the rule for which may appear in a close frame.
public enum WebSocketCloseCode {
    public static let normal: UInt16 = 1000
    public static let goingAway: UInt16 = 1001
    public static let protocolError: UInt16 = 1002
    public static let unsupportedData: UInt16 = 1003
    /// Never sent: "no status code was present".
    public static let noStatus: UInt16 = 1005
    /// Never sent: "the connection dropped without a close frame".
    public static let abnormal: UInt16 = 1006
    public static let invalidPayload: UInt16 = 1007
    public static let policyViolation: UInt16 = 1008
    public static let messageTooBig: UInt16 = 1009
    public static let mandatoryExtension: UInt16 = 1010
    public static let internalError: UInt16 = 1011

    /// Whether `code` may be sent in a close frame: 1000–1003, 1007–1014 (1012–1014 are
    /// IANA-registered), 3000–4999 (registered and private use). 1004–1006, 1015, the rest of
    /// 1000–2999 and everything ≥ 5000 are invalid on the wire.
    public static func isValidOnWire(_ code: UInt16) -> Bool {
        switch code {
        case 1000...1003, 1007...1014, 3000...4999: return true
        default: return false
        }
    }
}

/// XORs `bytes` in place with the 4-byte masking key (RFC 6455 §5.3), starting at key byte
/// `phase` (0 for a whole payload). Masking and unmasking are the same operation.
public func webSocketApplyMask(_ bytes: UnsafeMutableRawBufferPointer, key: UInt32, phase: Int = 0) {
    guard let base = bytes.baseAddress, bytes.count > 0 else { return }
    let k: (UInt8, UInt8, UInt8, UInt8) = (UInt8(truncatingIfNeeded: key >> 24), UInt8(truncatingIfNeeded: key >> 16),
                                           UInt8(truncatingIfNeeded: key >> 8), UInt8(truncatingIfNeeded: key))
    func keyByte(_ i: Int) -> UInt8 {
        switch (i + phase) & 3 {
        case 0: return k.0
        case 1: return k.1
        case 2: return k.2
        default: return k.3
        }
    }
    // Word-at-a-time for the bulk (the key repeats every 4 bytes, so an 8-byte pattern works).
    var pattern: UInt64 = 0
    withUnsafeMutableBytes(of: &pattern) { p in
        for i in 0..<8 { p[i] = keyByte(i) }
    }
    let count = bytes.count
    var i = 0
    while i + 8 <= count {
        let word = (base + i).loadUnaligned(as: UInt64.self) ^ pattern
        (base + i).storeBytes(of: word, as: UInt64.self)
        i += 8
    }
    let p = base.assumingMemoryBound(to: UInt8.self)
    while i < count {
        p[i] ^= keyByte(i)
        i += 1
    }
}

/// Encodes frames (RFC 6455 §5.2). A client masks every frame with a fresh random key
/// (`randomMaskingKey()`); a server never masks.
public enum WebSocketFrameEncoder {
    /// A fresh 32-bit masking key from the system's CSPRNG.
    public static func randomMaskingKey() -> UInt32 {
        var rng = SystemRandomNumberGenerator()
        return rng.next()
    }

    /// The wire bytes of `frame`: masked with `maskingKey` when given (client → server), else
    /// unmasked (server → client). The length uses the shortest encoding (7, 16 or 64 bits).
    public static func encode(_ frame: WebSocketFrame, maskingKey: UInt32?) -> [UInt8] {
        var out: [UInt8] = []
        encode(frame, maskingKey: maskingKey, into: &out)
        return out
    }

    /// Appends the wire bytes of `frame` to `out`.
    public static func encode(_ frame: WebSocketFrame, maskingKey: UInt32?, into out: inout [UInt8]) {
        let n = frame.payload.count
        out.reserveCapacity(out.count + n + 14)
        var b0 = frame.opcode.rawValue
        if frame.fin { b0 |= 0x80 }
        if frame.rsv1 { b0 |= 0x40 }
        if frame.rsv2 { b0 |= 0x20 }
        if frame.rsv3 { b0 |= 0x10 }
        out.append(b0)
        let maskBit: UInt8 = maskingKey == nil ? 0 : 0x80
        if n < 126 {
            out.append(maskBit | UInt8(n))
        } else if n <= 0xFFFF {
            out.append(maskBit | 126)
            out.append(UInt8(truncatingIfNeeded: n >> 8))
            out.append(UInt8(truncatingIfNeeded: n))
        } else {
            out.append(maskBit | 127)
            let n64 = UInt64(n)
            for shift in stride(from: 56, through: 0, by: -8) {
                out.append(UInt8(truncatingIfNeeded: n64 >> UInt64(shift)))
            }
        }
        if let key = maskingKey {
            out.append(UInt8(truncatingIfNeeded: key >> 24))
            out.append(UInt8(truncatingIfNeeded: key >> 16))
            out.append(UInt8(truncatingIfNeeded: key >> 8))
            out.append(UInt8(truncatingIfNeeded: key))
            let start = out.count
            out.append(contentsOf: frame.payload)
            out.withUnsafeMutableBytes { raw in
                webSocketApplyMask(UnsafeMutableRawBufferPointer(rebasing: raw[start...]), key: key)
            }
        } else {
            out.append(contentsOf: frame.payload)
        }
    }
}

/// An incremental frame decoder (RFC 6455 §5.2): feed it bytes in chunks of any size (one
/// byte at a time works), then take complete frames out with `nextFrame()`.
///
/// It enforces everything that can be checked frame by frame:
/// - RSV2/RSV3 must be clear; RSV1 only if `allowRSV1` (an extension such as
///   permessage-deflate uses it), and then only on a text or binary frame;
/// - reserved opcodes are rejected;
/// - control frames have FIN set and at most 125 bytes;
/// - masking as required by `masking` (a server requires masked frames, a client unmasked);
/// - a 64-bit length must have its top bit clear; the payload must not exceed
///   `maxPayloadSize` (close code 1009) — checked from the header, before buffering the payload.
///
/// After an error the decoder must not be used again (the connection is being failed).
/// Message-level rules (continuation order, UTF-8, close payloads) are `WebSocketReceiver`'s.
public struct WebSocketFrameDecoder: Sendable {
    public enum Masking: Sendable {
        /// Frames from a client: must be masked.
        case required
        /// Frames from a server: must not be masked.
        case forbidden
        /// Accept both (tests, tools).
        case any
    }

    public var maxPayloadSize: Int
    public var masking: Masking
    public var allowRSV1: Bool
    private var buffer: [UInt8] = []
    private var start = 0

    public init(maxPayloadSize: Int, masking: Masking, allowRSV1: Bool = false) {
        self.maxPayloadSize = maxPayloadSize
        self.masking = masking
        self.allowRSV1 = allowRSV1
    }

    /// Bytes received but not yet returned as frames.
    public var bufferedByteCount: Int { buffer.count - start }

    /// Adds received bytes.
    public mutating func append<C: Collection>(_ bytes: C) where C.Element == UInt8 {
        if start > 0 && start == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            start = 0
        } else if start >= 65536 && start * 2 >= buffer.count {
            buffer.removeFirst(start)
            start = 0
        }
        buffer.append(contentsOf: bytes)
    }

    /// The next complete frame, or nil if more bytes are needed.
    public mutating func nextFrame() throws(WebSocketProtocolError) -> WebSocketFrame? {
        let available = buffer.count - start
        guard available >= 2 else { return nil }
        let b0 = buffer[start]
        let b1 = buffer[start + 1]
        let fin = b0 & 0x80 != 0
        let rsv1 = b0 & 0x40 != 0
        let rsv2 = b0 & 0x20 != 0
        let rsv3 = b0 & 0x10 != 0
        guard let opcode = WebSocketOpcode(rawValue: b0 & 0x0F) else {
            throw .protocolError("reserved opcode 0x\(String(b0 & 0x0F, radix: 16))")
        }
        if rsv2 || rsv3 { throw .protocolError("RSV2/RSV3 set without a negotiated extension") }
        if rsv1 {
            guard allowRSV1 else { throw .protocolError("RSV1 set without a negotiated extension") }
            guard opcode == .text || opcode == .binary else {
                throw .protocolError("RSV1 set on a \(opcode) frame")
            }
        }
        let masked = b1 & 0x80 != 0
        switch masking {
        case .required where !masked: throw .protocolError("unmasked frame from a client")
        case .forbidden where masked: throw .protocolError("masked frame from a server")
        default: break
        }
        let len7 = Int(b1 & 0x7F)
        if opcode.isControl {
            guard fin else { throw .protocolError("fragmented \(opcode) frame") }
            guard len7 <= 125 else { throw .protocolError("\(opcode) frame longer than 125 bytes") }
        }
        var headerLength = 2
        var payloadLength: UInt64
        switch len7 {
        case 126:
            guard available >= 4 else { return nil }
            payloadLength = UInt64(buffer[start + 2]) << 8 | UInt64(buffer[start + 3])
            headerLength = 4
        case 127:
            guard available >= 10 else { return nil }
            payloadLength = 0
            for i in 0..<8 { payloadLength = payloadLength << 8 | UInt64(buffer[start + 2 + i]) }
            guard payloadLength & (1 << 63) == 0 else { throw .protocolError("64-bit length with the top bit set") }
            headerLength = 10
        default:
            payloadLength = UInt64(len7)
        }
        guard payloadLength <= UInt64(maxPayloadSize) else {
            throw .tooBig("frame of \(payloadLength) bytes exceeds the limit of \(maxPayloadSize)")
        }
        let count = Int(payloadLength)
        var key: UInt32?
        if masked {
            guard available >= headerLength + 4 else { return nil }
            let k = start + headerLength
            key = UInt32(buffer[k]) << 24 | UInt32(buffer[k + 1]) << 16 | UInt32(buffer[k + 2]) << 8 | UInt32(buffer[k + 3])
            headerLength += 4
        }
        guard available >= headerLength + count else { return nil }
        let payloadStart = start + headerLength
        var payload = Array(buffer[payloadStart..<(payloadStart + count)])
        if let key {
            payload.withUnsafeMutableBytes { webSocketApplyMask($0, key: key) }
        }
        start = payloadStart + count
        if start == buffer.count {
            buffer.removeAll(keepingCapacity: buffer.capacity <= 1 << 20)
            start = 0
        }
        return WebSocketFrame(fin: fin, rsv1: rsv1, rsv2: rsv2, rsv3: rsv3, opcode: opcode, payload: payload)
    }

    /// Appends `bytes` and returns every frame now complete.
    public mutating func decode<C: Collection>(_ bytes: C) throws(WebSocketProtocolError) -> [WebSocketFrame] where C.Element == UInt8 {
        append(bytes)
        var frames: [WebSocketFrame] = []
        while let frame = try nextFrame() { frames.append(frame) }
        return frames
    }
}

/// An incremental UTF-8 validator (Unicode 15 §3.9 Table 3-7: no overlong forms, no
/// surrogates, nothing above U+10FFFF). A text message may be split anywhere, even inside a
/// code point, so the state carries over between `feed` calls.
public struct UTF8Validator: Sendable {
    private var remaining = 0       // continuation bytes still expected
    private var lower: UInt8 = 0x80 // allowed range of the next continuation byte
    private var upper: UInt8 = 0xBF

    public init() {}

    /// Whether everything fed so far ended on a code point boundary.
    public var isComplete: Bool { remaining == 0 }

    /// Validates the next bytes; false as soon as they cannot be UTF-8, whatever follows.
    public mutating func feed<C: Collection>(_ bytes: C) -> Bool where C.Element == UInt8 {
        for b in bytes {
            if remaining > 0 {
                guard b >= lower && b <= upper else { return false }
                lower = 0x80
                upper = 0xBF
                remaining -= 1
                continue
            }
            switch b {
            case 0x00...0x7F: continue
            case 0xC2...0xDF: remaining = 1
            case 0xE0: remaining = 2; lower = 0xA0
            case 0xE1...0xEC, 0xEE, 0xEF: remaining = 2
            case 0xED: remaining = 2; upper = 0x9F
            case 0xF0: remaining = 3; lower = 0x90
            case 0xF1...0xF3: remaining = 3
            case 0xF4: remaining = 3; upper = 0x8F
            default: return false
            }
        }
        return true
    }

    /// Whether `bytes` is one complete, valid UTF-8 string.
    public static func isValid<C: Collection>(_ bytes: C) -> Bool where C.Element == UInt8 {
        var v = UTF8Validator()
        return v.feed(bytes) && v.isComplete
    }
}

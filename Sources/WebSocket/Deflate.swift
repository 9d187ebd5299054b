// RFC 7692: the permessage-deflate extension — negotiation and the raw-deflate codec (zlib).
import CZlib

/// The negotiated parameters of permessage-deflate (RFC 7692 §7.1). Both sides derive their
/// compressor and decompressor from the same value, each for its own role.
public struct PerMessageDeflateParameters: Equatable, Sendable {
    /// The server resets its compressor after every message.
    public var serverNoContextTakeover: Bool
    /// The client resets its compressor after every message.
    public var clientNoContextTakeover: Bool
    /// The largest LZ77 window (8–15) the server compresses with; nil = 15.
    public var serverMaxWindowBits: Int?
    /// The largest LZ77 window (8–15) the client compresses with; nil = 15.
    public var clientMaxWindowBits: Int?

    public init(serverNoContextTakeover: Bool = false, clientNoContextTakeover: Bool = false,
                serverMaxWindowBits: Int? = nil, clientMaxWindowBits: Int? = nil) {
        self.serverNoContextTakeover = serverNoContextTakeover
        self.clientNoContextTakeover = clientNoContextTakeover
        self.serverMaxWindowBits = serverMaxWindowBits
        self.clientMaxWindowBits = clientMaxWindowBits
    }

    /// What the client offers in `Sec-WebSocket-Extensions`.
    public static let clientOffer = "permessage-deflate; client_max_window_bits"

    /// The `Sec-WebSocket-Extensions` value that states these parameters (the server's answer).
    public var headerValue: String {
        var parts = ["permessage-deflate"]
        if serverNoContextTakeover { parts.append("server_no_context_takeover") }
        if clientNoContextTakeover { parts.append("client_no_context_takeover") }
        if let bits = serverMaxWindowBits { parts.append("server_max_window_bits=\(bits)") }
        if let bits = clientMaxWindowBits { parts.append("client_max_window_bits=\(bits)") }
        return parts.joined(separator: "; ")
    }

    /// Client side: validates the server's `Sec-WebSocket-Extensions` answer to
    /// `clientOffer` (all header lines joined with ","). nil means the server declined
    /// compression. Throws if the server names another extension, more than one, a parameter
    /// we did not offer, a duplicate or an invalid value (RFC 7692 §5, §7.1) — the client must
    /// then fail the connection.
    public static func validateServerResponse(_ header: String) throws(WebSocketError) -> PerMessageDeflateParameters? {
        let offers = parseExtensionHeader(header)
        if offers.isEmpty { return nil }
        guard offers.count == 1, let ext = offers.first else {
            throw .handshakeFailed("server accepted more than one extension: \(header)")
        }
        guard ext.name.lowercased() == "permessage-deflate" else {
            throw .handshakeFailed("server accepted an extension we did not offer: \(ext.name)")
        }
        var result = PerMessageDeflateParameters()
        var seen = Set<String>()
        for (name, value) in ext.params {
            let key = name.lowercased()
            guard seen.insert(key).inserted else { throw .handshakeFailed("duplicate permessage-deflate parameter \(key)") }
            switch key {
            case "server_no_context_takeover":
                guard value == nil else { throw .handshakeFailed("server_no_context_takeover takes no value") }
                result.serverNoContextTakeover = true
            case "client_no_context_takeover":
                guard value == nil else { throw .handshakeFailed("client_no_context_takeover takes no value") }
                result.clientNoContextTakeover = true
            case "server_max_window_bits":
                guard let bits = windowBits(value) else { throw .handshakeFailed("invalid server_max_window_bits \(value ?? "(none)")") }
                result.serverMaxWindowBits = bits
            case "client_max_window_bits":
                guard let bits = windowBits(value) else { throw .handshakeFailed("invalid client_max_window_bits \(value ?? "(none)")") }
                result.clientMaxWindowBits = bits
            default:
                throw .handshakeFailed("unknown permessage-deflate parameter \(name)")
            }
        }
        return result
    }

    /// Server side: picks the first acceptable permessage-deflate offer in the client's
    /// `Sec-WebSocket-Extensions` header and returns the parameters to use plus the header value
    /// to answer with (`headerValue`); nil if there is no acceptable offer (answer without the
    /// header and do not compress). The server honours `server_no_context_takeover`,
    /// `client_no_context_takeover` and `server_max_window_bits` ≥ 9 (zlib cannot compress
    /// raw deflate with a 256-byte window, so an offer demanding 8 is declined).
    public static func negotiate(clientOffer header: String) -> PerMessageDeflateParameters? {
        offers: for ext in parseExtensionHeader(header) where ext.name.lowercased() == "permessage-deflate" {
            var result = PerMessageDeflateParameters()
            var seen = Set<String>()
            for (name, value) in ext.params {
                let key = name.lowercased()
                guard seen.insert(key).inserted else { continue offers }
                switch key {
                case "server_no_context_takeover":
                    guard value == nil else { continue offers }
                    result.serverNoContextTakeover = true
                case "client_no_context_takeover":
                    guard value == nil else { continue offers }
                    result.clientNoContextTakeover = true
                case "server_max_window_bits":
                    guard let bits = windowBits(value), bits >= 9 else { continue offers }
                    result.serverMaxWindowBits = bits
                case "client_max_window_bits":
                    // With or without a value, this only limits the client; we inflate with 15.
                    if value != nil && windowBits(value) == nil { continue offers }
                default:
                    continue offers
                }
            }
            return result
        }
        return nil
    }

    private static func windowBits(_ value: String?) -> Int? {
        guard let value, !value.isEmpty, value.count <= 2, value.first != "0",
              value.allSatisfy({ $0.isASCII && $0.isNumber }), let bits = Int(value), (8...15).contains(bits) else { return nil }
        return bits
    }

    /// Splits an extension header into extensions and their `name[=value]` parameters
    /// (quoted values are unquoted).
    static func parseExtensionHeader(_ header: String) -> [(name: String, params: [(String, String?)])] {
        var result: [(name: String, params: [(String, String?)])] = []
        for item in header.split(separator: ",") {
            let parts = item.split(separator: ";").map { $0.trimmingASCIIWhitespace() }
            guard let name = parts.first, !name.isEmpty else { continue }
            var params: [(String, String?)] = []
            for p in parts.dropFirst() where !p.isEmpty {
                if let eq = p.firstIndex(of: "=") {
                    var v = String(p[p.index(after: eq)...]).trimmingASCIIWhitespace()
                    if v.count >= 2, v.hasPrefix("\""), v.hasSuffix("\"") { v = String(v.dropFirst().dropLast()) }
                    params.append((String(p[..<eq]).trimmingASCIIWhitespace(), v))
                } else {
                    params.append((p, nil))
                }
            }
            result.append((name, params))
        }
        return result
    }

    /// The compressor settings for an endpoint in `role`: window bits and whether to reset.
    func compressor(for role: WebSocketRole) -> (windowBits: Int, noContextTakeover: Bool) {
        switch role {
        case .client: return (clientMaxWindowBits ?? 15, clientNoContextTakeover)
        case .server: return (serverMaxWindowBits ?? 15, serverNoContextTakeover)
        }
    }

    /// Whether the peer of an endpoint in `role` resets its compressor after every message (so
    /// our decompressor must too).
    func peerNoContextTakeover(for role: WebSocketRole) -> Bool {
        role == .client ? serverNoContextTakeover : clientNoContextTakeover
    }
}

extension StringProtocol {
    func trimmingASCIIWhitespace() -> String {
        var s = Substring(self)
        while let c = s.first, c == " " || c == "\t" { s.removeFirst() }
        while let c = s.last, c == " " || c == "\t" { s.removeLast() }
        return String(s)
    }
}

/// A raw-deflate compressor for permessage-deflate (RFC 7692 §7.2.1). Not thread-safe.
public final class PerMessageDeflater {
    private let stream: UnsafeMutablePointer<z_stream>
    private let noContextTakeover: Bool
    private var ok: Bool

    /// `windowBits` 9–15 (zlib's raw deflate cannot use 8). With `noContextTakeover` the
    /// dictionary is reset after every message.
    public init(windowBits: Int = 15, noContextTakeover: Bool = false, level: Int32 = Z_DEFAULT_COMPRESSION) {
        stream = .allocate(capacity: 1)
        stream.initialize(to: z_stream())
        self.noContextTakeover = noContextTakeover
        let bits = Int32(max(9, min(15, windowBits)))
        ok = deflateInit2_(stream, level, Z_DEFLATED, -bits, 8, Z_DEFAULT_STRATEGY,
                           zlibVersion(), Int32(MemoryLayout<z_stream>.size)) == Z_OK
    }

    deinit {
        if ok { deflateEnd(stream) }
        stream.deinitialize(count: 1)
        stream.deallocate()
    }

    /// Compresses one whole message: deflate with Z_SYNC_FLUSH, then drop the trailing
    /// 0x00 0x00 0xff 0xff (RFC 7692 §7.2.1). An empty message becomes the single byte 0x00.
    public func compress(_ input: [UInt8]) -> [UInt8] {
        precondition(ok, "deflateInit2 failed")
        var out: [UInt8] = []
        out.reserveCapacity(input.count / 2 + 64)
        var chunk = [UInt8](repeating: 0, count: 65536)
        var input = input
        input.withUnsafeMutableBufferPointer { inBuf in
            stream.pointee.next_in = inBuf.baseAddress
            stream.pointee.avail_in = uInt(inBuf.count)
            chunk.withUnsafeMutableBufferPointer { outBuf in
                repeat {
                    stream.pointee.next_out = outBuf.baseAddress
                    stream.pointee.avail_out = uInt(outBuf.count)
                    let rc = deflate(stream, Z_SYNC_FLUSH)
                    precondition(rc == Z_OK || rc == Z_BUF_ERROR, "deflate failed: \(rc)")
                    let produced = outBuf.count - Int(stream.pointee.avail_out)
                    out.append(contentsOf: outBuf[0..<produced])
                } while stream.pointee.avail_out == 0
            }
            stream.pointee.next_in = nil
            stream.pointee.avail_in = 0
        }
        if out.count >= 4 && out[out.count - 4] == 0 && out[out.count - 3] == 0
            && out[out.count - 2] == 0xFF && out[out.count - 1] == 0xFF {
            out.removeLast(4)
        }
        if noContextTakeover { deflateReset(stream) }
        return out
    }
}

/// A raw-deflate decompressor for permessage-deflate (RFC 7692 §7.2.2), with a bound on the
/// output so that a small compressed message cannot expand without limit. Not thread-safe.
public final class PerMessageInflater {
    private let stream: UnsafeMutablePointer<z_stream>
    private let noContextTakeover: Bool
    private var ok: Bool
    private var chunk = [UInt8](repeating: 0, count: 65536)

    /// The peer's window may be up to 15 bits; inflating with 15 accepts every smaller window.
    /// With `noContextTakeover` the dictionary is reset after every message.
    public init(noContextTakeover: Bool = false) {
        stream = .allocate(capacity: 1)
        stream.initialize(to: z_stream())
        self.noContextTakeover = noContextTakeover
        ok = inflateInit2_(stream, -15, zlibVersion(), Int32(MemoryLayout<z_stream>.size)) == Z_OK
    }

    deinit {
        if ok { inflateEnd(stream) }
        stream.deinitialize(count: 1)
        stream.deallocate()
    }

    private static let tail: [UInt8] = [0x00, 0x00, 0xFF, 0xFF]

    /// Decompresses the next piece of a compressed message (one frame's payload), appending to
    /// `output`. Pass `final: true` with the last piece: the 0x00 0x00 0xff 0xff tail is added
    /// and, without context takeover, the dictionary is reset. Throws close code 1009 as soon as
    /// `output` would exceed `limit` bytes, 1007 if the data is not valid deflate.
    public func decompress(_ input: [UInt8], final: Bool, into output: inout [UInt8], limit: Int) throws(WebSocketProtocolError) {
        guard ok else { throw .init(closeCode: WebSocketCloseCode.internalError, detail: "inflateInit2 failed") }
        try feed(input, into: &output, limit: limit)
        if final {
            try feed(Self.tail, into: &output, limit: limit)
            if noContextTakeover { inflateReset(stream) }
        }
    }

    /// Decompresses one whole message.
    public func decompress(_ message: [UInt8], limit: Int) throws(WebSocketProtocolError) -> [UInt8] {
        var out: [UInt8] = []
        try decompress(message, final: true, into: &out, limit: limit)
        return out
    }

    private func feed(_ input: [UInt8], into output: inout [UInt8], limit: Int) throws(WebSocketProtocolError) {
        if input.isEmpty { return }
        var input = input
        var failure: WebSocketProtocolError?
        input.withUnsafeMutableBufferPointer { inBuf in
            stream.pointee.next_in = inBuf.baseAddress
            stream.pointee.avail_in = uInt(inBuf.count)
            defer { stream.pointee.next_in = nil; stream.pointee.avail_in = 0 }
            chunk.withUnsafeMutableBufferPointer { outBuf in
                while true {
                    stream.pointee.next_out = outBuf.baseAddress
                    stream.pointee.avail_out = uInt(outBuf.count)
                    let rc = inflate(stream, Z_SYNC_FLUSH)
                    let produced = outBuf.count - Int(stream.pointee.avail_out)
                    if produced > 0 {
                        if output.count + produced > limit {
                            failure = .tooBig("decompressed message exceeds the limit of \(limit) bytes")
                            return
                        }
                        output.append(contentsOf: outBuf[0..<produced])
                    }
                    switch rc {
                    case Z_OK:
                        if stream.pointee.avail_in == 0 && stream.pointee.avail_out != 0 { return }
                    case Z_BUF_ERROR:
                        return // no progress possible: all input consumed
                    case Z_STREAM_END:
                        // The peer ended a deflate stream with BFINAL (allowed, RFC 7692 §7.2.3.4): start a
                        // fresh stream for whatever follows.
                        inflateReset(stream)
                        if stream.pointee.avail_in == 0 { return }
                    default:
                        let msg = stream.pointee.msg.map { String(cString: $0) } ?? "error \(rc)"
                        failure = .init(closeCode: WebSocketCloseCode.invalidPayload, detail: "invalid deflate data: \(msg)")
                        return
                    }
                }
            }
        }
        if let failure { throw failure }
    }
}

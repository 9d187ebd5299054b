import Testing
@testable import WebSocket

/// Decodes `bytes` fed in chunks of `chunk` bytes.
func decodeAll(_ bytes: [UInt8], chunk: Int = Int.max, masking: WebSocketFrameDecoder.Masking = .any,
               max: Int = 1 << 20, rsv1: Bool = false) throws -> [WebSocketFrame] {
    var decoder = WebSocketFrameDecoder(maxPayloadSize: max, masking: masking, allowRSV1: rsv1)
    var frames: [WebSocketFrame] = []
    var i = 0
    while i < bytes.count {
        let end = min(bytes.count, i + chunk)
        frames += try decoder.decode(bytes[i..<end])
        i = end
    }
    #expect(decoder.bufferedByteCount == 0)
    return frames
}

/// The close code of the protocol error `body` throws (nil if it does not throw).
func closeCode(_ body: () throws -> Void) -> UInt16? {
    do {
        try body()
        return nil
    } catch let e as WebSocketProtocolError {
        return e.closeCode
    } catch {
        Issue.record("unexpected error \(error)")
        return nil
    }
}

func receiveAll(_ receiver: WebSocketReceiver, _ chunks: [[UInt8]]) throws -> [WebSocketEvent] {
    var events: [WebSocketEvent] = []
    for c in chunks { events += try receiver.receive(c) }
    return events
}

func frame(_ opcode: WebSocketOpcode, _ payload: [UInt8], fin: Bool = true, rsv1: Bool = false, mask: UInt32? = nil) -> [UInt8] {
    WebSocketFrameEncoder.encode(WebSocketFrame(fin: fin, rsv1: rsv1, opcode: opcode, payload: payload), maskingKey: mask)
}

let hello = Array("Hello".utf8)

@Suite("RFC 6455 §5.7 examples")
struct RFCExampleTests {
    @Test func singleFrameUnmaskedText() throws {
        let wire: [UInt8] = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]
        #expect(frame(.text, hello) == wire)
        #expect(try decodeAll(wire) == [WebSocketFrame(opcode: .text, payload: hello)])
        #expect(try WebSocketReceiver(role: .client).receive(wire) == [.text("Hello")])
    }

    @Test func singleFrameMaskedText() throws {
        let wire: [UInt8] = [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        #expect(frame(.text, hello, mask: 0x37fa_213d) == wire)
        #expect(try decodeAll(wire, masking: .required) == [WebSocketFrame(opcode: .text, payload: hello)])
        #expect(try WebSocketReceiver(role: .server).receive(wire) == [.text("Hello")])
    }

    @Test func fragmentedUnmaskedText() throws {
        let first: [UInt8] = [0x01, 0x03, 0x48, 0x65, 0x6c]
        let second: [UInt8] = [0x80, 0x02, 0x6c, 0x6f]
        #expect(frame(.text, Array("Hel".utf8), fin: false) == first)
        #expect(frame(.continuation, Array("lo".utf8)) == second)
        #expect(try decodeAll(first + second) == [
            WebSocketFrame(fin: false, opcode: .text, payload: Array("Hel".utf8)),
            WebSocketFrame(opcode: .continuation, payload: Array("lo".utf8)),
        ])
        let receiver = WebSocketReceiver(role: .client)
        #expect(try receiver.receive(first) == [])
        #expect(try receiver.receive(second) == [.text("Hello")])
    }

    @Test func pingAndMaskedPong() throws {
        let ping: [UInt8] = [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]
        let pong: [UInt8] = [0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        #expect(frame(.ping, hello) == ping)
        #expect(frame(.pong, hello, mask: 0x37fa_213d) == pong)
        #expect(try WebSocketReceiver(role: .client).receive(ping) == [.ping(hello)])
        #expect(try WebSocketReceiver(role: .server).receive(pong) == [.pong(hello)])
    }

    @Test func binary256BytesUses16BitLength() throws {
        let payload = (0..<256).map { UInt8($0 & 0xFF) }
        let wire = frame(.binary, payload)
        #expect(Array(wire.prefix(4)) == [0x82, 0x7E, 0x01, 0x00])
        #expect(wire.count == 4 + 256)
        #expect(try decodeAll(wire) == [WebSocketFrame(opcode: .binary, payload: payload)])
    }

    @Test func binary64KiBUses64BitLength() throws {
        let payload = (0..<65536).map { UInt8($0 % 253) }
        let wire = frame(.binary, payload)
        #expect(Array(wire.prefix(10)) == [0x82, 0x7F, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00])
        #expect(try decodeAll(wire, chunk: 1000) == [WebSocketFrame(opcode: .binary, payload: payload)])
    }
}

@Suite("Frame decoder")
struct FrameDecoderTests {
    @Test func lengthBoundaries() throws {
        for n in [0, 1, 125, 126, 127, 65535, 65536, 70000] {
            let payload = (0..<n).map { UInt8(truncatingIfNeeded: $0 * 31) }
            let wire = frame(.binary, payload)
            let expectedHeader = n < 126 ? 2 : (n <= 65535 ? 4 : 10)
            #expect(wire.count == expectedHeader + n)
            #expect(try decodeAll(wire) == [WebSocketFrame(opcode: .binary, payload: payload)])
        }
    }

    @Test func oneByteAtATime() throws {
        let wire = frame(.text, hello) + frame(.binary, Array(repeating: 7, count: 300), mask: 0x0102_0304)
            + frame(.ping, [1, 2]) + frame(.continuation, [], fin: true)
        let frames = try decodeAll(wire, chunk: 1)
        #expect(frames.map(\.opcode) == [.text, .binary, .ping, .continuation])
        #expect(frames[1].payload == Array(repeating: 7, count: 300))
    }

    @Test func arbitraryChunkingGivesTheSameFrames() throws {
        var wire: [UInt8] = []
        for i in 0..<40 {
            wire += frame(i % 2 == 0 ? .text : .binary, Array(repeating: UInt8(i), count: i * 97), mask: i % 3 == 0 ? nil : UInt32(i))
        }
        let whole = try decodeAll(wire)
        for chunk in [1, 2, 3, 7, 13, 125, 1000, 4096] {
            #expect(try decodeAll(wire, chunk: chunk) == whole)
        }
        #expect(whole.count == 40)
    }

    @Test func rsvBitsAreChecked() {
        // RSV2 / RSV3 are never allowed; RSV1 only with an extension, and not on control or continuation frames.
        #expect(closeCode { _ = try decodeAll([0xA1, 0x00]) } == 1002)
        #expect(closeCode { _ = try decodeAll([0x91, 0x00]) } == 1002)
        #expect(closeCode { _ = try decodeAll([0xC1, 0x00]) } == 1002)
        #expect(closeCode { _ = try decodeAll([0xC1, 0x00], rsv1: true) } == nil)
        #expect(closeCode { _ = try decodeAll([0xC9, 0x00], rsv1: true) } == 1002)
        #expect(closeCode { _ = try decodeAll([0xC0, 0x00], rsv1: true) } == 1002)
    }

    @Test(arguments: [0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF] as [UInt8])
    func reservedOpcodesAreRejected(opcode: UInt8) {
        #expect(closeCode { _ = try decodeAll([0x80 | opcode, 0x00]) } == 1002)
    }

    @Test func controlFrameRules() {
        // 126 bytes of ping (16-bit length) and a fragmented ping.
        #expect(closeCode { _ = try decodeAll([0x89, 0x7E, 0x00, 0x7E] + Array(repeating: 0, count: 126)) } == 1002)
        #expect(closeCode { _ = try decodeAll([0x09, 0x00]) } == 1002)
        #expect(closeCode { _ = try decodeAll([0x88, 0x7D] + Array(repeating: 0x41, count: 125)) } == nil)
        #expect(throws: WebSocketProtocolError.self) { _ = try WebSocketSender(role: .server).ping(Array(repeating: 0, count: 126)) }
    }

    @Test func maskingRequirements() {
        #expect(closeCode { _ = try decodeAll(frame(.text, hello), masking: .required) } == 1002)
        #expect(closeCode { _ = try decodeAll(frame(.text, hello, mask: 5), masking: .forbidden) } == 1002)
        #expect(closeCode { _ = try WebSocketReceiver(role: .client).receive(frame(.text, hello, mask: 5)) } == 1002)
        #expect(closeCode { _ = try WebSocketReceiver(role: .server).receive(frame(.text, hello)) } == 1002)
    }

    @Test func frameLargerThanLimitFailsFromHeader() {
        // Only the header is fed: the decoder must refuse before the payload arrives.
        let header: [UInt8] = [0x82, 0x7F, 0, 0, 0, 0, 0x40, 0, 0, 0]
        #expect(closeCode { _ = try decodeAll(header, max: 1 << 20) } == 1009)
        #expect(closeCode { _ = try decodeAll([0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0]) } == 1002)
    }

    @Test func maskingRoundTripWithFreshKeys() throws {
        let sender = WebSocketSender(role: .client)
        let a = sender.text("same message")
        let b = sender.text("same message")
        #expect(a[1] & 0x80 != 0)
        // A fresh key per frame: two encodings of the same message differ (2^-32 chance not to).
        #expect(a != b)
        var rng = SystemRandomNumberGenerator()
        for n in [0, 1, 3, 4, 5, 8, 125, 126, 65535, 65536, 100_003] {
            let payload = (0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) }
            let receiver = WebSocketReceiver(role: .server)
            let wire = sender.binary(payload)
            #expect(try receiver.receive(wire) == [.binary(payload)])
            // The server side encodes without a mask.
            #expect(WebSocketSender(role: .server).binary(payload)[1] & 0x80 == 0)
        }
    }

    @Test func maskFunctionWithPhase() {
        var bytes: [UInt8] = Array(0..<37)
        let original = bytes
        bytes.withUnsafeMutableBytes { webSocketApplyMask($0, key: 0xDEAD_BEEF) }
        #expect(bytes != original)
        let key: [UInt8] = [0xDE, 0xAD, 0xBE, 0xEF]
        #expect(bytes == original.enumerated().map { $0.element ^ key[$0.offset % 4] })
        bytes.withUnsafeMutableBytes { webSocketApplyMask($0, key: 0xDEAD_BEEF) }
        #expect(bytes == original)
    }
}

@Suite("Message receiver")
struct ReceiverTests {
    @Test func fragmentsWithInterleavedControlFrames() throws {
        let r = WebSocketReceiver(role: .client)
        let wire = frame(.text, Array("Hel".utf8), fin: false) + frame(.ping, [1]) + frame(.continuation, Array("l".utf8), fin: false)
            + frame(.pong, [2]) + frame(.continuation, Array("o".utf8)) + frame(.binary, [9, 9], fin: false)
            + frame(.continuation, [8])
        var events: [WebSocketEvent] = []
        for b in wire { events += try r.receive([b]) }
        #expect(events == [.ping([1]), .pong([2]), .text("Hello"), .binary([9, 9, 8])])
    }

    @Test func continuationWithoutStartFails() {
        #expect(closeCode { _ = try WebSocketReceiver(role: .client).receive(frame(.continuation, hello)) } == 1002)
    }

    @Test func newMessageDuringFragmentedMessageFails() {
        let wire = frame(.text, hello, fin: false) + frame(.text, hello)
        #expect(closeCode { _ = try WebSocketReceiver(role: .client).receive(wire) } == 1002)
    }

    @Test func messageSizeLimit() throws {
        let r = WebSocketReceiver(role: .client, maxMessageSize: 10)
        #expect(try r.receive(frame(.binary, Array(repeating: 1, count: 10))) == [.binary(Array(repeating: 1, count: 10))])
        #expect(closeCode { _ = try WebSocketReceiver(role: .client, maxMessageSize: 10).receive(frame(.binary, Array(repeating: 1, count: 11))) } == 1009)
        // Fragments that each fit but together do not.
        let fragments = frame(.text, Array(repeating: 0x41, count: 6), fin: false) + frame(.continuation, Array(repeating: 0x41, count: 6))
        #expect(closeCode { _ = try WebSocketReceiver(role: .client, maxMessageSize: 10).receive(fragments) } == 1009)
    }

    @Test func invalidUTF8IsRejected() {
        for bad in [[0xC3, 0x28], [0xC0, 0x80], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80], [0xFF], [0xE2, 0x82]] as [[UInt8]] {
            #expect(closeCode { _ = try WebSocketReceiver(role: .client).receive(frame(.text, bad)) } == 1007, "\(bad)")
        }
        // Binary messages are not checked.
        #expect(closeCode { _ = try WebSocketReceiver(role: .client).receive(frame(.binary, [0xFF])) } == nil)
    }

    @Test func utf8SplitAcrossFragments() throws {
        // U+1F600 (F0 9F 98 80) split in the middle: valid.
        let r = WebSocketReceiver(role: .client)
        let ok = frame(.text, [0x41, 0xF0, 0x9F], fin: false) + frame(.continuation, [0x98], fin: false) + frame(.continuation, [0x80, 0x42])
        #expect(try r.receive(ok) == [.text("A\u{1F600}B")])
        // Invalid across the boundary: F0 9F then 'A' — detected when the second fragment arrives.
        let r2 = WebSocketReceiver(role: .client)
        #expect(try r2.receive(frame(.text, [0xF0, 0x9F], fin: false)) == [])
        #expect(closeCode { _ = try r2.receive(frame(.continuation, [0x41], fin: false)) } == 1007)
        // Fail fast: an invalid first fragment fails before the message ends.
        #expect(closeCode { _ = try WebSocketReceiver(role: .client).receive(frame(.text, [0xC0], fin: false)) } == 1007)
        // A message that ends inside a sequence.
        let truncated = frame(.text, [0x41], fin: false) + frame(.continuation, [0xE2, 0x82])
        #expect(closeCode { _ = try WebSocketReceiver(role: .client).receive(truncated) } == 1007)
    }

    @Test func closeFrames() throws {
        let r = WebSocketReceiver(role: .client)
        #expect(try r.receive(frame(.close, [0x0F, 0xA1] + Array("token expired".utf8))) == [.close(code: 4001, reason: "token expired")])
        #expect(r.receivedClose)
        #expect(try r.receive(frame(.text, hello)) == [], "bytes after a close frame are ignored")
        #expect(try WebSocketReceiver(role: .client).receive(frame(.close, [])) == [.close(code: nil, reason: "")])
        #expect(closeCode { _ = try WebSocketReceiver(role: .client).receive(frame(.close, [0x03])) } == 1002)
        #expect(closeCode { _ = try WebSocketReceiver(role: .client).receive(frame(.close, [0x03, 0xE8, 0xC3, 0x28])) } == 1007)
    }

    @Test(arguments: [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535] as [UInt16])
    func invalidCloseCodes(code: UInt16) {
        #expect(!WebSocketCloseCode.isValidOnWire(code))
        #expect(closeCode { _ = try WebSocketReceiver(role: .client).receive(frame(.close, [UInt8(code >> 8), UInt8(code & 0xFF)])) } == 1002)
        #expect(throws: WebSocketProtocolError.self) { _ = try WebSocketSender(role: .client).close(code: code) }
    }

    @Test(arguments: [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4001, 4002, 4999] as [UInt16])
    func validCloseCodes(code: UInt16) throws {
        let wire = try WebSocketSender(role: .client).close(code: code, reason: "bye")
        #expect(try WebSocketReceiver(role: .server).receive(wire) == [.close(code: code, reason: "bye")])
    }

    @Test func closeReasonLengthIsLimited() throws {
        #expect(throws: WebSocketProtocolError.self) { _ = try WebSocketSender(role: .server).close(code: 1000, reason: String(repeating: "x", count: 124)) }
        _ = try WebSocketSender(role: .server).close(code: 1000, reason: String(repeating: "x", count: 123))
    }

    @Test func senderFragmentsMessages() throws {
        let sender = WebSocketSender(role: .server)
        let wire = sender.text("Hello, fragmented world", fragmentSize: 5)
        let frames = try decodeAll(wire)
        #expect(frames.count == 5)
        #expect(frames.first?.opcode == .text)
        #expect(frames.dropFirst().allSatisfy { $0.opcode == .continuation })
        #expect(frames.map(\.fin) == [false, false, false, false, true])
        #expect(try WebSocketReceiver(role: .client).receive(wire) == [.text("Hello, fragmented world")])
    }

    @Test func utf8Validator() {
        #expect(UTF8Validator.isValid(Array("ascii, é, €, 𝄞, 😀".utf8)))
        #expect(UTF8Validator.isValid([0xEF, 0xBF, 0xBF]))       // U+FFFF
        #expect(UTF8Validator.isValid([0xF4, 0x8F, 0xBF, 0xBF])) // U+10FFFF
        #expect(!UTF8Validator.isValid([0xE0, 0x80, 0x80]))      // overlong
        #expect(!UTF8Validator.isValid([0xF0, 0x80, 0x80, 0x80])) // overlong
        #expect(!UTF8Validator.isValid([0xED, 0xBF, 0xBF]))      // surrogate
        #expect(!UTF8Validator.isValid([0x80]))                  // lone continuation
        #expect(!UTF8Validator.isValid([0xF5, 0x80, 0x80, 0x80]))
        #expect(!UTF8Validator.isValid([0xCE]))                  // truncated
    }
}

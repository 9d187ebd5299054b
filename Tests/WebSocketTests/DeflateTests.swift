import Testing
@testable import WebSocket

@Suite("RFC 7692 permessage-deflate")
struct DeflateTests {
    let compressedHello: [UInt8] = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]

    @Test func helloCompressesToTheRFCBytes() {
        // RFC 7692 §7.2.3.1: "Hello" as one compressed frame: 0xc1 0x07 0xf2 0x48 0xcd 0xc9 0xc9 0x07 0x00.
        let sender = WebSocketSender(role: .server, deflate: PerMessageDeflateParameters())
        #expect(sender.text("Hello") == [0xc1, 0x07] + compressedHello)
        #expect(PerMessageDeflater().compress(hello) == compressedHello)
    }

    @Test func decodesTheRFCSingleFrame() throws {
        let r = WebSocketReceiver(role: .client, deflate: PerMessageDeflateParameters())
        #expect(try r.receive([0xc1, 0x07] + compressedHello) == [.text("Hello")])
    }

    @Test func decodesTheRFCFragmentedMessage() throws {
        // RFC 7692 §7.2.3.1: the same data split in two frames; RSV1 on the first only.
        let r = WebSocketReceiver(role: .client, deflate: PerMessageDeflateParameters())
        let wire: [UInt8] = [0x41, 0x03, 0xf2, 0x48, 0xcd, 0x80, 0x04, 0xc9, 0xc9, 0x07, 0x00]
        var events: [WebSocketEvent] = []
        for b in wire { events += try r.receive([b]) }
        #expect(events == [.text("Hello")])
    }

    @Test func contextTakeoverMakesTheSecondMessageShorter() throws {
        // RFC 7692 §7.2.3.2: with the window shared, the second "Hello" is 0xc1 0x05 0xf2 0x00 0x11 0x00 0x00.
        let sender = WebSocketSender(role: .server, deflate: PerMessageDeflateParameters())
        let first = sender.text("Hello")
        let second = sender.text("Hello")
        #expect(first == [0xc1, 0x07] + compressedHello)
        #expect(second == [0xc1, 0x05, 0xf2, 0x00, 0x11, 0x00, 0x00])
        let r = WebSocketReceiver(role: .client, deflate: PerMessageDeflateParameters())
        #expect(try r.receive(first + second) == [.text("Hello"), .text("Hello")])
    }

    @Test func noContextTakeoverRepeatsTheFirstEncoding() throws {
        let params = PerMessageDeflateParameters(serverNoContextTakeover: true)
        let sender = WebSocketSender(role: .server, deflate: params)
        #expect(sender.text("Hello") == [0xc1, 0x07] + compressedHello)
        #expect(sender.text("Hello") == [0xc1, 0x07] + compressedHello)
        let r = WebSocketReceiver(role: .client, deflate: params)
        #expect(try r.receive([0xc1, 0x07] + compressedHello + [0xc1, 0x07] + compressedHello) == [.text("Hello"), .text("Hello")])
    }

    @Test func decodesStoredBlockBfinalAndTwoBlocks() throws {
        let params = PerMessageDeflateParameters()
        // RFC 7692 §7.2.3.3 no compression (stored block).
        #expect(try WebSocketReceiver(role: .client, deflate: params)
            .receive([0xc1, 0x0b, 0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00]) == [.text("Hello")])
        // RFC 7692 §7.2.3.4 BFINAL set.
        #expect(try WebSocketReceiver(role: .client, deflate: params)
            .receive([0xc1, 0x08, 0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00]) == [.text("Hello")])
        // RFC 7692 §7.2.3.5 two deflate blocks in one message.
        #expect(try WebSocketReceiver(role: .client, deflate: params)
            .receive([0xc1, 0x0d, 0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00]) == [.text("Hello")])
    }

    @Test func emptyMessageIsOneZeroByte() throws {
        // RFC 7692 §7.2.3.6.
        #expect(PerMessageDeflater().compress([]) == [0x00])
        #expect(try WebSocketReceiver(role: .client, deflate: PerMessageDeflateParameters()).receive([0xc1, 0x01, 0x00]) == [.text("")])
    }

    @Test func uncompressedMessagesStillWork() throws {
        let r = WebSocketReceiver(role: .client, deflate: PerMessageDeflateParameters())
        #expect(try r.receive(frame(.text, hello)) == [.text("Hello")])
    }

    @Test func zipBombStopsAtTheLimit() {
        let bomb = PerMessageDeflater().compress(Array(repeating: 0, count: 8 << 20))
        #expect(bomb.count < 20_000)
        let wire = WebSocketFrameEncoder.encode(WebSocketFrame(rsv1: true, opcode: .binary, payload: bomb), maskingKey: nil)
        let r = WebSocketReceiver(role: .client, maxMessageSize: 1 << 20, deflate: PerMessageDeflateParameters())
        #expect(closeCode { _ = try r.receive(wire) } == 1009)
        var out: [UInt8] = []
        #expect(throws: WebSocketProtocolError.self) { try PerMessageInflater().decompress(bomb, final: true, into: &out, limit: 1000) }
        #expect(out.count <= 1000)
    }

    @Test func invalidDeflateDataFails() {
        let r = WebSocketReceiver(role: .client, deflate: PerMessageDeflateParameters())
        #expect(closeCode { _ = try r.receive([0xc1, 0x02, 0xff, 0xff]) } != nil)
    }

    @Test func invalidUTF8InsideCompressedText() {
        let payload = PerMessageDeflater().compress([0x41, 0xC3, 0x28])
        let wire = WebSocketFrameEncoder.encode(WebSocketFrame(rsv1: true, opcode: .text, payload: payload), maskingKey: nil)
        #expect(closeCode { _ = try WebSocketReceiver(role: .client, deflate: PerMessageDeflateParameters()).receive(wire) } == 1007)
    }

    @Test(arguments: [
        PerMessageDeflateParameters(),
        PerMessageDeflateParameters(serverNoContextTakeover: true, clientNoContextTakeover: true),
        PerMessageDeflateParameters(serverMaxWindowBits: 9, clientMaxWindowBits: 10),
        PerMessageDeflateParameters(clientNoContextTakeover: true, serverMaxWindowBits: 15, clientMaxWindowBits: 8),
    ])
    func roundTripsBothWays(params: PerMessageDeflateParameters) throws {
        var rng = SystemRandomNumberGenerator()
        let clientSender = WebSocketSender(role: .client, deflate: params)
        let serverSender = WebSocketSender(role: .server, deflate: params)
        let serverReceiver = WebSocketReceiver(role: .server, deflate: params)
        let clientReceiver = WebSocketReceiver(role: .client, deflate: params)
        for i in 0..<20 {
            let text = String(repeating: "message \(i % 3) with some repetition; ", count: i * 13)
            let binary = (0..<(i * 1000)).map { _ in UInt8.random(in: 0...3, using: &rng) }
            #expect(try serverReceiver.receive(clientSender.text(text, fragmentSize: i % 2 == 0 ? nil : 100)) == [.text(text)])
            #expect(try clientReceiver.receive(serverSender.binary(binary)) == [.binary(binary)])
        }
    }

    @Test func clientWindowBits8SendsUncompressed() throws {
        let params = PerMessageDeflateParameters(clientMaxWindowBits: 8)
        let wire = WebSocketSender(role: .client, deflate: params).text("Hello Hello Hello")
        #expect(wire[0] & 0x40 == 0)
        #expect(try WebSocketReceiver(role: .server, deflate: params).receive(wire) == [.text("Hello Hello Hello")])
    }
}

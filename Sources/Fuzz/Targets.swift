import Config
import Maildir
import Net
import WebSocket
import WildDuck

/// Entry points for fuzzing every parser of bytes from outside (the server, the network, local
/// files). Each takes arbitrary bytes, must never crash, hang or grow memory without bound,
/// and checks the invariants its parser promises (`check` stops the process when one fails,
/// which the fuzzer reports as a crash). They are compiled into the normal build: `FuzzTests`
/// replays the committed corpus (`contrib/fuzz/corpus/TARGET/`) through them, and
/// `contrib/fuzz.sh` links them into libFuzzer binaries (`wdsync-fuzz`).
public enum FuzzTarget: String, CaseIterable, Sendable {
    /// HTTP/1.1 response heads and bodies (Content-Length, chunked, close-delimited), two
    /// responses on one kept-alive connection.
    case http
    /// The JSON parser; what parses must serialise and parse back to the same value.
    case json
    /// WebSocket frames from a server, with permessage-deflate.
    case websocket
    /// The Server-Sent Events parser and journal entries → remote events.
    case sse
    /// WebSocket payloads → remote events, and models from JSON (ids validated).
    case events
    /// Folder names on disk → mailbox paths, and mailbox paths → folder names.
    case foldernames
    /// Maildir file names and their flags.
    case maildirnames
    /// The config file (sections and `key = value` lines).
    case config

    public func run(_ data: [UInt8]) {
        switch self {
        case .http: FuzzTarget.http(data)
        case .json: FuzzTarget.json(data)
        case .websocket: FuzzTarget.websocket(data)
        case .sse: FuzzTarget.sse(data)
        case .events: FuzzTarget.events(data)
        case .foldernames: FuzzTarget.folderNames(data)
        case .maildirnames: FuzzTarget.maildirNames(data)
        case .config: FuzzTarget.config(data)
        }
    }

    /// Stops the process with a message when an invariant does not hold.
    static func check(_ condition: @autoclosure () -> Bool, _ what: @autoclosure () -> String) {
        if !condition() { fatalError("fuzz invariant failed: \(what())") }
    }

    // MARK: HTTP

    static func http(_ data: [UInt8]) {
        guard let endpoint = HTTPEndpoint(url: "http://fuzz.invalid") else { return }
        let stream = MemoryStream(data)
        let connection = HTTPConnection(endpoint: endpoint, timeout: 1) { _ in stream }
        connection.maxBodySize = 1 << 20
        for _ in 0..<2 {
            guard let response = try? connection.request("GET", "/x") else { break }
            check(response.body.count <= 1 << 20, "a body over the limit was accepted")
            // The server's clock for the journal position: a date it reads lies in 1970-9999.
            if let date = response.head.date { check(date >= 0 && date < 253_402_300_800, "Date read as \(date)") }
        }
        connection.close()
        // The same bytes as the answers to a pipeline of three.
        let piped = HTTPConnection(endpoint: endpoint, timeout: 1) { _ in MemoryStream(data) }
        var ended = 0
        let (done, _) = piped.pipeline(["/a", "/b", "/c"], onHead: { _, _ in }, sink: { _, _ in }, onEnd: { _ in ended += 1 })
        check(done == ended && done <= 3, "a pipeline reported \(done) answers and ended \(ended)")
        piped.close()
    }

    // MARK: JSON

    static func json(_ data: [UInt8]) {
        guard let value = try? JSON.parse(data) else { return }
        let text = value.text
        guard let again = try? JSON.parse(text) else {
            check(false, "serialised JSON does not parse: \(text.prefix(200))")
            return
        }
        check(again == value, "JSON does not round-trip: \(text.prefix(200))")
    }

    // MARK: WebSocket

    static func websocket(_ data: [UInt8]) {
        guard let first = data.first else { return }
        // The first byte picks the negotiated parameters and how the bytes are split.
        let deflate: PerMessageDeflateParameters? = first & 1 == 0 ? nil
            : PerMessageDeflateParameters(serverNoContextTakeover: first & 2 != 0)
        // A small limit reaches the same checks as the real one (16 MiB) without inflating a
        // megabyte per input.
        let limit = 1 << 16
        let receiver = WebSocketReceiver(role: .client, maxMessageSize: limit, deflate: deflate)
        let step = Int(first >> 2) + 1
        var index = 1
        while index < data.count {
            let end = min(data.count, index + step)
            guard let events = try? receiver.receive(data[index..<end]) else { return }
            for event in events {
                switch event {
                case .text(let s): check(s.utf8.count <= limit, "a text message over the limit")
                case .binary(let b): check(b.count <= limit, "a binary message over the limit")
                case .ping(let p), .pong(let p): check(p.count <= 125, "a control frame over 125 bytes")
                case .close: return
                }
            }
            index = end
        }
    }

    // MARK: SSE and events

    static func sse(_ data: [UInt8]) {
        var parser = SSEParser()
        parser.maxEventSize = 1 << 16
        let step = max(1, Int(data.first ?? 1))
        var index = 0
        while index < data.count {
            let end = min(data.count, index + step)
            guard let events = try? data[index..<end].withUnsafeBytes({ try parser.feed($0) }) else { return }
            for event in events {
                check(event.data.utf8.count <= 1 << 16 + 16, "an event over the limit")
                checkIds(JournalEvents.decode(event))
            }
            index = end
        }
    }

    static func events(_ data: [UInt8]) {
        let text = String(decoding: data, as: UTF8.self)
        if case .update(_, let events) = WSProtocol.decode(text) { checkIds(events) }
        checkIds(JournalEvents.decode(SSEParser.Event(id: nil, event: nil, data: text)))
        guard let json = try? JSON.parse(data) else { return }
        for item in json["results"]?.array ?? [json] {
            if let mailbox = Mailbox(item) {
                check(ServerID.isObjectId(mailbox.id) && !mailbox.path.utf8.contains(0), "an invalid mailbox was accepted")
            }
            if let message = MessageItem(item) {
                check(ServerID.isUid(message.uid), "an invalid uid was accepted")
                check(message.mailbox.map(ServerID.isObjectId) ?? true, "an invalid mailbox id was accepted")
            }
        }
    }

    /// Every id in an event is valid: they go into file names and request paths.
    static func checkIds(_ events: [RemoteEvent]) {
        for event in events {
            switch event {
            case .messageAdded(let m, let u), .messageChanged(let m, let u), .messageRemoved(let m, let u),
                 .messageFlags(let m, let u, _):
                check(ServerID.isObjectId(m) && ServerID.isUid(u), "an event with an invalid id: \(event)")
            case .mailboxDirty(let m):
                check(ServerID.isObjectId(m), "an event with an invalid mailbox id: \(event)")
            default: break
            }
        }
    }

    // MARK: Maildir

    static func folderNames(_ data: [UInt8]) {
        // Fuzzing, one layout per input (the length's parity picks it), so each execution costs
        // half: the fuzzer reaches both. Replaying the corpus, both layouts for every input.
        #if FUZZING
        let layouts: [MaildirLayout] = [data.count % 2 == 0 ? .verbatim : .maildirPlusPlus]
        #else
        let layouts = MaildirLayout.allCases
        #endif
        for layout in layouts {
            // Any mailbox path: the folder stays inside the root, and decodes back (unless a
            // segment was too long and shortened with a hash).
            let folder = FolderNames.encode(bytes: data, layout: layout)
            let segments = folder.utf8.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false)
            for segment in segments {
                check(!segment.isEmpty || folder.isEmpty, "an empty path segment in \(folder)")
                check(segment.count <= FolderNames.maxNameBytes, "a segment over 255 bytes")
                check(!segment.contains(0), "NUL in a folder name")
                switch layout {
                case .verbatim: check(segment.first != UInt8(ascii: "."), "a segment starting with '.' in \(folder)")
                case .maildirPlusPlus:
                    // One directory `.A.B`, or the root itself for INBOX.
                    check(segments.count == 1 && (folder.isEmpty || (folder.utf8.first == UInt8(ascii: ".") && folder != "." && folder != "..")),
                          "maildir++ folder \(folder)")
                }
            }
            check(folder.utf8.first != UInt8(ascii: "/"), "an absolute folder \(folder)")
            if !isHashed(folder) {
                check(FolderNames.decodeBytes(folder, layout: layout) == data, "\(folder) does not decode back")
            }
            // Any folder name found on disk: decoding it never crashes, and a decoded name
            // encodes to a folder that decodes to the same mailbox path.
            let found = String(decoding: data, as: UTF8.self)
            if let path = FolderNames.decodeBytes(found, layout: layout) {
                let again = FolderNames.encode(bytes: path, layout: layout)
                if !isHashed(again) {
                    check(FolderNames.decodeBytes(again, layout: layout) == path, "\(found) → \(again) is not stable")
                }
            }
        }
    }

    /// A folder name shortened with a hash (`%~`) does not decode back to its mailbox path.
    /// (Bytes: a Character search would segment the whole string first.)
    static func isHashed(_ folder: String) -> Bool {
        var previous: UInt8 = 0
        for byte in folder.utf8 {
            if previous == UInt8(ascii: "%") && byte == UInt8(ascii: "~") { return true }
            previous = byte
        }
        return false
    }

    static func maildirNames(_ data: [UInt8]) {
        let name = String(decoding: data, as: UTF8.self)
        let flags = MessageFlags(fileName: name)
        check(MessageFlags(letters: Substring(flags.letters)) == flags, "flags \(flags.letters) do not round-trip")
        let unique = Maildir.uniquePart(ofFileName: name)
        check(!unique.utf8.contains(UInt8(ascii: ":")), "a unique part with ':'")
        let file = Maildir.fileName(unique: unique, flags: flags)
        check(MessageFlags(fileName: file) == flags && Maildir.uniquePart(ofFileName: file) == unique,
              "\(file) does not give back its parts")
        // Unique names wdsync makes from server data never contain '/', ':' or start with '.'.
        let made = Maildir.uniqueName(time: Int(data.count) - 5, key: name, host: name)
        check(!made.utf8.contains { $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: ":") } && made.utf8.first != UInt8(ascii: "."),
              "unsafe unique name \(made)")
    }
}

extension FuzzTarget {
    // MARK: Config file

    static func config(_ data: [UInt8]) {
        let keys: Set<String> = ["server", "user", "password-file", "password-command", "maildir", "db", "layout",
                                 "pull-only", "connections", "post-sync"]
        guard let file = try? ConfigFile(bytes: data, path: "fuzz", keys: keys) else { return }
        var names = Set<String>()
        for account in file.accounts {
            let name = account.name.unicodeScalars
            check(!name.isEmpty && name.first != "." && !name.contains("/") && !name.contains { $0.value < 0x20 },
                  "an account name that is no folder name: \(account.name.debugDescription)")
            check(names.insert(account.name).inserted, "account \(account.name) twice")
        }
        // Keys are known; values are single lines without blanks around them.
        for values in [file.defaults] + file.accounts.map(\.values) {
            for (key, value) in values {
                check(keys.contains(key), "unknown key \(key)")
                let v = value.unicodeScalars
                check(!v.contains("\n") && v.first.map { $0 != " " && $0 != "\t" && $0 != "\r" } ?? true
                          && v.last.map { $0 != " " && $0 != "\t" && $0 != "\r" } ?? true,
                      "a value with a line break or blanks around it: \(value.debugDescription)")
            }
        }
        // What was read, written out again, reads the same.
        func lines(_ values: [String: String]) -> String {
            values.sorted { $0.key < $1.key }.map { "\($0.key) = \($0.value)\n" }.joined()
        }
        let text = lines(file.defaults) + file.accounts.map { "[account \($0.name)]\n" + lines($0.values) }.joined()
        check((try? ConfigFile(bytes: Array(text.utf8), path: "fuzz", keys: keys)) == file,
              "the config does not read back: \(text.prefix(200).debugDescription)")
    }
}

/// A ByteStream over bytes in memory: reads hand them out in pieces, writes are dropped.
final class MemoryStream: ByteStream, @unchecked Sendable {   // used by one thread
    private let data: [UInt8]
    private var offset = 0
    private var closed = false

    init(_ data: [UInt8]) { self.data = data }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        if closed { throw NetError.closed }
        // Pieces of varying size, so that every buffer boundary gets exercised.
        let piece = min(buffer.count, data.count - offset, 1 + offset % 61)
        guard piece > 0 else { return 0 }
        for i in 0..<piece { buffer[i] = data[offset + i] }
        offset += piece
        return piece
    }

    func write(_ bytes: UnsafeRawBufferPointer) throws {
        if closed { throw NetError.closed }
    }

    func setTimeout(_ seconds: Double) {}

    func close() { closed = true }
}

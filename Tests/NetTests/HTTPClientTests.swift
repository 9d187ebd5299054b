#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Lock
import Testing
@testable import Net

/// A loopback server that answers each request on a connection with the next scripted reply.
/// `closeAfter` closes the connection after that many replies (to test keep-alive recovery).
final class ScriptedServer: @unchecked Sendable {
    let listener: Int32
    let port: Int
    let replies: [[UInt8]]
    let closeAfter: Int
    private let seen = Mutex<(requests: [String], connections: Int)>(([], 0))

    init(replies: [String], closeAfter: Int = .max) throws {
        self.replies = replies.map { Array($0.utf8) }
        self.closeAfter = closeAfter
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        listen(fd, 8)
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        listener = fd
        port = Int(UInt16(bigEndian: addr.sin_port))
        let thread = Thread { [self] in self.serve() }
        thread.start()
    }

    var requests: [String] { seen.withLock { $0.requests } }
    var connections: Int { seen.withLock { $0.connections } }

    private func serve() {
        var next = 0
        while true {
            let c = accept(listener, nil, nil)
            if c < 0 { return }
            seen.withLock { $0.connections += 1 }
            var served = 0
            var pending = [UInt8]()
            var buffer = [UInt8](repeating: 0, count: 65536)
            while served < closeAfter && next < replies.count {
                // Read one request head (and a Content-Length body if any).
                while !(String(decoding: pending, as: UTF8.self).contains("\r\n\r\n")) {
                    let n = recv(c, &buffer, buffer.count, 0)
                    if n <= 0 { close(c); return }
                    pending += buffer[0..<n]
                }
                let text = String(decoding: pending, as: UTF8.self)
                let headEnd = text.range(of: "\r\n\r\n")!
                let head = String(text[..<headEnd.lowerBound])
                var bodyLength = 0
                for line in head.split(separator: "\r\n") where line.lowercased().hasPrefix("content-length:") {
                    bodyLength = Int(line.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) ?? 0
                }
                let total = text.utf8.distance(from: text.utf8.startIndex, to: headEnd.upperBound) + bodyLength
                while pending.count < total {
                    let n = recv(c, &buffer, buffer.count, 0)
                    if n <= 0 { close(c); return }
                    pending += buffer[0..<n]
                }
                seen.withLock { $0.requests.append(String(decoding: pending[0..<total], as: UTF8.self)) }
                pending.removeFirst(total)
                let reply = replies[next]
                next += 1
                served += 1
                _ = reply.withUnsafeBytes { send(c, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            }
            shutdown(c, Int32(SHUT_RDWR))
            close(c)
            if next >= replies.count { close(listener); return }
        }
    }
}

@Suite struct HTTPClientTests {
    @Test func endpointParsing() {
        let e = HTTPEndpoint(url: "https://mail.example.com/api/")
        #expect(e?.tls == true && e?.host == "mail.example.com" && e?.port == 443 && e?.prefix == "/api")
        let v6 = HTTPEndpoint(url: "http://[::1]:8080")
        #expect(v6?.host == "::1" && v6?.port == 8080 && v6?.hostHeader == "[::1]:8080")
        #expect(HTTPEndpoint(url: "ftp://x") == nil)
        #expect(HTTPEndpoint(url: "http://user:pw@host") == nil)   // credentials in URLs are refused
        #expect(HTTPEndpoint(url: "http://host:99999") == nil)
    }

    @Test func contentLengthChunkedAndCloseDelimitedBodies() throws {
        let server = try ScriptedServer(replies: [
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: 1\r\n\r\n",
            "HTTP/1.1 200 OK\r\n\r\nuntil close",
        ])
        let endpoint = try #require(HTTPEndpoint(url: "http://127.0.0.1:\(server.port)"))
        let client = HTTPConnection(endpoint: endpoint, timeout: 5, connector: HTTPConnection.tcpConnector(timeout: 5))
        #expect(try client.request("GET", "/a").body == Array("hello".utf8))
        #expect(try client.request("POST", "/b", body: Array("xyz".utf8)).body == Array("abcde".utf8))
        #expect(try client.request("GET", "/c").body == Array("until close".utf8))
        #expect(server.requests.count == 3)
        #expect(server.requests[1].contains("Content-Length: 3\r\n\r\nxyz"))
        #expect(server.connections == 1)   // keep-alive reused the connection
    }

    @Test func reconnectsWhenTheServerClosedAnIdleConnection() throws {
        let server = try ScriptedServer(replies: [
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1",
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n2",
        ], closeAfter: 1)
        let endpoint = try #require(HTTPEndpoint(url: "http://127.0.0.1:\(server.port)"))
        let client = HTTPConnection(endpoint: endpoint, timeout: 5, connector: HTTPConnection.tcpConnector(timeout: 5))
        #expect(try client.request("GET", "/1").body == [UInt8(ascii: "1")])
        #expect(try client.request("GET", "/2").body == [UInt8(ascii: "2")])
        #expect(server.connections == 2)
    }

    @Test func pipelinedAnswersArriveInOrderAndABreakStopsThemWithNothingSentTwice() throws {
        // Four GETs in one write; the server answers two, cuts the third off and hangs up.
        let server = try ScriptedServer(replies: [
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\ntwo\r\n0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nthr",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nagain",
        ], closeAfter: 3)
        let endpoint = try #require(HTTPEndpoint(url: "http://127.0.0.1:\(server.port)"))
        let client = HTTPConnection(endpoint: endpoint, timeout: 5, connector: HTTPConnection.tcpConnector(timeout: 5))
        var bodies: [Int: [UInt8]] = [:]
        var ended: [Int] = []
        let (done, stoppedBy) = client.pipeline(["/1", "/2", "/3", "/4"], onHead: { i, head in
            #expect(head.status == 200)
            bodies[i] = []
        }, sink: { i, chunk in bodies[i, default: []] += chunk }, onEnd: { ended.append($0) })
        #expect(done == 2 && ended == [0, 1])
        #expect(stoppedBy as? NetError == .closed)
        #expect(bodies[0] == Array("one".utf8) && bodies[1] == Array("two".utf8))
        // The unread answers went with the connection: the next request opens a new one, and
        // nothing was sent again behind the caller's back.
        #expect(try client.request("GET", "/5").body == Array("again".utf8))
        #expect(server.connections == 2)
        #expect(server.requests.map { $0.split(separator: " ")[1] } == ["/1", "/2", "/3", "/5"])
    }

    @Test func aPipelineEndsCleanlyAtAnAnswerThatClosesTheConnection() throws {
        let server = try ScriptedServer(replies: [
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na",
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nb",
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nc",
        ], closeAfter: 2)
        let endpoint = try #require(HTTPEndpoint(url: "http://127.0.0.1:\(server.port)"))
        let client = HTTPConnection(endpoint: endpoint, timeout: 5, connector: HTTPConnection.tcpConnector(timeout: 5))
        let (done, stoppedBy) = client.pipeline(["/1", "/2", "/3"], onHead: { _, _ in }, sink: { _, _ in }, onEnd: { _ in })
        #expect(done == 2 && stoppedBy == nil)
        #expect(try client.request("GET", "/3").body == Array("c".utf8))
        #expect(server.connections == 2)
    }

    @Test func aCallbackThatThrowsStopsThePipelineAndDropsTheConnection() throws {
        struct Full: Error {}
        let server = try ScriptedServer(replies: [
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na",
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb",
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nc",
        ], closeAfter: 2)
        let endpoint = try #require(HTTPEndpoint(url: "http://127.0.0.1:\(server.port)"))
        let client = HTTPConnection(endpoint: endpoint, timeout: 5, connector: HTTPConnection.tcpConnector(timeout: 5))
        let (done, stoppedBy) = client.pipeline(["/1", "/2"], onHead: { _, _ in }, sink: { i, _ in if i == 1 { throw Full() } },
                                                onEnd: { _ in })
        #expect(done == 1 && stoppedBy is Full)
        #expect(try client.request("GET", "/3").body == Array("c".utf8))
        #expect(server.connections == 2)
    }

    @Test func malformedResponsesAreErrorsNotCrashes() throws {
        let server = try ScriptedServer(replies: [
            "SMTP ready\r\n\r\n",
        ])
        let endpoint = try #require(HTTPEndpoint(url: "http://127.0.0.1:\(server.port)"))
        let client = HTTPConnection(endpoint: endpoint, timeout: 5, connector: HTTPConnection.tcpConnector(timeout: 5))
        #expect(throws: HTTPError.self) { try client.request("GET", "/") }
    }

    @Test func aStatusThatIsNotThreeDigitsIsRefused() throws {
        let codes = ["-200", "+200", "2000", "20", "099", "600", "2e2", "٢٠٠"]
        let server = try ScriptedServer(replies: codes.map { "HTTP/1.1 \($0) OK\r\nContent-Length: 0\r\n\r\n" }
                                        + ["HTTP/1.1 204 No Content\r\n\r\n"], closeAfter: 1)
        let endpoint = try #require(HTTPEndpoint(url: "http://127.0.0.1:\(server.port)"))
        let client = HTTPConnection(endpoint: endpoint, timeout: 5, connector: HTTPConnection.tcpConnector(timeout: 5))
        for code in codes {
            #expect(throws: HTTPError.self, "status \(code)") { try client.request("GET", "/") }
        }
        #expect(try client.request("GET", "/").status == 204)
    }

    @Test func headerNamesAreCaseInsensitiveAndValuesTrimmed() throws {
        let server = try ScriptedServer(replies: [
            "HTTP/1.1 200\r\nX-Custom: \t spaced  value \t\r\nCONTENT-length:2\nX-Empty:\r\n\r\nok",
        ])
        let endpoint = try #require(HTTPEndpoint(url: "http://127.0.0.1:\(server.port)"))
        let client = HTTPConnection(endpoint: endpoint, timeout: 5, connector: HTTPConnection.tcpConnector(timeout: 5))
        let response = try client.request("GET", "/")
        #expect(response.status == 200)
        #expect(response.head.header("X-CUSTOM") == "spaced  value")
        #expect(response.head.header("x-empty") == "")
        #expect(response.body == Array("ok".utf8))
    }

    @Test func chunkSizesAreHexOrRefused() {
        func size(_ line: String) -> Int? { Array(line.utf8).withUnsafeBufferPointer(HTTPConnection.chunkSize) }
        #expect(size("1f3A") == 0x1f3a)
        #expect(size(" 10 ;name=value") == 16)
        #expect(size("0") == 0)
        #expect(size("00000000000000000000001") == 1)
        #expect(size("7fffffffffffffff") == Int.max)
        for bad in ["", " ", ";x", "x", "-1", "+1", "1 2", "1x", "0x10", "8000000000000000", "fffffffffffffffff"] {
            #expect(size(bad) == nil, "\(bad)")
        }
    }

    @Test func headerInjectionIsRefused() throws {
        let endpoint = try #require(HTTPEndpoint(url: "http://127.0.0.1:1"))
        let client = HTTPConnection(endpoint: endpoint, timeout: 1, connector: HTTPConnection.tcpConnector(timeout: 1))
        #expect(throws: HTTPError.self) { try client.request("GET", "/", headers: [("X", "a\r\nEvil: 1")]) }
    }

    @Test func connectionRefusedIsAConnectError() throws {
        let endpoint = try #require(HTTPEndpoint(url: "http://127.0.0.1:1"))
        let client = HTTPConnection(endpoint: endpoint, timeout: 1, connector: HTTPConnection.tcpConnector(timeout: 1))
        #expect {
            try client.request("GET", "/")
        } throws: { error in
            if case NetError.connect = error { return true }
            return false
        }
    }

    /// The journal position is taken from the server's clock: its Date header is read exactly
    /// (RFC 9110's IMF-fixdate), and any other form is no date rather than a wrong one.
    @Test func theDateHeaderIsReadAsTheServersClock() {
        func date(_ text: String) -> Int? { HTTPResponseHead(status: 200, headers: [("date", text)]).date }
        #expect(date("Sun, 06 Nov 1994 08:49:37 GMT") == 784_111_777)
        #expect(date("Tue, 29 Feb 2028 23:59:60 GMT") == 1_835_481_600)   // leap day, leap second
        #expect(date("Mon, 01 Mar 2100 00:00:00 GMT") == 4_107_542_400)   // 2100 is no leap year
        for obsolete in ["Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994", "Sun, 06 Nov 1994 08:49:37 UTC",
                         "Sun, 6 Nov 1994 08:49:37 GMT", "Sun, 06 Nov 1994 8:49:37 GMT", "Sun, 32 Nov 1994 08:49:37 GMT",
                         "Sun, 06 Nov +994 08:49:37 GMT", "", "Sun, 06 Nov 1994 08:49:37 GMT junk"] {
            #expect(date(obsolete) == nil, "\(obsolete)")
        }
        #expect(HTTPResponseHead(status: 200, headers: []).date == nil)
    }
}

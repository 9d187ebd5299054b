import Foundation
import Testing
@testable import Net

/// When a request may be sent twice, and when a body counts as complete.
@Suite struct IntegrityTests {
    func client(_ server: ScriptedServer) throws -> HTTPConnection {
        let endpoint = try #require(HTTPEndpoint(url: "http://127.0.0.1:\(server.port)"))
        return HTTPConnection(endpoint: endpoint, timeout: 5, connector: HTTPConnection.tcpConnector(timeout: 5))
    }

    @Test func aPostIsNeverResentOnAStaleConnection() throws {
        let server = try ScriptedServer(replies: [
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1",
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n2",
        ], closeAfter: 1)
        let c = try client(server)
        #expect(try c.request("GET", "/1").body == [UInt8(ascii: "1")])
        // The server closed the kept-alive connection: a GET would be sent again, a POST is not.
        #expect(throws: NetError.self) { try c.request("POST", "/2", body: Array("x".utf8)) }
        #expect(server.requests.count == 1)
        // The next request opens a fresh connection as usual.
        #expect(try c.request("GET", "/3").body == [UInt8(ascii: "2")])
    }

    @Test func aResponseCutAfterItsFirstByteIsNeverResentOrContinued() throws {
        let server = try ScriptedServer(replies: [
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n8\r\nhalf-",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nwhole",
        ], closeAfter: 2)
        let c = try client(server)
        #expect(try c.request("GET", "/1").body == [UInt8(ascii: "1")])
        var got: [UInt8] = []
        #expect(throws: NetError.closed) {
            _ = try c.stream("GET", "/2") { got += $0 }
        }
        #expect(got == Array("half-".utf8))
        #expect(server.requests.count == 2)
        #expect(try c.request("GET", "/3").body == Array("whole".utf8))
    }

    @Test func endOfStreamBeforeTheAnnouncedEndIsAnError() throws {
        for reply in ["HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
                      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nwhole\r\n",
                      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nwhole\r\n0\r\n"] {
            let server = try ScriptedServer(replies: [reply])
            let c = try client(server)
            #expect(throws: NetError.closed, "\(reply)") { _ = try c.request("GET", "/") }
        }
    }

    @Test func interimResponsesAndTrailersAreBounded() throws {
        let hundred = String(repeating: "HTTP/1.1 100 Continue\r\n\r\n", count: 17)
        let server = try ScriptedServer(replies: [
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            hundred + "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ])
        let c = try client(server)
        let ok = try c.request("GET", "/a")
        #expect(ok.status == 200 && ok.body == Array("ok".utf8))
        #expect(throws: HTTPError.self) { try c.request("GET", "/b") }

        let trailers = String(repeating: "X-T: 1\r\n", count: 65)
        let server2 = try ScriptedServer(replies: [
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n" + trailers + "\r\n",
        ])
        #expect(throws: HTTPError.self) { try client(server2).request("GET", "/") }
    }

    @Test func loopbackHosts() throws {
        for url in ["http://127.0.0.1:8080", "http://127.1.2.3", "http://localhost/api", "http://LOCALHOST.", "http://[::1]:80",
                    "http://[::ffff:127.0.0.1]", "http://[0:0:0:0:0:0:0:1]", "http://mail.localhost"] {
            #expect(try #require(HTTPEndpoint(url: url)).isLoopback, "\(url)")
        }
        for url in ["http://10.0.0.1", "http://192.0.2.2", "http://example.com", "http://localhost.example.com",
                    "http://[::2]", "http://0.0.0.0", "http://128.0.0.1", "http://[::ffff:10.0.0.1]"] {
            #expect(try !#require(HTTPEndpoint(url: url)).isLoopback, "\(url)")
        }
    }
}

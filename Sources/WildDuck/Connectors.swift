import Net
import Failures

/// Opens the byte streams under HTTP: TCP, or TLS over TCP for https.
enum Connectors {
    static func make(caFile: String?, insecure: Bool, timeout: Double = 15) -> HTTPConnection.Connector {
        { endpoint in
            let tcp = try TCPStream(host: endpoint.host, port: endpoint.port, timeout: timeout)
            guard endpoint.tls else { return tcp }
            return try TLSStream(wrapping: tcp, host: endpoint.host, caFile: caFile, insecure: insecure, timeout: timeout)
        }
    }
}

/// The server's address as given with --server (`http(s)://host[:port][/prefix]`), for the
/// engine, which knows no sockets: what a session connects to and what the user is told about it.
public struct ServerURL: Sendable, Equatable {
    let endpoint: HTTPEndpoint

    /// Nil for anything but an http:// or https:// URL with a host.
    public init?(_ url: String) {
        guard let endpoint = HTTPEndpoint(url: url) else { return nil }
        self.endpoint = endpoint
    }

    public var host: String { endpoint.host }
    public var port: Int { endpoint.port }
    public var tls: Bool { endpoint.tls }
    public var isLoopback: Bool { endpoint.isLoopback }
}

extension Session {
    /// A session whose connections are TCP, or TLS for https (checked against `caFile` when
    /// given, the system's roots otherwise; not checked at all with `insecure`).
    public convenience init(server: ServerURL, username: String, password: @escaping @Sendable () throws -> String,
                            caFile: String?, insecure: Bool, retry: Backoff = .requests) {
        self.init(endpoint: server.endpoint, username: username, password: password,
                  connector: Connectors.make(caFile: caFile, insecure: insecure), retry: retry)
    }
}

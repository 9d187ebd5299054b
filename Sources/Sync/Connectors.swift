import Net

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

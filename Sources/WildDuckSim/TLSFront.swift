import COpenSSL
import Foundation
import Lock
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `https://` in front of a `SimServer`, as WildDuck usually runs behind a TLS proxy: it
/// terminates TLS (1.2 or later) with a PEM certificate and key and passes the bytes to the
/// server's plain port, one server connection per client connection.
///
/// Fault mode `cutWithoutCloseNotify`: when the server ends a connection, the front normally
/// ends the TLS session properly (close_notify, then FIN). With the fault it only cuts TCP, as
/// a crash or an attacker truncating the stream would. With `SimFault.closeDelimited(truncated:
/// true)` the client then sees a body delimited by the connection's end that stops halfway with
/// no close_notify: only the missing close_notify tells it the body is incomplete.
public final class SimTLSFront: @unchecked Sendable {
    // @unchecked: `ctx` is configured in init and only read afterwards (SSL_new is thread-safe
    // on a context that is no longer changed); everything else is in `state`.
    private struct State {
        var listenFD: Int32 = -1
        var port: UInt16 = 0
        var running = false
        var connections: Set<Int32> = []
        var cut = false
        var acceptDone = true
    }
    private let server: SimServer
    private let ctx: OpaquePointer
    private let state = Mutex(State())

    /// `certificate` and `key` are PEM files.
    public init(server: SimServer, certificate: String, key: String) throws {
        guard let ctx = SSL_CTX_new(TLS_server_method()) else { throw SimAccountError.io("SSL_CTX_new failed") }
        guard SSL_CTX_use_certificate_chain_file(ctx, certificate) == 1,
              SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) == 1,
              wd_SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) == 1 else {
            SSL_CTX_free(ctx)
            throw SimAccountError.io("cannot load the TLS certificate \(certificate) and key \(key)")
        }
        self.server = server
        self.ctx = ctx
    }

    deinit {
        stop()
        SSL_CTX_free(ctx)
    }

    public var port: UInt16 { state.withLock { $0.port } }
    public var baseURL: String { "https://127.0.0.1:\(port)" }

    /// The fault mode above; takes effect for connections the server ends from now on.
    public var cutWithoutCloseNotify: Bool {
        get { state.withLock { $0.cut } }
        set { state.withLock { $0.cut = newValue } }
    }

    public func start() throws {
        // OpenSSL writes with write(2): a client gone away must not kill the process.
        signal(SIGPIPE, SIG_IGN)
        let (fd, port) = try Sock.listening(host: "127.0.0.1", port: 0)
        state.withLock { s in
            s.listenFD = fd
            s.port = port
            s.running = true
            s.acceptDone = false
        }
        let t = Thread { [self] in acceptLoop(fd) }
        t.name = "wdsync-sim tls accept"
        t.start()
    }

    /// Closes the listener and every connection; returns once the accept thread has ended.
    public func stop() {
        // Under the lock that closing takes too (see `SimServer.stop`).
        state.withLock { s in
            s.running = false
            if s.listenFD >= 0 { shutdown(s.listenFD, Int32(SHUT_RDWR)) }
            for c in s.connections { shutdown(c, Int32(SHUT_RDWR)) }
        }
        while !state.withLock({ $0.acceptDone }) { usleep(1000) }
    }

    private func acceptLoop(_ listenFD: Int32) {
        while true {
            let cfd = accept(listenFD, nil, nil)
            if cfd < 0 {
                if errno == EINTR || errno == ECONNABORTED { continue }
                break
            }
            let ok = state.withLock { s -> Bool in
                guard s.running else { return false }
                s.connections.insert(cfd)
                return true
            }
            guard ok else { close(cfd); break }
            let t = Thread { [self] in
                relay(cfd)
                state.withLock { s in
                    s.connections.remove(cfd)
                    close(cfd)
                }
            }
            t.stackSize = 1 << 20
            t.start()
        }
        state.withLock { s in
            close(listenFD)
            s.listenFD = -1
            s.acceptDone = true
        }
    }

    /// Handshakes, then copies bytes both ways until one side ends.
    private func relay(_ cfd: Int32) {
        guard let ssl = SSL_new(ctx) else { return }
        defer { SSL_free(ssl) }
        guard SSL_set_fd(ssl, cfd) == 1, SSL_accept(ssl) == 1 else { return }
        guard let backend = try? connectToServer() else { return }
        defer { close(backend) }
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            var fds = [pollfd(fd: cfd, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: backend, events: Int16(POLLIN), revents: 0)]
            if SSL_pending(ssl) == 0 {
                guard poll(&fds, 2, -1) >= 0 || errno == EINTR else { return }
            } else {
                fds[0].revents = Int16(POLLIN)
            }
            if fds[0].revents != 0 {
                // From the client: decrypt and pass on.
                let n = buffer.withUnsafeMutableBytes { SSL_read(ssl, $0.baseAddress, Int32($0.count)) }
                guard n > 0, Sock.writeAll(backend, Array(buffer[0..<Int(n)])) else {
                    shutdown(backend, Int32(SHUT_RDWR))
                    return
                }
            }
            if fds[1].revents != 0 {
                // From the server: encrypt and pass on; its end is the end of the TLS session.
                let n = buffer.withUnsafeMutableBytes { recv(backend, $0.baseAddress, $0.count, 0) }
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else {
                    if !cutWithoutCloseNotify { _ = SSL_shutdown(ssl) }
                    shutdown(cfd, Int32(SHUT_RDWR))
                    return
                }
                var offset = 0
                while offset < n {
                    let written = buffer.withUnsafeBytes { SSL_write(ssl, $0.baseAddress! + offset, Int32(n - offset)) }
                    guard written > 0 else { shutdown(backend, Int32(SHUT_RDWR)); return }
                    offset += Int(written)
                }
            }
        }
    }

    private func connectToServer() throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw SimAccountError.io("socket() failed: errno \(errno)") }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = server.port.bigEndian
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else {
            close(fd)
            throw SimAccountError.io("cannot connect to the simulator: errno \(errno)")
        }
        Sock.setOption(fd, Int32(IPPROTO_TCP), TCP_NODELAY, 1)
        return fd
    }
}

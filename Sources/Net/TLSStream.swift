#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import COpenSSL
import Lock

/// TLS (1.2 or later) over a connected `TCPStream`, with OpenSSL.
///
/// Certificates are verified against the system CA store plus an optional `caFile`, and the
/// certificate must match `host` (DNS name, or IP address for a literal address); SNI is sent
/// for names. `insecure: true` turns verification off (tests, self-signed servers).
///
/// Full duplex: one thread may block in `read` while another writes, and `close()` may be
/// called from any thread to interrupt both. OpenSSL does not allow concurrent calls on one
/// `SSL`, so the socket is switched to non-blocking mode, every OpenSSL call is made under a
/// lock, and the waiting (for readability/writability, with the stream's timeout) happens in
/// `poll` outside the lock.
public final class TLSStream: ByteStream, @unchecked Sendable {
    // @unchecked: `ssl` and `ctx` are only touched under `sslLock` (or in init/deinit), and
    // `closed`/`timeout` are Mutex-protected.
    private let tcp: TCPStream
    private let ctx: OpaquePointer
    private let ssl: OpaquePointer
    private let sslLock = Mutex<Void>(())
    private let closed = Mutex<Bool>(false)
    private let timeoutMillis = Mutex<Int32>(-1)
    public let host: String

    /// Performs the TLS handshake on `tcp` (already connected) and verifies the server.
    /// - Parameters:
    ///   - host: the name (or IP address) the certificate must match; also sent as SNI.
    ///   - caFile: a PEM file of extra trusted certificates (for example a private CA).
    ///   - insecure: skip certificate and host name verification.
    ///   - timeout: handshake timeout in seconds, and the initial read/write timeout (0 = none).
    /// Throws `NetError.tls` with the reason (e.g. "certificate verify failed for host X: …").
    public init(wrapping tcp: TCPStream, host: String, caFile: String? = nil, insecure: Bool = false, timeout: Double = 10) throws {
        self.tcp = tcp
        self.host = host
        // Configure the context completely before SSL_new: an SSL copies the verify mode.
        let ctx = try Self.makeContext(caFile: caFile, insecure: insecure)
        guard let ssl = SSL_new(ctx) else {
            SSL_CTX_free(ctx)
            throw NetError.tls("SSL_new failed: \(Self.errorQueue())")
        }
        self.ctx = ctx
        self.ssl = ssl
        // From here on, deinit frees ctx and ssl (and closes tcp) if init throws.
        let isIP = Self.isIPAddress(host)
        if !insecure {
            if isIP {
                guard let param = SSL_get0_param(ssl), X509_VERIFY_PARAM_set1_ip_asc(param, host) == 1 else {
                    throw NetError.tls("cannot set the expected IP address \(host)")
                }
            } else {
                guard SSL_set1_host(ssl, host) == 1 else { throw NetError.tls("cannot set the expected host name \(host)") }
            }
        }
        if !isIP && !host.isEmpty {
            _ = wd_SSL_set_tlsext_host_name(ssl, host)
        }
        guard SSL_set_fd(ssl, tcp.fd) == 1 else { throw NetError.tls("SSL_set_fd failed: \(Self.errorQueue())") }
        let flags = fcntl(tcp.fd, F_GETFL)
        _ = fcntl(tcp.fd, F_SETFL, flags | O_NONBLOCK)
        setTimeout(timeout)

        while true {
            ERR_clear_error()
            let (rc, err, code) = sslLock.withLock { _ -> (Int32, Int32, Int32) in
                errno = 0
                let rc = SSL_connect(ssl)
                return (rc, rc == 1 ? 0 : SSL_get_error(ssl, rc), errno)
            }
            if rc == 1 { break }
            switch err {
            case SSL_ERROR_WANT_READ: try wait(POLLIN)
            case SSL_ERROR_WANT_WRITE: try wait(POLLOUT)
            default:
                let verify = SSL_get_verify_result(ssl)
                if verify != X509_V_OK {
                    let why = String(cString: X509_verify_cert_error_string(verify))
                    throw NetError.tls("certificate verify failed for host \(host): \(why)")
                }
                let detail = Self.errorQueue()
                throw NetError.tls("handshake with \(host) failed: \(detail.isEmpty ? Self.syscallDetail(err, errno: code) : detail)")
            }
        }
    }

    private static func makeContext(caFile: String?, insecure: Bool) throws -> OpaquePointer {
        guard let ctx = SSL_CTX_new(TLS_client_method()) else { throw NetError.tls("SSL_CTX_new failed: \(errorQueue())") }
        do {
            guard wd_SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) == 1 else { throw NetError.tls("cannot require TLS 1.2") }
            _ = wd_SSL_CTX_set_mode(ctx, Int(SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER))
            if insecure {
                SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nil)
            } else {
                SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nil)
                guard SSL_CTX_set_default_verify_paths(ctx) == 1 else {
                    throw NetError.tls("cannot load the system CA store: \(errorQueue())")
                }
            }
            if let caFile {
                guard SSL_CTX_load_verify_locations(ctx, caFile, nil) == 1 else {
                    throw NetError.tls("cannot load CA file \(caFile): \(errorQueue())")
                }
            }
            return ctx
        } catch {
            SSL_CTX_free(ctx)
            throw error
        }
    }

    deinit {
        SSL_free(ssl)
        SSL_CTX_free(ctx)
        tcp.close()
    }

    /// The negotiated protocol, e.g. "TLSv1.3".
    public var protocolVersion: String {
        sslLock.withLock { _ in String(cString: SSL_get_version(ssl)) }
    }

    public func setTimeout(_ seconds: Double) {
        timeoutMillis.withLock { $0 = seconds > 0 ? Int32(min(seconds * 1000, Double(Int32.max))) : -1 }
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        guard buffer.count > 0 else { return 0 }
        while true {
            if closed.withLock({ $0 }) { throw NetError.closed }
            ERR_clear_error()
            // errno is taken with the result: unlocking, the error queue and the strings built
            // below may change it.
            let (n, err, code) = sslLock.withLock { _ -> (Int32, Int32, Int32) in
                errno = 0
                let n = SSL_read(ssl, buffer.baseAddress, Int32(min(buffer.count, Int(Int32.max))))
                return (n, n > 0 ? 0 : SSL_get_error(ssl, n), errno)
            }
            if n > 0 { return Int(n) }
            switch err {
            case SSL_ERROR_WANT_READ: try wait(POLLIN)
            case SSL_ERROR_WANT_WRITE: try wait(POLLOUT)
            case SSL_ERROR_ZERO_RETURN: return 0
            default:
                if closed.withLock({ $0 }) { throw NetError.closed }
                let detail = Self.errorQueue()
                // EOF without close_notify: the stream was cut (a crash, a reset, an attacker
                // truncating it), not ended. Only close_notify (SSL_ERROR_ZERO_RETURN above) is
                // an end of stream; a body delimited by the connection's end must not be taken
                // as complete after a truncation.
                if (err == SSL_ERROR_SYSCALL && code == 0) || detail.contains("unexpected eof") {
                    throw NetError.closed
                }
                throw NetError.tls(detail.isEmpty ? Self.syscallDetail(err, errno: code) : detail)
            }
        }
    }

    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        var offset = 0
        while offset < bytes.count {
            if closed.withLock({ $0 }) { throw NetError.closed }
            let chunk = min(bytes.count - offset, 1 << 20)
            ERR_clear_error()
            let (n, err, code) = sslLock.withLock { _ -> (Int32, Int32, Int32) in
                errno = 0
                let n = SSL_write(ssl, bytes.baseAddress.map { $0 + offset }, Int32(chunk))
                return (n, n > 0 ? 0 : SSL_get_error(ssl, n), errno)
            }
            if n > 0 { offset += Int(n); continue }
            switch err {
            case SSL_ERROR_WANT_READ: try wait(POLLIN)
            case SSL_ERROR_WANT_WRITE: try wait(POLLOUT)
            default:
                if closed.withLock({ $0 }) { throw NetError.closed }
                let detail = Self.errorQueue()
                if err == SSL_ERROR_SYSCALL && (code == EPIPE || code == ECONNRESET) { throw NetError.closed }
                throw NetError.tls(detail.isEmpty ? Self.syscallDetail(err, errno: code) : detail)
            }
        }
    }

    /// Sends close_notify (best effort, without waiting) and shuts the socket down, which wakes
    /// a `read` blocked in another thread. The descriptor itself is closed in deinit, so a
    /// concurrent reader can never touch a reused descriptor.
    public func close() {
        let wasClosed = closed.withLock { c -> Bool in let old = c; c = true; return old }
        guard !wasClosed else { return }
        sslLock.withLock { _ in _ = SSL_shutdown(ssl) }
        shutdown(tcp.fd, Int32(SHUT_RDWR))
    }

    /// Waits until the socket is ready for `events`, within the timeout.
    private func wait(_ events: Int32) throws {
        let timeout = timeoutMillis.withLock { $0 }
        var pfd = pollfd(fd: tcp.fd, events: Int16(events), revents: 0)
        while true {
            if closed.withLock({ $0 }) { throw NetError.closed }
            let rc = poll(&pfd, 1, timeout)
            if rc > 0 { return } // readable, writable, HUP or error: let OpenSSL find out which
            if rc == 0 { throw NetError.timedOut }
            if errno == EINTR { continue }
            throw NetError.io(String(cString: strerror(errno)))
        }
    }

    private static func isIPAddress(_ host: String) -> Bool {
        var v4 = in_addr()
        var v6 = in6_addr()
        return inet_pton(AF_INET, host, &v4) == 1 || inet_pton(AF_INET6, host, &v6) == 1
    }

    private static func syscallDetail(_ err: Int32, errno code: Int32) -> String {
        if err == SSL_ERROR_SYSCALL {
            return code == 0 ? "connection closed by peer" : String(cString: strerror(code))
        }
        return "SSL error \(err)"
    }

    /// Drains OpenSSL's error queue into one line.
    private static func errorQueue() -> String {
        var parts: [String] = []
        while true {
            let e = ERR_get_error()
            if e == 0 { break }
            var buf = [CChar](repeating: 0, count: 256)
            ERR_error_string_n(e, &buf, buf.count)
            parts.append(String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        return parts.joined(separator: "; ")
    }
}

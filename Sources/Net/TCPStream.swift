#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Lock

/// A blocking TCP connection (IPv4 or IPv6), with TCP_NODELAY set.
public final class TCPStream: ByteStream {
    public let fd: Int32
    /// Set once `close()` ran. The descriptor itself is closed only in `deinit`, so a read
    /// blocked in another thread can never see the number reused by a new socket.
    private let closed = Mutex(false)

    /// Connects to `host:port`, trying every resolved address in turn.
    public init(host: String, port: Int, timeout: Double = 10) throws {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        #if canImport(Glibc)
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        #else
        hints.ai_socktype = SOCK_STREAM
        #endif
        var list: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, String(port), &hints, &list)
        guard rc == 0, let first = list else {
            // The resolver's "no such name" (NXDOMAIN; EAI_NODATA, -5 in glibc, for a name
            // without addresses) is an answer, not a failure to get one (EAI_AGAIN): a
            // misspelled host is not tried again for a minute.
            if rc == EAI_NONAME || rc == -5 {
                throw NetError.unknownHost(host: host, detail: String(cString: gai_strerror(rc)))
            }
            throw NetError.resolve(host: host, detail: String(cString: gai_strerror(rc)))
        }
        defer { freeaddrinfo(list) }
        var lastError = "no address"
        var cursor: UnsafeMutablePointer<addrinfo>? = first
        while let ai = cursor {
            cursor = ai.pointee.ai_next
            let s = socket(ai.pointee.ai_family, ai.pointee.ai_socktype | Int32(SOCK_CLOEXEC.rawValue), ai.pointee.ai_protocol)
            if s < 0 { lastError = String(cString: strerror(errno)); continue }
            if Self.connect(s, ai.pointee.ai_addr, ai.pointee.ai_addrlen, timeout: timeout, error: &lastError) {
                var one: Int32 = 1
                setsockopt(s, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
                fd = s
                return
            }
            Glibc.close(s)
        }
        throw NetError.connect(host: host, port: port, detail: lastError)
    }

    /// Wraps an already connected socket (used by servers and tests).
    public init(connectedSocket s: Int32) {
        fd = s
    }

    private static func connect(_ s: Int32, _ addr: UnsafeMutablePointer<sockaddr>?, _ len: socklen_t,
                                timeout: Double, error: inout String) -> Bool {
        let flags = fcntl(s, F_GETFL)
        _ = fcntl(s, F_SETFL, flags | O_NONBLOCK)
        defer { _ = fcntl(s, F_SETFL, flags) }
        if Glibc.connect(s, addr, len) == 0 { return true }
        guard errno == EINPROGRESS else { error = String(cString: strerror(errno)); return false }
        var pfd = pollfd(fd: s, events: Int16(POLLOUT), revents: 0)
        let ready = poll(&pfd, 1, timeout > 0 ? Int32(timeout * 1000) : -1)
        if ready == 0 { error = "timed out after \(timeout) s"; return false }
        var soError: Int32 = 0
        var size = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(s, SOL_SOCKET, SO_ERROR, &soError, &size)
        if ready < 0 || soError != 0 { error = String(cString: strerror(soError != 0 ? soError : errno)); return false }
        return true
    }

    public func setTimeout(_ seconds: Double) {
        var tv = timeval(tv_sec: Int(seconds), tv_usec: Int((seconds - Double(Int(seconds))) * 1_000_000))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        while true {
            let n = recv(fd, buffer.baseAddress, buffer.count, 0)
            if n >= 0 { return n }
            switch errno {
            case EINTR: continue
            case EAGAIN, EWOULDBLOCK: throw NetError.timedOut
            case EBADF: throw NetError.closed
            default: throw NetError.io(String(cString: strerror(errno)))
            }
        }
    }

    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        var offset = 0
        while offset < bytes.count {
            let n = send(fd, bytes.baseAddress.map { $0 + offset }, bytes.count - offset, Int32(MSG_NOSIGNAL))
            if n > 0 { offset += n; continue }
            switch errno {
            case EINTR: continue
            case EAGAIN, EWOULDBLOCK: throw NetError.timedOut
            case EPIPE, ECONNRESET, EBADF: throw NetError.closed
            default: throw NetError.io(String(cString: strerror(errno)))
            }
        }
    }

    /// Shuts the connection down; a blocked `read` in another thread returns.
    public func close() {
        let wasClosed = closed.withLock { c -> Bool in defer { c = true }; return c }
        if !wasClosed { shutdown(fd, Int32(SHUT_RDWR)) }
    }

    deinit {
        shutdown(fd, Int32(SHUT_RDWR))
        Glibc.close(fd)
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A blocking, connected byte stream: plain TCP (`TCPStream`) or TLS over TCP (`TLSStream`).
///
/// One thread reads and one thread writes at a time (a WebSocket reads on its own thread while
/// another sends); `close` may come from any thread. All calls block
/// until done or until the stream's timeout (see `setTimeout`) passes, which throws
/// `NetError.timedOut`.
public protocol ByteStream: AnyObject {
    /// Reads at most `buffer.count` bytes. Returns 0 at a clean end of stream (the peer closed;
    /// for TLS, with close_notify). A TLS stream cut without close_notify throws `NetError.closed`.
    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int
    /// Writes all of `bytes` or throws.
    func write(_ bytes: UnsafeRawBufferPointer) throws
    /// Sets the read/write timeout in seconds (0 = none).
    func setTimeout(_ seconds: Double)
    /// Closes the stream; later calls fail. Safe to call twice, and from another thread to
    /// interrupt a blocked `read` (the fd is shut down first).
    func close()
}

extension ByteStream {
    public func write(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { raw in try write(raw) }
    }
    public func write(_ string: String) throws {
        try write(Array(string.utf8))
    }
}

/// What can go wrong below HTTP. Messages never contain credentials.
public enum NetError: Error, Equatable, CustomStringConvertible, Sendable {
    case resolve(host: String, detail: String)
    /// The resolver answered that the name does not exist (or has no address): permanent.
    case unknownHost(host: String, detail: String)
    case connect(host: String, port: Int, detail: String)
    case timedOut
    case closed
    case io(String)
    case tls(String)
    case protocolViolation(String)

    public var description: String {
        switch self {
        case .resolve(let host, let detail), .unknownHost(let host, let detail): return "cannot resolve \(host): \(detail)"
        case .connect(let host, let port, let detail): return "cannot connect to \(host):\(port): \(detail)"
        case .timedOut: return "timed out"
        case .closed: return "connection closed by peer"
        case .io(let detail): return "I/O error: \(detail)"
        case .tls(let detail): return "TLS error: \(detail)"
        case .protocolViolation(let detail): return "protocol error: \(detail)"
        }
    }
}

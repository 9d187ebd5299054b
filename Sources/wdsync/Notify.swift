#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// systemd's notification protocol, spoken directly (no libsystemd): one datagram per message
/// on the unix socket named by `$NOTIFY_SOCKET` — a path, or an abstract name written `@name`.
/// See sd_notify(3) and https://systemd.io/ — `READY=1`, `STATUS=…`, `WATCHDOG=1`, `STOPPING=1`.
final class SystemdNotifier: Sendable {
    private let address: [UInt8]     // the bytes of sun_path, with the leading NUL of an abstract name
    /// Half of `$WATCHDOG_USEC`, when systemd asked this process for keep-alive pings.
    let watchdogInterval: Double?

    /// Nil when the process was not started by systemd with `Type=notify` (no `$NOTIFY_SOCKET`).
    init?(environment: [String: String] = ProcessInfo.processInfo.environment) {
        guard let socket = environment["NOTIFY_SOCKET"], !socket.isEmpty else { return nil }
        var bytes = Array(socket.utf8)
        if bytes.first == UInt8(ascii: "@") { bytes[0] = 0 } else if bytes.first != UInt8(ascii: "/") { return nil }
        guard bytes.count < MemoryLayout.size(ofValue: sockaddr_un().sun_path) else { return nil }
        address = bytes
        if let usec = environment["WATCHDOG_USEC"].flatMap(Double.init), usec > 0,
           environment["WATCHDOG_PID"].map({ Int32($0) == getpid() }) ?? true {
            watchdogInterval = usec / 2_000_000
        } else {
            watchdogInterval = nil
        }
    }

    /// Sends one notification (`KEY=value` lines). Failures are ignored, as sd_notify's callers do.
    @discardableResult
    func send(_ message: String) -> Bool {
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { path in
            for (i, b) in address.enumerated() { path[i] = b }
        }
        // An abstract name's length is exact; a path's includes its terminating NUL.
        let length = (MemoryLayout<sockaddr_un>.offset(of: \.sun_path) ?? 2) + address.count + (address.first == 0 ? 0 : 1)
        let bytes = Array(message.utf8)
        let sent = withUnsafePointer(to: &addr) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                sendto(fd, bytes, bytes.count, Int32(MSG_NOSIGNAL), sa, socklen_t(length))
            }
        }
        return sent == bytes.count
    }

    /// Sends `WATCHDOG=1` every half `WATCHDOG_USEC` on a thread of its own, while `alive` says so.
    func startWatchdog(alive: @escaping @Sendable () -> Bool) {
        guard let interval = watchdogInterval else { return }
        let thread = Thread { [self] in
            while true {
                if alive() { send("WATCHDOG=1") }
                Thread.sleep(forTimeInterval: interval)
            }
        }
        thread.start()
    }
}

// Ctrl-C (or SIGTERM) stops the running child and the private dovecot before exiting, so an
// interrupted run leaves no daemon listening behind.
#if canImport(Glibc)
import Glibc
#endif
import Foundation

final class Cleanup: @unchecked Sendable {
    private let lock = NSLock()
    private var child: pid_t?
    private var dovecotStop: [String]?
    private var sources: [DispatchSourceSignal] = []
    private var interrupted = false

    /// True once a signal arrived; the main thread then waits for the handler to exit.
    var isInterrupted: Bool { lock.lock(); defer { lock.unlock() }; return interrupted }

    func setChild(_ pid: pid_t?) { lock.lock(); child = pid; lock.unlock() }
    func setDovecot(_ argv: [String]?) { lock.lock(); dovecotStop = argv; lock.unlock() }

    func install() {
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let s = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            s.setEventHandler { [self] in run(sig) }
            s.resume()
            sources.append(s)
        }
    }

    private func run(_ sig: Int32) {
        lock.lock()
        interrupted = true
        let (pid, stop) = (child, dovecotStop)
        lock.unlock()
        eprint("\nwdsync-bench: interrupted, cleaning up\n")
        if let pid { kill(pid, SIGTERM) }
        if let stop { _ = try? runQuiet(stop) }
        exit(128 + sig)
    }
}

let cleanup = Cleanup()

// Ctrl-C (or SIGTERM) stops the running child and the private dovecot before exiting, so an
// interrupted run leaves no daemon listening behind.
#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Lock

final class Cleanup: @unchecked Sendable {
    private struct State {
        var child: pid_t?
        var dovecotStop: [String]?
        var interrupted = false
    }
    private let state = Mutex(State())
    private var sources: [DispatchSourceSignal] = []   // set once, by install() on the main thread

    /// True once a signal arrived; the main thread then waits for the handler to exit.
    var isInterrupted: Bool { state.withLock { $0.interrupted } }

    func setChild(_ pid: pid_t?) { state.withLock { $0.child = pid } }
    func setDovecot(_ argv: [String]?) { state.withLock { $0.dovecotStop = argv } }

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
        let (pid, stop) = state.withLock {
            $0.interrupted = true
            return ($0.child, $0.dovecotStop)
        }
        eprint("\nwdsync-bench: interrupted, cleaning up\n")
        if let pid { kill(pid, SIGTERM) }
        if let stop { _ = try? runQuiet(stop) }
        exit(128 + sig)
    }
}

let cleanup = Cleanup()

#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// The daemon's stop, reconcile and reload signals, without a moment in which one is lost.
///
/// They are blocked in the first line the program runs, before any thread exists, so every
/// thread inherits the block and a signal sent at any time stays pending until the daemon's
/// signal thread takes it (`sigwait`). A signal ignored (`SIG_IGN`) until a dispatch source is
/// in place is dropped by the kernel: a SIGTERM in the daemon's first milliseconds was lost
/// that way, and it ran on. Every mode but the daemon gives them back at once (`release`), so
/// `--once`, `--restore` and the rest stop on SIGTERM and Ctrl-C as any program does. Child
/// processes (the password command, the post-sync hook) start with no signal blocked:
/// Foundation's `Process` clears the mask.
enum StopSignals {
    static let all = [SIGINT, SIGTERM, SIGUSR1, SIGHUP]

    static var set: sigset_t {
        var set = sigset_t()
        sigemptyset(&set)
        for sig in all { sigaddset(&set, sig) }
        return set
    }

    static func block() {
        var set = self.set
        pthread_sigmask(SIG_BLOCK, &set, nil)
    }

    /// For the calling thread (the main thread, which then takes them as usual).
    static func release() {
        var set = self.set
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
    }

    /// Calls `handle` for each of them, on a thread of its own, for the rest of the process.
    static func take(_ handle: @escaping @Sendable (Int32) -> Void) {
        Thread.detachNewThread {
            var set = StopSignals.set
            while true {
                var sig: Int32 = 0
                if sigwait(&set, &sig) == 0 { handle(sig) }
            }
        }
    }
}

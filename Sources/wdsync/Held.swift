#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Store
import Sync

/// `--allow-mass-delete` or `--discard-held` while another wdsync holds the account's lock (the
/// daemon, typically): the decision is handed over (`HeldDecisions`) and a running daemon is
/// woken with SIGUSR1, so its next pass applies it now. Exits 0 whatever was held: there is
/// nothing to retry.
func handOffHeld(_ account: AccountConfig, discard: Bool, log: StderrLog) throws {
    let store = try Store(readOnlyPath: account.db)
    let held = try store.heldChanges(), messages = try store.heldMessages()
    guard !messages.isEmpty else {
        log.log(.info, "the mass-delete breaker holds nothing back; nothing to \(discard ? "discard" : "release")")
        return
    }
    try HeldDecisions.write(discard ? .discarded : .released, messages: messages, db: account.db)
    let what = held.map(\.description).joined(separator: "; ")
    let outcome = discard ? "discarded \(what): the messages are restored" : "released \(what): sent to the server"
    if let pid = try store.status()?.daemonPid, lockHolder(account.db + ".lock").map({ $0 == pid }) ?? true,
       kill(pid_t(pid), SIGUSR1) == 0 {
        log.log(.info, "\(outcome) by the running daemon (pid \(pid)) now")
    } else {
        log.log(.info, "\(outcome) by the wdsync run that holds the lock, or by the next one")
    }
}

extension SimAccount {
    /// The read end of a non-blocking pipe that gets a byte after every change to the account,
    /// so a benchmark can wait for the server's state to change (`poll`) instead of polling it.
    /// Close it with `unwatchChanges`.
    public func watchChanges() -> Int32? { journalSignal.register() }

    public func unwatchChanges(_ fd: Int32) { journalSignal.unregister(fd) }
}

import Maildir
import Store
import WildDuck

/// A batch of the server's live events, as the daemon takes it: pulled into the store
/// (`Pull.applyEvents`), then exported.
extension AccountSync {
    /// When a batch was committed to the store and when its files were in place.
    public struct BatchTiming: Sendable {
        public var committed: ContinuousClock.Instant
        public var exported: ContinuousClock.Instant
    }

    /// Applies one batch: the REST reads it needs first, then every store change in one
    /// transaction, then one export pass.
    ///
    /// Mailboxes that are new to the cache are offered to `subscribe` first: when it returns
    /// true, the caller has subscribed to them and lists them once the subscriptions are settled
    /// (subscribe, then list, so nothing delivered in between is missed); otherwise they are
    /// listed here.
    @discardableResult
    public func apply(_ events: [RemoteEvent], keepOrphans: Double = 0,
                      subscribe: ([String]) -> Bool = { _ in false }) throws -> BatchTiming {
        if events.contains(.resync) {
            let known = Set(try store.mailboxes().map(\.id))
            _ = try syncOnce()
            // Mailboxes it found are followed from now on (and listed again once subscribed).
            _ = subscribe(try store.mailboxes().map(\.id).filter { !known.contains($0) })
            return BatchTiming(committed: .now, exported: .now)
        }
        let committed = try pull.applyEvents(events, subscribe: subscribe)
        try export(keepOrphans: keepOrphans)
        return BatchTiming(committed: committed, exported: .now)
    }

}

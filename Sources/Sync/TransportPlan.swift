import Failures

/// Which event source the daemon follows, and when it connects again: the WebSocket first; SSE
/// after `fallbackAfter` consecutive WebSocket failures (or at once when the server says it has
/// no WebSocket); REST polling after as many SSE failures; and from a fallback, a probe of the
/// WebSocket every `probeInterval` (or when asked), after which one failure goes straight back.
///
/// A pure value: the clock is passed in, nothing here talks to a server, so every path is a
/// unit test (`TransportPlanTests`). `LiveSync` starts and stops the sources it names.
struct TransportPlan: Sendable {
    typealias Instant = ContinuousClock.Instant

    struct Limits: Sendable {
        var backoff: Backoff
        var fallbackAfter: Int
        var probeInterval: Double
        var pollInterval: Double
        /// Failures in a row before the daemon gives up; 0 = never.
        var giveUpAfter: Int

        init(_ o: LiveOptions) {
            backoff = .doubling(base: o.reconnectDelay, cap: o.maxReconnectDelay)
            fallbackAfter = o.wsFailuresBeforeFallback
            probeInterval = o.wsProbeInterval
            pollInterval = o.pollInterval
            giveUpAfter = o.reconnectAttempts
        }
    }

    /// What a failure of the current source leads to.
    enum Reaction: Equatable, Sendable {
        /// Connect the same transport again after this many seconds.
        case reconnect(after: Double)
        /// Fall back (or go on) to another transport, connecting now.
        case switched(to: Transport)
        /// `giveUpAfter` failures in a row: the daemon stops with this many attempts made.
        case giveUp(attempts: Int)
    }

    let limits: Limits
    private(set) var transport = Transport.webSocket
    /// Consecutive failures of the current transport (backoff and fallback).
    private(set) var failures = 0
    /// The current source said it is connected; its failure loses the connection (a failed try
    /// of a source that never connected, e.g. a probe of the WebSocket, does not).
    private(set) var up = false
    /// When a source of the current transport may be started (none is running).
    private(set) var nextAttempt: Instant
    private(set) var nextProbe: Instant
    private(set) var nextPoll: Instant

    init(_ limits: Limits, now: Instant) {
        self.limits = limits
        nextAttempt = now
        nextProbe = now + .seconds(limits.probeInterval)
        nextPoll = now + .seconds(limits.pollInterval)
    }

    /// A source should be started: none is running, the transport has one, and it is time.
    func wantsSource(running: Bool, now: Instant) -> Bool {
        !running && transport != .polling && now >= nextAttempt
    }

    /// A source was started; if it neither connects nor fails, another try comes after the cap.
    mutating func started(now: Instant) {
        nextAttempt = now + .seconds(limits.backoff.longestDelay)
    }

    /// The source of `t` connected. False when `t` is not the current transport (a late note).
    mutating func connected(_ t: Transport) -> Bool {
        guard t == transport else { return false }
        failures = 0
        up = true
        return true
    }

    /// The source of `t` failed; nil when `t` is not the current transport. `unavailable`: the
    /// server said it has no such endpoint (a 404 to the upgrade), so waiting will not help.
    /// `jitter`: the factor of the delay (nil: drawn from the backoff's range; tests pass 1).
    mutating func failed(_ t: Transport, unavailable: Bool, now: Instant, jitter: Double? = nil) -> Reaction? {
        guard t == transport else { return nil }
        up = false
        failures += 1
        if unavailable || failures >= limits.fallbackAfter, t != .polling {
            let next: Transport = t == .webSocket ? .sse : .polling
            // A fallback from the WebSocket, or a server without the endpoint, schedules the next
            // probe; SSE worn out by failures keeps the probe the WebSocket's fallback scheduled.
            if t == .webSocket || unavailable { nextProbe = now + .seconds(limits.probeInterval) }
            switchTo(next, now: now)
            return .switched(to: next)
        }
        if limits.giveUpAfter > 0 && failures > limits.giveUpAfter { return .giveUp(attempts: failures - 1) }
        let delay = limits.backoff.delay(beforeTry: failures + 1, jitter: jitter ?? Double.random(in: limits.backoff.jitter))
        nextAttempt = now + .seconds(delay)
        return .reconnect(after: delay)
    }

    /// The next poll is due (`pollInterval` from `now`); only polling reads it.
    mutating func polled(now: Instant) {
        nextPoll = now + .seconds(limits.pollInterval)
    }

    /// On a fallback, whether to try the WebSocket again (its probe is due, or `requested`). If
    /// so the plan is back on the WebSocket, one failure away from the fallback.
    mutating func probe(now: Instant, requested: Bool) -> Bool {
        guard transport != .webSocket, requested || now >= nextProbe else { return false }
        nextProbe = now + .seconds(limits.probeInterval)
        switchTo(.webSocket, now: now)
        failures = limits.fallbackAfter - 1
        return true
    }

    /// The earliest time the plan wants the engine awake for.
    func deadline(running: Bool) -> Instant {
        var d = transport == .polling ? nextPoll : nextProbe
        if !running && transport != .polling { d = min(d, nextAttempt) }
        return d
    }

    func pollDue(now: Instant) -> Bool { transport == .polling && now >= nextPoll }

    private mutating func switchTo(_ next: Transport, now: Instant) {
        transport = next
        failures = 0
        up = false
        nextAttempt = now
        if next == .polling { nextPoll = now }
    }
}

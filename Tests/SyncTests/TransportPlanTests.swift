import Testing
@testable import Sync

/// The daemon's choice of event source, without sockets: time is passed in.
@Suite struct TransportPlanTests {
    let t0 = ContinuousClock.now
    func limits(giveUpAfter: Int = 0) -> TransportPlan.Limits {
        var o = LiveOptions()
        o.reconnectDelay = 1
        o.maxReconnectDelay = 32
        o.wsFailuresBeforeFallback = 3
        o.wsProbeInterval = 300
        o.pollInterval = 30
        o.reconnectAttempts = giveUpAfter
        return .init(o)
    }
    func at(_ s: Double) -> ContinuousClock.Instant { t0 + .seconds(s) }

    @Test func reconnectsBackOffByDoublingUpToTheCapWithJitter() {
        let b = limits().backoff
        #expect(b == .doubling(base: 1, cap: 32))
        #expect((2...9).map { b.delay(beforeTry: $0, jitter: 1) } == [1, 2, 4, 8, 16, 32, 32, 32])
        #expect(b.tries == nil)
        for _ in 0..<100 { #expect((0.8...1.2).contains(b.delay(beforeTry: 2))) }
    }

    @Test func theWebSocketIsRetriedWithBackoffThenSSEThenPolling() {
        var p = TransportPlan(limits(), now: t0)
        #expect(p.transport == .webSocket)
        #expect(p.wantsSource(running: false, now: t0))
        p.started(now: t0)
        #expect(!p.wantsSource(running: false, now: at(1)))   // one try at a time
        do { let r = p.failed(.webSocket, unavailable: false, now: at(1), jitter: 1); #expect(r == .reconnect(after: 1)) }
        #expect(!p.wantsSource(running: false, now: at(1.5)))
        #expect(p.wantsSource(running: false, now: at(2)))
        do { let r = p.failed(.webSocket, unavailable: false, now: at(2), jitter: 1); #expect(r == .reconnect(after: 2)) }
        do { let r = p.failed(.webSocket, unavailable: false, now: at(4), jitter: 1); #expect(r == .switched(to: .sse)) }
        #expect(p.transport == .sse && p.failures == 0)
        #expect(p.wantsSource(running: false, now: at(4)))     // the fallback connects at once
        do { let r = p.failed(.sse, unavailable: false, now: at(4), jitter: 1); #expect(r == .reconnect(after: 1)) }
        do { let r = p.failed(.sse, unavailable: false, now: at(5), jitter: 1); #expect(r == .reconnect(after: 2)) }
        do { let r = p.failed(.sse, unavailable: false, now: at(7), jitter: 1); #expect(r == .switched(to: .polling)) }
        #expect(p.transport == .polling)
        #expect(!p.wantsSource(running: false, now: at(7)))    // polling has no source
        #expect(p.pollDue(now: at(7)))                          // and polls at once
        p.polled(now: at(7))
        #expect(!p.pollDue(now: at(36)) && p.pollDue(now: at(37)))
    }

    @Test func aServerWithoutTheEndpointIsLeftAtOnce() {
        var p = TransportPlan(limits(), now: t0)
        do { let r = p.failed(.webSocket, unavailable: true, now: at(1)); #expect(r == .switched(to: .sse)) }
        do { let r = p.failed(.sse, unavailable: true, now: at(2)); #expect(r == .switched(to: .polling)) }
    }

    @Test func aConnectionResetsTheCountAndOnlyAConnectedSourceIsLost() {
        var p = TransportPlan(limits(), now: t0)
        _ = p.failed(.webSocket, unavailable: false, now: at(1), jitter: 1)
        _ = p.failed(.webSocket, unavailable: false, now: at(2), jitter: 1)
        #expect(!p.up)
        do { let r = p.connected(.webSocket); #expect(r) }
        #expect(p.up && p.failures == 0)
        // Two more failures do not fall back: the count started again.
        do { let r = p.failed(.webSocket, unavailable: false, now: at(10), jitter: 1); #expect(r == .reconnect(after: 1)) }
        #expect(!p.up)
        do { let r = p.failed(.webSocket, unavailable: false, now: at(11), jitter: 1); #expect(r == .reconnect(after: 2)) }
        #expect(p.transport == .webSocket)
    }

    @Test func lateNotesOfAnotherTransportAreIgnored() {
        var p = TransportPlan(limits(), now: t0)
        _ = p.failed(.webSocket, unavailable: true, now: at(1))
        #expect(p.transport == .sse)
        do { let r = p.failed(.webSocket, unavailable: false, now: at(2)); #expect(r == nil) }
        do { let r = p.connected(.webSocket); #expect(!r) }
        #expect(p.transport == .sse && p.failures == 0)
    }

    @Test func aFallbackProbesTheWebSocketAndOneFailureGoesBack() {
        var p = TransportPlan(limits(), now: t0)
        _ = p.failed(.webSocket, unavailable: true, now: at(0))
        do { let r = p.probe(now: at(299), requested: false); #expect(!r) }
        #expect(p.deadline(running: true) == at(300))
        do { let r = p.probe(now: at(300), requested: false); #expect(r) }
        #expect(p.transport == .webSocket && p.wantsSource(running: false, now: at(300)))
        do { let r = p.failed(.webSocket, unavailable: false, now: at(301)); #expect(r == .switched(to: .sse)) }
        // The next probe is a probe interval later; SIGUSR1 (requested) probes at once.
        do { let r = p.probe(now: at(302), requested: false); #expect(!r) }
        do { let r = p.probe(now: at(302), requested: true); #expect(r) }
        do { let r = p.connected(.webSocket); #expect(r) }
        do { let r = p.failed(.webSocket, unavailable: false, now: at(400), jitter: 1); #expect(r == .reconnect(after: 1)) }
        do { let r = p.probe(now: at(10_000), requested: true); #expect(!r) }    // on the WebSocket: nothing to probe
    }

    @Test func pollingProbesOnTheScheduleTheWebSocketsFallbackSet() {
        var p = TransportPlan(limits(), now: t0)
        _ = p.failed(.webSocket, unavailable: true, now: at(0))          // probe at 300
        for s in [10.0, 11, 13] { _ = p.failed(.sse, unavailable: false, now: at(s), jitter: 1) }
        #expect(p.transport == .polling)
        #expect(p.deadline(running: false) == at(13))                      // the first poll
        p.polled(now: at(13))
        #expect(p.deadline(running: false) == at(43))
        do { let r = p.probe(now: at(299), requested: false); #expect(!r) }
        do { let r = p.probe(now: at(300), requested: false); #expect(r) }
    }

    @Test func reconnectAttemptsGiveUp() {
        var l = limits(giveUpAfter: 2)
        l.fallbackAfter = 100
        var p = TransportPlan(l, now: t0)
        do { let r = p.failed(.webSocket, unavailable: false, now: at(1), jitter: 1); #expect(r == .reconnect(after: 1)) }
        do { let r = p.failed(.webSocket, unavailable: false, now: at(2), jitter: 1); #expect(r == .reconnect(after: 2)) }
        do { let r = p.failed(.webSocket, unavailable: false, now: at(4), jitter: 1); #expect(r == .giveUp(attempts: 2)) }
    }
}

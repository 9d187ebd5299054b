import Testing
import Failures

/// The one retry schedule: the REST client's fixed tries and the daemon's doubling delays.
@Suite struct BackoffTests {
    @Test func theRequestsScheduleIsFiveTriesOverAboutAMinute() {
        let b = Backoff.requests
        #expect(b.tries == 5)
        #expect((1...5).map { b.delay(beforeTry: $0) } == [0, 1, 4, 15, 40])
        #expect((1...5).allSatisfy { b.allows(try: $0) })
        #expect(!b.allows(try: 6) && !b.allows(try: 0))
        #expect(b.delay(beforeTry: 6) == 0)
        #expect(b.maxRetryAfter == 300)
        #expect(b.longestDelay == 40)
        #expect(Backoff.oneTry.tries == 1 && !Backoff.oneTry.allows(try: 2))
    }

    @Test func doublingGoesUpToItsCapWithJitterAndNeverEnds() {
        let b = Backoff.doubling(base: 1, cap: 32)
        #expect(b.tries == nil && b.allows(try: 1_000_000))
        #expect((1...9).map { b.delay(beforeTry: $0, jitter: 1) } == [0, 1, 2, 4, 8, 16, 32, 32, 32])
        #expect(b.delay(beforeTry: 1000, jitter: 1) == 32)
        #expect(b.delay(beforeTry: .max, jitter: 1) == 32)
        #expect(b.longestDelay == 32)
        for n in 2...12 {
            let d = b.delay(beforeTry: n), exact = b.delay(beforeTry: n, jitter: 1)
            #expect(d >= exact * 0.8 && d <= exact * 1.2)
        }
        // A base above the cap: the cap, as the daemon's options clamp it.
        #expect(Backoff.doubling(base: 5, cap: 2).delay(beforeTry: 2, jitter: 1) == 2)
    }
}

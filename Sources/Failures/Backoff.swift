/// How long to wait before each try of something that failed for a reason that may pass
/// (`Failure.Remedy.retry`), and how many tries there are. The one schedule of every retry: the
/// REST client's (`Backoff.requests`: a few tries over a minute, then the error is passed on) and
/// the daemon's reconnects and push retries (`doubling`: without end, jittered, so that many
/// clients cut off together do not come back together).
public struct Backoff: Sendable, Equatable {
    public enum Steps: Sendable, Equatable {
        /// These delays before the 2nd, 3rd … try, then no more: `delays.count + 1` tries.
        case fixed([Double])
        /// `base` before the 2nd try, doubling before each next one up to `cap`; tries without end.
        case doubling(base: Double, cap: Double)
    }

    public var steps: Steps
    /// Each delay is multiplied by a factor drawn from this range.
    public var jitter: ClosedRange<Double>
    /// A server's `Retry-After` longer than this is not waited for: the try fails at once.
    public var maxRetryAfter: Double

    public init(_ steps: Steps, jitter: ClosedRange<Double> = 1...1, maxRetryAfter: Double = 300) {
        self.steps = steps
        self.jitter = jitter
        self.maxRetryAfter = maxRetryAfter
    }

    /// A fixed schedule without jitter: `delays` between the tries.
    public static func fixed(_ delays: [Double]) -> Backoff { Backoff(.fixed(delays)) }

    /// 1, 2, 4 … `cap` seconds (from `base`), each ×0.8–1.2.
    public static func doubling(base: Double, cap: Double) -> Backoff {
        Backoff(.doubling(base: base, cap: cap), jitter: 0.8...1.2)
    }

    /// The REST client's: 5 tries over about a minute, 1, 4, 15 and 40 s apart.
    public static let requests = Backoff.fixed([1, 4, 15, 40])
    /// One try, never another.
    public static let oneTry = Backoff.fixed([])

    /// How many tries there are in all; nil: without end.
    public var tries: Int? {
        switch steps {
        case .fixed(let delays): delays.count + 1
        case .doubling: nil
        }
    }

    /// Whether try `n` (the first is 1) is one the schedule has.
    public func allows(try n: Int) -> Bool { n >= 1 && tries.map { n <= $0 } ?? true }

    /// The longest delay of the schedule, before jitter (the daemon's limit on a source that
    /// neither connects nor fails).
    public var longestDelay: Double {
        switch steps {
        case .fixed(let delays): delays.max() ?? 0
        case .doubling(_, let cap): cap
        }
    }

    /// Seconds to wait before try `n` (the first is 1, and waits for nothing), with a jitter
    /// factor drawn from `jitter`.
    public func delay(beforeTry n: Int) -> Double {
        delay(beforeTry: n, jitter: Double.random(in: jitter))
    }

    /// Seconds to wait before try `n`, multiplied by `factor` (tests pass 1).
    public func delay(beforeTry n: Int, jitter factor: Double) -> Double {
        guard n >= 2 else { return 0 }
        switch steps {
        case .fixed(let delays):
            return delays.indices.contains(n - 2) ? delays[n - 2] * factor : 0
        case .doubling(let base, let cap):
            var d = base
            for _ in 0..<min(n - 2, 30) where d < cap { d *= 2 }
            return min(d, cap) * factor
        }
    }
}

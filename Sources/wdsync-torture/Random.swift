import WildDuckSim

/// Every random choice of a run comes from the simulator's SplitMix64 (Steele, Lea, Flood:
/// "Fast splittable pseudorandom number generators", 2014), seeded by the run's seed, so a seed
/// replays the same sequence of operations. The system generator is never used.
extension SplitMix64 {
    /// 0..<n (0 when n <= 0).
    mutating func below(_ n: Int) -> Int {
        n <= 0 ? 0 : Int(next() % UInt64(n))
    }

    mutating func int(_ range: ClosedRange<Int>) -> Int {
        range.lowerBound + below(range.count)
    }

    mutating func chance(_ percent: Int) -> Bool { below(100) < percent }

    mutating func pick<T>(_ items: [T]) -> T? {
        items.isEmpty ? nil : items[below(items.count)]
    }
}

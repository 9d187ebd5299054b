// wdsync-torture: the randomized, seeded sync torture test (docs/two-way.md, "How it is
// tested"). Each run starts a simulator in this process, runs the real `wdsync` binary against
// it (--once, the daemon, kill -9), interleaves what a person, their mail programs and other
// clients do, and checks the invariants after every step. contrib/torture.sh runs it.
#if canImport(Glibc)
import Glibc
#endif
import Foundation

let usage = """
usage: wdsync-torture [--seconds N | --runs N] [--seed S] [--steps N] [--all]
                      [--enable KIND,...] [--disable KIND,...] [--wdsync PATH]
                      [--continue-option OPTION] [--keep] [-v] [--list]

Runs seeded random runs (seed S, S+1, ...) until N seconds have passed or N runs are done,
and prints "N runs, N failures". A failure names its seed and step: `--seed S --runs 1
--steps N` replays that run (same operations in the same order; wdsync's own timing, and so
the exact interleaving with the daemon and the kill -9 points, can differ).
  --all            every kind of operation, also those off by default (see --list)
  --list           the kinds of operation, and why some are off by default
  --continue-option OPTION   what the person runs after wdsync refused a restored Maildir
                   (74); default: --adopt-maildir if `wdsync --help` lists it (without one,
                   the restore kinds are off by default and a refusal ends the run)
  --keep           keep the work directory of every run (failed runs' are always kept)
  --script KIND,...  the kinds of the steps in this order instead of random ones (the
                   choices within each step stay seeded); --steps defaults to their number
  --weight KIND=N,...  how often a kind is chosen, instead of its own weight (to dwell on it)
  --inject-loss N  self-test: at step N the harness deletes a message from the server behind
                   the oracle's back; the run must fail with [lost]
"""

struct Options {
    var seconds: Double?
    var runs: Int?
    var seed: UInt64?
    var steps = 48
    var all = false
    var added: [OpKind] = []
    var removed: [OpKind] = []
    var wdsync: String?
    var continueOption: String?
    var keep = false
    var verbose = false
    var list = false
    var injectLossAt: Int?
    var script: [OpKind]?
    var weights: [OpKind: Int] = [:]

    static func kinds(_ text: String) throws -> [OpKind] {
        try text.split(separator: ",").map { name in
            guard let kind = OpKind(rawValue: String(name)) else { throw UsageError("unknown kind \(name) (see --list)") }
            return kind
        }
    }

    init(_ arguments: [String]) throws {
        var i = 0
        func value() throws -> String {
            i += 1
            guard i < arguments.count else { throw UsageError("\(arguments[i - 1]) needs a value") }
            return arguments[i]
        }
        while i < arguments.count {
            switch arguments[i] {
            case "--seconds": seconds = try Double(value()).orThrow("--seconds needs a number")
            case "--runs": runs = try Int(value()).orThrow("--runs needs a number")
            case "--seed": seed = try UInt64(value()).orThrow("--seed needs a number")
            case "--steps": steps = try Int(value()).orThrow("--steps needs a number")
            case "--all": all = true
            case "--enable": added += try Self.kinds(value())
            case "--disable": removed += try Self.kinds(value())
            case "--wdsync": wdsync = try value()
            case "--continue-option": continueOption = try value()
            case "--script": script = try Self.kinds(value())
            case "--weight":
                for item in try value().split(separator: ",") {
                    let parts = item.split(separator: "=")
                    guard parts.count == 2, let kind = OpKind(rawValue: String(parts[0])), let n = Int(parts[1]), n >= 0 else {
                        throw UsageError("--weight takes KIND=N,... (see --list), not \(item)")
                    }
                    weights[kind] = n
                }
            case "--inject-loss": injectLossAt = try Int(value()).orThrow("--inject-loss needs a step number")
            case "--keep": keep = true
            case "-v", "--verbose": verbose = true
            case "--list": list = true
            case "-h", "--help": say(usage); exit(0)
            default: throw UsageError("unknown argument \(arguments[i])")
            }
            i += 1
        }
        if seconds == nil && runs == nil { seconds = 60 }
        if let script, !arguments.contains("--steps") { steps = script.count }
        guard steps > 0 else { throw UsageError("--steps must be positive") }
    }

    /// The kinds this run uses: the defaults for this wdsync, or all, with the additions and
    /// removals.
    func kinds(canContinue: Bool) -> [OpKind] {
        let base = all ? OpKind.allCases : OpKind.defaultEnabled(canContinue: canContinue)
        return OpKind.allCases.filter { (base.contains($0) || added.contains($0)) && !removed.contains($0) }
    }
}

/// A line on standard output, written at once (a pipe to the test or a log sees progress).
/// (write(2), not FileHandle: a reader that went away must not end the run.)
func say(_ line: String) {
    let bytes = Array((line + "\n").utf8)
    _ = bytes.withUnsafeBytes { write(1, $0.baseAddress, $0.count) }
}

struct UsageError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

extension Optional {
    func orThrow(_ message: String) throws -> Wrapped {
        guard let self else { throw UsageError(message) }
        return self
    }
}

signal(SIGPIPE, SIG_IGN)

let options: Options
do {
    options = try Options(Array(CommandLine.arguments.dropFirst()))
} catch {
    FileHandle.standardError.write(Data("wdsync-torture: \(error)\n\n\(usage)\n".utf8))
    exit(2)
}

let selfPath = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
let wdsync = options.wdsync ?? URL(fileURLWithPath: selfPath).deletingLastPathComponent().appendingPathComponent("wdsync").path
guard FileManager.default.isExecutableFile(atPath: wdsync) else {
    FileHandle.standardError.write(Data("wdsync-torture: no wdsync binary at \(wdsync) (build it, or give --wdsync PATH)\n".utf8))
    exit(2)
}

let continueWith = options.continueOption ?? continueOption(of: wdsync)
let defaults = OpKind.defaultEnabled(canContinue: continueWith != nil)
let kinds = options.kinds(canContinue: continueWith != nil)
if options.list {
    for kind in OpKind.allCases {
        say("\(kind.rawValue)\(kind.disabledBecause(canContinue: continueWith != nil).map { "  (off by default: \($0))" } ?? "")")
    }
    exit(0)
}
guard !kinds.isEmpty else {
    FileHandle.standardError.write(Data("wdsync-torture: no kind of operation left\n".utf8))
    exit(2)
}

// The only use of the clock for randomness: a base seed when none is given (and it is printed).
let baseSeed = options.seed ?? UInt64(Date().timeIntervalSince1970 * 1000) % 1_000_000_000
let off = OpKind.allCases.filter { !kinds.contains($0) }
say("wdsync-torture: seed \(baseSeed), \(options.steps) steps per run, wdsync \(wdsync)\(continueWith.map { ", after a refusal the person runs \($0)" } ?? "")")
for kind in off {
    let why = kind.disabledBecause(canContinue: continueWith != nil) ?? "turned off (--disable)"
    say("off: \(kind.rawValue): \(why)")
}
if !off.isEmpty && !options.all { say("(--all turns every kind on)") }

// What a replay needs besides the seed: the same kinds of operation.
let kindFlags: String = {
    if let script = options.script { return " --script " + script.map(\.rawValue).joined(separator: ",") }
    let weights = options.weights.isEmpty ? "" : " --weight " + options.weights.sorted { $0.key.rawValue < $1.key.rawValue }.map { "\($0.key.rawValue)=\($0.value)" }.joined(separator: ",")
    if options.all {
        let removed = OpKind.allCases.filter { !kinds.contains($0) }.map(\.rawValue)
        return " --all" + (removed.isEmpty ? "" : " --disable " + removed.joined(separator: ",")) + weights
    }
    let added = kinds.filter { !defaults.contains($0) }.map(\.rawValue)
    let removed = defaults.filter { !kinds.contains($0) }.map(\.rawValue)
    return (added.isEmpty ? "" : " --enable " + added.joined(separator: ","))
        + (removed.isEmpty ? "" : " --disable " + removed.joined(separator: ",")) + weights
}()

let started = Date()
var runs = 0
var failures: [(seed: UInt64, failure: Failure)] = []
var steps = 0
var quietPoints = 0
var kindCounts: [OpKind: Int] = [:]
while true {
    if let limit = options.runs, runs >= limit { break }
    if let seconds = options.seconds, runs > 0, Date().timeIntervalSince(started) >= seconds { break }
    let seed = baseSeed &+ UInt64(runs)
    runs += 1
    let config = RunConfig(seed: seed, steps: options.steps, enabled: kinds, wdsync: wdsync,
                           continueOption: continueWith, injectLossAt: options.injectLossAt, script: options.script,
                           weights: options.weights,
                           verbose: options.verbose)
    let run: TortureRun
    do {
        run = try TortureRun(config)
    } catch {
        say("seed \(seed): could not start: \(error)")
        failures.append((seed, Failure(step: 0, invariant: "harness", detail: "\(error)")))
        continue
    }
    let failure = run.run()
    steps += run.step
    quietPoints += run.quietPoints
    kindCounts.merge(run.kindCounts, uniquingKeysWith: +)
    if let failure {
        failures.append((seed, failure))
        say("seed \(seed): FAIL \(failure)")
        for line in run.log.suffix(10) { say("    " + line) }
        say("    work directory kept: \(run.dir)  (replay: contrib/torture.sh --seed \(seed) --runs 1 --steps \(failure.step)\(kindFlags))")
    } else {
        say("seed \(seed): ok, \(run.step) steps\(run.stoppedEarly.map { " (stopped: \($0))" } ?? "")")
    }
    run.cleanUp(keep: options.keep || failure != nil)
}

say("\(runs) runs, \(failures.count) failures")
say("\(Int(Date().timeIntervalSince(started))) s, \(steps) steps, \(quietPoints) quiet points checked (mirror equal to the server)")
say("steps by kind: " + OpKind.allCases.compactMap { kind in kindCounts[kind].map { "\(kind.rawValue) \($0)" } }.joined(separator: ", "))
for (seed, failure) in failures {
    say("  seed \(seed) \(failure)")
}
exit(failures.isEmpty ? 0 : 1)

import Foundation

struct Options {
    /// Messages in the initial-sync and restore comparisons (wdsync, mbsync+dovecot, floor).
    var messages = 10_000
    /// Mailboxes the initial-sync messages are spread over.
    var mailboxes = 6
    /// Rounds of the initial-sync comparison; the median is reported.
    var repeats = 3
    /// Messages for the no-op, small-change, memory and idle benchmarks (20 mailboxes).
    var big = 100_000
    /// Benchmarks to run: initial, memory, noop, change, fullcheck, live, idle, push.
    var only: Set<String> = Options.all
    /// Also write the figures to this JSON file.
    var json: String?
    /// Scratch directory (Maildirs, caches, dovecot); must be on the filesystem you care about.
    var workdir = "/var/tmp/wdsync-bench"
    /// The wdsync binary under test.
    var wdsync = ".build/release/wdsync"
    /// mbsync binary (Debian package isync).
    var mbsync = "mbsync"
    /// dovecot binary (Debian package dovecot-imapd).
    var dovecot = "dovecot"
    /// Events of each kind in the live-latency benchmark.
    var liveEvents = 1000
    /// Seconds the idle daemon is observed.
    var idleSeconds = 60.0
    /// Minutes of churn in the soak benchmark (only run when asked for with `--only soak`).
    var soakMinutes = 30.0
    /// Corpus passed to the simulator's generator (nil = its built-in bodies).
    var corpus: String?
    /// Seed for the generated messages.
    var seed: UInt64 = 1
    /// Give up on a child after this many seconds.
    var timeout = 3600.0
    /// Keep the work directory afterwards.
    var keep = false
    var help = false

    static let all: Set<String> = ["initial", "memory", "noop", "change", "fullcheck", "live", "idle", "push", "restore"]
    /// Benchmarks that run only when named in `--only` (they take long).
    static let optional: Set<String> = ["soak"]

    static let usage = """
    usage: wdsync-bench [options]

      --messages N       messages in the initial-sync and restore comparisons (default 10000)
      --mailboxes N      mailboxes they are spread over (default 6)
      --repeat N         rounds of the initial-sync comparison, median shown (default 3)
      --big N            messages for noop/change/memory/idle, 20 mailboxes (default 100000)
      --only LIST        comma-separated subset of: initial,memory,noop,change,fullcheck,live,idle,push,restore;
                         soak runs only when named here
      --json FILE        also write the figures as JSON
      --workdir DIR      scratch directory (default /var/tmp/wdsync-bench; emptied first)
      --wdsync PATH      wdsync binary (default .build/release/wdsync)
      --mbsync PATH      mbsync binary (default: mbsync from PATH)
      --dovecot PATH     dovecot binary (default: dovecot from PATH or /usr/sbin)
      --live-events N    events of each kind in the live-latency benchmark (default 1000)
      --idle-seconds S   how long the idle daemon is observed (default 60)
      --soak-minutes M   minutes of churn in the soak benchmark (default 30)
      --corpus PATH      corpus for the simulator's message generator
      --seed N           generator seed (default 1)
      --timeout S        kill a child that runs longer (default 3600)
      --keep             keep the work directory
      -h, --help         this text

    Benchmarks measure; they never fail because a machine is slow. The exit status is 0
    unless the suite itself could not run.
    """

    static func parse(_ args: [String]) throws -> Options {
        var o = Options()
        var i = 0
        func value() throws -> String {
            i += 1
            guard i < args.count else { throw BenchError("\(args[i - 1]) needs a value") }
            return args[i]
        }
        func int(_ s: String) throws -> Int {
            guard let v = Int(s.replacingOccurrences(of: "_", with: "")), v >= 0 else { throw BenchError("not a count: \(s)") }
            return v
        }
        while i < args.count {
            switch args[i] {
            case "--messages": o.messages = try int(value())
            case "--mailboxes": o.mailboxes = max(1, min(20, try int(value())))
            case "--big": o.big = try int(value())
            case "--repeat": o.repeats = max(1, try int(value()))
            case "--only":
                let list = Set(try value().split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
                let bad = list.subtracting(Options.all.union(Options.optional))
                if !bad.isEmpty { throw BenchError("unknown benchmark(s): \(bad.sorted().joined(separator: ","))") }
                o.only = list
            case "--json": o.json = try value()
            case "--workdir": o.workdir = try value()
            case "--wdsync": o.wdsync = try value()
            case "--mbsync": o.mbsync = try value()
            case "--dovecot": o.dovecot = try value()
            case "--live-events":
                guard let v = Int(try value()), v > 0 else { throw BenchError("bad --live-events") }
                o.liveEvents = v
            case "--idle-seconds":
                guard let v = Double(try value()), v > 0 else { throw BenchError("bad --idle-seconds") }
                o.idleSeconds = v
            case "--soak-minutes":
                guard let v = Double(try value()), v > 0 else { throw BenchError("bad --soak-minutes") }
                o.soakMinutes = v
            case "--corpus": o.corpus = try value()
            case "--seed":
                guard let v = UInt64(try value()) else { throw BenchError("bad --seed") }
                o.seed = v
            case "--timeout":
                guard let v = Double(try value()), v > 0 else { throw BenchError("bad --timeout") }
                o.timeout = v
            case "--keep": o.keep = true
            case "-h", "--help": o.help = true
            default: throw BenchError("unknown option \(args[i])")
            }
            i += 1
        }
        return o
    }
}

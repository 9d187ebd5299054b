// wdsync-bench: initial sync against mbsync+dovecot and an fsync floor, no-op and small-change
// incremental runs, memory and idle CPU. See contrib/bench/README.md.
#if canImport(Glibc)
import Glibc
#endif
import Foundation

let arguments = Array(CommandLine.arguments.dropFirst())
if arguments.first == "--launcher" { launcherMain() }
if arguments.first == "--floor-child" { floorChildMain(Array(arguments.dropFirst())) }

signal(SIGPIPE, SIG_IGN)
cleanup.install()

let options: Options
do {
    options = try Options.parse(arguments)
} catch {
    eprint("wdsync-bench: \(error)\n\n\(Options.usage)")
    exit(2)
}
if options.help { print(Options.usage); exit(0) }

// The launcher starts now, while this process is still small (see Launcher.swift).
let selfPath = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
do {
    let launcher = try Launcher(selfPath: selfPath)
    let bench = Bench(options: options, launcher: launcher, selfPath: selfPath)
    try bench.run()
    launcher.close()
} catch {
    eprint("wdsync-bench: \(error)\n")
    exit(1)
}

import Config
import Foundation
import Maildir
import Sync

/// One command-line option. The help text is generated from this table, so it cannot drift.
struct OptionSpec {
    var long: String
    var short: Character?
    var value: String?          // nil for a flag
    var help: String
    var configKey: Bool = true  // may also appear in the config file
}

let optionSpecs: [OptionSpec] = [
    OptionSpec(long: "once", short: nil, value: nil, help: "Do one complete sync and exit (for cron or a systemd timer).", configKey: false),
    OptionSpec(long: "verify", short: nil, value: nil, help: "Check, offline, that every cached message's file exists (under any flags) with its recorded SHA-256; altered files are moved to CACHE.altered/.", configKey: false),
    OptionSpec(long: "dry-run", short: nil, value: nil, help: "Say what a sync would download, rename, remove and push, and write nothing (Maildir, cache, server).", configKey: false),
    OptionSpec(long: "restore", short: nil, value: nil, help: "Put the backup in --maildir (with its --db, if that file exists) on the account given by --server and --user: creates missing mailboxes and filters, uploads what the account lacks, sets settings it left unset, changes and deletes nothing. With --dry-run: only say what it would create.", configKey: false),
    OptionSpec(long: "status", short: nil, value: nil, help: "Show, from the cache only, each account's last sync, size, pending work, last error, running daemon and what the mass-delete breaker holds.", configKey: false),
    OptionSpec(long: "json", short: nil, value: nil, help: "With --status: print one JSON document.", configKey: false),
    OptionSpec(long: "server", short: nil, value: "URL", help: "WildDuck API base URL, e.g. https://mail.example.com/api"),
    OptionSpec(long: "user", short: nil, value: "NAME", help: "Username or e-mail address."),
    OptionSpec(long: "password-file", short: nil, value: "FILE", help: "File whose first line is the password; must not be readable by group or others."),
    OptionSpec(long: "password-command", short: nil, value: "CMD", help: "Shell command that prints the password (run each time wdsync authenticates)."),
    OptionSpec(long: "maildir", short: nil, value: "DIR", help: "Maildir root. Default: $XDG_DATA_HOME/wdsync/ACCOUNT/mail"),
    OptionSpec(long: "db", short: nil, value: "FILE", help: "SQLite cache. Default: $XDG_DATA_HOME/wdsync/ACCOUNT/cache.sqlite"),
    OptionSpec(long: "layout", short: nil, value: "verbatim|maildir++", help: "Folder layout (default verbatim: Work/Projects → DIR/Work/Projects)."),
    OptionSpec(long: "ca-file", short: nil, value: "FILE", help: "Also trust the CA certificates in this PEM file for https:// and wss:// (in addition to the system store)."),
    OptionSpec(long: "insecure", short: nil, value: nil, help: "Do not verify TLS certificates (prints a warning)."),
    OptionSpec(long: "connections", short: nil, value: "N", help: "Parallel message downloads (default 4)."),
    OptionSpec(long: "post-sync", short: nil, value: "CMD", help: "Shell command to run after each --once, and in the daemon after changes (at most every 2 s), e.g. notmuch new."),
    OptionSpec(long: "poll-interval", short: nil, value: "S", help: "Live sync: seconds between REST polls when neither WebSocket nor SSE works (default 30)."),
    OptionSpec(long: "reconnect-delay", short: nil, value: "MS", help: "Live sync: first reconnection delay (default 1000, doubling with jitter)."),
    OptionSpec(long: "max-reconnect-delay", short: nil, value: "MS", help: "Live sync: longest reconnection delay (default 32000)."),
    OptionSpec(long: "reconnect-attempts", short: nil, value: "N", help: "Live sync: give up after N failed reconnections (default 0 = never)."),
    OptionSpec(long: "ping-interval", short: nil, value: "S", help: "Live sync: seconds between our WebSocket pings; no pong within 5 s means a dead connection (default 10)."),
    OptionSpec(long: "ws-retry-interval", short: nil, value: "S", help: "Live sync: while on SSE or REST polling, seconds between tries of the WebSocket (default 300; SIGUSR1 tries at once)."),
    OptionSpec(long: "pull-only", short: nil, value: nil, help: "Never write to the server (a pure backup): local changes are kept but neither pushed nor reverted. Config: pull-only = yes"),
    OptionSpec(long: "allow-mass-delete", short: nil, value: nil, help: "Send what the mass-delete breaker holds back (see exit code 66), and let this sync delete freely and accept a mailbox list that drops most mailboxes; with a daemon running, it releases the held changes to the daemon.", configKey: false),
    OptionSpec(long: "discard-held", short: nil, value: nil, help: "Drop what the mass-delete breaker holds back and restore those messages locally (with a daemon running, through it).", configKey: false),
    OptionSpec(long: "mass-delete-exempt", short: nil, value: "LIST", help: "Mailboxes where the mass-delete breaker counts nothing: paths or special uses, comma-separated (default \\Trash, \\Junk; none for nowhere)."),
    OptionSpec(long: "adopt-maildir", short: nil, value: nil, help: "Take the Maildir as it is when it is not the one the cache last wrote (restored, empty, another cache's): nothing is sent from it, its files are matched to the server's messages, the rest set aside (exit code 74 says when).", configKey: false),
    OptionSpec(long: "full-check", short: nil, value: nil, help: "List every mailbox in full and compare it with the cache, repairing and reporting any difference (a daemon: in its first pass; done once per full-check-interval anyway).", configKey: false),
    OptionSpec(long: "full-check-interval", short: nil, value: "H", help: "Hours between full checks (default 24; 0 = only with --full-check)."),
    OptionSpec(long: "config", short: nil, value: "FILE", help: "Config file. Default: $XDG_CONFIG_HOME/wdsync/config", configKey: false),
    OptionSpec(long: "account", short: nil, value: "NAME", help: "Sync only this account of the config file (default: all); also given as a plain argument: wdsync work.", configKey: false),
    OptionSpec(long: "verbose", short: "v", value: nil, help: "Say what is being done (with the time), including the config file read and every retry.", configKey: false),
    OptionSpec(long: "debug", short: nil, value: nil, help: "Log everything, with timestamps (secrets redacted).", configKey: false),
    OptionSpec(long: "quiet", short: "q", value: nil, help: "Print errors only.", configKey: false),
    OptionSpec(long: "completions", short: nil, value: "bash|zsh|fish", help: "Print the completion script for this shell (contrib/install.sh installs them).", configKey: false),
    OptionSpec(long: "help", short: "h", value: nil, help: "Show this help.", configKey: false),
    OptionSpec(long: "version", short: nil, value: nil, help: "Show the version and the commit it was built from.", configKey: false),
]

/// The release this is (CHANGELOG.md) and the commit it was built from (the EmbedVersion plugin).
let version = "wdsync 0.2.0-dev (\(builtFrom))"

/// Exit codes (also in the README).
enum ExitCode: Int32 {
    case ok = 0
    case usage = 64          // EX_USAGE: bad arguments or config
    case unreachable = 69    // EX_UNAVAILABLE: server unreachable or connection lost
    case software = 70       // EX_SOFTWARE: a bug
    case localIO = 74        // EX_IOERR: disk full, permissions, cache unusable
    case locked = 75         // EX_TEMPFAIL: another wdsync holds the account lock
    case dataErr = 65        // EX_DATAERR: --verify found differences
    case massDelete = 66     // the mass-delete breaker held deletes (README: exit codes)
    case server = 76         // EX_PROTOCOL: the server answered with an error or nonsense
    case auth = 77           // EX_NOPERM: authentication failed
}

func helpText() -> String {
    var text = """
    \(version) — an offline-first mirror of a WildDuck account into SQLite and Maildir

    usage: wdsync [--once] --server URL --user NAME (--password-file F | --password-command CMD)
                  [--maildir DIR] [--db FILE] [--layout verbatim|maildir++] [-v|-q]
           wdsync [--once] [--config FILE] [ACCOUNT...]
           wdsync --status [--json] | --dry-run [-v] | --verify   [account options]
           wdsync --allow-mass-delete | --discard-held   [account options]
           wdsync --restore [--dry-run] --maildir BACKUP [--db BACKUP.sqlite] --server URL --user NAME …

    Without --once, wdsync stays running and keeps the mirror current (WebSocket, falling back
    to the SSE update stream and then to REST polling); a server that cannot be reached is
    retried in the background. SIGUSR1 reconciles at once; SIGHUP reads the config file again;
    SIGINT and SIGTERM stop it cleanly.

    options:

    """
    for spec in optionSpecs {
        var left = "  "
        left += spec.short.map { "-\($0), " } ?? "    "
        left += "--\(spec.long)"
        if let value = spec.value { left += " \(value)" }
        let pad = max(2, 36 - left.count)
        text += left + String(repeating: " ", count: pad) + spec.help + "\n"
    }
    text += """

    The config file holds the same settings (without the leading --) as `key = value` lines;
    lines before the first `[account NAME]` section apply to every account. It is read whenever
    it exists; options on the command line override it for the accounts being synced. Paths in
    it must be absolute (~/ and $VAR are expanded). -v says which file was read.

    exit codes: 0 ok, 64 usage or config, 65 --verify found differences, 66 mass delete held back (wdsync
    --allow-mass-delete sends it, wdsync --discard-held restores the messages), 69 server unreachable, 74 local I/O (disk, permissions,
    cache, or a Maildir that is not the one the cache last wrote: see --adopt-maildir), 75 another wdsync holds the account lock, 76 server error, 77 authentication failed.
    """
    return text
}

struct UsageError: Error, CustomStringConvertible { var description: String }

/// Parsed command line: settings by option name, plus flags.
struct CommandLineArgs {
    var values: [String: String] = [:]
    var flags: Set<String> = []
    /// Accounts of the config file to sync, in the order given: `--account NAME` or plain
    /// arguments (`wdsync work home`, as mbsync takes channel names). Empty: all of them.
    var accounts: [String] = []

    init(_ args: [String]) throws {
        var i = 0
        while i < args.count {
            let arg = args[i]
            i += 1
            var name: String
            var inline: String?
            if !arg.hasPrefix("-") || arg == "-" {
                guard !arg.isEmpty else { throw UsageError(description: "an empty argument (see wdsync --help)") }
                accounts.append(arg)
                continue
            } else if arg.hasPrefix("--") {
                name = String(arg.dropFirst(2))
                if let eq = name.firstIndex(of: "=") {
                    inline = String(name[name.index(after: eq)...])
                    name = String(name[..<eq])
                }
            } else if arg.hasPrefix("-"), arg.count == 2, let c = arg.last,
                      let spec = optionSpecs.first(where: { $0.short == c }) {
                name = spec.long
            } else {
                throw UsageError(description: "unexpected argument \(arg) (see wdsync --help)")
            }
            guard let spec = optionSpecs.first(where: { $0.long == name }) else {
                throw UsageError(description: "unknown option --\(name) (see wdsync --help)")
            }
            if spec.value == nil {
                guard inline == nil else { throw UsageError(description: "--\(name) takes no value") }
                flags.insert(name)
            } else {
                let value: String
                if let inline { value = inline } else {
                    guard i < args.count else { throw UsageError(description: "--\(name) needs a value (\(spec.value ?? ""))") }
                    value = args[i]
                    i += 1
                }
                if name == "account" { accounts.append(value) } else { values[name] = value }
            }
        }
    }
}

/// Live-sync settings from the command line or config values.
func liveOptions(_ values: [String: String]) throws -> LiveOptions {
    var o = LiveOptions()
    func number(_ key: String, _ range: ClosedRange<Double>) throws -> Double? {
        guard let text = values[key] else { return nil }
        guard let v = Double(text), range.contains(v) else { throw UsageError(description: "--\(key) must be a number in \(Int(range.lowerBound))…\(Int(range.upperBound))") }
        return v
    }
    if let v = try number("poll-interval", 1...86400) { o.pollInterval = v }
    if let v = try number("reconnect-delay", 1...3_600_000) { o.reconnectDelay = v / 1000 }
    if let v = try number("max-reconnect-delay", 1...3_600_000) { o.maxReconnectDelay = v / 1000 }
    if let v = try number("reconnect-attempts", 0...1_000_000) { o.reconnectAttempts = Int(v) }
    if let v = try number("ping-interval", 0.1...3600) { o.pingInterval = v }
    if let v = try number("ws-retry-interval", 1...86400) { o.wsProbeInterval = v }
    o.maxReconnectDelay = max(o.maxReconnectDelay, o.reconnectDelay)
    return o
}

/// A yes/no setting: given as a flag on the command line, or `key = yes|no` in the config file.
func flag(_ key: String, _ values: [String: String], _ flags: Set<String>) throws -> Bool {
    if flags.contains(key) { return true }
    guard let text = values[key]?.lowercased() else { return false }
    switch text {
    case "yes", "true", "on", "1": return true
    case "no", "false", "off", "0": return false
    default: throw UsageError(description: "\(key) must be yes or no, not \(text)")
    }
}

/// The config file wdsync reads: `--config FILE`, else `$XDG_CONFIG_HOME/wdsync/config`.
func configFilePath(_ args: CommandLineArgs, environment: [String: String]) -> String {
    if let explicit = args.values["config"] { return explicit }
    let home = environment["HOME"] ?? NSHomeDirectory()
    let configHome = environment["XDG_CONFIG_HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? home + "/.config"
    return configHome + "/wdsync/config"
}

/// Which config file was read, or where none was found: for `--verbose` and first-run errors.
func configFileNote(_ args: CommandLineArgs, environment: [String: String]) -> String {
    let path = configFilePath(args, environment: environment)
    return FileManager.default.fileExists(atPath: path) ? "config file \(path)"
        : "no config file at \(path); see man wdsync.conf"
}

/// Settings that name files: `~` and `$VAR` / `${VAR}` are expanded in them.
let pathSettings: Set<String> = ["maildir", "db", "password-file", "ca-file"]

/// Settings that belong to one account: on the command line they apply to one account only.
let accountSettings = ["server", "user", "password-file", "password-command", "maildir", "db"]

/// A path setting with `~` and `$VAR` / `${VAR}` expanded (a shell does this on the command
/// line, nothing does it in the config file). A variable that is not set is an error, not an
/// empty string: `$HOEM/Mail` must not become `/Mail`.
func expandPath(_ path: String, environment: [String: String]) throws -> String {
    let home = environment["HOME"] ?? NSHomeDirectory()
    var text = path == "~" ? home : path.hasPrefix("~/") ? home + path.dropFirst(1) : path
    guard text.contains("$") else { return text }
    var out = ""
    var rest = Substring(text)
    while let dollar = rest.firstIndex(of: "$") {
        out += rest[..<dollar]
        rest = rest[rest.index(after: dollar)...]
        let braced = rest.first == "{"
        if braced { rest = rest.dropFirst() }
        let name = rest.prefix { $0 == "_" || ($0.isASCII && ($0.isLetter || $0.isNumber)) }
        guard !name.isEmpty, name.first?.isNumber == false, !braced || rest.dropFirst(name.count).first == "}" else {
            throw UsageError(description: "\(path): a $ must start a variable name ($HOME or ${HOME})")
        }
        guard let value = environment[String(name)] else {
            throw UsageError(description: "\(path): $\(name) is not set in wdsync's environment")
        }
        out += value
        rest = rest.dropFirst(name.count + (braced ? 1 : 0))
    }
    text = out + rest
    return text
}

/// Builds the account configurations from the command line and the config file.
///
/// The config file is read whenever it exists (or `--config` names it); the command line's
/// settings override it for the accounts being synced. Settings of one account (`--server`,
/// `--user`, the password, `--maildir`, `--db`) cannot apply to several accounts at once: then
/// the account must be named. An account given only on the command line is `default`.
/// `credentials: false` (for `--status`, which never connects) accepts accounts without a
/// server, user or password.
func resolveAccounts(_ args: CommandLineArgs, environment: [String: String], credentials: Bool = true) throws -> [AccountConfig] {
    let home = environment["HOME"] ?? NSHomeDirectory()
    let dataHome = environment["XDG_DATA_HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? home + "/.local/share"
    let configPath = configFilePath(args, environment: environment)
    let note = configFileNote(args, environment: environment)

    var sources: [(name: String, values: [String: String])] = []
    if args.values["config"] != nil || FileManager.default.fileExists(atPath: configPath) {
        let file = try ConfigFile(path: configPath, keys: Set(optionSpecs.filter(\.configKey).map(\.long)))
        var list = file.accounts.map { (name: $0.name, values: file.defaults.merging($0.values) { $1 }) }
        if list.isEmpty { list = [("default", file.defaults)] }
        for name in args.accounts where !list.contains(where: { $0.name == name }) {
            throw UsageError(description: "no account \(name) in \(configPath) (it has: \(list.map(\.name).joined(separator: ", ")))")
        }
        if !args.accounts.isEmpty { list = list.filter { args.accounts.contains($0.name) } }
        // Paths in the file mean the same wherever wdsync starts (a shell, systemd, cron).
        for i in list.indices {
            for key in pathSettings {
                guard let value = list[i].values[key] else { continue }
                do {
                    let expanded = try expandPath(value, environment: environment)
                    guard expanded.hasPrefix("/") else {
                        throw UsageError(description: "\(key) = \(value) is a relative path, which would depend on the directory wdsync starts in; write an absolute path, ~/… or $HOME/…")
                    }
                    list[i].values[key] = expanded
                } catch let error as UsageError {
                    throw UsageError(description: "\(configPath), account \(list[i].name): \(error.description)")
                }
            }
        }
        sources = list
    } else {
        if let name = args.accounts.first {
            throw UsageError(description: "account \(name) needs a config file, and there is none at \(configPath) (see man wdsync.conf); or give --server, --user and a password on the command line")
        }
        sources = [("default", [:])]
    }

    let commandLine = args.values.filter { $0.key != "config" }
    if sources.count > 1, let key = accountSettings.first(where: { commandLine[$0] != nil }) {
        throw UsageError(description: "--\(key) on the command line would apply to all \(sources.count) accounts of \(configPath) (\(sources.map(\.name).joined(separator: ", "))): name the one it is for, e.g. wdsync \(sources[0].name) --\(key) …")
    }

    return try sources.map { source in
        var values = source.values
        // A password source on the command line replaces the file's, whichever kind it is.
        if commandLine["password-file"] != nil || commandLine["password-command"] != nil {
            values["password-file"] = nil
            values["password-command"] = nil
        }
        for (key, value) in commandLine { values[key] = pathSettings.contains(key) ? try expandPath(value, environment: environment) : value }
        let flags = args.flags
        guard let server = values["server"] ?? (credentials ? nil : "") else { throw UsageError(description: "no --server given for account \(source.name) (\(note))") }
        guard let user = values["user"] ?? (credentials ? nil : "") else { throw UsageError(description: "no --user given for account \(source.name) (\(note))") }
        let password: PasswordSource
        switch (values["password-file"], values["password-command"]) {
        case (let file?, nil): password = .file(file)
        case (nil, let command?): password = .command(command)
        case (nil, nil) where !credentials: password = .command("")
        case (nil, nil): throw UsageError(description: "give --password-file or --password-command for account \(source.name) (\(note))")
        default: throw UsageError(description: "give only one of --password-file and --password-command")
        }
        let layout: MaildirLayout
        switch values["layout"] ?? "verbatim" {
        case "verbatim": layout = .verbatim
        case "maildir++": layout = .maildirPlusPlus
        case let other: throw UsageError(description: "unknown layout \(other) (verbatim or maildir++)")
        }
        let connections = try values["connections"].map { text -> Int in
            guard let n = Int(text), (1...32).contains(n) else { throw UsageError(description: "--connections must be 1…32") }
            return n
        } ?? 4
        let base = "\(dataHome)/wdsync/\(source.name)"
        let insecure = flags.contains("insecure") || values["insecure"] == "true"
        var account = AccountConfig(name: source.name, server: server, username: user, password: password,
                                    maildir: values["maildir"] ?? base + "/mail",
                                    db: values["db"] ?? base + "/cache.sqlite",
                                    layout: layout, caFile: values["ca-file"], insecure: insecure,
                                    connections: connections)
        account.live = try liveOptions(values)
        account.pullOnly = try flag("pull-only", values, flags)
        account.allowMassDelete = flags.contains("allow-mass-delete")
        account.adoptMaildir = flags.contains("adopt-maildir")
        if let list = values["mass-delete-exempt"] {
            let names = list.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            account.massDeleteExempt = names.map { $0.lowercased() } == ["none"] ? [] : names
        }
        account.fullCheckNow = flags.contains("full-check")
        if let text = values["full-check-interval"] {
            guard let hours = Double(text), hours >= 0, hours.isFinite else {
                throw UsageError(description: "--full-check-interval must be a number of hours (0 = only with --full-check), not \(text)")
            }
            account.fullCheckInterval = hours * 3600
        }
        account.postSync = values["post-sync"].flatMap { $0.isEmpty ? nil : $0 }
        return account
    }
}

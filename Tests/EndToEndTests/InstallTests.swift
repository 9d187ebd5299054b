#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing

/// The option table as the single source: completions generated from it, man pages that must
/// name every option, and the install script that puts all of it in place.
@Suite(.serialized) struct InstallTests {
    /// Every long option `--help` lists (the table `--help`, the completions and the man page share).
    static func helpOptions() throws -> [String] {
        let h = try Harness()
        let help = try h.run(["--help"])
        #expect(help.status == 0)
        let options = help.stdout.split(separator: "\n").compactMap { line -> String? in
            guard let range = line.range(of: #"^\s+(-\w, )?--[a-z-]+"#, options: .regularExpression) else { return nil }
            return String(line[range].split(separator: " ").last ?? "")
        }
        #expect(options.count >= 20, "\(help.stdout)")
        return options
    }

    static func completion(_ shell: String, in h: Harness) throws -> String {
        let result = try h.run(["--completions", shell])
        #expect(result.status == 0, "\(result.stderr)")
        let path = h.dir + "/wdsync.\(shell)"
        try result.stdout.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test func bashCompletionOffersEveryOptionAndValues() throws {
        let h = try Harness()
        let options = try Self.helpOptions()
        let script = try Self.completion("bash", in: h)
        try FileManager.default.createDirectory(atPath: h.dir + "/config/wdsync", withIntermediateDirectories: true)
        try "[account work]\nserver = x\n[account  home ]\n".write(toFile: h.dir + "/config/wdsync/config", atomically: true, encoding: .utf8)
        try FileManager.default.createDirectory(atPath: h.dir + "/maildirs/one", withIntermediateDirectories: true)
        func complete(_ words: [String]) throws -> [String] {
            let quoted = words.map { "'\($0)'" }.joined(separator: " ")
            let driver = h.dir + "/complete.bash"
            try """
                source '\(script)'
                COMP_WORDS=(\(quoted)); COMP_CWORD=\(words.count - 1)
                _wdsync
                printf '%s\\n' "${COMPREPLY[@]}"

                """.write(toFile: driver, atomically: true, encoding: .utf8)
            let (status, output) = try shell("bash --norc '\(driver)'", cwd: h.dir,
                                             env: ["XDG_CONFIG_HOME": h.dir + "/config", "HOME": h.dir])
            #expect(status == 0, "\(output)")
            return output.split(separator: "\n").map(String.init)
        }
        let all = try complete(["wdsync", "--"])
        for option in options { #expect(all.contains(option), "bash completion lacks \(option)") }
        #expect(try complete(["wdsync", "--pass"]).sorted() == ["--password-command", "--password-file"])
        #expect(try complete(["wdsync", "-"]).contains("-v"))
        #expect(try complete(["wdsync", "--layout", ""]).sorted() == ["maildir++", "verbatim"])
        #expect(try complete(["wdsync", "--completions", "z"]) == ["zsh"])
        #expect(try complete(["wdsync", "--account", ""]).sorted() == ["home", "work"])
        #expect(try complete(["wdsync", "--maildir", "maildirs/"]) == ["maildirs/one"])
        #expect(try complete(["wdsync", "--server", ""]).isEmpty)
    }

    @Test func fishAndZshCompletionsParseAndOfferOptions() throws {
        let h = try Harness()
        let options = try Self.helpOptions()
        let fish = try Self.completion("fish", in: h)
        let (fishStatus, fishOut) = try shell("fish --no-config -c \"source '\(fish)'; complete -C 'wdsync --'\"", env: ["HOME": h.dir])
        #expect(fishStatus == 0, "\(fishOut)")
        let offered = Set(fishOut.split(separator: "\n").map { String($0.split(separator: "\t").first ?? "") })
        for option in options { #expect(offered.contains(option), "fish completion lacks \(option)") }
        let (_, layouts) = try shell("fish --no-config -c \"source '\(fish)'; complete -C 'wdsync --layout '\"", env: ["HOME": h.dir])
        #expect(layouts.contains("maildir++") && layouts.contains("verbatim"), "\(layouts)")

        let zsh = try Self.completion("zsh", in: h)
        let (zshStatus, zshOut) = try shell("zsh -n '\(zsh)'")
        #expect(zshStatus == 0, "\(zshOut)")
        let text = try String(contentsOfFile: zsh, encoding: .utf8)
        #expect(text.hasPrefix("#compdef wdsync"))
        for option in options { #expect(text.contains("\(option)[") || text.contains("\(option)=[") || text.contains(",\(option)}") || text.contains(",\(option)=}"), "zsh completion lacks \(option)") }
    }

    static let manDirectory = packageRoot.appendingPathComponent("contrib/man").path

    /// Renders a page as `man` does, with every groff warning enabled; returns text and warnings.
    static func render(_ page: String) throws -> (String, String) {
        let path = manDirectory + "/" + page
        let (status, text) = try shell("MANWIDTH=80 man -l '\(path)' 2>/dev/null")
        #expect(status == 0)
        let (_, warnings) = try shell("MANWIDTH=80 man --warnings=w -l '\(path)' 2>&1 >/dev/null; groff -ww -z -man '\(path)' 2>&1")
        return (text.replacingOccurrences(of: "\u{2010}", with: "-"), warnings)
    }

    @Test func manPagesRenderWithoutWarningsAndNameEveryOption() throws {
        let (page1, warnings1) = try Self.render("wdsync.1")
        #expect(warnings1.isEmpty, "wdsync.1: \(warnings1)")
        #expect(page1.contains("EXIT STATUS"))
        for option in try Self.helpOptions() {
            #expect(page1.contains(option), "wdsync.1 does not document \(option)")
        }
        for code in ["64", "65", "69", "74", "75", "76", "77"] { #expect(page1.contains(code)) }

        let (page5, warnings5) = try Self.render("wdsync.conf.5")
        #expect(warnings5.isEmpty, "wdsync.conf.5: \(warnings5)")
        // Every config key: an option of the table that the config file accepts.
        let h = try Harness()
        for option in try Self.helpOptions() {
            let key = String(option.dropFirst(2))
            let config = h.dir + "/probe-\(key)"
            try "\(key) = 1\n".write(toFile: config, atomically: true, encoding: .utf8)
            let result = try h.run(["--config", config])
            if !result.stderr.contains("unknown setting") {
                #expect(page5.contains(key), "wdsync.conf.5 does not document \(key)")
            }
        }
    }

    /// The install script into a temporary prefix, as an unprivileged user when the test runs as
    /// root (so it is shown to need no root), reusing the built binary instead of building.
    @Test func installScriptPutsEverythingInPlace() throws {
        let h = try Harness()
        let prefix = h.dir + "/pre fix"
        try FileManager.default.createDirectory(atPath: prefix, withIntermediateDirectories: true)
        var command = "sh '\(packageRoot.path)/contrib/install.sh' --prefix '\(prefix)' --binary '\(wdsyncBinary)'"
        if getuid() == 0 {
            let (readable, _) = try shell("setpriv --reuid=65534 --regid=65534 --clear-groups test -r '\(wdsyncBinary)' -a -r '\(packageRoot.path)/contrib/install.sh'")
            if readable == 0 {
                _ = try shell("chown -R 65534:65534 '\(h.dir)'")
                command = "setpriv --reuid=65534 --regid=65534 --clear-groups env HOME='\(h.dir)' " + command
            }
        }
        let (status, output) = try shell(command)
        #expect(status == 0, "\(output)")

        let binary = prefix + "/bin/wdsync"
        let (vStatus, vOut) = try shell("'\(binary)' --version")
        #expect(vStatus == 0 && vOut.hasPrefix("wdsync "), "\(vOut)")
        #expect(output.contains("installed \(vOut.trimmingCharacters(in: .whitespacesAndNewlines)) in "), "\(output)")
        let (manStatus, manPath) = try shell("MANPATH='\(prefix)/share/man' man -w wdsync wdsync.conf")
        #expect(manStatus == 0 && manPath.contains("man1/wdsync.1") && manPath.contains("man5/wdsync.conf.5"), "\(manPath)")
        for (shellName, path) in [("bash", "share/bash-completion/completions/wdsync"), ("zsh", "share/zsh/site-functions/_wdsync"),
                                  ("fish", "share/fish/vendor_completions.d/wdsync.fish")] {
            let installed = try String(contentsOfFile: prefix + "/" + path, encoding: .utf8)
            #expect(installed == (try h.run(["--completions", shellName])).stdout, "\(path)")
        }
        for unit in ["wdsync.service", "wdsync-once.service", "wdsync-once.timer"] {
            #expect(FileManager.default.fileExists(atPath: prefix + "/share/systemd/user/" + unit), "\(unit)")
        }
        for unit in ["wdsync.service", "wdsync-once.service"] {
            let text = try String(contentsOfFile: prefix + "/share/systemd/user/" + unit, encoding: .utf8)
            let exec = text.split(separator: "\n").filter { $0.hasPrefix("ExecStart=") }
            #expect(exec.count == 1 && exec[0].hasPrefix("ExecStart=\"\(binary)\""), "\(unit): \(exec)")
        }
        // Issue 24 item 8: the timer's Persistent= takes effect (only OnCalendar= timers have
        // it), a timer run while the daemon holds the lock is no failure, and the script
        // suggests the daemon or the timer, not both.
        let timer = try String(contentsOfFile: prefix + "/share/systemd/user/wdsync-once.timer", encoding: .utf8)
        #expect(timer.contains("\nPersistent=true") && timer.contains("\nOnCalendar=") && !timer.contains("\nOnUnitActiveSec="), "\(timer)")
        let once = try String(contentsOfFile: prefix + "/share/systemd/user/wdsync-once.service", encoding: .utf8)
        #expect(once.contains("\nSuccessExitStatus=75"), "\(once)")
        #expect(output.contains("choose one (not both"), "\(output)")
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/systemd-analyze") {
            let units = ["wdsync.service", "wdsync-once.service", "wdsync-once.timer"].map { "'\(prefix)/share/systemd/user/\($0)'" }
            let (verified, verifyOut) = try shell("systemd-analyze verify --man=no " + units.joined(separator: " "))
            #expect(verified == 0 && !verifyOut.contains("Unknown"), "\(verifyOut)")
        }
        // Installing again over an existing installation works (an upgrade).
        let (again, againOut) = try shell(command)
        #expect(again == 0, "\(againOut)")
    }
}

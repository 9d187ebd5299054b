import Foundation
import Testing

/// `wdsync --version` names the release and the commit the binary was built from (issue 21
/// item 8), read from .git by the EmbedVersion plugin's tool, which never fails a build.
@Suite struct VersionTests {
    /// The tool the plugin runs, built next to wdsync.
    static let tool = URL(fileURLWithPath: wdsyncBinary).deletingLastPathComponent().appendingPathComponent("embed-version-tool").path

    static func builtFrom(_ arguments: [String], in dir: String) throws -> String {
        let output = dir + "/BuildInfo.swift"
        let (status, text) = try shell(([tool, output] + arguments).map { "'\($0)'" }.joined(separator: " "))
        #expect(status == 0, "\(text)")
        let source = try String(contentsOfFile: output, encoding: .utf8)
        let line = source.split(separator: "\n").first { $0.hasPrefix("let builtFrom = ") } ?? ""
        return String(line.dropFirst("let builtFrom = ".count)).trimmingCharacters(in: CharacterSet(charactersIn: "\""))
    }

    @Test func versionNamesTheCommitOfThisCheckout() throws {
        let h = try Harness()
        let result = try h.run(["--version"])
        #expect(result.status == 0, "\(result.stderr)")
        let line = result.stdout.trimmingCharacters(in: .newlines)
        let pattern = #"^wdsync \d+\.\d+\.\d+(-[a-z0-9.]+)? \(commit ([0-9a-f]{12}(, \d{4}-\d{2}-\d{2})?|unknown)\)$"#
        #expect(line.range(of: pattern, options: .regularExpression) != nil, "\(line)")
        // The release it names is one CHANGELOG.md describes (the -dev suffix: its Unreleased part).
        let release = line.split(separator: " ")[1].split(separator: "-")[0]
        let changelog = try String(contentsOf: packageRoot.appendingPathComponent("CHANGELOG.md"), encoding: .utf8)
        #expect(changelog.contains("## [\(release)]") || (line.contains("-dev") && changelog.contains("## [Unreleased]")), "\(line)")

        guard FileManager.default.fileExists(atPath: packageRoot.appendingPathComponent(".git").path) else {
            print("VersionTests: no .git in \(packageRoot.path) (a tarball): the commit cannot be compared")
            return
        }
        let (status, head) = try shell("git -C '\(packageRoot.path)' rev-parse --short=12 HEAD")
        #expect(status == 0, "\(head)")
        #expect(line.contains("(commit \(head.trimmingCharacters(in: .whitespacesAndNewlines))"),
                "\(line): not HEAD's commit; was wdsync built before the last commit? (swift build rebuilds it)")
    }

    /// A worktree's .git is a file; its HEAD names a branch that only packed-refs holds.
    @Test func packedRefsAndDetachedHead() throws {
        let h = try Harness()
        let git = h.dir + "/repo/.git/worktrees/w", common = h.dir + "/repo/.git"
        try FileManager.default.createDirectory(atPath: git, withIntermediateDirectories: true)
        let id = "0123456789abcdef0123456789abcdef01234567", other = String(repeating: "e", count: 40)
        try "ref: refs/heads/feature\n".write(toFile: git + "/HEAD", atomically: true, encoding: .utf8)
        try "# pack-refs with: peeled fully-peeled sorted\n\(other) refs/heads/main\n\(id) refs/heads/feature\n"
            .write(toFile: common + "/packed-refs", atomically: true, encoding: .utf8)
        // Not a repository git can read, so there is no date: the commit alone.
        #expect(try Self.builtFrom([git, common], in: h.dir) == "commit 0123456789ab")

        try "\(other)\n".write(toFile: git + "/HEAD", atomically: true, encoding: .utf8)
        #expect(try Self.builtFrom([git, common], in: h.dir) == "commit eeeeeeeeeeee")
    }

    /// A tarball has no .git, a new repository has a branch without a commit: the build goes on.
    @Test func noRepositoryIsCommitUnknown() throws {
        let h = try Harness()
        #expect(try Self.builtFrom([], in: h.dir) == "commit unknown")
        let git = h.dir + "/.git"
        try FileManager.default.createDirectory(atPath: git + "/refs/heads", withIntermediateDirectories: true)
        try "ref: refs/heads/main\n".write(toFile: git + "/HEAD", atomically: true, encoding: .utf8)
        #expect(try Self.builtFrom([git, git], in: h.dir) == "commit unknown")
    }
}

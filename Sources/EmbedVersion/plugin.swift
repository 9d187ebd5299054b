import Foundation
import PackagePlugin

/// Generates BuildInfo.swift: the commit the binary is built from, for `wdsync --version`.
/// The command's inputs are the files that name HEAD's commit, so it runs again when HEAD or
/// its branch moves. Without a .git (a tarball) it runs once and the binary says "commit unknown".
@main
struct EmbedVersion: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        let output = context.pluginWorkDirectoryURL.appending(path: "BuildInfo.swift")
        var arguments = [output.path]
        var inputs: [URL] = []
        if let (gitDir, commonDir) = Self.gitDirectories(root: context.package.directoryURL) {
            arguments += [gitDir.path, commonDir.path]
            inputs = [gitDir.appending(path: "HEAD"), commonDir.appending(path: "packed-refs")]
            if let head = try? String(contentsOf: gitDir.appending(path: "HEAD"), encoding: .utf8),
               head.hasPrefix("ref: ") {
                inputs.append(commonDir.appending(path: head.dropFirst(5).trimmingCharacters(in: .whitespacesAndNewlines)))
            }
            // A file that does not exist (a ref only in packed-refs) is no input: llbuild would
            // treat it as always changed or missing.
            inputs = inputs.filter { FileManager.default.fileExists(atPath: $0.path) }
        }
        return [.buildCommand(
            displayName: "Embedding the commit the build is from",
            executable: try context.tool(named: "embed-version").url,
            arguments: arguments,
            inputFiles: inputs,
            outputFiles: [output])]
    }

    /// The repository's own directory (HEAD) and the one holding refs: the same for a clone,
    /// different in a `git worktree`, where .git is a file `gitdir: PATH`.
    static func gitDirectories(root: URL) -> (URL, URL)? {
        let dotGit = root.appending(path: ".git")
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dotGit.path, isDirectory: &isDirectory) else { return nil }
        if isDirectory.boolValue { return (dotGit, dotGit) }
        guard let text = try? String(contentsOf: dotGit, encoding: .utf8), text.hasPrefix("gitdir: ") else { return nil }
        let path = text.dropFirst(8).trimmingCharacters(in: .whitespacesAndNewlines)
        let gitDir = path.hasPrefix("/") ? URL(fileURLWithPath: path) : root.appending(path: path)
        guard let common = try? String(contentsOf: gitDir.appending(path: "commondir"), encoding: .utf8) else {
            return (gitDir, gitDir)
        }
        let commonPath = common.trimmingCharacters(in: .whitespacesAndNewlines)
        let commonDir = commonPath.hasPrefix("/") ? URL(fileURLWithPath: commonPath) : gitDir.appending(path: commonPath)
        return (gitDir, commonDir.standardizedFileURL)
    }
}

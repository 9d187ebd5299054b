import Foundation
import Testing
@testable import Fuzz

let corpusRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("contrib/fuzz/corpus")

/// The committed fuzz corpus (seeds and every input that once crashed) as regression tests:
/// each input goes through its target, which stops the process if an invariant fails.
@Suite struct CorpusTests {
    @Test(arguments: FuzzTarget.allCases)
    func corpusRunsClean(target: FuzzTarget) throws {
        let dir = corpusRoot.appendingPathComponent(target.rawValue)
        let files = try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted()
        #expect(!files.isEmpty, "no corpus for \(target.rawValue)")
        for file in files {
            let data = try #require(FileManager.default.contents(atPath: dir.appendingPathComponent(file).path))
            target.run(Array(data))
        }
    }
}

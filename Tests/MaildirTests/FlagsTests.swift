import Testing
@testable import Maildir

@Suite("Flags")
struct FlagsTests {
    @Test("info string is sorted and complete")
    func info() {
        #expect(MessageFlags().info == ":2,")
        #expect(MessageFlags([.seen, .flagged]).info == ":2,FS")
        #expect(MessageFlags([.trashed, .draft, .replied, .passed, .seen, .flagged]).info == ":2,DFPRST")
        #expect(MessageFlags.replied.letters == "R")
    }

    @Test("parsing ignores unknown and lowercase letters")
    func parse() {
        #expect(MessageFlags(fileName: "1.a.h:2,FRSab") == [.flagged, .replied, .seen])
        #expect(MessageFlags(fileName: "1.a.h:2,") == [])
        #expect(MessageFlags(fileName: "1.a.h") == [])
        #expect(MessageFlags(fileName: "1.a.h:1,S") == [])
        #expect(MessageFlags(fileName: "1.a.h:2,TSRPFD") == [.draft, .flagged, .passed, .replied, .seen, .trashed])
    }

    @Test("every combination round-trips")
    func roundTrip() {
        for raw in 0..<64 {
            let flags = MessageFlags(rawValue: raw)
            #expect(MessageFlags(fileName: "x" + flags.info) == flags)
            let letters = Array(flags.letters.utf8)
            #expect(letters == letters.sorted())
        }
    }

    @Test("the info is found by its ':' byte even after a mark that joins the next Character")
    func infoAfterPrependedMark() {
        // U+0605 is a prepended concatenation mark: "\u{0605}:" is a single Character.
        let name = "1750000000.M1P1.host\u{0605}:2,FS"
        #expect(MessageFlags(fileName: name) == [.flagged, .seen])
        #expect(Maildir.uniquePart(ofFileName: name) == "1750000000.M1P1.host\u{0605}")
    }
    @Test func flagsMergeThreeWay() {
        let merge = MessageFlags.merge
        // Only the server changed: pulled. Only local changed: kept.
        #expect(merge([.seen], [.seen], [.seen, .flagged]) == [.seen, .flagged])
        #expect(merge([.seen, .flagged], [.seen], [.seen]) == [.seen, .flagged])
        // Different flags on the two sides: both.
        #expect(merge([.seen], [], [.flagged]) == [.seen, .flagged])
        // The same flag on both sides: local.
        #expect(merge([], [.seen], [.seen, .trashed]) == [.trashed])
        // A local R is not stripped by a server change to something else.
        #expect(merge([.replied, .seen], [.seen], [.seen, .flagged]) == [.replied, .seen, .flagged])
    }

    @Test func pushableChangesAndTakingAreBitwise() {
        // Only S, F and T are sent; D, R and P stay local.
        #expect(MessageFlags([.seen, .replied, .draft]).pushableChanges(from: [.flagged]) == [.seen, .flagged])
        #expect(MessageFlags([.replied]).pushableChanges(from: [.passed, .draft]).isEmpty)
        // The base after the server confirmed what was sent: S/F/T from it, the rest kept.
        #expect(MessageFlags([.replied, .trashed]).taking(.pushable, from: [.seen, .draft]) == [.replied, .seen])
        // A T held back by the breaker keeps the base's T.
        #expect(MessageFlags([.seen, .trashed]).taking(.trashed, from: [.seen]) == [.seen])
        // Changes on disk over a row that holds a server change not yet exported.
        let before = MessageFlags(fileName: "1.a.h:2,S"), now = MessageFlags(fileName: "1.a.h:2,FS")
        #expect(MessageFlags([.seen, .replied]).taking(before.symmetricDifference(now), from: now) == [.seen, .replied, .flagged])
    }
}

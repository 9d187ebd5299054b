import Testing
@testable import Maildir

@Suite("Flags")
struct FlagsTests {
    @Test("info string is sorted and complete")
    func info() {
        #expect(MaildirFlags().info == ":2,")
        #expect(MaildirFlags([.seen, .flagged]).info == ":2,FS")
        #expect(MaildirFlags([.trashed, .draft, .replied, .passed, .seen, .flagged]).info == ":2,DFPRST")
        #expect(MaildirFlags.replied.letters == "R")
    }

    @Test("parsing ignores unknown and lowercase letters")
    func parse() {
        #expect(MaildirFlags(fileName: "1.a.h:2,FRSab") == [.flagged, .replied, .seen])
        #expect(MaildirFlags(fileName: "1.a.h:2,") == [])
        #expect(MaildirFlags(fileName: "1.a.h") == [])
        #expect(MaildirFlags(fileName: "1.a.h:1,S") == [])
        #expect(MaildirFlags(fileName: "1.a.h:2,TSRPFD") == [.draft, .flagged, .passed, .replied, .seen, .trashed])
    }

    @Test("every combination round-trips")
    func roundTrip() {
        for raw in UInt8(0)..<64 {
            let flags = MaildirFlags(rawValue: raw)
            #expect(MaildirFlags(fileName: "x" + flags.info) == flags)
            let letters = Array(flags.letters.utf8)
            #expect(letters == letters.sorted())
        }
    }

    @Test("the info is found by its ':' byte even after a mark that joins the next Character")
    func infoAfterPrependedMark() {
        // U+0605 is a prepended concatenation mark: "\u{0605}:" is a single Character.
        let name = "1750000000.M1P1.host\u{0605}:2,FS"
        #expect(MaildirFlags(fileName: name) == [.flagged, .seen])
        #expect(Maildir.uniquePart(ofFileName: name) == "1750000000.M1P1.host\u{0605}")
    }
}

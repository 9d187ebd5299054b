import Testing
import Maildir
import WildDuck
@testable import Sync

/// The server's forms of flags, converted in one place (`Sources/Sync/Flags.swift`).
@Suite struct FlagConversionTests {
    @Test func aListingsBooleansAreTheSixFlags() throws {
        let json = try JSON.parse(#"{"id":7,"size":10,"seen":true,"flagged":false,"draft":true,"deleted":true,"answered":true,"forwarded":false}"#)
        let item = try #require(MessageItem(json))
        #expect(MessageFlags(listing: item) == [.seen, .draft, .trashed, .replied])
    }

    @Test func imapNamesFollowTheRestRuleForForwarded() {
        #expect(MessageFlags(imap: ["\\Seen", "\\Flagged", "\\Deleted", "\\Draft"]) == [.seen, .flagged, .trashed, .draft])
        #expect(MessageFlags(imap: ["\\ANSWERED"]) == [.replied])
        // WildDuck's listing shows a forwarded message as forwarded, not also as answered.
        #expect(MessageFlags(imap: ["\\Answered", "$Forwarded"]) == [.passed])
        #expect(MessageFlags(imap: ["$Junk", "\\Recent"]).isEmpty)
    }

    @Test func theFlagUpdateIsOnlyTheChangedSFT() {
        let update = MessageFlags([.seen, .trashed, .replied]).flagUpdate(from: [.flagged, .trashed])
        #expect(update == FlagUpdate(seen: true, flagged: false))
        #expect(update.key == "seen=true,flagged=false")
        #expect(MessageFlags([.replied, .passed]).flagUpdate(from: [.draft]).isEmpty)
        #expect(MessageFlags([.trashed]).flagUpdate(from: []) == FlagUpdate(deleted: true))
    }
}

import WildDuck

/// Guards a cursor listing against a server (or a proxy) whose listing never ends: a page
/// whose next cursor was given before, a page with nothing the listing had not given yet, or
/// more items than the listing can hold all stop it with an error, and so does a stop request
/// (SIGTERM). What was read is kept; nothing is removed on the word of such a listing.
struct Paging {
    let route: String
    /// The most items the listing can honestly give.
    let limit: Int
    let isCancelled: () -> Bool
    private var cursors = Set<String>()
    private var seen = Set<String>()
    private var count = 0

    init(route: String, limit: Int, isCancelled: @escaping () -> Bool) {
        self.route = route
        self.limit = limit
        self.isCancelled = isCancelled
    }

    /// The most items a listing of `total` messages can give: twice as many, and 1000 more
    /// for what arrives while it is read, is far more than any honest listing gives.
    static func limit(total: Int) -> Int { 2 * max(0, total) + 1000 }

    /// The cursor of the next page, or nil when `page` was the last.
    mutating func next(after page: MessagePage) throws -> String? {
        if isCancelled() { throw SyncError.cancelled }
        var fresh = 0
        for item in page.items where seen.insert("\(item.mailbox ?? "") \(item.uid)").inserted { fresh += 1 }
        count += page.items.count
        guard let next = page.nextCursor, !page.items.isEmpty else { return nil }
        if fresh == 0 { throw endless("a page with only messages it had already listed") }
        if !cursors.insert(next).inserted { throw endless("a cursor it had already given") }
        if count > limit { throw endless("more than \(limit) messages") }
        return next
    }

    private func endless(_ what: String) -> WildDuckError {
        .malformed(route: route, detail: "the listing does not end (\(what)); the run stopped there, nothing was removed on its word, and the next run lists it again")
    }
}

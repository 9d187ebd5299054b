import Foundation

/// Opaque cursor: base64url of `c1:<n|p>:<a>:<b>:<page>` where (a, b) is the sort key of the boundary item.
struct PageCursor: Sendable, Equatable {
    var forward: Bool
    var key: SortKey
    var page: Int

    var encoded: String { Base64URL.encode("c1:\(forward ? "n" : "p"):\(key.a):\(key.b):\(page)") }

    static func decode(_ s: String) -> PageCursor? {
        guard let text = Base64URL.decode(s) else { return nil }
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 5, parts[0] == "c1", parts[1] == "n" || parts[1] == "p",
              let a = Int64(parts[2]), let b = Int64(parts[3]), let p = Int(parts[4]), p >= 1 else { return nil }
        return PageCursor(forward: parts[1] == "n", key: SortKey(a: a, b: b), page: p)
    }
}

struct PageResult {
    /// indices into the ascending array, in output order
    var indices: [Int]
    var page: Int
    var previousCursor: PageCursor?
    var nextCursor: PageCursor?
}

enum Paging {
    /// First index in 0..<n for which `less(i)` is false (predicate must be monotone: true…true false…false).
    static func lowerBound(_ n: Int, _ less: (Int) -> Bool) -> Int {
        var lo = 0, hi = n
        while lo < hi {
            let mid = (lo + hi) / 2
            if less(mid) { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    /// Pages over `n` items sorted ascending by `keyAt`.
    static func page(count n: Int, keyAt: (Int) -> SortKey, ascending: Bool, cursor: PageCursor?, limit: Int) -> PageResult {
        func lb(_ k: SortKey) -> Int { lowerBound(n) { keyAt($0) < k } }     // first >= k
        func ub(_ k: SortKey) -> Int { lowerBound(n) { !(k < keyAt($0)) } }  // first > k
        var s = 0, e = 0
        if ascending {
            if let c = cursor {
                if c.forward { s = ub(c.key); e = min(n, s + limit) } else { e = lb(c.key); s = max(0, e - limit) }
            } else { s = 0; e = min(n, limit) }
        } else {
            if let c = cursor {
                if c.forward { e = lb(c.key); s = max(0, e - limit) } else { s = ub(c.key); e = min(n, s + limit) }
            } else { e = n; s = max(0, n - limit) }
        }
        let indices: [Int] = ascending ? Array(s..<e) : Array((s..<e).reversed())
        let hasPrev = ascending ? s > 0 : e < n
        let hasNext = ascending ? e < n : s > 0
        var page = cursor?.page ?? 1
        if !hasPrev { page = 1 }
        var result = PageResult(indices: indices, page: page, previousCursor: nil, nextCursor: nil)
        if let first = indices.first, hasPrev {
            result.previousCursor = PageCursor(forward: false, key: keyAt(first), page: max(1, page - 1))
        }
        if let last = indices.last, hasNext {
            result.nextCursor = PageCursor(forward: true, key: keyAt(last), page: page + 1)
        }
        return result
    }
}

/// `1,2,3` | `3:15` | `3:*` | `*`
struct UidSet: Sendable {
    var ranges: [ClosedRange<Int>]

    static func parse(_ s: String) -> UidSet? {
        var ranges: [ClosedRange<Int>] = []
        for part in s.split(separator: ",", omittingEmptySubsequences: false) {
            let p = part.trimmingCharacters(in: .whitespaces)
            func val(_ x: Substring) -> Int? { x == "*" ? Int.max : (Int(x).flatMap { $0 >= 1 ? $0 : nil }) }
            if let colon = p.firstIndex(of: ":") {
                guard let a = val(p[..<colon]), let b = val(p[p.index(after: colon)...]) else { return nil }
                ranges.append(min(a, b)...max(a, b))
            } else {
                guard let a = val(Substring(p)) else { return nil }
                ranges.append(a...a)
            }
        }
        return ranges.isEmpty ? nil : UidSet(ranges: ranges)
    }

    func contains(_ uid: Int) -> Bool { ranges.contains { $0.contains(uid) } }
}

/// Search filters (`GET /users/:user/search`).
struct SearchQuery: Sendable {
    var mailbox: String?
    var uids: UidSet?
    var thread: String?
    var flagged: Bool?
    var unseen: Bool?
    var attachments: Bool?
    var searchable = false
    var from: String?
    var to: String?
    var subject: String?
    var text: String?
    var dateStart: Int64?
    var dateEnd: Int64?
    var minSize: Int?
    var maxSize: Int?

    /// No filter but the mailbox: every message matches.
    var matchesAll: Bool {
        uids == nil && thread == nil && flagged != true && unseen != true && attachments != true && !searchable
            && from == nil && to == nil && subject == nil && text == nil && dateStart == nil && dateEnd == nil
            && minSize == nil && maxSize == nil
    }

    /// WildDuck's `prepareSearchFilter` (lib/prepare-search-filter.js): `flagged`, `unseen` and
    /// `attachments` filter only when true (false is no filter); `unseen` and `searchable` also skip
    /// messages stored with \Deleted; from/to/subject are case-insensitive substrings of the decoded
    /// header (to also matches Cc).
    func matches(_ r: MsgRecord) -> Bool {
        if let u = uids, !u.contains(r.uid) { return false }
        let c = r.content
        if let t = thread, c.thread != t { return false }
        if flagged == true, !r.flags.listedFlagged { return false }
        if unseen == true, r.flags.seen || !r.searchable { return false }
        if searchable, !r.searchable { return false }
        if attachments == true, !c.parsed.hasAttachments { return false }
        if let d = dateStart, r.idate < d { return false }
        if let d = dateEnd, r.idate > d { return false }
        if let m = minSize, c.size < m { return false }
        if let m = maxSize, c.size > m { return false }
        func has(_ hay: String, _ needle: String) -> Bool { hay.range(of: needle, options: .caseInsensitive) != nil }
        func header(_ list: [SimAddress]) -> String {
            list.map { $0.name.isEmpty ? $0.address : "\($0.name) <\($0.address)>" }.joined(separator: ", ")
        }
        if let f = from, !has(header(c.parsed.from.map { [$0] } ?? []), f) { return false }
        if let t = to, !(has(header(c.parsed.to), t) || has(header(c.parsed.cc), t)) { return false }
        if let s = subject, !has(c.subject, s) { return false }
        if let q = text, !(has(c.subject, q) || has(c.parsed.text, q) || c.parsed.html.contains(where: { has($0, q) })) { return false }
        return true
    }
}

struct ListedMessage: Sendable {
    var mailbox: String
    var record: MsgRecord
}

extension SimAccount {
    /// The message list of one mailbox (ordered by idate, ties by uid).
    func listPage(mailboxId: String, ascending: Bool, cursor: PageCursor?, limit: Int, unseenOnly: Bool)
        throws -> (total: Int, specialUse: String?, items: [ListedMessage], result: PageResult) {
        try state.withLock { s in
            guard let mb = s.mailboxes[mailboxId] else { throw SimAccountError.noSuchMailbox }
            if unseenOnly {
                let recs = mb.byDate.filter { !$0.flags.seen }
                let r = Paging.page(count: recs.count, keyAt: { recs[$0].key }, ascending: ascending, cursor: cursor, limit: limit)
                return (recs.count, mb.specialUse, r.indices.map { ListedMessage(mailbox: mailboxId, record: recs[$0]) }, r)
            }
            let arr = mb.byDate
            let r = Paging.page(count: arr.count, keyAt: { arr[$0].key }, ascending: ascending, cursor: cursor, limit: limit)
            return (arr.count, mb.specialUse, r.indices.map { ListedMessage(mailbox: mailboxId, record: arr[$0]) }, r)
        }
    }

    /// Search. With `byInsertion` the key is the insertion sequence (the server's `_id` order when `order` is omitted).
    func search(_ q: SearchQuery, ascending: Bool, byInsertion: Bool, cursor: PageCursor?, limit: Int)
        -> (total: Int, items: [ListedMessage], result: PageResult) {
        state.withLock { s in
            // Matches are collected as (key, mailbox, index) and only the page is copied out:
            // sorting full records made an account-wide search of 100,000 messages take 150 ms,
            // where WildDuck walks an index.
            var found: [(key: SortKey, box: Int, index: Int)] = []
            let boxes: [MailboxState]
            if let m = q.mailbox {
                // an unknown mailbox matches nothing (WildDuck does not look it up)
                boxes = s.mailboxes[m].map { [$0] } ?? []
            } else {
                boxes = Array(s.mailboxes.values).filter { !q.searchable || !($0.specialUse == "\\Junk" || $0.specialUse == "\\Trash") }
            }
            for (b, mb) in boxes.enumerated() {
                // (idate, seq): seq is unique across mailboxes and follows uid order inside one mailbox
                func key(_ r: MsgRecord) -> SortKey { byInsertion ? SortKey(a: r.seq, b: 0) : SortKey(a: r.idate, b: r.seq) }
                if q.mailbox != nil, let u = q.uids {
                    // collect by uid ranges (binary search on the sorted uid list)
                    for range in u.ranges {
                        var i = Paging.lowerBound(mb.uids.count) { mb.uids[$0] < range.lowerBound }
                        while i < mb.uids.count, mb.uids[i] <= range.upperBound {
                            if let idx = mb.index(ofUid: mb.uids[i]), q.matches(mb.byDate[idx]) {
                                found.append((key(mb.byDate[idx]), b, idx))
                            }
                            i += 1
                        }
                    }
                } else {
                    let all = q.matchesAll
                    for idx in mb.byDate.indices where all || q.matches(mb.byDate[idx]) { found.append((key(mb.byDate[idx]), b, idx)) }
                }
            }
            found.sort { $0.key < $1.key }
            // remove duplicates from overlapping ranges (one mailbox: the index is the message)
            if q.mailbox != nil, let u = q.uids, u.ranges.count > 1 {
                var seen = Set<Int>()
                found = found.filter { seen.insert($0.index).inserted }
            }
            let r = Paging.page(count: found.count, keyAt: { found[$0].key }, ascending: ascending, cursor: cursor, limit: limit)
            return (found.count, r.indices.map { ListedMessage(mailbox: boxes[found[$0].box].id, record: boxes[found[$0].box].byDate[found[$0].index]) }, r)
        }
    }
}

import Testing
@testable import Maildir

@Suite("Folder names")
struct FolderNamesTests {
    @Test("verbatim: plain paths stay readable")
    func verbatimPlain() {
        let md = Maildir(root: "/m", layout: .verbatim)
        #expect(md.folderDirectory(for: "INBOX") == "INBOX")
        #expect(md.folderDirectory(for: "Work/Projects") == "Work/Projects")
        #expect(md.folderDirectory(for: "Entwürfe") == "Entwürfe")
        #expect(md.folderDirectory(for: "Sent Mail") == "Sent Mail")
        #expect(md.folderDirectory(for: "a.b") == "a.b")
    }

    @Test("maildir++: INBOX is the root, others are dot folders")
    func maildirPlusPlusPlain() {
        let md = Maildir(root: "/m", layout: .maildirPlusPlus)
        #expect(md.folderDirectory(for: "INBOX") == "")
        #expect(md.folderDirectory(for: "Work/Projects") == ".Work.Projects")
        #expect(md.folderDirectory(for: "INBOX/Sub") == ".INBOX.Sub")
        #expect(md.folderDirectory(for: "a.b/c") == ".a%2Eb.c")
        #expect(md.folderDirectory(for: "cur") == ".cur")
        #expect(md.mailboxPath(forFolderDirectory: "") == "INBOX")
        #expect(md.mailboxPath(forFolderDirectory: ".INBOX") == nil)  // never produced
    }

    @Test("verbatim: hostile names are encoded", arguments: [
        ("..", "%2E."), (".", "%2E"), ("../../etc", "%2E./%2E./etc"), ("a/../../b", "a/%2E./%2E./b"),
        (".hidden", "%2Ehidden"), ("cur", "%63ur"), ("Work/new", "Work/%6Eew"), ("tmp/x", "%74mp/x"),
        ("x\u{0}y", "x%00y"), ("\n", "%0A"), ("100%", "100%25"), ("a//b", "a/%/b"), ("", "%"),
        ("/lead", "%/lead"), ("trail/", "trail/%"), ("a\u{85}b", "a%C2%85b"), ("del\u{7F}", "del%7F"),
        ("curious", "curious"), ("Cur", "Cur"), ("a.", "a."),
    ])
    func verbatimHostile(input: String, expected: String) {
        let encoded = FolderNames.encode(input, layout: .verbatim)
        #expect(encoded == expected)
        #expect(FolderNames.decode(encoded, layout: .verbatim).map { Array($0.utf8) } == Array(input.utf8))
    }

    @Test("maildir++: hostile names are encoded", arguments: [
        ("..", ".%2E%2E"), ("../../etc", ".%2E%2E.%2E%2E.etc"), (".hidden", ".%2Ehidden"),
        ("x\u{0}y", ".x%00y"), ("a//b", ".a.%.b"), ("", ".%"), ("100%", ".100%25"), ("Work/new", ".Work.new"),
    ])
    func maildirPlusPlusHostile(input: String, expected: String) {
        let encoded = FolderNames.encode(input, layout: .maildirPlusPlus)
        #expect(encoded == expected)
        #expect(FolderNames.decode(encoded, layout: .maildirPlusPlus).map { Array($0.utf8) } == Array(input.utf8))
    }

    @Test("invalid UTF-8 bytes are percent-encoded and decode back", arguments: MaildirLayout.allCases)
    func invalidUTF8(layout: MaildirLayout) {
        let raw: [UInt8] = [0x41, 0xFF, 0x2F, 0xC3, 0x28, 0xED, 0xA0, 0x80, 0xC3, 0xA4]
        let encoded = FolderNames.encode(bytes: raw, layout: layout)
        #expect(encoded.contains("%FF"))
        #expect(encoded.contains("%C3("))
        #expect(encoded.contains("%ED%A0%80"))
        #expect(encoded.hasSuffix("ä"))
        #expect(FolderNames.decodeBytes(encoded, layout: layout) == raw)
        #expect(FolderNames.decode(encoded, layout: layout) == nil)  // not valid UTF-8 as a String
        // A String built from those bytes holds U+FFFD instead; that is encoded as-is.
        let repaired = String(decoding: raw, as: UTF8.self)
        let e2 = FolderNames.encode(repaired, layout: layout)
        #expect(e2.contains("\u{FFFD}"))
        #expect(FolderNames.decode(e2, layout: layout) == repaired)
    }

    @Test("over-long segments are truncated with a hash and stay distinct", arguments: MaildirLayout.allCases)
    func overLong(layout: MaildirLayout) {
        let a = String(repeating: "a", count: 1000)
        let b = String(repeating: "a", count: 999) + "b"
        let ea = FolderNames.encode(a, layout: layout)
        let eb = FolderNames.encode(b, layout: layout)
        #expect(ea != eb)
        for name in ea.split(separator: "/") + eb.split(separator: "/") {
            #expect(name.utf8.count <= FolderNames.maxFolderNameBytes)
        }
        #expect(ea.contains("%~"))
        #expect(FolderNames.decode(ea, layout: layout) == nil)  // reversible only through the database
        // Multi-byte characters and escapes are not cut in half.
        let wide = String(repeating: "ü%", count: 200)
        let ew = FolderNames.encode(wide, layout: layout)
        #expect(ew.utf8.count <= 200)
        let prefix = ew[..<(ew.range(of: "%~")?.lowerBound ?? ew.endIndex)]
        #expect(prefix.hasSuffix("ü") || prefix.hasSuffix("%25") || prefix.hasSuffix("."))
        // Exactly 200 bytes is kept as is (notmuch's limit, not the file system's); 201 is truncated.
        let edge = String(repeating: "z", count: layout == .verbatim ? 200 : 199)
        #expect(FolderNames.encode(edge, layout: layout).contains("%~") == false)
        #expect(FolderNames.encode(edge + "z", layout: layout).contains("%~"))
    }

    @Test("decode rejects names the encoder never produces", arguments: [
        "%zz", "%2e", "a%", "%4", ".x", "..", "cur", "a/cur", "", "a//b", "%41", "x%~0123",
    ])
    func strictDecode(name: String) {
        #expect(FolderNames.decode(name, layout: .verbatim) == nil)
    }

    @Test("maildir++ decode rejects foreign names", arguments: ["Work", ".a.b%", ".a%2e", "..", ".INBOX", ".a.%41"])
    func strictDecodePlusPlus(name: String) {
        #expect(FolderNames.decode(name, layout: .maildirPlusPlus) == nil)
    }

    /// Checks that a folder directory cannot escape the root or alias a Maildir subdirectory.
    static func assertSafe(_ folder: String, layout: MaildirLayout) {
        #expect(!folder.utf8.contains(0))
        switch layout {
        case .verbatim:
            let parts = folder.split(separator: "/", omittingEmptySubsequences: false)
            for p in parts {
                #expect(!p.isEmpty && p != "." && p != ".." && !p.hasPrefix("."))
                #expect(p != "cur" && p != "new" && p != "tmp")
                #expect(p.utf8.count <= 200)
            }
        case .maildirPlusPlus:
            #expect(!folder.contains("/"))
            if !folder.isEmpty {
                #expect(folder.hasPrefix(".") && folder != "." && folder != ".." && !folder.hasPrefix(".."))
                #expect(folder.utf8.count <= 200)
            }
        }
    }

    @Test("randomized: injective, safe and round-tripping (fixed seed)", arguments: MaildirLayout.allCases)
    func randomized(layout: MaildirLayout) {
        var rng = SplitMix64(seed: 0x5EED_0F_3A11D1)
        var byPath: [[UInt8]: String] = [:]
        var occupied: [String] = []  // every directory name a folder occupies
        for _ in 0..<20_000 {
            let path = randomPathBytes(&rng)
            if byPath[path] != nil { continue }
            let folder = FolderNames.encode(bytes: path, layout: layout)
            byPath[path] = folder
            Self.assertSafe(folder, layout: layout)
            if !folder.contains("%~") {
                #expect(FolderNames.decodeBytes(folder, layout: layout) == path)
            }
            // The folder and its Maildir subdirectories must belong to nobody else.
            occupied += [folder] + ["cur", "new", "tmp"].map { joinPath(folder, $0) }
        }
        let collisions = occupied.count - Set(occupied).count
        #expect(collisions == 0)
        #expect(Set(byPath.values).count == byPath.count)
        #expect(byPath.count > 5_000)
    }

    @Test("randomized paths created on disk stay under the root", arguments: MaildirLayout.allCases)
    func noEscapeOnDisk(layout: MaildirLayout) throws {
        let tmp = TempDir()
        let root = tmp.path + "/mail"
        let md = Maildir(root: root, layout: layout)
        try md.ensureFolder("")
        guard let realRoot = realPath(root) else { Issue.record("no root"); return }
        var rng = SplitMix64(seed: 42)
        var paths: [[UInt8]] = [
            Array("..".utf8), Array("../../etc".utf8), Array("a/../../b".utf8), Array(".hidden".utf8),
            Array("cur".utf8), Array("Work/new".utf8), Array("x\u{0}y".utf8), Array("\n".utf8),
            Array(String(repeating: "L", count: 1000).utf8), [0xFF, 0xFE], Array("%".utf8), Array("/".utf8),
        ]
        for _ in 0..<300 { paths.append(randomPathBytes(&rng)) }
        var made = Set<String>()
        for path in paths {
            let folder = FolderNames.encode(bytes: path, layout: layout)
            // A deep path of long names can exceed PATH_MAX; that is reported, not escaped.
            let result = Result { () throws(MaildirError) in try md.ensureFolder(folder) }
            if case .failure(let error) = result {
                guard case .nameTooLong = error else { Issue.record("\(error)"); continue }
                continue
            }
            guard let real = realPath(md.absolutePath(folder)) else { Issue.record("missing \(folder)"); continue }
            #expect(real == realRoot || real.hasPrefix(realRoot + "/"))
            if !folder.isEmpty { #expect(real.hasPrefix(realRoot + "/")) }
            made.insert(real)
        }
        // Nothing was created outside the root.
        #expect(listing(tmp.path) == ["mail"])
    }

    @Test("unique names escape / and : and never start with a dot")
    func uniqueNames() {
        #expect(Maildir.uniqueName(time: 1_700_000_000, key: "65a1f0c2e4b0a1b2c3d4e5f6", host: "mail.example.com")
            == "1700000000.65a1f0c2e4b0a1b2c3d4e5f6.mail.example.com")
        let u = Maildir.uniqueName(time: 5, key: "a/b:c.d", host: "h/o:st")
        #expect(u == "5.a\\057b\\072c\\056d.h\\057o\\072st")
        #expect(!u.contains("/") && !u.contains(":") && !u.hasPrefix("."))
        #expect(Maildir.uniqueName(time: 1, key: "k", host: "a,S=1 b") == "1.k.a\\054S=1\\040b")
        #expect(Maildir.uniquePart(ofFileName: "1.k.h:2,FS") == "1.k.h")
        #expect(Maildir.uniquePart(ofFileName: "1.k.h") == "1.k.h")
    }
}

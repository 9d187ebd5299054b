import Foundation

/// The config file: `key = value` lines, `#` comments, `[account NAME]` sections. Lines before
/// the first section are defaults for every account. What a value means is decided by the
/// command line's option of the same name; this only reads the structure.
///
/// Choices: a file that is not UTF-8 is refused (a password command is never silently
/// altered); CRLF line ends are accepted; a key given twice in one section keeps the last
/// value (as on a command line); an account name must be usable as a folder name (it names the
/// default cache and Maildir folders), and a name used twice is an error.
public struct ConfigFile: Sendable, Equatable {
    public struct Account: Sendable, Equatable {
        public var name: String
        public var values: [String: String]
        public init(name: String, values: [String: String]) { self.name = name; self.values = values }
    }
    public var defaults: [String: String] = [:]
    public var accounts: [Account] = []

    /// Reads and parses the file at `path`; `keys` are the settings allowed in it.
    public init(path: String, keys: Set<String>) throws {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigFileError("cannot read the config file \(path)")
        }
        try self.init(bytes: Array(data), path: path, keys: keys)
    }

    /// Parses the file's bytes; `path` only names the file in errors ("PATH:LINE: what").
    public init(bytes: [UInt8], path: String, keys: Set<String>) throws {
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw ConfigFileError("\(path) is not UTF-8 text")
        }
        // Lines are split at the byte '\n' (a Swift Character would join "\r\n" into one).
        var current: Int?
        for (number, rawLine) in text.utf8.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).enumerated() {
            let at = "\(path):\(number + 1)"
            // Scalars, not Characters, throughout: a combining mark after '[' or '=' must not
            // hide it.
            let line = Self.trim(Substring(rawLine))
            let scalars = line.unicodeScalars
            if scalars.isEmpty || scalars.first == "#" { continue }
            if scalars.first == "[" {
                guard scalars.count > 1, scalars.last == "]" else { throw ConfigFileError("\(at): unterminated section") }
                let inner = Self.trim(Substring(scalars.dropFirst().dropLast()))
                let name = Self.trim(Substring(inner.unicodeScalars.dropFirst(8)))
                guard inner.unicodeScalars.starts(with: "account ".unicodeScalars), !name.isEmpty else {
                    throw ConfigFileError("\(at): expected [account NAME]")
                }
                guard Self.isUsableName(name) else {
                    throw ConfigFileError("\(at): the account name \(name) cannot be a folder name (no '/', control characters or leading '.')")
                }
                guard !accounts.contains(where: { $0.name == name }) else {
                    throw ConfigFileError("\(at): account \(name) is defined twice")
                }
                accounts.append(Account(name: String(name), values: [:]))
                current = accounts.count - 1
                continue
            }
            guard let eq = line.unicodeScalars.firstIndex(of: "=") else {
                throw ConfigFileError("\(at): expected key = value")
            }
            let key = String(Self.trim(line[..<eq]))
            let value = String(Self.trim(line[line.unicodeScalars.index(after: eq)...]))
            guard keys.contains(key) else {
                throw ConfigFileError("\(at): unknown setting \(key.isEmpty ? "(empty)" : key)")
            }
            if let current { accounts[current].values[key] = value } else { defaults[key] = value }
        }
    }

    /// Without the blanks around it (spaces, tabs, and the '\r' of a CRLF line end).
    static func trim(_ s: Substring) -> Substring {
        let blank: (Unicode.Scalar) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\r" }
        let scalars = s.unicodeScalars
        guard let first = scalars.firstIndex(where: { !blank($0) }),
              let last = scalars.lastIndex(where: { !blank($0) }) else { return "" }
        return Substring(scalars[first...last])
    }

    /// A name that works as one folder name: not empty, no '/', no control character, no
    /// leading '.'.
    static func isUsableName(_ name: Substring) -> Bool {
        !name.isEmpty && name.unicodeScalars.first != "."
            && !name.unicodeScalars.contains { $0 == "/" || $0.properties.generalCategory == .control }
    }
}

/// What is wrong with a config file, with its path and line: "PATH:LINE: what".
public struct ConfigFileError: Error, CustomStringConvertible, Sendable {
    public var description: String
    init(_ description: String) { self.description = description }
}

/// What a failure means for the work around it, decided once, where the error is made (each
/// error type's `failure`), as mbsync's drivers answer every operation with "this message is
/// bad", "this mailbox is bad" or "this store is bad". Everything that reacts to errors reads
/// it: the client's retries, the push dropping or keeping a change, the export skipping one
/// file, the daemon retrying after a backoff, and the exit code of a run.
public struct Failure: Sendable, Equatable, CustomStringConvertible {
    /// How far the failure reaches.
    public enum Scope: Sendable, Equatable {
        /// One message, or one request about some messages: the others go on.
        case message
        /// One mailbox (a folder the file system refuses, a mailbox the server lost).
        case mailbox
        /// Everything of the account: the server as a whole, the Maildir or the cache.
        case account
    }

    /// What to do about it.
    public enum Remedy: Sendable, Equatable {
        /// The thing is gone (expunged, deleted): nothing to do; the next pull settles it.
        case gone
        /// Trying again will not help: leave this item and go on (logged; a later run tries).
        case skip
        /// It may pass: try again later (the client's retries, the daemon's backoff, the next run).
        case retry
        /// It needs the person: stop and say what to do.
        case stop
    }

    /// Where it comes from, which is also what the exit code of a run that ends on it says.
    public enum Origin: Sendable, Equatable {
        /// The server refused the password or the token.
        case credentials
        /// The server could not be reached, or a connection broke.
        case network
        /// The server answered with an error, or with something that is not WildDuck's.
        case server
        /// The local side: the Maildir, the cache, the disk.
        case local
        /// The command line or the configuration.
        case usage
        /// Another wdsync holds the account.
        case locked
        /// Stopped on request.
        case cancelled
        /// Not classified: a bug.
        case unknown
    }

    public var scope: Scope
    public var remedy: Remedy
    public var origin: Origin

    public init(_ scope: Scope, _ remedy: Remedy, _ origin: Origin) {
        self.scope = scope
        self.remedy = remedy
        self.origin = origin
    }

    /// The failure of any error: its own classification, or an unknown one that stops.
    public init(of error: any Error) {
        self = (error as? any ClassifiedError)?.failure ?? Failure(.account, .stop, .unknown)
    }

    /// Came from talking to the server (so a daemon waits and tries again unless it must stop).
    public var isRemote: Bool { origin == .credentials || origin == .network || origin == .server }

    /// Leaves the rest of the run going: a message or mailbox that is skipped or gone.
    public var isContained: Bool { scope != .account && (remedy == .skip || remedy == .gone) }

    public var description: String { "\(scope)/\(remedy)/\(origin)" }
}

/// An error that says what it means (`Failure`).
public protocol ClassifiedError: Error {
    var failure: Failure { get }
}

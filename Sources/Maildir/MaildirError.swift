#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Failures

/// What went wrong in the Maildir, with the path involved and what the user can do about it.
///
/// ENOSPC/EDQUOT, EACCES/EPERM, EROFS and ENAMETOOLONG get their own cases because the advice
/// differs; anything else is `.system` with the errno. Every failure during a delivery has already
/// removed the temporary file, so nothing half-written is ever left in `cur/` or `new/`.
public enum MaildirError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The step that failed, used in messages ("while writing …").
    public enum Operation: String, Sendable, Equatable {
        case creatingTemporaryFile = "creating the temporary file"
        case writing = "writing"
        case syncing = "syncing to disk"
        case closing = "closing"
        case settingTimes = "setting the file times of"
        case delivering = "delivering"
        case creatingFolder = "creating the folder"
        case renaming = "renaming"
        case removing = "removing"
        case listing = "listing"
        case reading = "reading"
        case syncingFolder = "syncing the folder"

        /// Steps of a delivery: a failure there has removed the temporary file.
        public var isDelivery: Bool {
            switch self {
            case .creatingTemporaryFile, .writing, .syncing, .closing, .settingTimes, .delivering: true
            default: false
            }
        }
    }

    /// ENOSPC or EDQUOT.
    case diskFull(path: String, operation: Operation)
    /// EACCES or EPERM.
    case permissionDenied(path: String, operation: Operation)
    /// EROFS.
    case readOnlyFileSystem(path: String, operation: Operation)
    /// ENAMETOOLONG.
    case nameTooLong(path: String, operation: Operation)
    /// A delivery's target file already exists; it was not overwritten.
    case alreadyExists(path: String)
    /// `renameFolder` found something at the destination; it was not overwritten.
    case folderExists(path: String)
    /// The file or folder is not there (after a rescan for its unique name).
    case notFound(path: String, operation: Operation)
    /// Something that must be a directory is a file (or the other way round).
    case notADirectory(path: String)
    /// A name or argument that wdsync refuses to use.
    case invalidArgument(String)
    /// `write`/`commit` after the delivery was committed, aborted or failed.
    case deliveryClosed(path: String)
    /// Any other system error.
    case system(path: String, operation: Operation, errno: Int32)

    static func from(errno e: Int32, path: String, operation: Operation) -> MaildirError {
        switch e {
        case ENOSPC, EDQUOT: .diskFull(path: path, operation: operation)
        case EACCES, EPERM: .permissionDenied(path: path, operation: operation)
        case EROFS: .readOnlyFileSystem(path: path, operation: operation)
        case ENAMETOOLONG: .nameTooLong(path: path, operation: operation)
        case ENOENT: .notFound(path: path, operation: operation)
        case ENOTDIR: .notADirectory(path: path)
        default: .system(path: path, operation: operation, errno: e)
        }
    }

    private static func tail(_ op: Operation) -> String {
        op.isDelivery ? "; nothing was half-delivered (the temporary file was removed)" : ""
    }

    public var description: String {
        switch self {
        case let .diskFull(path, op):
            "disk full (or quota exceeded) while \(op.rawValue) \(path): free some space and re-run wdsync\(Self.tail(op))"
        case let .permissionDenied(path, op):
            "permission denied while \(op.rawValue) \(path): make sure the user running wdsync owns the Maildir root and can write to it (e.g. chmod u+rwx on the folder)\(Self.tail(op))"
        case let .readOnlyFileSystem(path, op):
            "the file system holding \(path) is read-only (while \(op.rawValue) it): remount it read-write or choose another Maildir root\(Self.tail(op))"
        case let .nameTooLong(path, op):
            "name too long while \(op.rawValue) \(path): the file system refused it; use a shorter Maildir root path\(Self.tail(op))"
        case let .alreadyExists(path):
            "\(path) already exists and was not overwritten: another copy of this message is already delivered; run `wdsync --verify` to reconcile; nothing was half-delivered"
        case let .folderExists(path):
            "a folder already exists at \(path) and was not overwritten: move it out of the way and re-run wdsync"
        case let .notFound(path, op):
            "\(path) does not exist (while \(op.rawValue) it): something outside wdsync moved or removed it; re-run wdsync to restore the folder\(Self.tail(op))"
        case let .notADirectory(path):
            "\(path) (or one of its parents) is not a directory: move the file out of the way and re-run wdsync"
        case let .invalidArgument(why):
            "invalid argument: \(why)"
        case let .deliveryClosed(path):
            "the delivery of \(path) is already finished (committed, aborted or failed); start a new one"
        case let .system(path, op, e):
            "\(op.rawValue) \(path) failed: \(Sys.describe(e)) (errno \(e))\(Self.tail(op))"
        }
    }
}

extension MaildirError: ClassifiedError {
    /// A name the file system refuses or a foreign file in the way concerns one folder or
    /// message, which is skipped while the others go on; disk full, no permission, a read-only
    /// file system or an I/O error concern the whole Maildir and stop the run.
    public var failure: Failure {
        switch self {
        case .nameTooLong, .notADirectory, .folderExists, .invalidArgument: Failure(.mailbox, .skip, .local)
        case .alreadyExists: Failure(.message, .skip, .local)
        case .diskFull, .permissionDenied, .readOnlyFileSystem, .notFound, .deliveryClosed, .system:
            Failure(.account, .stop, .local)
        }
    }
}

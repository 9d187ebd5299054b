/// The local folders, as the sync engine calls them: the seam between the engine and the files,
/// the counterpart of `RemoteAccount` on the server's side, so that the engine's decisions (the
/// export's plan, the scan's reading of the folders) can run against something else than a
/// Maildir on disk. `Maildir` is the one real implementation; the methods' documentation is
/// there. Paths are relative to the root, as `Maildir`'s are. Like it, one caller per account.
///
/// Left out, because they need the files themselves and not one folder's calls: delivery
/// (`beginDelivery`, `publish`, `PendingDelivery`, whose bodies are fsynced and renamed into
/// place in batches) and durability (`syncFolders` and `syncRemovedFolder`, which share one
/// syncfs through a `DeliveryBatch`), which the export and the download pool call on the
/// concrete `Maildir`; and the pure helpers (`Maildir.placement`, the name parsing), which stay
/// static on `Maildir`. The identity check (`MaildirMarker`), the restore's reading of a backup
/// and `--verify`'s moving aside work on the directory itself.
public protocol LocalFolders {
    /// The root directory, for messages.
    var root: String { get }
    var layout: MaildirLayout { get }
    func folderDirectory(for mailboxPath: String) -> String

    // Reading (the scan).
    func folderTimes(_ folder: String) -> (cur: Int, new: Int)?
    func listFolder(_ folder: String) throws(MaildirError) -> [LocalFile]?
    func fileSize(_ relPath: String) -> (size: Int, regular: Bool)?
    func readFile(_ relPath: String, limit: Int) throws(MaildirError) -> LocalContent
    func sha256(_ relPath: String) throws(MaildirError) -> String
    func scanUniqueNames(folder: String) throws(MaildirError) -> [String: String]
    func find(_ relPath: String, movingTo destination: String) throws(MaildirError) -> String?

    // Writing (the export).
    func ensureFolder(_ folder: String) throws(MaildirError)
    func renameFolder(from: String, to: String) throws(MaildirError)
    @discardableResult
    func removeFolder(_ folder: String, owns: (String) -> Bool) throws(MaildirError) -> Bool
    @discardableResult
    func moveFile(from relPath: String, to folder: String, flags: MessageFlags) throws(MaildirError) -> String
    @discardableResult
    func hideFile(_ relPath: String) throws(MaildirError) -> Bool
    @discardableResult
    func removeFile(_ relPath: String) throws(MaildirError) -> Bool
    @discardableResult
    func cleanTmp(folder: String, owns: (String) -> Bool) throws(MaildirError) -> Int
}

extension Maildir: LocalFolders {}

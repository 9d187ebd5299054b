import Foundation
import Maildir
import Lock
import WildDuck

struct DownloadJob: Sendable {
    var mailboxId: String
    var uid: Int
    var folder: String
    var unique: String
    var flags: MessageFlags
    var mtime: Int?
    /// The listing's size: the basis of the download's size cap.
    var size: Int
}

/// What a download hands back.
enum DownloadResult: Sendable {
    case delivered(DownloadJob, Delivered)
    /// Complete in tmp/: `record` publishes it.
    case sealed(DownloadJob, SealedDelivery)
    case vanished(DownloadJob)
    /// This message's body was refused (`WildDuckError.badMessage`); the others go on.
    case refused(DownloadJob, String)

    /// What a failed download comes to when the error concerns this message alone: it is gone
    /// (expunged since the listing), or its body was refused (over its size cap, or without a
    /// length). Nil for every other error: a pipeline stops at any other answer and leaves the
    /// message to `downloadMessage`, which asks again, authenticates again and tells them apart.
    init?(_ job: DownloadJob, failedWith error: Error) {
        guard let error = error as? WildDuckError else { return nil }
        if error.failure.remedy == .gone {
            self = .vanished(job)
        } else if case .badMessage = error {
            self = .refused(job, error.description)
        } else {
            return nil
        }
    }
}

extension DownloadJob {
    /// Logs a message whose file cannot be written (see `Export.concernsOneItem`); it
    /// stays pending.
    func skipped(_ error: Error, log: SyncLog) {
        log.log(.warning, "message \(uid) of mailbox \(mailboxId) is not exported: \(error)")
    }
}

/// The bodies of messages that have no file yet: the one thing the export asks the server for.
/// Each is streamed into its folder's `tmp/` and sealed there (complete; durable at once, or
/// with its batch's one sync); the export publishes and records what comes back
/// (`Export.record`), on its own thread, in batches. A message or two (the live case) are
/// fetched on the calling thread over its connection; more by `connections` threads with a
/// connection each, pipelining their requests, so memory stays bounded by the number of
/// connections and a kill at any moment loses nothing.
struct Downloads {
    let server: any RemoteServer
    /// The calling thread's connection.
    let client: any RemoteAccount
    let maildir: Maildir
    let connections: Int
    let log: SyncLog
    let isCancelled: @Sendable () -> Bool

    /// Fetches `jobs`, handing the results to `record` on this thread (with the batch whose
    /// one sync makes them durable, if any). What was fetched before an error that is not
    /// about one message is recorded, then the error is thrown.
    func run(_ jobs: [DownloadJob], record: ([DownloadResult], DeliveryBatch?) throws -> Void) throws {
        guard jobs.count > 2 else { return try runHere(jobs, record: record) }
        let workers = max(1, min(connections, jobs.count))
        let shared = DownloadQueue(jobs: jobs, workers: workers)
        let (isCancelled, log, server, maildir) = (self.isCancelled, self.log, self.server, self.maildir)
        let batch = DeliveryBatch(maildir: maildir)
        var threads: [Thread] = []
        for _ in 0..<workers {
            let thread = Thread {
                let client = server.connect()
                defer { client.close(); shared.workerFinished() }
                while !isCancelled() {
                    let jobs = shared.next()
                    guard !jobs.isEmpty else { break }
                    // The batch in one pipeline; whatever it did not deliver, one at a time.
                    let done = jobs.count > 1 ? Downloads.fetch(jobs, with: client, into: maildir, batch: batch, log: log,
                                                               isCancelled: isCancelled, settle: shared.finish) : 0
                    for job in jobs[done...] where !isCancelled() {
                        do {
                            shared.finish(.sealed(job, try Downloads.fetch(job, with: client, into: maildir, batch: batch)))
                        } catch {
                            if let result = DownloadResult(job, failedWith: error) { shared.finish(result) }
                            else if Export.concernsOneItem(error) { job.skipped(error, log: log) }
                            else { shared.fail(error); return }
                        }
                    }
                }
            }
            thread.stackSize = 1 << 20
            threads.append(thread)
        }
        threads.forEach { $0.start() }

        var failure: Error?
        while true {
            let (results, done, error) = shared.take(waitUpTo: 0.1)
            if let error, failure == nil { failure = error }
            do {
                try record(results, batch)
            } catch {
                if failure == nil { failure = error }
                shared.fail(error)
            }
            if done { break }
        }
        if let failure { throw failure }
        if isCancelled() { throw SyncError.cancelled }
    }

    /// A message or two, on this thread over its kept-alive connection, each made durable on
    /// its own.
    private func runHere(_ jobs: [DownloadJob], record: ([DownloadResult], DeliveryBatch?) throws -> Void) throws {
        var results: [DownloadResult] = []
        for job in jobs {
            do {
                results.append(.sealed(job, try Downloads.fetch(job, with: client, into: maildir)))
            } catch {
                if let result = DownloadResult(job, failedWith: error) { results.append(result) }
                else if Export.concernsOneItem(error) { job.skipped(error, log: log) }
                else {
                    try? record(results, nil)   // what was delivered before the error is kept
                    throw error
                }
            }
        }
        try record(results, nil)
    }

    /// Streams one message into tmp/ and seals it there (see `PendingDelivery.seal`). A try
    /// that the client repeats after a broken connection starts over in a fresh tmp file, so a
    /// file is only ever one complete body.
    static func fetch(_ job: DownloadJob, with client: any RemoteAccount, into maildir: Maildir,
                      batch: DeliveryBatch? = nil) throws -> SealedDelivery {
        var pending: PendingDelivery?
        do {
            try client.downloadMessage(mailbox: job.mailboxId, uid: job.uid,
                                       maxBytes: WildDuckClient.messageSizeCap(listedSize: job.size), begin: {
                pending?.abort()
                pending = nil
                pending = try maildir.beginDelivery(folder: job.folder, unique: job.unique)
            }, sink: { chunk in
                guard let pending else { throw MaildirError.deliveryClosed(path: job.unique) }
                try pending.write(chunk)
            })
            guard let delivery = pending else { throw MaildirError.deliveryClosed(path: job.unique) }
            return try delivery.seal(flags: job.flags, mtime: job.mtime, batch: batch)
        } catch {
            pending?.abort()
            throw error
        }
    }

    /// Downloads `jobs` in one HTTP/1.1 pipeline (see `WildDuckClient.downloadMessages`), each
    /// sealed like `fetch(_:with:into:batch:)` does, its result handed to `settle` at once.
    /// Returns how many were settled: the rest, from the first one that was not, are the
    /// caller's to fetch one at a time, which tells their errors apart.
    private static func fetch(_ jobs: [DownloadJob], with client: any RemoteAccount, into maildir: Maildir, batch: DeliveryBatch?,
                              log: SyncLog, isCancelled: () -> Bool, settle: (DownloadResult) -> Void) -> Int {
        var pending: PendingDelivery?
        defer { pending?.abort() }
        let requests = jobs.map { ($0.mailboxId, $0.uid, WildDuckClient.messageSizeCap(listedSize: $0.size)) }
        let (done, stoppedBy) = client.downloadMessages(requests, begin: { i in
            // A stop request ends the pipeline between messages, as it ends the loop of single ones.
            if isCancelled() { throw SyncError.cancelled }
            pending = try maildir.beginDelivery(folder: jobs[i].folder, unique: jobs[i].unique)
        }, sink: { i, chunk in
            guard let pending else { throw MaildirError.deliveryClosed(path: jobs[i].unique) }
            try pending.write(chunk)
        }, end: { i in
            guard let delivery = pending else { throw MaildirError.deliveryClosed(path: jobs[i].unique) }
            pending = nil
            settle(.sealed(jobs[i], try delivery.seal(flags: jobs[i].flags, mtime: jobs[i].mtime, batch: batch)))
        })
        guard let stoppedBy else { return done }
        log.log(.debug, "a pipeline of \(jobs.count) downloads stopped after \(done): \(stoppedBy)")
        guard let result = DownloadResult(jobs[done], failedWith: stoppedBy) else { return done }
        settle(result)
        return done + 1
    }
}

/// The work list shared by the download threads and the recording thread.
private final class DownloadQueue: Sendable {
    private struct State {
        var jobs: [DownloadJob]
        var nextIndex = 0
        var results: [DownloadResult] = []
        var error: Error?
        var running: Int
        let workers: Int
        var stopped = false
    }
    private let state: Mutex<State>
    /// Signalled when a worker ends or fails; results are collected on a timer instead, so that
    /// each transaction records a batch of them.
    private let signal = DispatchSemaphore(value: 0)

    init(jobs: [DownloadJob], workers: Int) {
        state = Mutex(State(jobs: jobs, running: workers, workers: workers))
    }

    /// The next few jobs for one worker: up to `pipelineDepth`, fewer near the end so that
    /// every worker gets some. Empty when all are handed out or the download stopped.
    func next() -> [DownloadJob] {
        state.withLock { s in
            guard !s.stopped, s.nextIndex < s.jobs.count else { return [] }
            let left = s.jobs.count - s.nextIndex
            let n = min(DownloadQueue.pipelineDepth, max(1, left / s.workers))
            defer { s.nextIndex += n }
            return Array(s.jobs[s.nextIndex..<(s.nextIndex + n)])
        }
    }

    /// Requests in flight on one connection. One request per message costs a write, a wake-up
    /// and the server's turnaround each; eight in one write cost those once, and a pipeline
    /// that breaks sends at most seven again.
    static let pipelineDepth = 8

    func finish(_ result: DownloadResult) {
        state.withLock { $0.results.append(result) }
    }

    func fail(_ error: Error) {
        state.withLock { s in
            if s.error == nil { s.error = error }
            s.stopped = true
        }
        signal.signal()
    }

    func workerFinished() {
        state.withLock { $0.running -= 1 }
        signal.signal()
    }

    /// Waits up to `seconds` (less if a worker ends), then returns the results so far, whether
    /// every worker has finished, and the first error.
    func take(waitUpTo seconds: Double) -> ([DownloadResult], Bool, Error?) {
        _ = signal.wait(timeout: .now() + seconds)
        return state.withLock { s in
            let results = s.results
            s.results.removeAll(keepingCapacity: true)
            return (results, s.running == 0, s.error)
        }
    }
}


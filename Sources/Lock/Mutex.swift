#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A value guarded by a `pthread_mutex_t`, with the shape of the standard library's
/// `Synchronization.Mutex` (`Mutex(value)`, `withLock { ... }`). It is the project's one lock.
///
/// Why not `Synchronization.Mutex`: on Linux it waits on a futex directly, which
/// ThreadSanitizer does not see, so every value it guards is reported as a data race
/// (`contrib/sanitize.sh thread` would be useless). TSan intercepts `pthread_mutex_*`, so
/// with this lock its reports are real races.
///
/// The value lives in memory of its own, not in a stored property: TSan checks a class's
/// stored `var` by Swift's access rules, and an empty value (`Mutex<Void>`) then lands on the
/// object's header, which every call reads without the lock: a false report again.
public final class Mutex<Value: ~Copyable>: @unchecked Sendable {
    private let handle: UnsafeMutablePointer<pthread_mutex_t>
    private let value: UnsafeMutablePointer<Value>

    public init(_ initialValue: consuming sending Value) {
        value = .allocate(capacity: 1)
        value.initialize(to: initialValue)
        handle = .allocate(capacity: 1)
        handle.initialize(to: pthread_mutex_t())
        pthread_mutex_init(handle, nil)
    }

    deinit {
        pthread_mutex_destroy(handle)
        handle.deinitialize(count: 1)
        handle.deallocate()
        value.deinitialize(count: 1)
        value.deallocate()
    }

    /// Runs `body` with exclusive access to the value. Not reentrant: `body` must not take
    /// the same lock again.
    public func withLock<Result: ~Copyable, E: Error>(
        _ body: (inout sending Value) throws(E) -> sending Result
    ) throws(E) -> sending Result {
        pthread_mutex_lock(handle)
        defer { pthread_mutex_unlock(handle) }
        return try body(&value.pointee)
    }
}

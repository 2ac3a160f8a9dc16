import Foundation
import RedisClient
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Runs blocking work (Redis round trips) over many items on a bounded, process-wide pool of
/// long-lived threads, and waits for all of it. Threads, not the cooperative pool: a blocked
/// Redis call must not starve other work.
///
/// The caller works too: it runs items itself until none is left to start, then waits only for
/// the items that pool threads have already started. So a call never waits on work queued behind
/// it, a call made from a pool thread (nested) cannot deadlock, and a pool that cannot start a
/// thread (address space exhausted) only loses parallelism, never progress. Items must not wait
/// on each other; the callers' items (one per shard) are independent.
enum Parallel {
    /// Most pool threads a process ever starts. More shards than this are served in rounds: the
    /// work is blocking I/O, and each thread costs a stack and, with it, address space that a
    /// function's memory limit counts.
    static let threadLimit = 16

    static func map<R: Sendable>(_ count: Int, _ body: @escaping @Sendable (Int) -> R) -> [R] {
        ThreadPool.shared.map(count, body)
    }
}

/// Long-lived threads that help `map` calls, at most `limit` of them, started on demand.
final class ThreadPool: Sendable {
    static let shared = ThreadPool(limit: Parallel.threadLimit, name: "smlt-shards")

    let limit: Int
    private let name: String
    private let state = Mutex(State())
    /// Signalled once per queued help request; each signal is taken by exactly one thread.
    private let wake = DispatchSemaphore(value: 0)
    private let startThread: @Sendable (String, @escaping @Sendable () -> Void) throws(ThreadStartError) -> Void

    private struct State {
        /// Help requests not yet taken by a thread, oldest first.
        var queue: [@Sendable () -> Void] = []
        var threads = 0
        /// Threads waiting for a request (including ones being started).
        var idle = 0
        /// The last failure to start a thread, for diagnostics.
        var lastFailure: ThreadStartError?
    }

    /// - Parameters:
    ///   - limit: the most threads this pool starts.
    ///   - startThread: starts one detached thread (tests inject failures here).
    init(
        limit: Int, name: String,
        startThread: @escaping @Sendable (String, @escaping @Sendable () -> Void) throws(ThreadStartError) -> Void = {
            (name, body) throws(ThreadStartError) in try DedicatedThread.start(name: name, body)
        }
    ) {
        precondition(limit >= 0, "a thread pool's limit must not be negative")
        self.limit = limit
        self.name = name
        self.startThread = startThread
    }

    /// How many threads the pool has started (and that are still alive: they never exit).
    var threadCount: Int { state.withLock { $0.threads } }

    /// Why the pool last failed to start a thread, if it ever did.
    var lastFailure: ThreadStartError? { state.withLock { $0.lastFailure } }

    /// Runs `body(0..<count)` on the calling thread and on up to `count - 1` pool threads;
    /// returns the results in index order.
    func map<R: Sendable>(_ count: Int, _ body: @escaping @Sendable (Int) -> R) -> [R] {
        if count <= 0 { return [] }
        if count == 1 { return [body(0)] }
        let batch = Batch(count: count, body: body)
        request(help: count - 1, batch.help)
        batch.help()
        batch.finished.wait()
        return batch.results.withLock { $0.map { $0! } }
    }

    /// Queues up to `wanted` requests to run `help`, starting threads (up to the limit) when
    /// fewer are idle than requests queued.
    private func request(help wanted: Int, _ help: @escaping @Sendable () -> Void) {
        // Malloc is tuned before the first pool thread exists, so that no thread creates an
        // arena beyond the cap (see RedisConnection.tuneMalloc).
        RedisConnection.tuneMalloc()
        let toStart = state.withLock { s -> Int in
            let needed = s.queue.count + wanted - s.idle
            let n = max(0, min(needed, limit - s.threads))
            s.threads += n
            s.idle += n
            return n
        }
        var failure: ThreadStartError?
        var started = 0
        for _ in 0..<toStart {
            do throws(ThreadStartError) {
                try startThread(name) { [self] in work() }
                started += 1
            } catch {
                failure = error
                break
            }
        }
        let queued = state.withLock { s -> Int in
            if let failure {
                s.threads -= toStart - started
                s.idle -= toStart - started
                s.lastFailure = failure
            }
            // A request beyond the threads that exist would wait for nobody.
            let n = max(0, min(wanted, s.threads - s.queue.count))
            for _ in 0..<n { s.queue.append(help) }
            return n
        }
        for _ in 0..<queued { wake.signal() }
    }

    /// A pool thread: takes one request at a time, forever.
    private func work() {
        while true {
            wake.wait()
            guard
                let job = state.withLock({ s -> (@Sendable () -> Void)? in
                    guard !s.queue.isEmpty else { return nil }
                    s.idle -= 1
                    return s.queue.removeFirst()
                })
            else { continue }
            job()
            state.withLock { $0.idle += 1 }
        }
    }
}

/// One `map` call: items are claimed by index, by the caller and by any pool thread that helps.
private final class Batch<R: Sendable>: Sendable {
    let count: Int
    let body: @Sendable (Int) -> R
    let next = Atomic<Int>(0)
    let remaining: Atomic<Int>
    let results: Mutex<[R?]>
    /// Signalled once, by whoever finishes the last item.
    let finished = DispatchSemaphore(value: 0)

    init(count: Int, body: @escaping @Sendable (Int) -> R) {
        self.count = count
        self.body = body
        remaining = Atomic(count)
        results = Mutex(Array(repeating: nil, count: count))
    }

    /// Runs items until none is left to start.
    func help() {
        while true {
            let i = next.wrappingAdd(1, ordering: .relaxed).oldValue
            if i >= count { return }
            let r = body(i)
            results.withLock { $0[i] = r }
            if remaining.wrappingSubtract(1, ordering: .acquiringAndReleasing).newValue == 0 { finished.signal() }
        }
    }
}

/// A thread could not be started (pthread_create failed, typically because the process's address
/// space or thread limit is exhausted).
public struct ThreadStartError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The thread's name.
    public let name: String
    /// The error number pthread returned.
    public let code: Int32

    public var description: String {
        "cannot start thread '\(name)': \(String(cString: strerror(code))) (error \(code) from pthread_create)"
    }
}

/// Starts plain threads for blocking work and reports a failure to start one as an error;
/// Foundation's `Thread.start()` ignores it, leaving whoever waits for the thread hanging.
public enum DedicatedThread {
    /// The stack size of SMLT's threads: their work is Redis I/O and decoding, not deep calls.
    public static let defaultStackSize = 1 << 20

    /// Starts a detached thread that runs `body`.
    /// - Parameters:
    ///   - name: names the thread in the error, should it fail to start.
    ///   - stackSize: bytes of stack, which also count against an address-space limit.
    public static func start(
        name: String, stackSize: Int = defaultStackSize, _ body: @escaping @Sendable () -> Void
    ) throws(ThreadStartError) {
        // Allocated rather than a local: the zero initializer of this C struct is not visible here.
        let attr = UnsafeMutablePointer<pthread_attr_t>.allocate(capacity: 1)
        defer { attr.deallocate() }
        var rc = pthread_attr_init(attr)
        if rc != 0 { throw ThreadStartError(name: name, code: rc) }
        defer { pthread_attr_destroy(attr) }
        rc = pthread_attr_setstacksize(attr, stackSize)
        if rc == 0 { rc = pthread_attr_setdetachstate(attr, Int32(PTHREAD_CREATE_DETACHED)) }
        if rc != 0 { throw ThreadStartError(name: name, code: rc) }
        let start = ThreadStart(body: body)
        let context = Unmanaged.passRetained(start).toOpaque()
        var thread: pthread_t = 0
        rc = pthread_create(
            &thread, attr,
            { context in
                Unmanaged<ThreadStart>.fromOpaque(context!).takeRetainedValue().body()
                return nil
            }, context)
        if rc != 0 {
            Unmanaged<ThreadStart>.fromOpaque(context).release()
            throw ThreadStartError(name: name, code: rc)
        }
    }
}

private final class ThreadStart: Sendable {
    let body: @Sendable () -> Void
    init(body: @escaping @Sendable () -> Void) { self.body = body }
}

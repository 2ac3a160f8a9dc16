import Foundation
import Synchronization
import Testing

@testable import ShardManager

#if canImport(Glibc)
    import Glibc
#endif

/// Numbers the threads that run test items: a thread-specific value, set the first time a
/// thread is seen, so a new thread always gets a new number (thread ids and stacks are reused).
final class ThreadCensus: Sendable {
    private let key: pthread_key_t
    private let next = Atomic<Int>(1)
    private let state = Mutex((running: 0, peak: 0, seen: Set<Int>()))

    init() {
        var key: pthread_key_t = 0
        precondition(pthread_key_create(&key, nil) == 0)
        self.key = key
    }

    deinit { pthread_key_delete(key) }

    /// Records that the current thread runs an item until `end()`.
    func begin() {
        var id = Int(bitPattern: pthread_getspecific(key))
        if id == 0 {
            id = next.wrappingAdd(1, ordering: .relaxed).oldValue
            pthread_setspecific(key, UnsafeRawPointer(bitPattern: id))
        }
        state.withLock { s in
            s.running += 1
            s.peak = max(s.peak, s.running)
            s.seen.insert(id)
        }
    }

    func end() { state.withLock { $0.running -= 1 } }

    var distinctThreads: Int { state.withLock { $0.seen.count } }
    var peakConcurrency: Int { state.withLock { $0.peak } }
}

@Suite struct ParallelTests {
    /// Many calls over many items (as with 64 shards) run on a bounded set of reused threads.
    @Test func fanOutStaysOnABoundedSetOfReusedThreads() {
        let census = ThreadCensus()
        for call in 0..<20 {
            let out = Parallel.map(100) { i in
                census.begin()
                defer { census.end() }
                usleep(200)  // blocking work, like a Redis round trip
                return i * 2 + call
            }
            #expect(out == (0..<100).map { $0 * 2 + call })
        }
        // The pool's threads plus the callers (this test's thread; other tests' calls may
        // share the process-wide pool but never add threads beyond its limit).
        #expect(census.distinctThreads <= Parallel.threadLimit + 1, "\(census.distinctThreads) threads")
        #expect(census.peakConcurrency <= Parallel.threadLimit + 1, "\(census.peakConcurrency) at once")
        #expect(ThreadPool.shared.threadCount <= Parallel.threadLimit)
    }

    /// A call made from a pool thread does not wait on work queued behind it.
    @Test func nestedCallsOnASmallPoolFinish() {
        let pool = ThreadPool(limit: 2, name: "test-nested")
        let census = ThreadCensus()
        let sums = pool.map(6) { i in
            pool.map(6) { j in
                census.begin()
                defer { census.end() }
                usleep(100)
                return i * 10 + j
            }.reduce(0, +)
        }
        #expect(sums == (0..<6).map { i in (0..<6).reduce(0) { $0 + i * 10 + $1 } })
        #expect(pool.threadCount <= 2)
        // Two pool threads and the caller.
        #expect(census.distinctThreads <= 3)
    }

    /// A pool that cannot start threads (no address space left) does the work on the caller.
    @Test func aPoolThatCannotStartThreadsStillFinishesTheWork() {
        let refused = ThreadStartError(name: "test-refused", code: EAGAIN)
        let pool = ThreadPool(limit: 4, name: "test-refused") { _, _ throws(ThreadStartError) in throw refused }
        #expect(pool.map(10) { $0 * $0 } == (0..<10).map { $0 * $0 })
        #expect(pool.threadCount == 0)
        #expect(pool.lastFailure == refused)
    }

    /// A thread that cannot be started is an error naming it, not a thread that never runs.
    @Test func threadThatCannotStartIsAnError() {
        // A 1 PiB stack does not fit in any address space.
        #expect {
            try DedicatedThread.start(name: "too-big", stackSize: 1 << 50) {}
        } throws: { error in
            guard let e = error as? ThreadStartError else { return false }
            return e.name == "too-big" && e.code != 0 && e.description.contains("cannot start thread 'too-big'")
        }
        let ran = DispatchSemaphore(value: 0)
        #expect(throws: Never.self) { try DedicatedThread.start(name: "fine") { ran.signal() } }
        ran.wait()
    }
}

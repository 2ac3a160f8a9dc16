import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The last time a worker made progress (a Redis reply, a finished wait round, a computed
/// gradient). The heartbeat reads it to stop renewing the lease of a worker that is stuck.
public final class ActivityClock: Sendable {
    private let last = Atomic<Int64>(ActivityClock.now())

    public init() {}

    /// Records progress now.
    public func touch() { last.store(Self.now(), ordering: .relaxed) }

    /// How long since the last progress.
    public var idle: Duration { .nanoseconds(Self.now() - last.load(ordering: .relaxed)) }

    static func now() -> Int64 {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return Int64(t.tv_sec) * 1_000_000_000 + Int64(t.tv_nsec)
    }
}

import Foundation
import LocalProcesses
import RedisClient

/// Keeps N function workers running until each has finished: relaunches a worker that returned
/// "continue" (it stopped before its time limit), that failed or was killed, or whose lease
/// expired (it froze), each time as the next generation.
///
/// Call `tick()` periodically (every 50-100 ms). The lease keys live on one Redis connection
/// (the job's first shard), read with one EXISTS per worker per tick.
public final class WorkerFleet {
    /// How a worker's invocations ended, counted.
    public struct Counts: Sendable, Equatable {
        /// Invocations that stopped before their time limit and were continued.
        public var continuations = 0
        /// Invocations that crashed, were killed or timed out, and were relaunched.
        public var relaunches = 0
        /// Invocations killed because their lease expired while the process still existed.
        public var expiredLeases = 0
    }

    struct Slot {
        var invocation: (any FunctionInvocation)?
        var generation = 0
        var started = ContinuousClock.now
        var leaseSeen = false
        var failures = 0
        var done = false
        /// A failed worker waits before its relaunch (backoff), so a transient cause (a shard
        /// restarting) does not use up its failures at once.
        var relaunchAt: ContinuousClock.Instant?
        /// The job no longer has this worker: it is not relaunched, and counts as done once its
        /// running invocation (if any) has ended.
        var retired = false
    }

    let platform: any FunctionPlatform
    let request: (_ worker: Int, _ generation: Int) -> FunctionRequest
    let leaseKey: (Int) -> String
    let leases: RedisConnection
    let leaseTimeout: Duration
    let startTimeout: Duration
    let maxFailures: Int
    let continueCode: Int32
    let stopCode: Int32?
    let log: (String) -> Void
    private var slots: [Slot]
    public private(set) var counts = Counts()
    public private(set) var outcomes: [InvocationOutcome] = []

    /// - Parameters:
    ///   - request: the invocation of `worker` as generation `generation`.
    ///   - leaseTimeout: how long a running worker may go without a lease before it is killed and
    ///     relaunched (its lease TTL plus a margin).
    ///   - startTimeout: how long a new invocation may take to take its lease (its start: a
    ///     runtime such as PyTorch takes seconds to import on a loaded machine); at least three
    ///     lease timeouts.
    ///   - maxFailures: failed invocations allowed per worker before the run is given up.
    ///   - continueCode: the exit code meaning "stopped before the limit, progress saved".
    ///   - stopCode: the exit code meaning "the job cannot go on": the run stops with the
    ///     worker's message instead of relaunching it.
    public init(
        workers: Int, platform: any FunctionPlatform, leases: RedisConnection, leaseKey: @escaping (Int) -> String,
        leaseTimeout: Duration, startTimeout: Duration = .seconds(60), maxFailures: Int = 5, continueCode: Int32,
        stopCode: Int32? = nil,
        request: @escaping (_ worker: Int, _ generation: Int) -> FunctionRequest,
        log: @escaping (String) -> Void
    ) {
        self.platform = platform
        self.request = request
        self.leaseKey = leaseKey
        self.leases = leases
        self.leaseTimeout = leaseTimeout
        self.startTimeout = max(startTimeout, leaseTimeout * 3)
        self.maxFailures = maxFailures
        self.continueCode = continueCode
        self.stopCode = stopCode
        self.log = log
        slots = Array(repeating: Slot(), count: workers)
    }

    deinit { stopAll() }

    public var finished: Bool { slots.allSatisfy(\.done) }
    public var running: Int { slots.filter { $0.invocation != nil }.count }
    /// Workers the job has now (retired ones not counted).
    public var workers: Int { slots.filter { !$0.retired }.count }

    /// Starts every worker's first invocation, each as generation `generations[w]` (0 when not
    /// given; a resumed run continues the generations it finds).
    public func start(generations: [Int] = []) throws {
        for w in slots.indices {
            if w < generations.count { slots[w].generation = generations[w] }
            try launch(w)
        }
    }

    /// Changes the number of workers at a step boundary: workers at `n` and above retire (each
    /// finds out by itself and exits; one that is not running is done at once), and missing
    /// workers below `n` are launched (a retired one comes back as its next generation).
    public func resize(to n: Int) throws {
        for w in slots.indices where w >= n && !slots[w].retired {
            slots[w].retired = true
            slots[w].relaunchAt = nil
            if slots[w].invocation == nil { slots[w].done = true }
        }
        while slots.count < n {
            slots.append(Slot())
            try launch(slots.count - 1)
        }
        for w in 0..<n where slots[w].retired {
            slots[w].retired = false
            slots[w].done = false
            slots[w].failures = 0
            slots[w].generation += 1
            try launch(w)
        }
    }

    private func launch(_ w: Int) throws {
        slots[w].invocation = try platform.invoke(request(w, slots[w].generation))
        slots[w].started = ContinuousClock.now
        slots[w].leaseSeen = false
    }

    /// Reaps ended invocations, relaunches what needs it and checks the leases.
    public func tick() throws {
        var live: [Int] = []
        for w in slots.indices {
            if let due = slots[w].relaunchAt, ContinuousClock.now >= due {
                slots[w].relaunchAt = nil
                try launch(w)
            }
            guard let invocation = slots[w].invocation else { continue }
            guard let o = invocation.poll() else {
                live.append(w)
                continue
            }
            outcomes.append(o)
            slots[w].invocation = nil
            if o.status.succeeded || slots[w].retired {
                slots[w].done = true
            } else if let stopCode, o.status.code == stopCode {
                throw FleetError(
                    "\(o.name) stopped the job" + (o.errorTail.isEmpty ? "" : ":\n" + o.errorTail))
            } else if o.status.code == continueCode {
                counts.continuations += 1
                slots[w].generation += 1
                try launch(w)
            } else {
                slots[w].failures += 1
                let why = o.timedOut ? "was killed at its time limit" : "failed (\(o.status))"
                guard slots[w].failures <= maxFailures else {
                    throw FleetError(
                        "\(o.name) \(why), \(slots[w].failures) failures in total; giving up"
                            + (o.errorTail.isEmpty ? "" : ":\n" + o.errorTail))
                }
                let backoff = Duration.milliseconds(min(2000, 100 << min(slots[w].failures - 1, 5)))
                log("\(o.name) \(why); relaunching it in \(backoff)")
                counts.relaunches += 1
                slots[w].generation += 1
                slots[w].relaunchAt = ContinuousClock.now + backoff
            }
        }
        guard !live.isEmpty else { return }
        // While the lease shard is unreachable (restarting), leases are not judged.
        guard let present = try? leases.pipeline(live.map { RedisCommand("GET", leaseKey($0)) }) else { return }
        for (w, reply) in zip(live, present) {
            // A lease holds its invocation's generation: the one a killed predecessor left is
            // not this invocation's (it lives on for a lease timeout while a slow runtime
            // starts).
            if reply.integer == Int64(slots[w].generation) {
                slots[w].leaseSeen = true
                continue
            }
            // No lease of its own: the worker has not started yet, or it stopped renewing
            // (frozen, hung). Workers never delete their lease, so once seen, a missing lease
            // means expired.
            let age = ContinuousClock.now - slots[w].started
            guard slots[w].leaseSeen || age > startTimeout, let invocation = slots[w].invocation else { continue }
            log(
                slots[w].leaseSeen
                    ? "\(invocation.name)'s lease expired; killing and relaunching it"
                    : "\(invocation.name) did not take its lease within \(startTimeout) of its start; killing and relaunching it"
            )
            invocation.kill()
            counts.expiredLeases += 1
            // The next tick reaps it and relaunches it as a failure.
        }
    }

    /// The running invocation of `worker`, for fault injection.
    public func invocation(of worker: Int) -> (any FunctionInvocation)? { slots[worker].invocation }

    /// Stops every invocation and starts every worker again as its next generation, finished or
    /// not (after the job was rolled back to a checkpoint). Counted as relaunches.
    public func relaunchAll() throws {
        stopAll()
        for w in slots.indices where !slots[w].retired {
            slots[w].done = false
            slots[w].failures = 0
            slots[w].relaunchAt = nil
            slots[w].generation += 1
            counts.relaunches += 1
            try launch(w)
        }
    }

    /// Stops every running invocation.
    public func stopAll() {
        for i in slots.indices {
            slots[i].invocation?.kill()
            slots[i].invocation = nil
            slots[i].relaunchAt = nil
        }
    }
}

public struct FleetError: Error, CustomStringConvertible {
    public let description: String
    init(_ d: String) { description = d }
}

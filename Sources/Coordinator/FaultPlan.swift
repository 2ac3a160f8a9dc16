import Workloads

/// Faults `smlt train --inject-faults` injects, at steps chosen from `--seed`.
public struct FaultPlan: Sendable, Equatable {
    public enum Kind: String, CaseIterable, Sendable {
        /// SIGKILL a worker's running invocation.
        case workerKill = "worker-kill"
        /// SIGSTOP a worker: it stops renewing its lease and must be found and relaunched.
        case workerHang = "worker-hang"
        /// SIGKILL a shard's parameter server (`smlt serve`).
        case serverKill = "server-kill"
        /// Restart a shard's redis-server empty: the job rolls back to its last checkpoint.
        case shardWipe = "shard-wipe"
    }

    public struct Event: Sendable, Equatable {
        public var kind: Kind
        /// Fires once shard 0 has published this version.
        public var step: Int
        /// The worker id or shard index it hits.
        public var target: Int
    }

    public var events: [Event]

    /// Parses `worker-kill=3,server-kill=1` and spreads the events over steps 1..<steps-1.
    public init(_ text: String, steps: Int, workers: Int, shards: Int, seed: UInt64) throws(RequestError) {
        var counts: [(Kind, Int)] = []
        for part in text.split(separator: ",") {
            let kv = part.split(separator: "=", maxSplits: 1).map(String.init)
            guard kv.count == 2, let kind = Kind(rawValue: kv[0]), let n = Int(kv[1]), n >= 0, n <= 1000 else {
                throw RequestError(
                    "invalid fault '\(part)' (use e.g. worker-kill=3,server-kill=1; kinds: "
                        + Kind.allCases.map(\.rawValue).joined(separator: ", ") + ")")
            }
            counts.append((kind, n))
        }
        guard steps >= 3 || counts.allSatisfy({ $0.1 == 0 }) else {
            throw RequestError("--inject-faults needs at least 3 steps")
        }
        var rng = SplitMix(seed: seed ^ 0xFA17_FA17)
        var events: [Event] = []
        for (kind, n) in counts {
            for _ in 0..<n {
                let step = 1 + Int(rng.next() % UInt64(max(1, steps - 2)))
                let range = kind == .serverKill || kind == .shardWipe ? shards : workers
                events.append(Event(kind: kind, step: step, target: Int(rng.next() % UInt64(range))))
            }
        }
        self.events = events.sorted { ($0.step, $0.kind.rawValue, $0.target) < ($1.step, $1.kind.rawValue, $1.target) }
    }

    public static let none = FaultPlan(events: [])

    public init(events: [Event]) { self.events = events }

    public var needsOwnServers: Bool { events.contains { $0.kind == .serverKill || $0.kind == .shardWipe } }
}

import Foundation

/// Reconfigurations planned at step boundaries: `100:workers=8;200:shards=3;300:workers=2,shards=1`.
///
/// A change at step `s` applies before step `s` runs: steps `s, s+1, …` run with the new number
/// of workers and shards until the next change.
public struct Schedule: Sendable, Equatable, Codable {
    /// One planned reconfiguration.
    public struct Change: Sendable, Equatable, Codable {
        public var step: Int
        public var workers: Int?
        public var shards: Int?
        /// Function memory from this step on (the workers are relaunched with it); only the
        /// planner changes it.
        public var memoryMiB: Int?
        /// The job's new total number of steps (the planner's, under `--epochs` or
        /// `--target-loss`); not in the `--schedule` syntax.
        public var steps: Int?

        public init(step: Int, workers: Int? = nil, shards: Int? = nil, memoryMiB: Int? = nil, steps: Int? = nil) {
            self.step = step
            self.workers = workers
            self.shards = shards
            self.memoryMiB = memoryMiB
            self.steps = steps
        }
    }

    /// In step order, one per step.
    public var changes: [Change]

    public init(changes: [Change] = []) { self.changes = changes.sorted { $0.step < $1.step } }

    /// Parses the `--schedule` syntax; every error names the part that is wrong.
    public init(parsing text: String) throws(RequestError) {
        var changes: [Change] = []
        for part in text.split(separator: ";", omittingEmptySubsequences: true) {
            let entry = part.split(separator: ":", maxSplits: 1).map(String.init)
            guard entry.count == 2, let step = Int(entry[0].trimmingCharacters(in: .whitespaces)) else {
                throw RequestError("schedule entry '\(part)' must look like STEP:workers=N,shards=K")
            }
            var change = Change(step: step)
            for setting in entry[1].split(separator: ",") {
                let kv = setting.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
                guard kv.count == 2, let n = Int(kv[1]) else {
                    throw RequestError("schedule entry '\(part)': '\(setting)' must be workers=N or shards=K")
                }
                switch kv[0] {
                case "workers" where change.workers == nil: change.workers = n
                case "shards" where change.shards == nil: change.shards = n
                default: throw RequestError("schedule entry '\(part)': unknown or repeated setting '\(kv[0])'")
                }
            }
            guard change.workers != nil || change.shards != nil else {
                throw RequestError("schedule entry '\(part)' changes nothing")
            }
            changes.append(change)
        }
        guard !changes.isEmpty else { throw RequestError("the schedule '\(text)' has no entries") }
        for (a, b) in zip(changes, changes.dropFirst()) where a.step >= b.step {
            throw RequestError("schedule steps must increase: \(a.step) is followed by \(b.step)")
        }
        self.changes = changes
    }

    /// Checks the schedule against the run: every step inside it, every count within bounds.
    public func validate(steps: Int, maxWorkers: Int, maxShards: Int) throws(RequestError) {
        for c in changes {
            guard c.step >= 1 && c.step < steps else {
                throw RequestError("schedule step \(c.step) is outside the run (steps 1 to \(steps - 1))")
            }
            if let w = c.workers, !(1...maxWorkers).contains(w) {
                throw RequestError("schedule step \(c.step): workers=\(w) must be from 1 to \(maxWorkers)")
            }
            if let k = c.shards, !(1...maxShards).contains(k) {
                throw RequestError("schedule step \(c.step): shards=\(k) must be from 1 to \(maxShards)")
            }
        }
    }

    /// The number of workers that run `step`.
    public func workers(at step: Int, initial: Int) -> Int {
        changes.last { $0.step <= step && $0.workers != nil }?.workers ?? initial
    }

    /// The number of shards during `step`.
    public func shards(at step: Int, initial: Int) -> Int {
        changes.last { $0.step <= step && $0.shards != nil }?.shards ?? initial
    }

    /// The most workers any step runs with.
    public func maxWorkers(initial: Int) -> Int { changes.compactMap(\.workers).reduce(initial, max) }
}

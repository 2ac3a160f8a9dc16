import Foundation
import KeySchema
import RedisClient
import ShardManager

/// A run's state in Redis (`smlt:{JOB}:run` on the home shard): what `smlt train --resume`
/// needs to continue a job whose driver died. The workers' progress and the parameters are in
/// Redis already; this adds the request they came from and what the driver has done.
public struct RunState: Codable, Sendable, Equatable {
    public var request: TrainingRequest
    /// `running` while a driver runs the job, `finished` once it ended.
    public var status: String
    public var reconfigurations: [ReconfigurationRecord]
    /// Where this run's checkpoints are written.
    public var checkpointDirectory: String?

    public init(request: TrainingRequest, checkpointDirectory: String?) {
        self.request = request
        status = "running"
        reconfigurations = []
        self.checkpointDirectory = checkpointDirectory
    }

    enum CodingKeys: String, CodingKey {
        case request, status, reconfigurations
        case checkpointDirectory = "checkpoint_dir"
    }

    /// Stores the state on the job's home shard.
    public func store(on m: ShardManager) throws(ShardError) {
        let json: [UInt8]
        do { json = Array(try JSONEncoder().encode(self)) } catch { throw ShardError(.invalidSpec, "\(error)") }
        let key = m.keys.run
        try m.onShard(0) { c throws(RedisError) in _ = try c.run(RedisCommand("SET", key).appending(bytes: json)) }
    }

    /// The state stored for the job; nil when there is none (a job not run by `smlt train`).
    public static func load(from m: ShardManager) throws(ShardError) -> RunState? {
        let key = m.keys.run
        guard let bytes = try m.onShard(0, { c throws(RedisError) in try c.run(["GET", key]).bytes }) else {
            return nil
        }
        do { return try JSONDecoder().decode(RunState.self, from: Data(bytes)) } catch {
            throw ShardError(.corruptChunk, "the run state of job '\(m.map.job)' is not valid: \(error)")
        }
    }
}

import Foundation
import TrainingProtocol

/// A worker's push that a parameter server refused (a missing or damaged gradient blob, or one
/// holding a NaN or an infinity), as recorded in the job's `rejected` list on the shard, where an
/// operator or a driver can see it (`LRANGE smlt:{JOB}:rejected 0 -1`).
public struct Rejection: Codable, Sendable, Equatable {
    /// How many rejections the list keeps per shard (the newest).
    public static let kept = 100

    public var step: Int
    public var worker: Int
    /// The first refused chunk of the push.
    public var chunk: Int
    public var reason: String

    public init(step: Int, worker: Int, chunk: Int, reason: String) {
        self.step = step
        self.worker = worker
        self.chunk = chunk
        self.reason = reason
    }

    /// The JSON stored in the list, e.g. `{"chunk":2,"reason":"…","step":0,"worker":1}`.
    public var json: [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try? Array(encoder.encode(self))) ?? []
    }
}

import Foundation
import ShardManager
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

/// Why a push was refused, in a few words: the `reason` label of `smlt_push_rejected_total` and
/// the `reason` field of the log line (the details are in its message and in `Rejection`).
public enum RejectionReason: String, Sendable, CaseIterable {
    /// A gradient chunk's key does not exist.
    case missing
    /// A blob is damaged (header, sizes, checksum, payload) or is for another step or worker.
    case corrupt
    /// A value is a NaN or an infinity.
    case nonFinite = "non_finite"
    /// Redis answered the read with an error or an unexpected reply.
    case redisReply = "redis_reply"
}

/// Why one chunk of a push was refused: the reason's category and the details.
struct PushFault {
    var reason: RejectionReason
    var detail: String

    init(reason: RejectionReason, detail: String) {
        self.reason = reason
        self.detail = detail
    }

    init(_ failure: BlobReadFailure) {
        switch failure {
        case .missing: reason = .missing
        case .invalid: reason = .corrupt
        case .serverError, .unexpected: reason = .redisReply
        }
        detail = failure.description
    }
}

internal import Foundation
internal import ShardManager
internal import Synchronization
internal import TensorBlob
internal import TrainingProtocol

extension FunctionWorker {
    /// The job as this worker sees it when `prepare` runs: its settings, its tensors and the
    /// objects the driver staged for it.
    ///
    /// After a reconfiguration (a new number of workers, new shards) `prepare` runs again with
    /// the job as it is then.
    public struct Job: Sendable {
        /// The job's id.
        public let id: String
        /// This worker's id, `0..<workers`.
        public let worker: Int
        /// How many workers take part in the job's steps now.
        public let workers: Int
        /// How many steps the job trains for.
        public let steps: Int
        /// The settings the driver registered the job with (the training config's `workload`;
        /// for SMLT's built-in models: `model`, `inputs`, `classes`, `batch_size`, `seed`,
        /// `hidden`).
        public let workload: [String: String]
        /// The names of the job's tensors, in the job's order.
        public let tensorNames: [String]
        /// The shape of each of the job's tensors, by name.
        public let tensorShapes: [String: [Int]]

        let session: WorkerSession
        let objects: StagedObjects

        init(session: WorkerSession, objects: StagedObjects) {
            self.session = session
            self.objects = objects
            id = session.shards.map.job
            worker = session.worker
            workers = session.config.workers
            steps = session.config.steps
            workload = session.config.workload
            tensorNames = session.shards.map.tensors.map(\.name)
            tensorShapes = Dictionary(
                session.shards.map.tensors.map { ($0.name, $0.shape) }, uniquingKeysWith: { first, _ in first })
        }

        /// The bytes of object `name`, which the driver staged for the job and does not change
        /// (a data partition, say). Read from the function's local cache when an earlier
        /// invocation on this machine left it there (a warm start, reported as such), otherwise
        /// from Redis, and then kept in that cache.
        ///
        /// - Throws: `.missingObject` when the job has no such object; `.storage` when Redis
        ///   fails.
        public func object(named name: String) throws(FunctionClientError) -> [UInt8] {
            try objects.read(name, from: session)
        }

        /// Object `name` decoded as a tensor blob (docs/wire-format.md, "Tensor blobs"), checked
        /// (checksum, sizes) whether it came from Redis or the local cache. A blob holds no
        /// shape: the tensor is one-dimensional.
        ///
        /// - Throws: `.missingObject`, `.corruptObject` when it is not a valid blob, `.storage`.
        public func tensor(named name: String) throws(FunctionClientError) -> Tensor {
            let bytes = try object(named: name)
            do {
                let values = try TensorBlob.decode(bytes).values
                return Tensor(checked: [values.count], values: values)
            } catch { throw FunctionClientError(error, object: name) }
        }
    }
}

/// The job's staged objects as this invocation reads them, through the function's local cache;
/// counts where they came from, so a start can be reported warm or cold.
final class StagedObjects: Sendable {
    let cacheDirectory: String?
    private let reads = Mutex<(cached: Int, fetched: Int)>((0, 0))

    init(cacheDirectory: String?) { self.cacheDirectory = cacheDirectory }

    /// Whether every object read so far came from the cache (and there was one).
    var warm: Bool { reads.withLock { $0.cached > 0 && $0.fetched == 0 } }

    func read(_ name: String, from session: WorkerSession) throws(FunctionClientError) -> [UInt8] {
        let file = cacheFile(name, job: session.shards.map.job)
        if let file, let data = FileManager.default.contents(atPath: file) {
            reads.withLock { $0.cached += 1 }
            return Array(data)
        }
        let bytes: [UInt8]?
        do { bytes = try session.object(name) } catch { throw FunctionClientError(error) }
        guard let bytes else {
            throw FunctionClientError(
                .missingObject, "job \(session.shards.map.job) has no object '\(name)' (worker \(session.worker))")
        }
        reads.withLock { $0.fetched += 1 }
        if let file, let dir = cacheDirectory {
            try? FileManager.default.createDirectory(
                atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            // Written under a temporary name and renamed, so a killed worker leaves no torn file.
            let tmp = file + ".\(getpid()).tmp"
            let attributes: [FileAttributeKey: Any] = [.posixPermissions: 0o600]
            if FileManager.default.createFile(atPath: tmp, contents: Data(bytes), attributes: attributes) {
                rename(tmp, file)
            }
        }
        return bytes
    }

    /// `CACHE/JOB-NAME.blob`, for names that are safe as part of a file name.
    private func cacheFile(_ name: String, job: String) -> String? {
        let safe = name.first != "." && name.unicodeScalars.allSatisfy { Self.fileNameCharacters.contains($0) }
        guard let cacheDirectory, !name.isEmpty, safe else { return nil }
        return "\(cacheDirectory)/\(job)-\(name).blob"
    }

    private static let fileNameCharacters = Set(
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.".unicodeScalars)
}

import Foundation
import FunctionClient
import ShardManager
import TensorBlob
import TrainingProtocol
import Workloads

/// The step function of the built-in workloads (softmax regression, MLP): it checks the job's
/// tensors against the model, loads this worker's data partition (from the function's local
/// cache when an earlier invocation left it there, a warm start), and computes the gradient of
/// batch `t`: `(t·n + k) mod rows` of the partition, `n = min(batch_size, rows)`.
public final class BuiltinTraining {
    let cacheDirectory: String?
    private(set) var settings: WorkloadSettings?
    private var model: (any Model)?
    /// The partition loaded, and the number of workers it was cut for.
    private var partition: (workers: Int, data: Dataset)?

    /// - Parameter cacheDirectory: the function's local disk cache (`SMLT_FUNCTION_CACHE`).
    public init(cacheDirectory: String?) { self.cacheDirectory = cacheDirectory }

    /// Checks the job and loads the partition for the job's current number of workers; returns
    /// whether it came from the local cache.
    public func prepare(_ client: FunctionClient) throws -> Bool {
        let settings = try WorkloadSettings(client.config.workload)
        let model = settings.makeModel()
        guard model.parameterCount == client.parameterCount else {
            throw WorkerRuntimeError(
                "the job's tensors hold \(client.parameterCount) parameters but the \(settings.model) model needs \(model.parameterCount)"
            )
        }
        let expected = model.parameters.map { TensorSpec(name: $0.name, shape: $0.shape) }
        guard expected == client.shards.map.tensors else {
            throw WorkerRuntimeError(
                "the job's tensor shapes \(client.shards.map.tensors.map(\.shape)) do not match the model's \(expected.map(\.shape))"
            )
        }
        self.settings = settings
        self.model = model
        let workers = client.config.workers
        guard partition?.workers != workers else { return false }
        let (data, fromCache) = try loadPartition(client, workers: workers, settings: settings)
        partition = (workers, data)
        return fromCache
    }

    /// Computes this worker's gradient of batch `step.index` into `gradient`.
    public func step(
        _ step: WorkerRuntime.Step, _ params: UnsafeBufferPointer<Float>, _ gradient: UnsafeMutableBufferPointer<Float>
    ) throws -> WorkerRuntime.Report {
        guard let settings, let model, let partition, partition.workers == step.workers else {
            throw WorkerRuntimeError("step \(step.index) before the job's data was loaded")
        }
        let (x, y) = partition.data.batch(step: step.index, size: settings.batchSize)
        let r = x.withUnsafeBufferPointer { xs in
            model.lossAndGradient(params: params, features: xs, labels: y, gradient: gradient)
        }
        return WorkerRuntime.Report(loss: r.loss, correct: r.correct, examples: y.count)
    }

    /// This worker's data partition: from the local cache when an earlier invocation on this
    /// machine left it there, otherwise from Redis (and then cached).
    func loadPartition(_ client: FunctionClient, workers: Int, settings: WorkloadSettings) throws -> (Dataset, Bool) {
        let w = client.worker
        let names = [StagedData.features(worker: w, of: workers), StagedData.labels(worker: w, of: workers)]
        let job = client.shards.map.job
        let files = cacheDirectory.map { dir in names.map { "\(dir)/\(job)-\($0).blob" } }
        var blobs: [[UInt8]]?
        var warm = false
        if let files, let x = FileManager.default.contents(atPath: files[0]),
            let y = FileManager.default.contents(atPath: files[1])
        {
            blobs = [Array(x), Array(y)]
            warm = true
        }
        if blobs == nil {
            guard let xb = try client.object(names[0]), let yb = try client.object(names[1]) else {
                throw WorkerRuntimeError("no data partition staged for worker \(w) of \(workers)")
            }
            blobs = [xb, yb]
            if let files, let dir = cacheDirectory {
                try? FileManager.default.createDirectory(
                    atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
                for (file, bytes) in zip(files, [xb, yb]) {
                    // Written under a temporary name and renamed, so a killed worker leaves no torn file.
                    let tmp = file + ".\(getpid()).tmp"
                    if FileManager.default.createFile(
                        atPath: tmp, contents: Data(bytes), attributes: [.posixPermissions: 0o600])
                    {
                        rename(tmp, file)
                    }
                }
            }
        }
        // Cached or not, the blobs are checked (checksum, sizes) before use.
        let x = try TensorBlob.decode(blobs![0]).values
        let y = try TensorBlob.decode(blobs![1]).values
        let inputs = settings.inputs
        guard x.count == y.count * inputs else {
            throw WorkerRuntimeError(
                "staged partition has \(x.count) features for \(y.count) labels of dimension \(inputs)")
        }
        guard !y.isEmpty else { throw WorkerRuntimeError("the data partition of worker \(w) of \(workers) is empty") }
        let labels = y.map { Int32(exactly: $0) ?? -1 }
        guard labels.allSatisfy({ $0 >= 0 && Int($0) < settings.classes }) else {
            throw WorkerRuntimeError("staged partition has labels outside 0..<\(settings.classes)")
        }
        return (Dataset(features: x, labels: labels, dimension: inputs, classes: settings.classes), warm)
    }
}

import FunctionClient
import TrainingProtocol
import Workloads

/// SMLT's built-in workloads (softmax regression, MLP) as a worker function on the FunctionClient
/// SDK: what `smlt worker` runs (docs/wire-format.md, "Built-in workloads").
///
/// `prepare` checks the job's tensors against the model and loads this worker's data partition
/// (from the function's local cache on a warm start); `step` computes the gradient of batch `t`:
/// `(t·n + k) mod rows` of the partition, `n = min(batch_size, rows)`.
///
///     FunctionWorker.run(prepare: BuiltinWorker.prepare, step: BuiltinWorker.step)
public enum BuiltinWorker {
    /// What the steps need: the model and this worker's data partition.
    public struct Prepared: Sendable {
        let settings: WorkloadSettings
        let model: any Model
        let data: Dataset
    }

    /// Checks the job against its model and loads the data partition for the job's current
    /// number of workers.
    public static func prepare(_ job: FunctionWorker.Job) throws -> Prepared {
        let settings = try WorkloadSettings(job.workload)
        let model = settings.makeModel()
        let count = job.tensorNames.reduce(0) { $0 + (job.tensorShapes[$1] ?? []).reduce(1, *) }
        guard model.parameterCount == count else {
            throw BuiltinWorkerError(
                "the job's tensors hold \(count) parameters but the \(settings.model) model needs \(model.parameterCount)"
            )
        }
        let expected = model.parameters.map { "\($0.name) \($0.shape)" }
        let actual = job.tensorNames.map { "\($0) \(job.tensorShapes[$0] ?? [])" }
        guard expected == actual else {
            throw BuiltinWorkerError(
                "the job's tensors \(actual.joined(separator: ", ")) do not match the model's \(expected.joined(separator: ", "))"
            )
        }
        return Prepared(settings: settings, model: model, data: try partition(job, settings: settings))
    }

    /// The gradient of this worker's batch `step.index` and its metrics.
    public static func step(_ prepared: Prepared, _ step: FunctionWorker.Step, _ parameters: Tensors) throws
        -> FunctionWorker.StepResult
    {
        let (x, y) = prepared.data.batch(step: step.index, size: prepared.settings.batchSize)
        // The same names and shapes as the parameters; the model overwrites every value.
        var gradients = parameters
        let r = parameters.withUnsafeBufferPointer { p in
            x.withUnsafeBufferPointer { xs in
                gradients.withUnsafeMutableBufferPointer { g in
                    prepared.model.lossAndGradient(params: p, features: xs, labels: y, gradient: g)
                }
            }
        }
        return FunctionWorker.StepResult(
            gradients: gradients, loss: r.loss, accuracy: Double(r.correct) / Double(max(1, y.count)),
            examples: y.count)
    }

    /// This worker's data partition for the job's number of workers, checked.
    static func partition(_ job: FunctionWorker.Job, settings: WorkloadSettings) throws -> Dataset {
        let (w, n) = (job.worker, job.workers)
        let x: Tensor
        let y: Tensor
        do {
            x = try job.tensor(named: StagedData.features(worker: w, of: n))
            y = try job.tensor(named: StagedData.labels(worker: w, of: n))
        } catch {
            // (A typed `catch … where` here crashes the Swift 6.3 compiler.)
            guard error.code == .missingObject else { throw error }
            throw BuiltinWorkerError("no data partition staged for worker \(w) of \(n)")
        }
        let inputs = settings.inputs
        guard x.values.count == y.values.count * inputs else {
            throw BuiltinWorkerError(
                "staged partition has \(x.values.count) features for \(y.values.count) labels of dimension \(inputs)")
        }
        guard !y.values.isEmpty else { throw BuiltinWorkerError("the data partition of worker \(w) of \(n) is empty") }
        let labels = y.values.map { Int32(exactly: $0) ?? -1 }
        guard labels.allSatisfy({ $0 >= 0 && Int($0) < settings.classes }) else {
            throw BuiltinWorkerError("staged partition has labels outside 0..<\(settings.classes)")
        }
        return Dataset(features: x.values, labels: labels, dimension: inputs, classes: settings.classes)
    }
}

/// Why the built-in worker cannot train a job (its tensors or data do not fit the model).
public struct BuiltinWorkerError: Error, Sendable, CustomStringConvertible {
    /// What is wrong.
    public let description: String
    init(_ description: String) { self.description = description }
}

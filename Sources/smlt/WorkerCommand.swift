import ArgumentParser
import Foundation
import FunctionClient
import ShardManager
import TensorBlob
import TrainingProtocol
import Workloads

struct WorkerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "The function entry point: train one worker's share of a job, step by step (BSP).",
        discussion: "Reads the job's config and its data partition from Redis, so it needs no shared disk.")

    @OptionGroup var redis: RedisOptionGroup
    @Option(help: "The job id.") var job: String
    @Option(help: "This worker's id, 0..<workers.") var worker: Int

    func run() throws {
        do {
            try train()
        } catch {
            printError("worker \(worker) of job \(job): \(error)")
            throw ExitCode(1)
        }
    }

    func train() throws {
        let client = try FunctionClient(
            job: job, worker: worker, endpoints: try redis.endpoints(), options: redis.options)
        let settings = try WorkloadSettings(client.config.workload)
        let model = try settings.makeModel()
        guard model.parameterCount == client.parameterCount else {
            throw WorkerError(
                "the job's tensors hold \(client.parameterCount) parameters but the \(settings.model) model needs \(model.parameterCount)"
            )
        }
        let expected = model.parameters.map { TensorSpec(name: $0.name, shape: $0.shape) }
        guard expected == client.shards.map.tensors else {
            throw WorkerError(
                "the job's tensor shapes \(client.shards.map.tensors.map(\.shape)) do not match the model's \(expected.map(\.shape))"
            )
        }
        let partition = try loadPartition(client, inputs: settings.inputs, classes: settings.classes)
        var params = [Float](repeating: 0, count: model.parameterCount)
        var gradient = [Float](repeating: 0, count: model.parameterCount)
        for step in 0..<client.config.steps {
            try params.withUnsafeMutableBufferPointer { p in _ = try client.pull(step: step, into: p) }
            let (x, y) = partition.batch(step: step, size: settings.batchSize)
            let r = params.withUnsafeBufferPointer { p in
                x.withUnsafeBufferPointer { xs in
                    gradient.withUnsafeMutableBufferPointer {
                        model.lossAndGradient(params: p, features: xs, labels: y, gradient: $0)
                    }
                }
            }
            try client.push(gradient: gradient, step: step)
            try client.report(
                StepMetrics(
                    worker: worker, step: step, loss: r.loss, accuracy: Double(r.correct) / Double(max(1, y.count)),
                    examples: y.count))
        }
    }

    func loadPartition(_ client: FunctionClient, inputs: Int, classes: Int) throws -> Dataset {
        guard let xb = try client.object(StagedData.features(worker)),
            let yb = try client.object(StagedData.labels(worker))
        else { throw WorkerError("no data partition staged for worker \(worker)") }
        let x = try TensorBlob.decode(xb).values
        let y = try TensorBlob.decode(yb).values
        guard inputs > 0, x.count == y.count * inputs else {
            throw WorkerError("staged partition has \(x.count) features for \(y.count) labels of dimension \(inputs)")
        }
        let labels = y.map { Int32($0) }
        guard labels.allSatisfy({ $0 >= 0 && Int($0) < classes }) else {
            throw WorkerError("staged partition has labels outside 0..<\(classes)")
        }
        return Dataset(features: x, labels: labels, dimension: inputs, classes: classes)
    }
}

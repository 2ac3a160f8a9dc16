internal import Foundation
internal import KeySchema
internal import RedisClient
internal import ShardManager
internal import TensorBlob
internal import TrainingProtocol

extension FunctionWorker {
    /// What a function that defines its own model (`smlt train --model function`) is told about
    /// the job's data, to shape and seed the model.
    public struct DataShape: Sendable, Equatable {
        /// Features per example.
        public let features: Int
        /// Classes; labels are `0..<classes`.
        public let classes: Int
        public let trainExamples: Int
        public let testExamples: Int
        /// The run's seed (`--seed`), for the initial parameters.
        public let seed: UInt64
    }

    /// The test set the driver staged: `features` is `[examples, features]`, `labels` `[examples]`
    /// (class indices as floats).
    public struct TestSet: Sendable {
        public let features: Tensor
        public let labels: Tensor
    }

    /// The final model's metrics on the test set (and, if the function computes them, on the
    /// training set), which `smlt train` reports.
    public struct Evaluation: Sendable, Equatable {
        public var testLoss: Double
        /// 0 to 1.
        public var testAccuracy: Double
        public var trainLoss: Double?
        public var trainAccuracy: Double?

        /// Test metrics, and training ones when known.
        public init(testLoss: Double, testAccuracy: Double, trainLoss: Double? = nil, trainAccuracy: Double? = nil) {
            self.testLoss = testLoss
            self.testAccuracy = testAccuracy
            self.trainLoss = trainLoss
            self.trainAccuracy = trainAccuracy
        }
    }

    /// A model the function defines: `describe` returns its tensors with their initial values
    /// (the job's version 0, in this order), `evaluate` the final parameters' metrics on the
    /// test set. `run` calls them for the describe and evaluate invocations of the job.
    public struct Model {
        public var describe: (DataShape) throws -> Tensors
        public var evaluate: (DataShape, Tensors, TestSet) throws -> Evaluation

        /// The two hooks of a function-defined model.
        public init(
            describe: @escaping (DataShape) throws -> Tensors,
            evaluate: @escaping (DataShape, Tensors, TestSet) throws -> Evaluation
        ) {
            self.describe = describe
            self.evaluate = evaluate
        }
    }
}

/// The describe and evaluate phases (docs/wire-format.md, "Function-defined models").
enum ModelPhases {
    static func shape(_ invocation: Invocation) throws(FunctionClientError) -> FunctionWorker.DataShape {
        guard let d = invocation.event.dataset, let seed = invocation.event.seed else {
            throw FunctionClientError(
                .invalidInvocation, "the event of a function-defined model's phase has no 'dataset' or 'seed'")
        }
        return FunctionWorker.DataShape(
            features: d.features, classes: d.classes, trainExamples: d.trainExamples,
            testExamples: d.testExamples, seed: seed)
    }

    /// Writes the model's tensors to the home shard: each tensor's blob, then the manifest.
    static func describe(_ invocation: Invocation, _ model: FunctionWorker.Model) throws -> FunctionWorker.Outcome {
        let shape = try shape(invocation)
        let tensors: Tensors
        do { tensors = try model.describe(shape) } catch {
            throw WorkerLoop.functionError(error, context: "describe: ")
        }
        guard !tensors.names.isEmpty else {
            throw FunctionClientError(.invalidTensor, "describe: the model has no tensors")
        }
        guard let home = try invocation.endpoints().first else {
            throw FunctionClientError(.invalidInvocation, "the event names no Redis endpoint")
        }
        let c = try RedisConnection(home, options: invocation.options)
        let keys = JobKeys(job: invocation.event.job)
        var manifest: [[String: Any]] = []
        for (i, name) in tensors.names.enumerated() {
            let t = tensors[name]!
            try c.run(
                RedisCommand("SET", keys.describeTensor(i)).appending(
                    bytes: TensorBlob.encode(t.values, codec: .lz4, step: 0, producer: 0)))
            manifest.append(["name": name, "shape": t.shape])
        }
        let json = try JSONSerialization.data(withJSONObject: ["tensors": manifest])
        try c.run(RedisCommand("SET", keys.describe).appending(bytes: Array(json)))
        return .finished
    }

    /// Evaluates the job's final parameters on the staged test set and writes the metrics.
    static func evaluate(_ invocation: Invocation, _ model: FunctionWorker.Model) throws -> FunctionWorker.Outcome {
        let shape = try shape(invocation)
        let session = try WorkerSession(
            job: invocation.event.job, worker: 0, endpoints: try invocation.endpoints(), options: invocation.options)
        let values = try session.pull(step: session.config.steps, timeout: .seconds(60))
        let parameters = Tensors(layout: WorkerLoop.layout(of: session), values: values)
        func staged(_ name: String, _ shape: [Int]) throws -> Tensor {
            guard let bytes = try session.object(name) else {
                throw FunctionClientError(.missingObject, "evaluate: the staged test set's '\(name)' is missing")
            }
            let decoded: [Float]
            do { decoded = try TensorBlob.decode(bytes).values } catch {
                throw FunctionClientError(
                    .corruptObject, "evaluate: the staged '\(name)' is not a valid blob: \(error)")
            }
            return try Tensor(shape: shape, values: decoded)
        }
        let m = shape.testExamples
        let test = FunctionWorker.TestSet(
            features: try staged(StagedData.testFeatures, [m, shape.features]),
            labels: try staged(StagedData.testLabels, [m]))
        let e: FunctionWorker.Evaluation
        do { e = try model.evaluate(shape, parameters, test) } catch {
            throw WorkerLoop.functionError(error, context: "evaluate: ")
        }
        var report: [String: Double] = ["test_loss": e.testLoss, "test_accuracy": e.testAccuracy]
        report["train_loss"] = e.trainLoss
        report["train_accuracy"] = e.trainAccuracy
        guard report.values.allSatisfy(\.isFinite) else {
            throw FunctionClientError(.functionFailed, "evaluate: a metric is not finite: \(report)")
        }
        let json = try JSONSerialization.data(withJSONObject: report)
        let key = session.shards.keys.evaluation
        try session.shards.onShard(0) { c throws(RedisError) in
            _ = try c.run(RedisCommand("SET", key).appending(bytes: Array(json)))
        }
        return .finished
    }
}

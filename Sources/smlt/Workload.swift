import Foundation
import ShardManager
import TensorBlob
import TrainingProtocol
import Workloads

/// The model a job trains, as recorded in its TrainingConfig's `workload` settings.
struct WorkloadSettings {
    var model: String
    var hidden: Int
    var inputs: Int
    var classes: Int
    var batchSize: Int
    var seed: UInt64

    init(model: String, hidden: Int, inputs: Int, classes: Int, batchSize: Int, seed: UInt64) {
        self.model = model
        self.hidden = hidden
        self.inputs = inputs
        self.classes = classes
        self.batchSize = batchSize
        self.seed = seed
    }

    init(_ w: [String: String]) throws {
        func int(_ k: String) throws -> Int {
            guard let s = w[k], let v = Int(s), v >= 0 else {
                throw WorkerError("job's workload setting '\(k)' is missing or invalid")
            }
            return v
        }
        model = w["model"] ?? ""
        hidden = try int("hidden")
        inputs = try int("inputs")
        classes = try int("classes")
        batchSize = try int("batch_size")
        seed = UInt64(try int("seed"))
    }

    var dictionary: [String: String] {
        [
            "model": model, "hidden": "\(hidden)", "inputs": "\(inputs)", "classes": "\(classes)",
            "batch_size": "\(batchSize)", "seed": "\(seed)",
        ]
    }

    static let models = ["softmax", "mlp"]

    func makeModel() throws -> any Model {
        switch model {
        case "softmax": return SoftmaxRegression(inputs: inputs, classes: classes)
        case "mlp": return MLP(inputs: inputs, hidden: hidden, classes: classes)
        default: throw WorkerError("unknown model '\(model)' (choose one of: \(Self.models.joined(separator: ", ")))")
        }
    }

    /// The job spec whose tensors hold this model.
    func spec(job: String, codec: BlobCodec, chunkElements: Int) throws -> JobSpec {
        JobSpec(
            job: job, tensors: try makeModel().parameters.map { TensorSpec(name: $0.name, shape: $0.shape) },
            chunkElements: chunkElements, codec: codec)
    }
}

struct WorkerError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// Names of the staged data objects of a worker.
enum StagedData {
    static func features(_ w: Int) -> String { "data-\(w)-x" }
    static func labels(_ w: Int) -> String { "data-\(w)-y" }
}

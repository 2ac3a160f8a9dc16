// A worker function for SMLT's softmax jobs, on the FunctionClient SDK alone:
//
//     smlt train --dataset digits --model softmax --function .build/debug/softmax-worker
//
// or, defining the model itself (its tensors, version 0 and evaluation):
//
//     smlt train --dataset digits --model function --lr 0.5 --function .build/debug/softmax-worker
//
// Its float operations run in the order of SMLT's built-in model, so a run with it ends with the
// parameters (the param_digest) of the same run with `smlt worker`; a test checks that.
import Foundation
import FunctionClient

/// This worker's examples, staged by `smlt train` as two tensors, and its batch size.
struct Partition {
    var features: [Float]  // rows × inputs, row-major
    var labels: [Float]  // class indices
    var batchSize: Int
}

struct WrongJob: Error, CustomStringConvertible {
    var description: String
}

/// softmax(x · weight + bias) in the order of SMLT's float operations, and the index of the first
/// largest logit (the prediction).
func softmax(_ x: ArraySlice<Float>, _ weight: Tensor, _ bias: Tensor) -> (p: [Float], top: Int) {
    let classes = bias.values.count
    var z = bias.values
    for (f, xf) in zip(0..., x) where xf != 0 {
        for j in 0..<classes { z[j] += xf * weight.values[f * classes + j] }
    }
    let top = z.indices.max { z[$0] < z[$1] }!
    let largest = z[top]
    var sum: Float = 0
    for j in 0..<classes {
        z[j] = Float(exp(Double(z[j] - largest)))
        sum += z[j]
    }
    let inverse = 1 / sum
    for j in 0..<classes { z[j] *= inverse }
    return (z, top)
}

/// For `--model function`: the model's tensors (zeros at version 0, as SMLT's softmax), and the
/// mean loss and accuracy of the final parameters on the test set.
let model = FunctionWorker.Model { data in
    [
        "weight": try Tensor(
            shape: [data.features, data.classes], values: [Float](repeating: 0, count: data.features * data.classes)),
        "bias": try Tensor(shape: [data.classes], values: [Float](repeating: 0, count: data.classes)),
    ]
} evaluate: { data, parameters, test in
    guard let weight = parameters["weight"], let bias = parameters["bias"] else {
        throw WrongJob(description: "the job has no 'weight' and 'bias' tensors")
    }
    let m = test.labels.values.count
    var loss = 0.0
    var correct = 0
    for i in 0..<m {
        let (p, top) = softmax(test.features.values[(i * data.features)..<((i + 1) * data.features)], weight, bias)
        let label = Int(test.labels.values[i])
        loss -= log(Double(max(p[label], 1e-30)))
        if top == label { correct += 1 }
    }
    return FunctionWorker.Evaluation(testLoss: loss / Double(m), testAccuracy: Double(correct) / Double(m))
}

FunctionWorker.run(model: model) { job in
    guard ["softmax", "function"].contains(job.workload["model"]), let batchSize = Int(job.workload["batch_size"] ?? "")
    else {
        throw WrongJob(description: "this worker trains softmax jobs, not \(job.workload)")
    }
    let name = "data-\(job.workers)-\(job.worker)"
    return Partition(
        features: try job.tensor(named: "\(name)-x").values, labels: try job.tensor(named: "\(name)-y").values,
        batchSize: batchSize)
} step: { data, step, parameters in
    guard let weight = parameters["weight"], let bias = parameters["bias"] else {
        throw WrongJob(description: "the job has no 'weight' and 'bias' tensors")
    }
    let (inputs, classes) = (weight.shape[0], weight.shape[1])
    var gw = [Float](repeating: 0, count: inputs * classes)
    var gb = [Float](repeating: 0, count: classes)
    var loss = 0.0
    var correct = 0
    // Batch t is examples (t·n + k) mod rows, k < n.
    let n = min(data.batchSize, data.labels.count)
    for k in 0..<n {
        let i = (step.index * n + k) % data.labels.count
        let x = data.features[(i * inputs)..<((i + 1) * inputs)]
        let label = Int(data.labels[i])
        // Softmax cross-entropy; z becomes dLoss/dz = softmax(z) - onehot(label).
        var (z, top) = softmax(x, weight, bias)
        if top == label { correct += 1 }
        loss -= log(Double(max(z[label], 1e-30)))
        z[label] -= 1
        // The gradient of the mean loss: x ⊗ z for the weight, z for the bias, over n.
        for (f, xf) in zip(0..., x) where xf != 0 {
            for j in 0..<classes { gw[f * classes + j] += xf * z[j] }
        }
        for j in 0..<classes { gb[j] += z[j] }
    }
    let scale = 1 / Float(n)
    return FunctionWorker.StepResult(
        gradients: try [
            "weight": Tensor(shape: weight.shape, values: gw.map { $0 * scale }),
            "bias": Tensor(shape: bias.shape, values: gb.map { $0 * scale }),
        ],
        loss: loss / Double(n), accuracy: Double(correct) / Double(n), examples: n)
}

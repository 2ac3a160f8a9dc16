import Foundation

/// A model's named tensor and its shape.
public struct ParameterShape: Sendable, Equatable {
    public let name: String
    public let shape: [Int]
    public var count: Int { shape.reduce(1, *) }

    public init(name: String, shape: [Int]) {
        self.name = name
        self.shape = shape
    }
}

/// A differentiable classifier over a flat parameter vector. Two implementations:
/// `SoftmaxRegression` and `MLP`.
public protocol Model: Sendable {
    /// The tensors, in the order they are laid out in the flat parameter vector.
    var parameters: [ParameterShape] { get }
    /// Deterministic initial parameters.
    func initialParameters(seed: UInt64) -> [Float]
    /// The mean gradient of the cross-entropy loss over a batch, written to `gradient`.
    /// Returns the mean loss and the number of correct predictions.
    func lossAndGradient(
        params: UnsafeBufferPointer<Float>, features: UnsafeBufferPointer<Float>, labels: [Int32],
        gradient: UnsafeMutableBufferPointer<Float>
    ) -> (loss: Double, correct: Int)
    /// Mean loss and accuracy over a data set.
    func evaluate(params: [Float], on data: Dataset) -> (loss: Double, accuracy: Double)
}

extension Model {
    public var parameterCount: Int { parameters.reduce(0) { $0 + $1.count } }

    public func lossAndGradient(params: [Float], features: [Float], labels: [Int32]) -> (
        loss: Double, correct: Int, gradient: [Float]
    ) {
        var g = [Float](repeating: 0, count: parameterCount)
        let r = params.withUnsafeBufferPointer { p in
            features.withUnsafeBufferPointer { f in
                g.withUnsafeMutableBufferPointer {
                    lossAndGradient(params: p, features: f, labels: labels, gradient: $0)
                }
            }
        }
        return (r.loss, r.correct, g)
    }

    public func evaluate(params: [Float], on data: Dataset) -> (loss: Double, accuracy: Double) {
        guard data.count > 0 else { return (0, 0) }
        var loss = 0.0
        var correct = 0
        let batch = 256
        var g = [Float](repeating: 0, count: parameterCount)
        var start = 0
        while start < data.count {
            let end = min(data.count, start + batch)
            let f = Array(data.features[start * data.dimension..<end * data.dimension])
            let l = Array(data.labels[start..<end])
            let r = params.withUnsafeBufferPointer { p in
                f.withUnsafeBufferPointer { fp in
                    g.withUnsafeMutableBufferPointer {
                        lossAndGradient(params: p, features: fp, labels: l, gradient: $0)
                    }
                }
            }
            loss += r.loss * Double(end - start)
            correct += r.correct
            start = end
        }
        return (loss / Double(data.count), Double(correct) / Double(data.count))
    }
}

/// `out = bias + Σ input[f] · weights[f, 0..<width]` over the `count` inputs, skipping zero
/// inputs (sparse features, inactive ReLU units). The order of the additions is fixed, so
/// every caller gets the same bits.
@inline(__always)
func affine(
    _ input: UnsafePointer<Float>, _ count: Int, weights: UnsafePointer<Float>, bias: UnsafePointer<Float>,
    width: Int, into out: UnsafeMutablePointer<Float>
) {
    for j in 0..<width { out[j] = bias[j] }
    for f in 0..<count {
        let xf = input[f]
        if xf == 0 { continue }
        let row = weights + f * width
        for j in 0..<width { out[j] += xf * row[j] }
    }
}

/// `gradient[f, 0..<width] += input[f] · delta` for every nonzero one of the `count` inputs.
@inline(__always)
func addOuter(
    _ input: UnsafePointer<Float>, _ count: Int, _ delta: UnsafePointer<Float>, width: Int,
    into gradient: UnsafeMutablePointer<Float>
) {
    for f in 0..<count {
        let xf = input[f]
        if xf == 0 { continue }
        let row = gradient + f * width
        for j in 0..<width { row[j] += xf * delta[j] }
    }
}

/// Softmax cross-entropy of `logits` (k values) for `label`: writes dLoss/dLogits (p - onehot)
/// into `logits` and returns (loss, whether the arg-max was right).
@inline(__always)
func softmaxCrossEntropy(_ logits: UnsafeMutablePointer<Float>, _ k: Int, label: Int) -> (Double, Bool) {
    var best = 0
    var m = logits[0]
    for j in 1..<k where logits[j] > m {
        m = logits[j]
        best = j
    }
    var sum: Float = 0
    for j in 0..<k {
        let e = (logits[j] - m).exp()
        logits[j] = e
        sum += e
    }
    let inv = 1 / sum
    let loss = -Double((logits[label] * inv).clampedLog())
    for j in 0..<k { logits[j] *= inv }
    logits[label] -= 1
    return (loss, best == label)
}

extension Float {
    @inline(__always) func exp() -> Float { Float(Foundation.exp(Double(self))) }
    @inline(__always) func clampedLog() -> Float { Float(Foundation.log(Double(Swift.max(self, 1e-30)))) }
}

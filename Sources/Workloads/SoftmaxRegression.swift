/// Multinomial logistic regression: logits = x W + b.
public struct SoftmaxRegression: Model {
    public let inputs: Int
    public let classes: Int

    public init(inputs: Int, classes: Int) {
        self.inputs = inputs
        self.classes = classes
    }

    public var parameters: [ParameterShape] {
        [ParameterShape(name: "weight", shape: [inputs, classes]), ParameterShape(name: "bias", shape: [classes])]
    }

    public func initialParameters(seed: UInt64) -> [Float] { [Float](repeating: 0, count: parameterCount) }

    public func lossAndGradient(
        params: UnsafeBufferPointer<Float>, features: UnsafeBufferPointer<Float>, labels: [Int32],
        gradient: UnsafeMutableBufferPointer<Float>
    ) -> (loss: Double, correct: Int) {
        let d = inputs
        let k = classes
        let b = labels.count
        let w = params.baseAddress!
        let bias = w + d * k
        let gw = gradient.baseAddress!
        let gb = gw + d * k
        gradient.update(repeating: 0)
        var loss = 0.0
        var correct = 0
        let z = UnsafeMutablePointer<Float>.allocate(capacity: k)
        defer { z.deallocate() }
        for i in 0..<b {
            let x = features.baseAddress! + i * d
            affine(x, d, weights: w, bias: bias, width: k, into: z)
            let (l, ok) = softmaxCrossEntropy(z, k, label: Int(labels[i]))
            loss += l
            if ok { correct += 1 }
            addOuter(x, d, z, width: k, into: gw)
            for j in 0..<k { gb[j] += z[j] }
        }
        let scale = 1 / Float(max(b, 1))
        for i in 0..<gradient.count { gradient[i] *= scale }
        return (loss / Double(max(b, 1)), correct)
    }
}

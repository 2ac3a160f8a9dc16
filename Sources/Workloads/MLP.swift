/// A multilayer perceptron with one hidden ReLU layer: logits = relu(x W1 + b1) W2 + b2.
public struct MLP: Model {
    public let inputs: Int
    public let hidden: Int
    public let classes: Int

    public init(inputs: Int, hidden: Int, classes: Int) {
        self.inputs = inputs
        self.hidden = hidden
        self.classes = classes
    }

    public var parameters: [ParameterShape] {
        [
            ParameterShape(name: "w1", shape: [inputs, hidden]), ParameterShape(name: "b1", shape: [hidden]),
            ParameterShape(name: "w2", shape: [hidden, classes]), ParameterShape(name: "b2", shape: [classes]),
        ]
    }

    /// He-style uniform weights, zero biases.
    public func initialParameters(seed: UInt64) -> [Float] {
        var rng = SplitMix(seed: seed)
        var p = [Float](repeating: 0, count: parameterCount)
        let a1 = (6 / Float(inputs)).squareRoot()
        for i in 0..<inputs * hidden { p[i] = (rng.uniform() * 2 - 1) * a1 }
        let w2 = inputs * hidden + hidden
        let a2 = (6 / Float(hidden + classes)).squareRoot()
        for i in 0..<hidden * classes { p[w2 + i] = (rng.uniform() * 2 - 1) * a2 }
        return p
    }

    public func lossAndGradient(
        params: UnsafeBufferPointer<Float>, features: UnsafeBufferPointer<Float>, labels: [Int32],
        gradient: UnsafeMutableBufferPointer<Float>
    ) -> (loss: Double, correct: Int) {
        let (d, h, k) = (inputs, hidden, classes)
        let w1 = params.baseAddress!
        let b1 = w1 + d * h
        let w2 = b1 + h
        let b2 = w2 + h * k
        let gw1 = gradient.baseAddress!
        let gb1 = gw1 + d * h
        let gw2 = gb1 + h
        let gb2 = gw2 + h * k
        gradient.update(repeating: 0)
        let a = UnsafeMutablePointer<Float>.allocate(capacity: h)
        let da = UnsafeMutablePointer<Float>.allocate(capacity: h)
        let z = UnsafeMutablePointer<Float>.allocate(capacity: k)
        defer {
            a.deallocate()
            da.deallocate()
            z.deallocate()
        }
        var loss = 0.0
        var correct = 0
        for i in 0..<labels.count {
            let x = features.baseAddress! + i * d
            affine(x, d, weights: w1, bias: b1, width: h, into: a)
            for u in 0..<h { a[u] = max(a[u], 0) }
            affine(a, h, weights: w2, bias: b2, width: k, into: z)
            let (l, ok) = softmaxCrossEntropy(z, k, label: Int(labels[i]))
            loss += l
            if ok { correct += 1 }
            for j in 0..<k { gb2[j] += z[j] }
            for u in 0..<h {
                let row = w2 + u * k
                let grow = gw2 + u * k
                var s: Float = 0
                for j in 0..<k {
                    grow[j] += a[u] * z[j]
                    s += row[j] * z[j]
                }
                da[u] = a[u] > 0 ? s : 0
            }
            for u in 0..<h { gb1[u] += da[u] }
            addOuter(x, d, da, width: h, into: gw1)
        }
        let scale = 1 / Float(max(labels.count, 1))
        for i in 0..<gradient.count { gradient[i] *= scale }
        return (loss / Double(max(labels.count, 1)), correct)
    }
}

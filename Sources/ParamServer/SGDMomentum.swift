import TrainingProtocol

/// SGD with momentum and weight decay, applied to the average of the workers' gradients:
///
///     g = sum / workers + weightDecay * p
///     v = momentum * v + g
///     p = p - learningRate * v
///
/// With momentum 0 this is plain SGD and the velocity is neither read nor written: there is no
/// optimizer state to keep, and the servers store none.
///
/// The same code serves the parameter servers and the single-process reference run, so that
/// both give bit-identical results for the same gradient sums.
public enum SGDMomentum {
    public static func apply(
        params: UnsafeMutableBufferPointer<Float>, velocity: UnsafeMutableBufferPointer<Float>,
        gradientSum: UnsafeBufferPointer<Float>, workers: Int, config: TrainingConfig
    ) {
        precondition(params.count == gradientSum.count && (config.momentum == 0 || params.count == velocity.count))
        let scale = 1 / Float(workers)
        let lr = config.learningRate
        let mu = config.momentum
        let wd = config.weightDecay
        if mu == 0 {
            for i in 0..<params.count {
                let g = gradientSum[i] * scale + wd * params[i]
                params[i] -= lr * g
            }
            return
        }
        for i in 0..<params.count {
            let g = gradientSum[i] * scale + wd * params[i]
            let v = mu * velocity[i] + g
            velocity[i] = v
            params[i] -= lr * v
        }
    }
}

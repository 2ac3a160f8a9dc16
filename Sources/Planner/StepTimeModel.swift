import Foundation

/// One measured step (or the mean of a few) at one configuration, as workers report it.
public struct StepSample: Sendable, Codable, Equatable {
    public var configuration: Configuration
    /// Mean seconds a worker spent computing its gradient.
    public var computeSeconds: Double
    /// The spread of the workers' compute times: standard deviation over mean.
    public var computeSpread: Double
    /// Wall seconds of the step, from one published version to the next.
    public var stepSeconds: Double

    public init(configuration: Configuration, computeSeconds: Double, computeSpread: Double, stepSeconds: Double) {
        self.configuration = configuration
        self.computeSeconds = computeSeconds
        self.computeSpread = computeSpread
        self.stepSeconds = stepSeconds
    }
}

/// Seconds per BSP step as a function of workers w, shards k and memory m for one job:
///
///     compute(w, m) = c · b · P / speed(m, w)
///     step(w, k, m) = compute · (1 + σ · √(2 ln w)) + λ + α · S·w/k + β · S/net(m) + γ · w
///
/// `c` is seconds per example × parameter on a whole core, `speed` the platform's CPU share, the
/// middle factor the wait for the slowest of w workers whose compute times spread by σ, `λ` the
/// round trips of a step, `α` the seconds per byte a shard moves (it receives w gradients and
/// serves w pulls of its S/k bytes, and sums them), `β` a function's own seconds per byte, and
/// `γ` what each worker adds that more shards do not spread (Optimus's θ3·w: the home shard's
/// control reads, and CPU shared by every process when functions run on one machine).
/// `fit` learns every constant from samples of the job itself, pulled toward a prior where the
/// samples cannot tell the terms apart.
public struct StepTimeModel: Sendable, Codable, Equatable {
    public var computePerExampleParameter: Double
    public var spread: Double
    public var latency: Double
    public var shardSecondsPerByte: Double
    public var functionSecondsPerByte: Double
    public var perWorkerSeconds: Double

    public init(
        computePerExampleParameter: Double, spread: Double, latency: Double, shardSecondsPerByte: Double,
        functionSecondsPerByte: Double, perWorkerSeconds: Double = 0
    ) {
        self.computePerExampleParameter = computePerExampleParameter
        self.spread = spread
        self.latency = latency
        self.shardSecondsPerByte = shardSecondsPerByte
        self.functionSecondsPerByte = functionSecondsPerByte
        self.perWorkerSeconds = perWorkerSeconds
    }

    /// Mean compute seconds of one worker at `c`.
    public func compute(_ c: Configuration, job: JobShape, offer: PlatformOffer) -> Double {
        computePerExampleParameter * Double(job.batchPerWorker) * Double(job.parameters)
            / offer.computeSpeed(memoryMiB: c.memoryMiB, workers: c.workers)
    }

    /// Expected wall seconds of one step at `c`.
    public func step(_ c: Configuration, job: JobShape, offer: PlatformOffer) -> Double {
        compute(c, job: job, offer: offer) * Self.straggling(workers: c.workers, spread: spread)
            + communication(c, job: job, offer: offer)
    }

    /// Seconds a step spends outside the slowest worker's compute.
    public func communication(_ c: Configuration, job: JobShape, offer: PlatformOffer) -> Double {
        let x = Self.features(c, job: job, offer: offer)
        return zip(x, coefficients).reduce(0) { $0 + $1.0 * $1.1 }
    }

    /// How much longer the slowest of `workers` computes than the mean one: 1 + σ·√(2 ln w),
    /// the growth of the largest of w samples.
    public static func straggling(workers: Int, spread: Double) -> Double {
        workers <= 1 ? 1 : 1 + spread * (2 * log(Double(workers))).squareRoot()
    }

    static func features(_ c: Configuration, job: JobShape, offer: PlatformOffer) -> [Double] {
        let s = job.modelBytes
        return [
            1, s * Double(c.workers) / Double(c.shards), s / offer.networkShare(memoryMiB: c.memoryMiB),
            Double(c.workers),
        ]
    }

    /// The communication constants in the order of `features`.
    var coefficients: [Double] {
        get { [latency, shardSecondsPerByte, functionSecondsPerByte, perWorkerSeconds] }
        set {
            latency = newValue[0]
            shardSecondsPerByte = newValue[1]
            functionSecondsPerByte = newValue[2]
            perWorkerSeconds = newValue[3]
        }
    }

    /// The model fitted to `samples`, starting from `prior`. Compute is fitted from the compute
    /// phase alone; the four communication constants by least squares on what the step took
    /// beyond compute, with a ridge toward the prior worth `priorWeight` samples (so one
    /// configuration's samples set the sum of the terms, and samples from several set each).
    public static func fit(
        _ samples: [StepSample], prior: StepTimeModel, job: JobShape, offer: PlatformOffer, priorWeight: Double = 3
    ) -> StepTimeModel {
        guard !samples.isEmpty else { return prior }
        var model = prior
        let work = Double(job.batchPerWorker) * Double(job.parameters)
        let perUnit = samples.map { s in
            s.computeSeconds
                * offer.computeSpeed(memoryMiB: s.configuration.memoryMiB, workers: s.configuration.workers)
                / work
        }
        model.computePerExampleParameter = max(1e-15, perUnit.reduce(0, +) / Double(perUnit.count))
        let spreads = samples.filter { $0.configuration.workers > 1 }.map(\.computeSpread)
        if !spreads.isEmpty { model.spread = max(0, spreads.reduce(0, +) / Double(spreads.count)) }

        // Ridge toward the prior, each feature scaled by its typical size in the samples.
        let xs = samples.map { features($0.configuration, job: job, offer: offer) }
        let ys = zip(samples, xs).map { s, _ in
            max(
                0,
                s.stepSeconds - model.compute(s.configuration, job: job, offer: offer)
                    * straggling(workers: s.configuration.workers, spread: model.spread))
        }
        let theta0 = prior.coefficients
        let d = theta0.count
        var scale = [Double](repeating: 0, count: d)
        for x in xs { for j in 0..<d { scale[j] += x[j] / Double(xs.count) } }
        var free = (0..<d).filter { scale[$0] > 0 }
        var theta = theta0
        for _ in 0..<d {
            theta = theta0
            let n = free.count
            guard n > 0 else { break }
            var a = [[Double]](repeating: [Double](repeating: 0, count: n), count: n)
            var b = [Double](repeating: 0, count: n)
            for (x, y) in zip(xs, ys) {
                var r = y
                for j in 0..<d where !free.contains(j) { r -= theta[j] * x[j] }
                for (p, i) in free.enumerated() {
                    b[p] += x[i] * r
                    for (q, j) in free.enumerated() { a[p][q] += x[i] * x[j] }
                }
            }
            for (p, i) in free.enumerated() {
                let w = priorWeight * scale[i] * scale[i]
                a[p][p] += w
                b[p] += w * theta0[i]
            }
            guard let solved = solve(a, b) else { break }
            for (p, i) in free.enumerated() { theta[i] = solved[p] }
            // A negative constant is no physics: pin it at zero and solve the others again.
            let negative = free.filter { theta[$0] < 0 }
            if negative.isEmpty { break }
            free.removeAll { negative.contains($0) }
            for i in negative { theta[i] = 0 }
        }
        model.coefficients = theta.map { max(0, $0) }
        return model
    }

    /// Gaussian elimination with partial pivoting; nil for a singular system.
    static func solve(_ a: [[Double]], _ b: [Double]) -> [Double]? {
        var m = a
        var v = b
        let n = v.count
        for col in 0..<n {
            guard let pivot = (col..<n).max(by: { abs(m[$0][col]) < abs(m[$1][col]) }), abs(m[pivot][col]) > 1e-300
            else { return nil }
            m.swapAt(col, pivot)
            v.swapAt(col, pivot)
            for row in (col + 1)..<n {
                let f = m[row][col] / m[col][col]
                for k in col..<n { m[row][k] -= f * m[col][k] }
                v[row] -= f * v[col]
            }
        }
        var x = [Double](repeating: 0, count: n)
        for row in stride(from: n - 1, through: 0, by: -1) {
            var s = v[row]
            for k in (row + 1)..<n { s -= m[row][k] * x[k] }
            x[row] = s / m[row][row]
        }
        return x
    }

    enum CodingKeys: String, CodingKey {
        case spread, latency
        case computePerExampleParameter = "compute_per_example_parameter"
        case shardSecondsPerByte = "shard_seconds_per_byte"
        case functionSecondsPerByte = "function_seconds_per_byte"
        case perWorkerSeconds = "per_worker_seconds"
    }
}

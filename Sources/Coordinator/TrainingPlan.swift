import ShardManager
import TensorBlob
import TrainingProtocol
import Workloads

/// What a request resolves to once its data is loaded: the model, the number of steps, the
/// workers and shards of every step, and the data. Both training modes (BSP over Redis, and
/// the in-process reference) run from it.
public struct TrainingPlan: Sendable {
    public let settings: WorkloadSettings
    /// The model's tensors, in the order of the flat parameter vector.
    public let tensors: [ParameterShape]
    /// The model the function defined (`--model function`); nil for a built-in model.
    public let described: DescribedModel?
    /// Workers of step 0 (the schedule changes it later).
    public let workers: Int
    /// Shards of step 0 when the driver starts its own.
    public let shards: Int
    /// The job's total steps (a planner may change it while the job runs).
    public internal(set) var steps: Int
    public let learningRate: Float
    public let momentum: Float
    public let weightDecay: Float
    public let train: Dataset
    public let test: Dataset
    public let checkpointEvery: Int
    /// How workers encode their gradients (`--codec`).
    public let gradientEncoding: GradientEncoding
    /// The reconfigurations: the request's, plus those a planner made while the job runs.
    public internal(set) var schedule: Schedule

    /// Resolves `request` against its loaded data; checks what only the data can tell (enough
    /// examples for every worker, a schedule inside the run). A function-defined model
    /// (`--model function`) needs what the function's describe phase returned.
    public init(_ request: TrainingRequest, train: Dataset, test: Dataset, described: DescribedModel? = nil)
        throws(RequestError)
    {
        guard train.count > 0 else { throw RequestError("the training data '\(request.dataset)' has no examples") }
        let schedule =
            try request.schedule.map { (text) throws(RequestError) in try Schedule(parsing: text) } ?? Schedule()
        let most = schedule.maxWorkers(initial: request.workers)
        guard train.count >= most else {
            throw RequestError(
                "the training data has \(train.count) examples, fewer than the \(most) workers that would each need one"
            )
        }
        let perWorker = (train.count + request.workers - 1) / request.workers
        let steps: Int
        if let s = request.steps {
            steps = s
        } else if let epochs = request.epochs {
            let needed = (epochs * Double(perWorker) / Double(request.batchSize)).rounded(.up)
            guard needed <= Double(TrainingRequest.maxSteps) else {
                throw RequestError("--epochs \(epochs) needs \(needed) steps, more than \(TrainingRequest.maxSteps)")
            }
            steps = max(1, Int(needed))
        } else {
            steps = 300
        }
        try schedule.validate(
            steps: steps, maxWorkers: TrainingRequest.maxLocalWorkers, maxShards: TrainingRequest.maxShards)
        let settings = WorkloadSettings(
            model: request.model, hidden: request.hidden, inputs: train.dimension, classes: train.classes,
            batchSize: request.batchSize, seed: request.seed)
        let tensors: [ParameterShape]
        if request.model == TrainingRequest.functionModel {
            guard let described else {
                throw RequestError("--model function: the function's describe phase has not run")
            }
            tensors = described.tensors
        } else {
            tensors = settings.makeModel().parameters
        }
        let parameters = tensors.reduce(0) { $0 + $1.count }
        guard parameters <= 1 << 28 else {
            throw RequestError("the \(request.model) model would have \(parameters) parameters, more than \(1 << 28)")
        }
        let need = Self.memoryNeeded(request, train: train, parameters: parameters, workers: request.workers)
        guard need <= Double(request.memoryMiB) else {
            throw RequestError(
                "a worker would need about \(Int(need)) MiB (model, data partition and batch), more than --memory \(request.memoryMiB)"
            )
        }
        self.settings = settings
        self.tensors = tensors
        self.described = request.model == TrainingRequest.functionModel ? described : nil
        self.workers = request.workers
        self.shards = request.shards
        self.steps = steps
        self.learningRate = request.effectiveLearningRate
        self.momentum = request.momentum
        self.weightDecay = request.weightDecay
        self.train = train
        self.test = test
        self.checkpointEvery = request.checkpointEvery
        self.gradientEncoding = request.gradientEncoding
        self.schedule = schedule
    }

    /// MiB a worker needs among `workers`: its partition, the model three times (parameters,
    /// gradient, pull buffer) and a batch's activations, above what the runtime itself needs.
    public static func memoryNeeded(_ request: TrainingRequest, train: Dataset, parameters: Int, workers: Int)
        -> Double
    {
        let perWorker = (train.count + workers - 1) / workers
        let partitionBytes = Double(perWorker) * Double(train.dimension + 1) * 4
        let batchBytes = Double(request.batchSize) * Double(train.dimension + request.hidden + train.classes) * 4 * 3
        return Double(TrainingRequest.minMemoryMiB) + (partitionBytes + Double(parameters) * 16 + batchBytes)
            / 1_048_576
    }

    /// The built-in model; nil when the function defines the model.
    public var builtinModel: (any Model)? { described == nil ? settings.makeModel() : nil }

    public var parameterCount: Int { tensors.reduce(0) { $0 + $1.count } }

    /// Version 0: the built-in model's seeded initialisation, or what the function described.
    public func initialParameters() -> [Float] {
        described?.initial ?? settings.makeModel().initialParameters(seed: settings.seed)
    }

    /// The number of workers that run `step`.
    public func workers(at step: Int) -> Int { schedule.workers(at: step, initial: workers) }

    /// The training config with `workers` workers.
    public func config(workers: Int) -> TrainingConfig {
        TrainingConfig(
            workers: workers, steps: steps, learningRate: learningRate, momentum: momentum, weightDecay: weightDecay,
            workload: settings.dictionary, checkpointEvery: checkpointEvery,
            // f32 encodings are the map's codec alone, as before the config had the field.
            gradientEncoding: gradientEncoding.isLossy ? gradientEncoding.description : nil)
    }

    /// The config in force at `step`.
    public func config(at step: Int) -> TrainingConfig { config(workers: workers(at: step)) }

    /// The data partition of worker `w` of `n`: the examples whose index mod `n` is `w`.
    public func partition(_ w: Int, of n: Int) -> Dataset { train.partition(w, of: n) }

    /// The job spec whose tensors hold this model.
    public func spec(job: String, codec: BlobCodec, chunkElements: Int, pullEncoding: PullEncoding? = nil) -> JobSpec {
        JobSpec(
            job: job, tensors: tensors.map { TensorSpec(name: $0.name, shape: $0.shape) },
            chunkElements: chunkElements, codec: codec, pullEncoding: pullEncoding)
    }
}

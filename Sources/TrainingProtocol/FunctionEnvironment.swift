/// How a function platform tells an invocation what to do and what limits it runs under: the
/// environment variables of the contract between a scheduler and a worker function
/// (docs/wire-format.md, "Functions").
public enum FunctionEnvironment {
    /// The invocation's maximum duration in milliseconds (the platform kills it then).
    public static let timeLimit = "SMLT_FUNCTION_TIMEOUT_MS"
    /// `CLOCK_MONOTONIC` in nanoseconds when the platform started the invocation.
    public static let invokedAt = "SMLT_FUNCTION_INVOKED_AT_NS"
    /// A directory that survives between invocations on the same machine (warm starts).
    public static let cache = "SMLT_FUNCTION_CACHE"
    /// The invocation's event: a `WorkerEvent` as JSON.
    public static let event = "SMLT_FUNCTION_EVENT"
    /// The Redis password, when the shards need one (never put in the event or the arguments).
    public static let password = "SMLT_REDIS_PASSWORD"
}

/// What one worker invocation is asked to do: the event a scheduler sends with it, like the
/// payload of a serverless invocation. Credentials are not part of it.
public struct WorkerEvent: Codable, Sendable, Equatable {
    public var job: String
    public var worker: Int
    /// 0 for the first invocation of this worker, +1 for each relaunch or continuation.
    public var generation: Int
    /// How long the worker's lease lives without renewal.
    public var leaseMilliseconds: Int
    /// Endpoints the worker may connect to (and send credentials to): the job's shards.
    public var redis: [String]
    /// A Redis ACL user name, if any.
    public var user: String?
    /// What the invocation is for; nil means `.train`. Only jobs whose function defines the
    /// model (`--model function`) have the other phases.
    public var phase: Phase?
    /// The run's seed, for a function that initialises its own model (function-defined models).
    public var seed: UInt64?
    /// The shape of the job's data (function-defined models).
    public var dataset: DatasetShape?

    public init(
        job: String, worker: Int, generation: Int, leaseMilliseconds: Int, redis: [String], user: String?,
        phase: Phase? = nil, seed: UInt64? = nil, dataset: DatasetShape? = nil
    ) {
        self.job = job
        self.worker = worker
        self.generation = generation
        self.leaseMilliseconds = leaseMilliseconds
        self.redis = redis
        self.user = user
        self.phase = phase
        self.seed = seed
        self.dataset = dataset
    }

    /// The three things a function is invoked for when it defines the job's model.
    public enum Phase: String, Codable, Sendable {
        /// Before the job exists: write the model's tensors and initial values.
        case describe
        /// A worker of the job (the step protocol).
        case train
        /// After the last step: evaluate the final model on the staged test set.
        case evaluate
    }

    /// The size of a job's training data, as a function that defines its own model needs it.
    public struct DatasetShape: Codable, Sendable, Equatable {
        /// Features per example.
        public var features: Int
        /// Classes (labels are 0..<classes).
        public var classes: Int
        public var trainExamples: Int
        public var testExamples: Int

        public init(features: Int, classes: Int, trainExamples: Int, testExamples: Int) {
            self.features = features
            self.classes = classes
            self.trainExamples = trainExamples
            self.testExamples = testExamples
        }

        enum CodingKeys: String, CodingKey {
            case features, classes
            case trainExamples = "train_examples"
            case testExamples = "test_examples"
        }
    }

    enum CodingKeys: String, CodingKey {
        case job, worker, generation, redis, user, phase, seed, dataset
        case leaseMilliseconds = "lease_ms"
    }
}

/// Names of the data partitions the built-in workloads stage for their workers.
public enum StagedData {
    /// Worker `w`'s features when the job has `workers` workers (f32 blob, row-major).
    public static func features(worker w: Int, of workers: Int) -> String { "data-\(workers)-\(w)-x" }
    /// Worker `w`'s labels (class indices as f32) when the job has `workers` workers.
    public static func labels(worker w: Int, of workers: Int) -> String { "data-\(workers)-\(w)-y" }
    /// The test set's features, staged for jobs whose function defines the model.
    public static let testFeatures = "test-x"
    /// The test set's labels.
    public static let testLabels = "test-y"
}

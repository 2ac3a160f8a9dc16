/// The built-in model a job trains and how, as recorded in its training config's `workload`
/// settings (string values; docs/wire-format.md, "Built-in workloads").
public struct WorkloadSettings: Sendable, Equatable {
    public var model: String
    public var hidden: Int
    public var inputs: Int
    public var classes: Int
    /// Examples per worker per step.
    public var batchSize: Int
    public var seed: UInt64

    public init(model: String, hidden: Int, inputs: Int, classes: Int, batchSize: Int, seed: UInt64) {
        self.model = model
        self.hidden = hidden
        self.inputs = inputs
        self.classes = classes
        self.batchSize = batchSize
        self.seed = seed
    }

    /// Reads the settings from a config's `workload`; every value is checked.
    public init(_ w: [String: String]) throws(WorkloadError) {
        func int(_ k: String, _ range: ClosedRange<Int>) throws(WorkloadError) -> Int {
            guard let s = w[k], let v = Int(s), range.contains(v) else {
                throw WorkloadError(
                    "the job's workload setting '\(k)' is missing or outside \(range.lowerBound)...\(range.upperBound) (\(w[k] ?? "absent"))"
                )
            }
            return v
        }
        model = w["model"] ?? ""
        guard Self.models.contains(model) else {
            throw WorkloadError(
                "the job's workload model '\(model)' is unknown (one of: \(Self.models.joined(separator: ", ")))")
        }
        hidden = model == "mlp" ? try int("hidden", 1...Self.maxWidth) : Int(w["hidden"] ?? "") ?? 0
        inputs = try int("inputs", 1...Self.maxWidth)
        classes = try int("classes", 2...Self.maxWidth)
        batchSize = try int("batch_size", 1...Self.maxBatch)
        guard let s = w["seed"], let seed = UInt64(s) else {
            throw WorkloadError("the job's workload setting 'seed' is missing or not an unsigned 64-bit integer")
        }
        self.seed = seed
    }

    /// The settings as a config's `workload`.
    public var dictionary: [String: String] {
        [
            "model": model, "hidden": "\(hidden)", "inputs": "\(inputs)", "classes": "\(classes)",
            "batch_size": "\(batchSize)", "seed": "\(seed)",
        ]
    }

    public static let models = ["softmax", "mlp"]
    /// The largest layer width (features, hidden units, classes) the built-in models accept.
    public static let maxWidth = 1 << 20
    /// The largest batch per worker.
    public static let maxBatch = 1 << 20

    public func makeModel() -> any Model {
        model == "mlp"
            ? MLP(inputs: inputs, hidden: hidden, classes: classes)
            : SoftmaxRegression(inputs: inputs, classes: classes)
    }
}

/// Why a job's workload cannot be trained.
public struct WorkloadError: Error, Sendable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

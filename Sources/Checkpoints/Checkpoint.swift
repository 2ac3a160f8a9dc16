import Foundation
import RedisClient
import ShardManager
import TensorBlob
import TrainingProtocol

/// A job's parameters and optimizer state at one version, saved as a safetensors file, with
/// the workers' error-feedback residuals when the job has a lossy gradient encoding.
///
/// The file holds one tensor per job tensor under its own name (so PyTorch and NumPy users load
/// the model directly), the momentum as `momentum.NAME` when the job has momentum, each
/// worker's residual as `smlt.residual.W` (flat) when it has them, and in its metadata the job
/// id, the version (`step`), the training config and the residuals' count (`residuals`).
public struct Checkpoint: Sendable, Equatable {
    public var job: String
    public var step: Int
    public var tensors: [TensorSpec]
    /// All parameters, flat, in the job's layout order.
    public var params: [Float]
    /// The momentum, flat; nil for plain SGD.
    public var optimizer: [Float]?
    /// Each worker's error-feedback residual for `step` (worker `w` at index `w`, flat): what
    /// the workers resume from after a restore, so that a roll-back stays exact. Nil for a
    /// lossless encoding and at step 0 (zero residuals); a restore then starts the workers from
    /// zero residuals. `capture` does not return a lossy job's checkpoint without them.
    public var residuals: [[Float]]?
    public var config: TrainingConfig

    public static let format = "smlt-checkpoint/1"

    /// The file's tensor that holds worker `w`'s residual.
    static func residualTensorName(worker w: Int) -> String { "smlt.residual.\(w)" }

    public init(
        job: String, step: Int, tensors: [TensorSpec], params: [Float], optimizer: [Float]?,
        residuals: [[Float]]? = nil, config: TrainingConfig
    ) {
        self.job = job
        self.step = step
        self.tensors = tensors
        self.params = params
        self.optimizer = optimizer
        self.residuals = residuals
        self.config = config
    }

    // MARK: From and to Redis

    /// Reads the job's current parameters (and optimizer state), or with `snapshot` the copy the
    /// servers keep every `checkpoint_every` versions, and with a lossy gradient encoding the
    /// workers' residuals of that version. Returns nil when the chunks are not all at one version
    /// (a step committed on some shard while reading) or a residual is not all there at that
    /// version (the workers moved on, or a shard is being wiped): try again. A checkpoint of a
    /// lossy job without its residuals would make a roll-back to it inexact.
    public static func capture(_ m: ShardManager, config: TrainingConfig, snapshot: Bool) throws(CheckpointError)
        -> Checkpoint?
    {
        do {
            let p = try m.read(snapshot ? .checkpointParams : .params)
            guard let step = p.headers.first?.step, p.headers.allSatisfy({ $0.step == step }) else { return nil }
            var optimizer: [Float]?
            if config.momentum != 0 {
                let o: (values: [Float], headers: [BlobHeader])
                do { o = try m.read(snapshot ? .checkpointOptimizer : .optimizer) } catch
                    where error.code == .missingChunk && step == 0
                {
                    // Version 0 has no momentum stored yet: it is zero.
                    o = ([Float](repeating: 0, count: p.values.count), p.headers)
                }
                guard o.headers.allSatisfy({ $0.step == step }) else { return nil }
                optimizer = o.values
            }
            var residuals: [[Float]]?
            if needsResiduals(config, step: Int(step), snapshot: snapshot) {
                guard let r = Self.residuals(m, config: config, step: Int(step), snapshot: snapshot) else { return nil }
                residuals = r
            }
            return Checkpoint(
                job: m.map.job, step: Int(step), tensors: m.map.tensors, params: p.values, optimizer: optimizer,
                residuals: residuals, config: config)
        } catch {
            if error.code == .missingChunk {
                throw CheckpointError(
                    .notFound, "job '\(m.map.job)' has no \(snapshot ? "checkpoint copy" : "state") to save: \(error)")
            }
            throw CheckpointError(.io, "\(error)")
        }
    }

    /// Whether a checkpoint of version `step` holds the workers' residuals: with a lossy encoding,
    /// after version 0 (whose residuals are zero), and for a snapshot when the workers store
    /// copies (`checkpoint_every` > 0).
    static func needsResiduals(_ config: TrainingConfig, step: Int, snapshot: Bool) -> Bool {
        guard step > 0, let spec = config.gradientEncoding, let encoding = try? GradientEncoding(parsing: spec)
        else { return false }
        return encoding.isLossy && (!snapshot || config.checkpointEvery > 0)
    }

    /// The workers' residuals for version `step`: with `snapshot` the copies the workers store at
    /// every `checkpoint_every`-th version, else the residuals themselves. Nil when any part is
    /// missing or of another step.
    static func residuals(_ m: ShardManager, config: TrainingConfig, step: Int, snapshot: Bool) -> [[Float]]? {
        var all: [[Float]] = []
        for w in 0..<config.workers {
            let name =
                snapshot
                ? ErrorFeedback.checkpointName(worker: w, version: step, every: config.checkpointEvery)
                : ErrorFeedback.objectName(worker: w, step: step)
            guard let r = try? ErrorFeedback.read(named: name, worker: w, step: step, from: m) else { return nil }
            all.append(r)
        }
        return all
    }

    /// Puts the job back at this checkpoint: parameters and optimizer state at version `step` on
    /// every chunk, version streams restarted at `step`, pending gradients and pushes dropped,
    /// and every worker's saved progress set to `step` (with the residual it holds for that
    /// worker, stored again as `residual-W-P`, when it holds one per worker of the config). The
    /// job's workers must be stopped first; its parameter servers notice the new version by
    /// themselves.
    public func restore(to m: ShardManager) throws(CheckpointError) {
        guard tensors == m.map.tensors else {
            throw CheckpointError(
                .invalid,
                "checkpoint tensors \(tensors.map { "\($0.name)\($0.shape)" }) do not match job '\(m.map.job)' (\(m.map.tensors.map { "\($0.name)\($0.shape)" }))"
            )
        }
        let job = m.map.job
        let step = self.step
        do {
            try config.store(on: m)
            // Drop what belongs to steps that will be redone, and the versions after `step`.
            try m.dropStepState()
            try m.write(params, as: .params, step: step, producer: BlobHeader.serverProducer)
            if let optimizer { try m.write(optimizer, as: .optimizer, step: step, producer: BlobHeader.serverProducer) }
            let objects = JobObjects(m)
            let encoding = config.gradientEncoding.flatMap { try? GradientEncoding(parsing: $0) }
            let residuals =
                encoding != nil && self.residuals?.count == config.workers
                    && self.residuals?.allSatisfy({ $0.count == params.count }) == true
                ? self.residuals : nil
            for w in 0..<config.workers {
                var progress = WorkerProgress(nextStep: step, generation: 0)
                if let residuals, let encoding {
                    let name = ErrorFeedback.objectName(worker: w, step: step)
                    try ErrorFeedback.store(
                        residuals[w], named: name, worker: w, step: step,
                        codec: ErrorFeedback.residualCodec(for: encoding), on: m)
                    progress.residual = name
                }
                try objects.set(WorkerProgress.objectName(worker: w), Array(try JSONEncoder().encode(progress)))
            }
            try m.publish(version: step)
        } catch let e as CheckpointError {
            throw e
        } catch {
            throw CheckpointError(.io, "restoring job '\(job)' to step \(step): \(error)")
        }
    }

    // MARK: Files

    /// The file name of the checkpoint of `step`.
    public static func fileName(step: Int) -> String {
        let digits = String(step)
        return "step-" + String(repeating: "0", count: max(0, 8 - digits.count)) + digits + ".safetensors"
    }

    /// Writes `DIRECTORY/step-NNNNNNNN.safetensors` (atomically, through a rename) and points
    /// `DIRECTORY/latest` at it. Returns the file's path.
    @discardableResult
    public func write(to directory: String) throws(CheckpointError) -> String {
        var list: [SafeTensors.Tensor] = []
        var offset = 0
        for t in tensors {
            let values = Array(params[offset..<(offset + t.count)])
            list.append(SafeTensors.Tensor(name: t.name, shape: t.shape, values: values))
            if let optimizer {
                list.append(
                    SafeTensors.Tensor(
                        name: "momentum.\(t.name)", shape: t.shape,
                        values: Array(optimizer[offset..<(offset + t.count)])))
            }
            offset += t.count
        }
        for (w, r) in (residuals ?? []).enumerated() {
            list.append(SafeTensors.Tensor(name: Self.residualTensorName(worker: w), shape: [r.count], values: r))
        }
        let configJSON: String
        do { configJSON = String(decoding: try JSONEncoder().encode(config), as: UTF8.self) } catch {
            throw CheckpointError(.invalid, "\(error)")
        }
        let bytes = try SafeTensors.encode(
            list,
            metadata: [
                "format": Self.format, "job": job, "step": "\(step)", "config": configJSON,
                "tensors": tensors.map(\.name).joined(separator: ","),
            ].merging(residuals.map { ["residuals": "\($0.count)"] } ?? [:]) { a, _ in a })
        let path = directory + "/" + Self.fileName(step: step)
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            try Data(bytes).write(to: URL(fileURLWithPath: path), options: .atomic)
            try Data((Self.fileName(step: step) + "\n").utf8).write(
                to: URL(fileURLWithPath: directory + "/latest"), options: .atomic)
        } catch { throw CheckpointError(.io, "cannot write \(path): \(error)") }
        return path
    }

    /// Reads the checkpoint of `step` from `directory`, or the latest one.
    public static func read(from directory: String, step: Int? = nil) throws(CheckpointError) -> Checkpoint {
        let name: String
        if let step {
            name = fileName(step: step)
        } else {
            guard let latest = FileManager.default.contents(atPath: directory + "/latest") else {
                throw CheckpointError(.notFound, "no checkpoint in \(directory) (no 'latest' file)")
            }
            name = String(decoding: latest, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            guard !name.contains("/") else { throw CheckpointError(.corrupt, "\(directory)/latest names '\(name)'") }
        }
        let path = directory + "/" + name
        guard let data = FileManager.default.contents(atPath: path) else {
            throw CheckpointError(.notFound, "cannot read \(path)")
        }
        return try decode(Array(data), path: path)
    }

    static func decode(_ bytes: [UInt8], path: String) throws(CheckpointError) -> Checkpoint {
        let (list, meta) = try SafeTensors.decode(bytes)
        guard meta["format"] == format, let job = meta["job"], let step = meta["step"].flatMap(Int.init), step >= 0,
            let names = meta["tensors"]?.split(separator: ",").map(String.init),
            let configText = meta["config"]
        else { throw CheckpointError(.unsupported, "\(path) is not an SMLT checkpoint (\(format) metadata missing)") }
        let config: TrainingConfig
        do { config = try JSONDecoder().decode(TrainingConfig.self, from: Data(configText.utf8)) } catch {
            throw CheckpointError(.corrupt, "\(path): config is not valid: \(error)")
        }
        let byName = Dictionary(list.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        var specs: [TensorSpec] = []
        var params: [Float] = []
        var optimizer: [Float]? = config.momentum != 0 ? [] : nil
        for name in names {
            guard let t = byName[name] else { throw CheckpointError(.corrupt, "\(path) lacks tensor '\(name)'") }
            specs.append(TensorSpec(name: name, shape: t.shape))
            params += t.values
            if optimizer != nil {
                guard let m = byName["momentum.\(name)"], m.shape == t.shape else {
                    throw CheckpointError(.corrupt, "\(path) lacks the momentum of '\(name)'")
                }
                optimizer! += m.values
            }
        }
        var residuals: [[Float]]?
        if let text = meta["residuals"] {
            guard let count = Int(text), count >= 0, count <= 1 << 20 else {
                throw CheckpointError(.corrupt, "\(path): residuals '\(text)' is not a worker count")
            }
            residuals = []
            for w in 0..<count {
                guard let r = byName[residualTensorName(worker: w)], r.values.count == params.count else {
                    throw CheckpointError(
                        .corrupt, "\(path) lacks the residual of worker \(w) (\(params.count) values)")
                }
                residuals!.append(r.values)
            }
        }
        return Checkpoint(
            job: job, step: step, tensors: specs, params: params, optimizer: optimizer, residuals: residuals,
            config: config)
    }
}

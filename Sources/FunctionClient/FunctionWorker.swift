internal import Foundation
internal import ShardManager
internal import TrainingProtocol

/// A worker function of an SMLT training job: call `run` from the function's `main`, with the
/// step that computes gradients.
///
///     import FunctionClient
///
///     FunctionWorker.run { step, parameters in
///         // the gradients of batch `step.index`, by tensor name
///         FunctionWorker.StepResult(gradients: ..., loss: ..., accuracy: ..., examples: ...)
///     }
///
/// The scheduler starts the function with its invocation in the environment (the event, the
/// time limit, the Redis password). `run` does the rest of a worker's job around the step:
///
/// - it holds the worker's lease while it runs, and stops renewing it while the step loop makes
///   no progress, so a stuck worker is found and relaunched;
/// - it resumes at the step its previous invocation saved, finishes a push that one left half
///   done, and saves its progress after every step;
/// - it stops before the invocation's time limit and exits 75, to be continued by the next
///   invocation;
/// - it waits out reconfigurations and follows them (new shards, a new number of workers,
///   `prepare` again); a worker the job no longer needs exits 0;
/// - a step whose loss or gradients are not finite stops the job (exit 65) with a message naming
///   the step, instead of pushing them;
/// - any other error is printed and exits 1: the scheduler relaunches the worker.
public enum FunctionWorker {
    /// One step of this worker.
    public struct Step: Sendable, Equatable {
        /// The step: the parameters are version `index`, the gradients are of batch `index`.
        public let index: Int
        /// This worker's id, `0..<workers`.
        public let worker: Int
        /// How many workers take part in this step.
        public let workers: Int
    }

    /// What a step returns: the gradients of the job's tensors, by name, and the batch's
    /// metrics (shown by `smlt train`).
    public struct StepResult: Sendable {
        /// The gradient of every tensor of the job, with the tensor's shape.
        public var gradients: Tensors
        /// The batch's loss (the mean over its examples).
        public var loss: Double
        /// The fraction of the batch predicted right, 0 to 1.
        public var accuracy: Double
        /// How many examples the batch had.
        public var examples: Int

        /// A step's gradients and metrics.
        public init(gradients: Tensors, loss: Double, accuracy: Double, examples: Int) {
            self.gradients = gradients
            self.loss = loss
            self.accuracy = accuracy
            self.examples = examples
        }
    }

    /// How an invocation ended, and the exit code that tells the scheduler.
    public enum Outcome: Sendable, Equatable {
        /// Every step this worker takes part in is done, or the job no longer needs it (exit 0).
        case finished
        /// Progress is saved before the time limit: invoke the next generation (exit 75).
        case continueLater
        /// The job cannot go on, for the reason given: do not relaunch (exit 65).
        case stopJob(String)

        /// The process exit code for this outcome.
        public var exitCode: Int32 {
            switch self {
            case .finished: 0
            case .continueLater: WorkerExit.continueLater
            case .stopJob: WorkerExit.stopJob
            }
        }
    }

    /// Runs this invocation of the worker function and exits with the code its outcome says
    /// (0, 75, 65; 1 after an error, printed to standard error).
    ///
    /// - Parameter step: computes the gradients of batch `step.index` from the parameters.
    public static func run(step: (Step, Tensors) throws -> StepResult) -> Never {
        run(prepare: { _ in () }, step: { _, s, parameters in try step(s, parameters) })
    }

    /// Runs this invocation of the worker function and exits with the code its outcome says
    /// (0, 75, 65; 1 after an error, printed to standard error).
    ///
    /// - Parameters:
    ///   - model: for a job whose function defines the model (`smlt train --model function`):
    ///     its tensors and initial values, and its evaluation; nil for a job whose tensors the
    ///     driver registers (the describe and evaluate invocations are then refused).
    ///   - prepare: runs once the job is open, before the first step, and again after a
    ///     reconfiguration: loads what the steps need (the worker's data partition, say) and
    ///     returns it.
    ///   - step: computes the gradients of batch `step.index` from what `prepare` returned and
    ///     the parameters.
    public static func run<State>(
        model: Model? = nil, prepare: (Job) throws -> State, step: (State, Step, Tensors) throws -> StepResult
    ) -> Never {
        let environment = ProcessInfo.processInfo.environment
        let worker = Invocation.describe(environment)
        do {
            let outcome = try run(environment: environment, model: model, prepare: prepare, step: step)
            if case .stopJob(let why) = outcome { printError("\(worker): \(why)") }
            exit(outcome.exitCode)
        } catch {
            printError("\(worker): \(error)")
            exit(1)
        }
    }

    /// Runs one invocation of the worker function described by `environment` and returns how it
    /// ended, for a caller that runs workers itself (a test, a platform adapter).
    ///
    /// - Parameters:
    ///   - environment: the invocation's environment: `SMLT_FUNCTION_EVENT` (required),
    ///     `SMLT_REDIS_PASSWORD`, `SMLT_FUNCTION_TIMEOUT_MS`, `SMLT_FUNCTION_INVOKED_AT_NS`,
    ///     `SMLT_FUNCTION_CACHE`.
    ///   - log: where notes about reconfigurations go (standard error when nil).
    ///   - model: as in `run(model:prepare:step:)`.
    ///   - prepare: as in `run(prepare:step:)`.
    ///   - step: as in `run(prepare:step:)`.
    /// - Throws: a `FunctionClientError` when the invocation cannot go on; `prepare`'s and
    ///   `step`'s own errors come as `.functionFailed` (or keep their code when they are
    ///   `FunctionClientError`s).
    public static func run<State>(
        environment: [String: String], log: ((String) -> Void)? = nil, model: Model? = nil,
        prepare: (Job) throws -> State, step: (State, Step, Tensors) throws -> StepResult
    ) throws(FunctionClientError) -> Outcome {
        let invocation = try Invocation(environment: environment)
        let event = invocation.event
        var loop = WorkerLoop(invocation: invocation, log: log ?? { printError($0, prefix: "") })
        do {
            switch event.phase ?? .train {
            case .train: return try loop.run(prepare: prepare, step: step)
            case let phase:
                guard let model else {
                    throw FunctionClientError(
                        .invalidInvocation,
                        "invoked for the \(phase.rawValue) phase of a model the function defines (smlt train --model function), but run(model:prepare:step:) was given no model"
                    )
                }
                return try phase == .describe
                    ? ModelPhases.describe(invocation, model) : ModelPhases.evaluate(invocation, model)
            }
        } catch let error as FunctionClientError {
            throw error
        } catch let error as ShardError {
            throw FunctionClientError(error)
        } catch {
            throw FunctionClientError(.storage, "\(error)")
        }
    }
}

/// Writes a line to standard error.
func printError(_ message: String, prefix: String = "error: ") {
    FileHandle.standardError.write(Data("\(prefix)\(message)\n".utf8))
}

extension Invocation {
    /// "worker W of job J", as far as the environment says, for messages.
    static func describe(_ environment: [String: String]) -> String {
        guard let text = environment[FunctionEnvironment.event],
            let event = try? JSONDecoder().decode(WorkerEvent.self, from: Data(text.utf8))
        else { return "worker function" }
        return "worker \(event.worker) of job \(event.job)"
    }
}

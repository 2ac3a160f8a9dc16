import Foundation
import KeySchema
import RedisClient
import TensorBlob
import Workloads

/// A model that the job's function defines (`--model function`): the tensors and initial values
/// its describe invocation wrote to the home shard (docs/wire-format.md, "Function-defined
/// models"). Everything is read as untrusted input and checked.
public struct DescribedModel: Sendable, Equatable {
    /// The tensors, in the order of the flat parameter vector.
    public let tensors: [ParameterShape]
    /// The initial parameters (version 0), flat, in tensor order.
    public let initial: [Float]

    public var parameterCount: Int { initial.count }

    /// The most tensors a described model may have.
    static let maxTensors = 4096
    /// The longest tensor name, in UTF-8 bytes.
    static let maxNameBytes = 200
    static let maxDimensions = 8

    public init(tensors: [ParameterShape], initial: [Float]) {
        self.tensors = tensors
        self.initial = initial
    }

    /// Reads what a describe invocation wrote for `keys`' job on the home shard `c`, or throws
    /// an error saying what is missing or wrong.
    static func read(_ keys: JobKeys, from c: RedisConnection, maxParameters: Int) throws -> DescribedModel {
        func fail(_ why: String) -> CoordinatorError { CoordinatorError("the function's describe phase \(why)") }
        guard let manifest = try c.run(["GET", keys.describe]).bytes else {
            throw fail("exited 0 without writing \(keys.describe)")
        }
        struct Manifest: Decodable {
            struct Entry: Decodable {
                var name: String
                var shape: [Int]
            }
            var tensors: [Entry]
        }
        let list: [Manifest.Entry]
        do { list = try JSONDecoder().decode(Manifest.self, from: Data(manifest)).tensors } catch {
            throw fail(
                "wrote \(keys.describe), but it is not {\"tensors\": [{\"name\": string, \"shape\": [integers]}, ...]}: \(error)"
            )
        }
        guard (1...maxTensors).contains(list.count) else {
            throw fail("described \(list.count) tensors; a model has 1 to \(maxTensors)")
        }
        var tensors: [ParameterShape] = []
        var names = Set<String>()
        var total = 0
        for (i, t) in list.enumerated() {
            guard !t.name.isEmpty, t.name.utf8.count <= maxNameBytes,
                !t.name.unicodeScalars.contains(where: { $0.value < 0x20 || (0x7F..<0xA0).contains($0.value) })
            else { throw fail("gave tensor \(i) an invalid name (1 to \(maxNameBytes) bytes, no control characters)") }
            guard names.insert(t.name).inserted else { throw fail("named two tensors '\(t.name)'") }
            guard (1...maxDimensions).contains(t.shape.count), t.shape.allSatisfy({ (1...maxParameters).contains($0) })
            else {
                throw fail(
                    "gave tensor '\(t.name)' the shape \(t.shape) (1 to \(maxDimensions) dimensions, each from 1 to \(maxParameters))"
                )
            }
            let count = t.shape.reduce(1) { min($0 * $1, maxParameters + 1) }
            guard total + count <= maxParameters else { throw fail("describes more than \(maxParameters) parameters") }
            total += count
            tensors.append(ParameterShape(name: t.name, shape: t.shape))
        }
        var initial: [Float] = []
        initial.reserveCapacity(total)
        for (i, t) in tensors.enumerated() {
            guard let blob = try c.run(["GET", keys.describeTensor(i)]).bytes else {
                throw fail("did not write tensor \(i) ('\(t.name)') to \(keys.describeTensor(i))")
            }
            let values: [Float]
            do { values = try TensorBlob.decode(blob).values } catch {
                throw fail("wrote tensor \(i) ('\(t.name)') as an unreadable blob: \(error)")
            }
            guard values.count == t.count else {
                throw fail(
                    "wrote \(values.count) values for tensor '\(t.name)' of shape \(t.shape) (\(t.count) values)")
            }
            guard let bad = values.firstIndex(where: { !$0.isFinite }) else {
                initial.append(contentsOf: values)
                continue
            }
            throw fail("wrote a value that is not finite (\(values[bad])) at index \(bad) of tensor '\(t.name)'")
        }
        return DescribedModel(tensors: tensors, initial: initial)
    }

    /// Deletes what a describe invocation wrote (the manifest and up to `maxTensors` tensors).
    static func clear(_ keys: JobKeys, on c: RedisConnection) throws {
        let all = [keys.describe] + (0..<maxTensors).map { keys.describeTensor($0) }
        for batch in stride(from: 0, to: all.count, by: 512) {
            _ = try c.run(RedisCommand(strings: ["UNLINK"] + all[batch..<min(all.count, batch + 512)]))
        }
    }
}

/// What the function's evaluate invocation reported for the final model.
public struct FunctionEvaluation: Sendable, Equatable {
    public var testLoss: Double
    public var testAccuracy: Double
    public var trainLoss: Double?
    public var trainAccuracy: Double?

    /// Reads and checks `smlt:{JOB}:evaluation` on the home shard `c`.
    static func read(_ keys: JobKeys, from c: RedisConnection) throws -> FunctionEvaluation {
        func fail(_ why: String) -> CoordinatorError { CoordinatorError("the function's evaluate phase \(why)") }
        guard let bytes = try c.run(["GET", keys.evaluation]).bytes else {
            throw fail("exited 0 without writing \(keys.evaluation)")
        }
        struct Report: Decodable {
            var test_loss: Double
            var test_accuracy: Double
            var train_loss: Double?
            var train_accuracy: Double?
        }
        let r: Report
        do { r = try JSONDecoder().decode(Report.self, from: Data(bytes)) } catch {
            throw fail(
                "wrote \(keys.evaluation), but it is not {\"test_loss\": number, \"test_accuracy\": number, ...}: \(error)"
            )
        }
        for (name, value) in [("test_accuracy", r.test_accuracy), ("train_accuracy", r.train_accuracy ?? 0)]
        where !(0...1).contains(value) {
            throw fail("reported \(name) \(value), outside 0 to 1")
        }
        return FunctionEvaluation(
            testLoss: r.test_loss, testAccuracy: r.test_accuracy, trainLoss: r.train_loss,
            trainAccuracy: r.train_accuracy)
    }
}

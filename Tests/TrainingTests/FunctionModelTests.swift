import Foundation
import KeySchema
import LocalProcesses
import RedisClient
import TensorBlob
import TestSupport
import Testing
import TrainingProtocol
import Workloads

@testable import Coordinator

/// `--model function`: the function's describe phase is untrusted input, checked before the job
/// is registered, and a function that fails a phase stops the run with its reason. (The Python
/// tests train real function-defined models: python/tests.)
@Suite struct FunctionModelTests {
    @Test func theRequestNeedsAFunctionAndNoGoal() {
        var r = TrainingRequest()
        r.model = "function"
        #expect(throws: RequestError.self) { try r.validate() }
        r.function = "python3 model.py"
        #expect(throws: Never.self) { try r.validate() }
        r.deadlineSeconds = 60
        do {
            try r.validate()
            Issue.record("--deadline was accepted with --model function")
        } catch { #expect(error.description.contains("built-in model"), "\(error)") }
    }

    @Test func aValidDescriptionIsReadInOrder() throws {
        try withRedisServers(1) { servers in
            let c = try RedisConnection(servers[0].endpoint)
            let keys = JobKeys(job: "described")
            let w: [Float] = (0..<6).map { Float($0) * 0.5 }
            let b: [Float] = [1, -1]
            try c.run(
                RedisCommand("SET", keys.describeTensor(0)).appending(
                    bytes: TensorBlob.encode(w, codec: .lz4, step: 0, producer: 0)))
            try c.run(
                RedisCommand("SET", keys.describeTensor(1)).appending(
                    bytes: TensorBlob.encode(b, codec: .raw, step: 0, producer: 0)))
            try c.run(
                [
                    "SET", keys.describe,
                    #"{"tensors": [{"name": "conv.weight", "shape": [3, 2]}, {"name": "conv.bias", "shape": [2]}]}"#,
                ])
            let d = try DescribedModel.read(keys, from: c, maxParameters: 1 << 28)
            #expect(
                d.tensors == [
                    ParameterShape(name: "conv.weight", shape: [3, 2]), ParameterShape(name: "conv.bias", shape: [2]),
                ])
            #expect(d.initial == w + b)
            try DescribedModel.clear(keys, on: c)
            #expect(try c.run(["EXISTS", keys.describe, keys.describeTensor(0), keys.describeTensor(1)]).integer == 0)
        }
    }

    /// Each damaged description is refused with a message naming what is wrong.
    @Test(
        arguments: [
            ("", nil, "without writing"),
            ("not json", [Float(1)], "not {\"tensors\""),
            (#"{"tensors": []}"#, nil, "0 tensors"),
            (#"{"tensors": [{"name": "a", "shape": [2]}, {"name": "a", "shape": [1]}]}"#, [1, 2], "two tensors 'a'"),
            (#"{"tensors": [{"name": "", "shape": [1]}]}"#, [1], "invalid name"),
            (#"{"tensors": [{"name": "a\u0001", "shape": [1]}]}"#, [1], "invalid name"),
            (#"{"tensors": [{"name": "a\u0085", "shape": [1]}]}"#, [1], "invalid name"),
            (#"{"tensors": [{"name": "a", "shape": [0]}]}"#, [], "the shape [0]"),
            (#"{"tensors": [{"name": "a", "shape": [2.5]}]}"#, [1, 2], "not {\"tensors\""),
            (#"{"tensors": [{"name": "a", "shape": [1,1,1,1,1,1,1,1,1]}]}"#, [1], "the shape"),
            (#"{"tensors": [{"name": "a", "shape": [65536, 65536]}]}"#, [1], "more than 268435456 parameters"),
            (#"{"tensors": [{"name": "a", "shape": [3]}]}"#, [1, 2], "2 values for tensor 'a'"),
            (#"{"tensors": [{"name": "a", "shape": [2]}]}"#, [1, .nan], "not finite"),
            (
                #"{"tensors": [{"name": "a", "shape": [1]}, {"name": "b", "shape": [1]}]}"#, [1],
                "did not write tensor 1"
            ),
        ] as [(String, [Float]?, String)])
    func aDamagedDescriptionIsRefused(manifest: String, values: [Float]?, message: String) throws {
        try withRedisServers(1) { servers in
            let c = try RedisConnection(servers[0].endpoint)
            let keys = JobKeys(job: "damaged")
            if let values {
                try c.run(
                    RedisCommand("SET", keys.describeTensor(0)).appending(
                        bytes: TensorBlob.encode(values, codec: .raw, step: 0, producer: 0)))
            }
            if !manifest.isEmpty { try c.run(["SET", keys.describe, manifest]) }
            do {
                _ = try DescribedModel.read(keys, from: c, maxParameters: 1 << 28)
                Issue.record("accepted: \(manifest)")
            } catch { #expect("\(error)".contains(message), "\(error)") }
        }
    }

    @Test func aCorruptTensorBlobIsRefused() throws {
        try withRedisServers(1) { servers in
            let c = try RedisConnection(servers[0].endpoint)
            let keys = JobKeys(job: "corrupt")
            var blob = TensorBlob.encode([1, 2, 3], codec: .raw, step: 0, producer: 0)
            blob[blob.count - 1] ^= 0x40
            try c.run(RedisCommand("SET", keys.describeTensor(0)).appending(bytes: blob))
            try c.run(["SET", keys.describe, #"{"tensors": [{"name": "w", "shape": [3]}]}"#])
            do {
                _ = try DescribedModel.read(keys, from: c, maxParameters: 1 << 28)
                Issue.record("a blob with a bad checksum was accepted")
            } catch { #expect("\(error)".contains("unreadable blob"), "\(error)") }
        }
    }

    @Test(arguments: [
        (#"{"test_loss": 0.2, "test_accuracy": 0.97}"#, ""),
        (#"{"test_loss": 0.2}"#, "not {\"test_loss\""),
        (#"{"test_loss": 0.2, "test_accuracy": 1.5}"#, "outside 0 to 1"),
        (#"{"test_loss": "low", "test_accuracy": 0.9}"#, "not {\"test_loss\""),
        (#"{"test_loss": 0.2, "test_accuracy": 0.9, "train_accuracy": -0.1}"#, "train_accuracy"),
    ])
    func theEvaluationIsChecked(report: String, message: String) throws {
        try withRedisServers(1) { servers in
            let c = try RedisConnection(servers[0].endpoint)
            let keys = JobKeys(job: "evaluated")
            try c.run(["SET", keys.evaluation, report])
            do {
                let e = try FunctionEvaluation.read(keys, from: c)
                #expect(message.isEmpty, "accepted: \(report)")
                #expect(e.testAccuracy == 0.97 && e.testLoss == 0.2 && e.trainLoss == nil)
            } catch { #expect(!message.isEmpty && "\(error)".contains(message), "\(error)") }
        }
    }

    /// A function that fails its describe phase stops the run before any worker starts.
    @Test(arguments: [
        ("true", "exited 0 without writing"),
        ("echo 'no model here' >&2; exit 3", "describe phase ended with exit code 3"),
    ])
    func aFailedDescribeStopsTheRun(command: String, message: String) throws {
        let r = try smlt(["train", "--model", "function", "--function", command, "--steps", "2", "--shards", "1"])
        #expect(!r.status.succeeded)
        #expect(r.stderr.contains(message), "\(r.stderr)")
        if command.contains("no model") { #expect(r.stderr.contains("no model here"), "\(r.stderr)") }
    }
}

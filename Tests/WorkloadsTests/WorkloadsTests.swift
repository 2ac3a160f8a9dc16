import Foundation
import Testing
import Workloads

func temporaryFile(_ text: String) throws -> String {
    let path = NSTemporaryDirectory() + "smlt-data-\(UUID().uuidString)"
    try text.write(toFile: path, atomically: true, encoding: .utf8)
    return path
}

@Suite struct LoaderTests {
    @Test func libsvmAndCSVLoadTheSameData() throws {
        let svm = try temporaryFile("1 1:0.5 3:2\n0 2:1\n# comment\n2 1:1 2:1 3:1\n")
        let csv = try temporaryFile("label,a,b,c\n1,0.5,0,2\n0,0,1,0\n2,1,1,1\n")
        defer {
            try? FileManager.default.removeItem(atPath: svm)
            try? FileManager.default.removeItem(atPath: csv)
        }
        let a = try DatasetLoader.libsvm(path: svm)
        let b = try DatasetLoader.csv(path: csv)
        #expect(a == b)
        #expect(a.dimension == 3 && a.classes == 3 && a.count == 3)
        #expect(a.features == [0.5, 0, 2, 0, 1, 0, 1, 1, 1])
    }

    @Test(arguments: [
        ("x 1:1\n", "label 'x'"), ("1 0:1\n", "'0:1' is not index:value"), ("1 1:abc\n", "'1:abc'"),
        ("-1 1:1\n", "label '-1'"),
    ])
    func badLibsvmLinesAreNamed(text: String, message: String) throws {
        let path = try temporaryFile(text)
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect { try DatasetLoader.libsvm(path: path) } throws: {
            "\($0)".contains(message) && "\($0)".contains(":1:")
        }
    }

    @Test func csvWithRaggedRowsIsRefused() throws {
        let path = try temporaryFile("1,2,3\n0,1\n")
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect { try DatasetLoader.csv(path: path) } throws: {
            "\($0)".contains(":2: 1 features, earlier lines have 2")
        }
    }

    @Test func partitionsAreDisjointAndCoverTheData() {
        let d = DatasetLoader.synthetic(examples: 103, dimension: 4, classes: 3, seed: 9)
        let parts = (0..<4).map { d.partition($0, of: 4) }
        #expect(parts.map(\.count).reduce(0, +) == 103)
        #expect(parts[1].labels[0] == d.labels[1])
        #expect(Array(parts[2].features[4..<8]) == Array(d.features[(6 * 4)..<(7 * 4)]))
        #expect(d == DatasetLoader.synthetic(examples: 103, dimension: 4, classes: 3, seed: 9))
    }

    @Test func bundledDigitsSplit() throws {
        let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("data/digits").path
        let (train, test) = try DatasetLoader.digits(directory: dir)
        #expect(train.count == 1437 && test.count == 360)
        #expect(train.dimension == 64 && train.classes == 10)
        #expect(train.features.allSatisfy { $0 >= 0 && $0 <= 1 })
    }
}

@Suite struct GradientTests {
    /// Analytic gradients match central differences of the loss.
    @Test(arguments: ["softmax", "mlp"])
    func gradientMatchesFiniteDifferences(kind: String) {
        let data = DatasetLoader.synthetic(examples: 8, dimension: 5, classes: 3, seed: 4)
        let model: any Model =
            kind == "softmax" ? SoftmaxRegression(inputs: 5, classes: 3) : MLP(inputs: 5, hidden: 4, classes: 3)
        var rng = SplitMix(seed: 1)
        var params = model.initialParameters(seed: 3).map { $0 + 0.1 * rng.normal() }
        let (_, _, grad) = model.lossAndGradient(params: params, features: data.features, labels: data.labels)
        for i in stride(from: 0, to: params.count, by: 3) {
            let keep = params[i]
            params[i] = keep + 1e-2
            let up = model.lossAndGradient(params: params, features: data.features, labels: data.labels).loss
            params[i] = keep - 1e-2
            let down = model.lossAndGradient(params: params, features: data.features, labels: data.labels).loss
            params[i] = keep
            let numeric = (up - down) / 2e-2
            #expect(abs(numeric - Double(grad[i])) < 2e-3 + 0.02 * abs(numeric), "parameter \(i)")
        }
    }
}

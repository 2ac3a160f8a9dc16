import Foundation
import Workloads

/// The training and test sets of a request, loaded the same way for a run, its reference and a
/// resumed run.
public enum TrainingData {
    /// Loads `request`'s data; the test set is `--test-data` or the last 20% of the data.
    public static func load(_ request: TrainingRequest) throws -> (train: Dataset, test: Dataset) {
        switch try request.datasetSource() {
        case .digits:
            return try DatasetLoader.digits(directory: try dataDirectory() + "/digits")
        case .synthetic:
            let all = DatasetLoader.synthetic(
                examples: request.syntheticExamples * 5 / 4, dimension: request.syntheticFeatures,
                classes: request.syntheticClasses, seed: request.seed)
            return split(all)
        case .libsvm(let path):
            let train = try DatasetLoader.libsvm(path: path)
            guard let t = request.testData else { return split(train) }
            let test = try DatasetLoader.libsvm(path: t, dimension: train.dimension, classes: train.classes)
            return (train, test)
        case .csv(let path):
            let train = try DatasetLoader.csv(path: path)
            guard let t = request.testData else { return split(train) }
            let test = try DatasetLoader.csv(path: t, classes: train.classes)
            guard test.dimension == train.dimension else {
                throw DatasetError("\(t) has \(test.dimension) features, \(path) has \(train.dimension)")
            }
            return (train, test)
        }
    }

    /// The first 80% for training, the rest for testing.
    static func split(_ d: Dataset) -> (Dataset, Dataset) {
        let cut = d.count * 4 / 5
        let k = d.dimension
        return (
            Dataset(
                features: Array(d.features[..<(cut * k)]), labels: Array(d.labels[..<cut]), dimension: k,
                classes: d.classes),
            Dataset(
                features: Array(d.features[(cut * k)...]), labels: Array(d.labels[cut...]), dimension: k,
                classes: d.classes)
        )
    }

    /// The `data/` directory: $SMLT_DATA_DIR, ./data, or next to the checkout the binary was built in.
    public static func dataDirectory() throws -> String {
        let fm = FileManager.default
        if let d = ProcessInfo.processInfo.environment["SMLT_DATA_DIR"] { return d }
        if fm.fileExists(atPath: "data/digits/train.libsvm") { return "data" }
        var dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        if let exe = try? fm.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            dir = URL(fileURLWithPath: exe).deletingLastPathComponent()
        }
        for _ in 0..<6 {
            if fm.fileExists(atPath: dir.appendingPathComponent("data/digits/train.libsvm").path) {
                return dir.appendingPathComponent("data").path
            }
            dir = dir.deletingLastPathComponent()
        }
        throw DatasetError("cannot find the data directory (run from the SMLT checkout or set SMLT_DATA_DIR)")
    }
}

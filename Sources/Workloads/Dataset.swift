import Foundation

/// Labelled examples with dense f32 features, row-major.
public struct Dataset: Sendable, Equatable {
    public var features: [Float]
    public var labels: [Int32]
    public let dimension: Int
    public let classes: Int

    public init(features: [Float], labels: [Int32], dimension: Int, classes: Int) {
        precondition(features.count == labels.count * dimension)
        self.features = features
        self.labels = labels
        self.dimension = dimension
        self.classes = classes
    }

    public var count: Int { labels.count }

    /// The examples `i` with `i % workers == worker`: each worker's fixed share of the data.
    public func partition(_ worker: Int, of workers: Int) -> Dataset {
        var f: [Float] = []
        var l: [Int32] = []
        for i in stride(from: worker, to: count, by: workers) {
            f.append(contentsOf: features[i * dimension..<(i + 1) * dimension])
            l.append(labels[i])
        }
        return Dataset(features: f, labels: l, dimension: dimension, classes: classes)
    }

    /// The `size` examples of minibatch `step`, taken in order and wrapping around.
    public func batch(step: Int, size: Int) -> (features: [Float], labels: [Int32]) {
        guard count > 0 else { return ([], []) }
        var f: [Float] = []
        var l: [Int32] = []
        f.reserveCapacity(size * dimension)
        l.reserveCapacity(size)
        let n = min(size, count)
        for k in 0..<n {
            let i = (step * n + k) % count
            f.append(contentsOf: features[i * dimension..<(i + 1) * dimension])
            l.append(labels[i])
        }
        return (f, l)
    }
}

/// Why a data set could not be loaded.
public struct DatasetError: Error, Sendable, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

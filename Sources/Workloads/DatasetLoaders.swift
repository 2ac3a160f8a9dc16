import Foundation

/// Loaders for the data formats SMLT reads.
public enum DatasetLoader {
    /// LIBSVM text: `label index:value index:value ...`, indices from 1, labels 0..<classes.
    /// - Parameter dimension: the feature count; the largest index seen when nil.
    public static func libsvm(path: String, dimension: Int? = nil, classes: Int? = nil) throws(DatasetError) -> Dataset
    {
        let text = try read(path)
        var rows: [(Int32, [(Int, Float)])] = []
        var maxIndex = 0
        for (n, line) in text.split(whereSeparator: \.isNewline).enumerated() {
            let parts = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard let first = parts.first, !first.hasPrefix("#") else { continue }
            guard let labelValue = Double(first), labelValue >= 0, labelValue == labelValue.rounded(), labelValue < 1e6
            else { throw DatasetError("\(path):\(n + 1): label '\(first)' is not a class number (0, 1, 2, ...)") }
            var entries: [(Int, Float)] = []
            for p in parts.dropFirst() {
                let kv = p.split(separator: ":")
                guard kv.count == 2, let i = Int(kv[0]), i >= 1, i <= 10_000_000, let v = Float(kv[1]), v.isFinite
                else {
                    throw DatasetError("\(path):\(n + 1): '\(p)' is not index:value")
                }
                entries.append((i - 1, v))
                maxIndex = max(maxIndex, i)
            }
            rows.append((Int32(labelValue), entries))
        }
        let d = dimension ?? maxIndex
        guard maxIndex <= d else { throw DatasetError("\(path): feature index \(maxIndex) exceeds dimension \(d)") }
        var features = [Float](repeating: 0, count: rows.count * d)
        for (r, row) in rows.enumerated() { for (i, v) in row.1 { features[r * d + i] = v } }
        return try make(features: features, labels: rows.map(\.0), dimension: d, classes: classes, source: path)
    }

    /// CSV: one example per line, the label (0..<classes) in the first column, then the features.
    /// A first line that is not numeric is taken as a header and skipped.
    public static func csv(path: String, classes: Int? = nil) throws(DatasetError) -> Dataset {
        let text = try read(path)
        var features: [Float] = []
        var labels: [Int32] = []
        var d: Int?
        for (n, line) in text.split(whereSeparator: \.isNewline).enumerated() {
            let cells = line.split(separator: ",", omittingEmptySubsequences: false).map {
                $0.trimmingCharacters(in: .whitespaces)
            }
            guard cells.count >= 2 else { throw DatasetError("\(path):\(n + 1): expected label,feature,...") }
            guard let label = Double(cells[0]) else {
                if n == 0 { continue }
                throw DatasetError("\(path):\(n + 1): label '\(cells[0])' is not a number")
            }
            guard label >= 0, label == label.rounded(), label < 1e6 else {
                throw DatasetError("\(path):\(n + 1): label '\(cells[0])' is not a class number")
            }
            if d == nil { d = cells.count - 1 }
            guard cells.count - 1 == d else {
                throw DatasetError("\(path):\(n + 1): \(cells.count - 1) features, earlier lines have \(d!)")
            }
            for c in cells.dropFirst() {
                guard let v = Float(c), v.isFinite else {
                    throw DatasetError("\(path):\(n + 1): '\(c)' is not a number")
                }
                features.append(v)
            }
            labels.append(Int32(label))
        }
        return try make(features: features, labels: labels, dimension: d ?? 0, classes: classes, source: path)
    }

    /// A deterministic synthetic classification problem: Gaussian clusters around random centres.
    public static func synthetic(examples: Int, dimension: Int, classes: Int, seed: UInt64) -> Dataset {
        var rng = SplitMix(seed: seed)
        let centres = (0..<classes * dimension).map { _ in rng.normal() }
        var features = [Float](repeating: 0, count: examples * dimension)
        var labels = [Int32](repeating: 0, count: examples)
        for i in 0..<examples {
            let c = Int(rng.next() % UInt64(classes))
            labels[i] = Int32(c)
            for j in 0..<dimension { features[i * dimension + j] = centres[c * dimension + j] + 1.5 * rng.normal() }
        }
        return Dataset(features: features, labels: labels, dimension: dimension, classes: classes)
    }

    /// The 8x8 digits data set shipped in `data/digits` (features scaled to 0...1).
    public static func digits(directory: String) throws(DatasetError) -> (train: Dataset, test: Dataset) {
        func load(_ name: String) throws(DatasetError) -> Dataset {
            var d = try libsvm(path: "\(directory)/\(name)", dimension: 64, classes: 10)
            for i in d.features.indices { d.features[i] /= 16 }
            return d
        }
        return (try load("train.libsvm"), try load("test.libsvm"))
    }

    static func read(_ path: String) throws(DatasetError) -> String {
        guard let data = FileManager.default.contents(atPath: path) else { throw DatasetError("cannot read \(path)") }
        return String(decoding: data, as: UTF8.self)
    }

    static func make(features: [Float], labels: [Int32], dimension: Int, classes: Int?, source: String)
        throws(DatasetError) -> Dataset
    {
        guard !labels.isEmpty, dimension > 0 else { throw DatasetError("\(source): no examples") }
        let k = classes ?? Int(labels.max()! + 1)
        guard k >= 2 else { throw DatasetError("\(source): needs at least two classes") }
        if let bad = labels.first(where: { $0 >= k }) {
            throw DatasetError("\(source): label \(bad) is outside 0..<\(k)")
        }
        return Dataset(features: features, labels: labels, dimension: dimension, classes: k)
    }
}

/// splitmix64: a small, fast, deterministic generator.
public struct SplitMix: Sendable {
    var state: UInt64
    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    public mutating func uniform() -> Float { Float(next() >> 40) / Float(1 << 24) }

    /// Standard normal (Box-Muller).
    public mutating func normal() -> Float {
        let u1 = max(uniform(), 1e-7)
        let u2 = uniform()
        return (-2 * log(u1)).squareRoot() * cos(2 * .pi * u2)
    }
}

/// Named tensors in order: a step's parameters, or the gradients it returns.
///
/// The values of all tensors are kept together, tensor after tensor in `names` order, so a step
/// that works on the whole model can read and write them in place
/// (`withUnsafeBufferPointer(_:)`, `withUnsafeMutableBufferPointer(_:)`).
///
///     let gradients: Tensors = try ["weight": Tensor(shape: [64, 10], values: gw),
///                                   "bias": Tensor(shape: [10], values: gb)]
public struct Tensors: Sendable, Equatable, ExpressibleByDictionaryLiteral {
    private(set) var layout: TensorLayout
    private(set) var values: [Float]

    /// No tensors.
    public init() {
        layout = TensorLayout(names: [], shapes: [])
        values = []
    }

    /// The tensors of a dictionary literal, in the literal's order; a name given twice keeps the
    /// later tensor.
    public init(dictionaryLiteral elements: (String, Tensor)...) {
        self.init()
        for (name, tensor) in elements { self[name] = tensor }
    }

    /// `values` laid out as `layout` says (the count must be the layout's).
    init(layout: TensorLayout, values: [Float]) {
        precondition(values.count == layout.totalCount)
        self.layout = layout
        self.values = values
    }

    /// The tensors' names, in order.
    public var names: [String] { layout.names }

    /// The tensor named `name`, or nil. Setting a tensor replaces the one of that name in its
    /// place (whatever its shape) or adds it at the end; setting nil removes it.
    public subscript(name: String) -> Tensor? {
        get {
            guard let i = layout.index[name] else { return nil }
            return Tensor(checked: layout.shapes[i], values: Array(values[layout.range(of: i)]))
        }
        set {
            if let i = layout.index[name] {
                let range = layout.range(of: i)
                if let newValue {
                    if newValue.shape != layout.shapes[i] {
                        var shapes = layout.shapes
                        shapes[i] = newValue.shape
                        layout = TensorLayout(names: layout.names, shapes: shapes)
                    }
                    values.replaceSubrange(range, with: newValue.values)
                } else {
                    var names = layout.names
                    var shapes = layout.shapes
                    names.remove(at: i)
                    shapes.remove(at: i)
                    layout = TensorLayout(names: names, shapes: shapes)
                    values.removeSubrange(range)
                }
            } else if let newValue {
                layout = TensorLayout(names: layout.names + [name], shapes: layout.shapes + [newValue.shape])
                values.append(contentsOf: newValue.values)
            }
        }
    }

    /// Calls `body` with all values, tensor after tensor in `names` order, each row-major.
    public func withUnsafeBufferPointer<R, E: Error>(_ body: (UnsafeBufferPointer<Float>) throws(E) -> R) throws(E)
        -> R
    {
        try values.withUnsafeBufferPointer { (p) throws(E) -> R in try body(p) }
    }

    /// Calls `body` with all values, tensor after tensor in `names` order, each row-major, to
    /// read or change in place.
    public mutating func withUnsafeMutableBufferPointer<R, E: Error>(
        _ body: (UnsafeMutableBufferPointer<Float>) throws(E) -> R
    ) throws(E) -> R {
        try values.withUnsafeMutableBufferPointer { (p) throws(E) -> R in try body(p) }
    }

    /// Whether both hold the same names, shapes and values, in the same order.
    public static func == (a: Tensors, b: Tensors) -> Bool { a.layout == b.layout && a.values == b.values }
}

/// Names and shapes of tensors laid out one after the other; shared by every `Tensors` of a job.
final class TensorLayout: Sendable, Equatable {
    let names: [String]
    let shapes: [[Int]]
    /// Where each tensor starts; one more entry, the total count, at the end.
    let offsets: [Int]
    let index: [String: Int]

    init(names: [String], shapes: [[Int]]) {
        self.names = names
        self.shapes = shapes
        var offsets = [0]
        for s in shapes { offsets.append(offsets.last! + (Tensor.count(of: s) ?? 0)) }
        self.offsets = offsets
        index = Dictionary(names.enumerated().map { ($1, $0) }, uniquingKeysWith: { first, _ in first })
    }

    var totalCount: Int { offsets.last! }

    func range(of i: Int) -> Range<Int> { offsets[i]..<offsets[i + 1] }

    static func == (a: TensorLayout, b: TensorLayout) -> Bool {
        a === b || (a.names == b.names && a.shapes == b.shapes)
    }
}

extension Tensors {
    /// The values in `target`'s order: these tensors' own storage when they are laid out the
    /// same way, otherwise gathered by name. Every tensor of `target` must be here with its
    /// shape, and nothing else.
    func values(laidOutAs target: TensorLayout, what: String) throws(FunctionClientError) -> [Float] {
        if layout == target { return values }
        let missing = target.names.filter { layout.index[$0] == nil }
        let unknown = layout.names.filter { target.index[$0] == nil }
        guard missing.isEmpty && unknown.isEmpty else {
            var problems: [String] = []
            if !missing.isEmpty { problems.append("no \(missing.map { "'\($0)'" }.joined(separator: ", "))") }
            if !unknown.isEmpty {
                problems.append("\(unknown.map { "'\($0)'" }.joined(separator: ", ")), which the job does not have")
            }
            throw FunctionClientError(
                .invalidTensor,
                "\(what) have \(problems.joined(separator: " and ")) (the job's tensors: \(target.names.joined(separator: ", ")))"
            )
        }
        var out: [Float] = []
        out.reserveCapacity(target.totalCount)
        for (i, name) in target.names.enumerated() {
            let j = layout.index[name]!
            guard layout.shapes[j] == target.shapes[i] else {
                throw FunctionClientError(
                    .invalidTensor,
                    "\(what): '\(name)' has shape \(layout.shapes[j]), the job's tensor has \(target.shapes[i])")
            }
            out.append(contentsOf: values[layout.range(of: j)])
        }
        return out
    }
}

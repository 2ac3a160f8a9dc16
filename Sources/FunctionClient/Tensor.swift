/// A tensor of 32-bit floats: a shape and its values, row-major.
public struct Tensor: Sendable, Equatable {
    /// The size of each dimension; `[]` is a scalar.
    public let shape: [Int]
    /// `shape.reduce(1, *)` values, the last dimension varying fastest.
    public let values: [Float]

    /// A tensor of `shape` holding `values`.
    ///
    /// - Throws: `.invalidTensor` when a dimension is negative or `values` does not hold exactly
    ///   as many values as the shape needs.
    public init(shape: [Int], values: [Float]) throws(FunctionClientError) {
        guard let count = Self.count(of: shape) else {
            throw FunctionClientError(.invalidTensor, "shape \(shape) is not a valid tensor shape")
        }
        guard count == values.count else {
            throw FunctionClientError(
                .invalidTensor, "shape \(shape) needs \(count) values, not \(values.count)")
        }
        self.shape = shape
        self.values = values
    }

    /// A tensor built by this module, whose shape and values are known to agree.
    init(checked shape: [Int], values: [Float]) {
        self.shape = shape
        self.values = values
    }

    /// The number of values `shape` holds; nil when a dimension is negative or the product
    /// overflows.
    static func count(of shape: [Int]) -> Int? {
        var n = 1
        for d in shape {
            guard d >= 0 else { return nil }
            let (p, overflow) = n.multipliedReportingOverflow(by: d)
            if overflow { return nil }
            n = p
        }
        return n
    }
}

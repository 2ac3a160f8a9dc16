/// The flat parameter space of a job and its split into fixed-size chunks.
///
/// Tensors are laid out one after another in declaration order; chunk `c` covers flat elements
/// `c * chunkElements ..< min(total, (c + 1) * chunkElements)`, so a chunk may span tensors.
public struct ModelLayout: Sendable, Equatable {
    public let tensors: [TensorSpec]
    public let chunkElements: Int
    /// Flat offset of each tensor.
    public let offsets: [Int]
    public let totalElements: Int

    public init(tensors: [TensorSpec], chunkElements: Int) {
        self.tensors = tensors
        self.chunkElements = chunkElements
        var offsets: [Int] = []
        var total = 0
        for t in tensors {
            offsets.append(total)
            total += t.count
        }
        self.offsets = offsets
        totalElements = total
    }

    public var chunkCount: Int { (totalElements + chunkElements - 1) / chunkElements }

    /// The flat range of chunk `c`.
    public func range(ofChunk c: Int) -> Range<Int> {
        c * chunkElements..<min(totalElements, (c + 1) * chunkElements)
    }

    /// The flat range of a named tensor, or nil.
    public func range(ofTensor name: String) -> Range<Int>? {
        guard let i = tensors.firstIndex(where: { $0.name == name }) else { return nil }
        return offsets[i]..<offsets[i] + tensors[i].count
    }

    /// The chunks that hold any part of `range`.
    public func chunks(covering range: Range<Int>) -> Range<Int> {
        guard !range.isEmpty else { return 0..<0 }
        return range.lowerBound / chunkElements..<(range.upperBound - 1) / chunkElements + 1
    }

    /// The names of the tensors that chunk `c` holds part of.
    public func tensorNames(inChunk c: Int) -> [String] {
        let r = range(ofChunk: c)
        return tensors.indices.filter { i in
            offsets[i] < r.upperBound && offsets[i] + tensors[i].count > r.lowerBound
        }.map { tensors[$0].name }
    }
}

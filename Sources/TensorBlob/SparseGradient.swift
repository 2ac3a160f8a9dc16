import CTensorKernels

/// A vector of `count` elements of which only some are stored: the values at `indices`
/// (strictly increasing, below `count`); every other element is zero. The content of a
/// sparse-lz4 blob, and what a top-k gradient is before it is encoded.
///
/// A worker with error feedback keeps, after `topK`, `values[i] − decoded[i]` where `decoded` is
/// what the blob holds: for the selected indices the value rounded to the blob's dtype
/// (`DType.round`), for every other index 0.
public struct SparseGradient: Sendable, Equatable {
    /// The dense length (the chunk's element count).
    public let count: Int
    /// Indices of the stored elements, strictly increasing and below `count`.
    public let indices: [UInt32]
    /// The stored elements, one per index.
    public let values: [Float]

    /// Checks the pairs as a decoder checks a blob's: as many values as indices, indices strictly
    /// increasing and below `count` (at most 2^32).
    /// - Throws: `TensorBlobError` (`.lengthMismatch`, `.tooLarge` or `.invalidIndex`) naming what is wrong.
    public init(count: Int, indices: [UInt32], values: [Float]) throws(TensorBlobError) {
        guard indices.count == values.count else {
            throw TensorBlobError(.lengthMismatch, "\(indices.count) indices for \(values.count) values")
        }
        guard count >= 0, count <= Int(UInt32.max) + 1 else {
            throw TensorBlobError(.tooLarge, "a sparse vector of \(count) elements: indices are 32-bit")
        }
        var previous = -1
        for (j, i) in indices.enumerated() {
            guard Int(i) > previous else {
                throw TensorBlobError(
                    .invalidIndex,
                    "pair \(j): index \(i) does not follow \(previous) (indices must be strictly increasing)")
            }
            guard Int(i) < count else {
                throw TensorBlobError(.invalidIndex, "pair \(j): index \(i) is out of range for \(count) elements")
            }
            previous = Int(i)
        }
        self.count = count
        self.indices = indices
        self.values = values
    }

    /// Pairs already checked (by the decoder or the selection).
    init(checked count: Int, indices: [UInt32], values: [Float]) {
        self.count = count
        self.indices = indices
        self.values = values
    }

    /// The top-k elements of `values` (`TopK.select`): the `ceil(fraction × n)` of largest
    /// magnitude, ties to the lower index.
    /// - Throws: `GradientEncodingError.invalidFraction` unless `0 < fraction ≤ 1`.
    public static func topK(_ values: UnsafeBufferPointer<Float>, fraction: Double) throws(GradientEncodingError)
        -> SparseGradient
    {
        let indices = try TopK.select(values, fraction: fraction)
        return SparseGradient(checked: values.count, indices: indices, values: indices.map { values[Int($0)] })
    }

    public static func topK(_ values: [Float], fraction: Double) throws(GradientEncodingError) -> SparseGradient {
        let r = values.withUnsafeBufferPointer { v in
            Result { () throws(GradientEncodingError) in try topK(v, fraction: fraction) }
        }
        return try r.get()
    }

    /// `sum[i] += value` for every pair, in index order, without making the dense vector.
    ///
    /// The same bits as adding the dense vector (`ctk_add_f32`, `GradientSum.add`) whenever `sum`
    /// holds no −0: adding +0 changes only −0 (into +0), which this leaves as it is. With
    /// `sumMayHoldNegativeZero` it first turns every −0 of `sum` into +0 (one pass over `sum`), and
    /// is then the same bits in every case. Afterwards `sum` holds no −0 if it held none before
    /// (`x + v` is −0 only when both are −0), so a caller that keeps track of that clears a sum
    /// at most once, however many sparse gradients it adds.
    /// - Returns: false when a value is NaN or infinite (`sum` is updated anyway).
    @discardableResult
    public func add(into sum: UnsafeMutableBufferPointer<Float>, sumMayHoldNegativeZero: Bool = false) -> Bool {
        precondition(sum.count == count, "adding \(count) sparse elements into \(sum.count)")
        if sumMayHoldNegativeZero { Self.clearNegativeZeros(sum) }
        var finite = true
        for j in 0..<indices.count {
            let v = values[j]
            finite = finite && v.isFinite
            sum[Int(indices[j])] += v
        }
        return finite
    }

    /// The first pair whose value is NaN or infinite, nil when all are finite.
    public var firstNonFinite: Int? { values.firstIndex { !$0.isFinite } }

    /// Turns every −0 in `s` into +0 (`x + 0` for every element, which changes nothing else).
    static func clearNegativeZeros(_ s: UnsafeMutableBufferPointer<Float>) {
        for i in 0..<s.count where s[i].bitPattern == 0x8000_0000 { s[i] = 0 }
    }

    /// The dense vector: zeros, and the values at their indices.
    public var dense: [Float] {
        var d = [Float](repeating: 0, count: count)
        for (i, v) in zip(indices, values) { d[Int(i)] = v }
        return d
    }
}

extension TensorBlob {
    /// Encodes pairs as a sparse-lz4 blob of `dtype` (the values rounded to nearest even for f16
    /// and bf16). When that would not be smaller than the dense raw bytes it stores the dense
    /// vector raw instead (the header then says `raw`); either decodes to the same values.
    public static func encode(
        _ sparse: SparseGradient, dtype: DType = .f32, step: UInt64, producer: UInt32
    ) -> [UInt8] {
        let payload = sparse.indices.withUnsafeBufferPointer { ix in
            sparse.values.withUnsafeBufferPointer {
                sparsePayload(count: sparse.count, indices: ix, values: $0, dtype: dtype)
            }
        }
        guard let payload else {
            return encode(sparse.dense, dtype: dtype, codec: .raw, step: step, producer: producer)
        }
        defer { payload.deallocate() }
        return assemble(
            dtype: dtype, codec: .sparseLZ4, count: sparse.count, step: step, producer: producer,
            payload: UnsafeRawBufferPointer(payload))
    }

    /// The top-k blob of a gradient chunk: `SparseGradient.topK(values, fraction:)` encoded with
    /// `encode(_:dtype:step:producer:)`. What workers push for the encoding `topk:FRACTION`.
    /// - Throws: `GradientEncodingError.invalidFraction` unless `0 < fraction ≤ 1`.
    public static func encodeTopK(
        _ values: UnsafeBufferPointer<Float>, fraction: Double, dtype: DType = .f32, step: UInt64, producer: UInt32
    ) throws(GradientEncodingError) -> [UInt8] {
        encode(try SparseGradient.topK(values, fraction: fraction), dtype: dtype, step: step, producer: producer)
    }

    public static func encodeTopK(
        _ values: [Float], fraction: Double, dtype: DType = .f32, step: UInt64, producer: UInt32
    ) throws(GradientEncodingError) -> [UInt8] {
        encode(try SparseGradient.topK(values, fraction: fraction), dtype: dtype, step: step, producer: producer)
    }

    /// Decodes any valid blob as pairs without making the dense vector when it is sparse-lz4 (a
    /// dense blob gives its elements that are not +0). For a server that adds a sparse gradient
    /// into its sum with `SparseGradient.add`.
    public static func decodeSparse(
        _ blob: UnsafeRawBufferPointer, scratch: DecodeScratch = DecodeScratch(), maxElements: Int = defaultMaxElements
    ) throws(TensorBlobError) -> (header: BlobHeader, sparse: SparseGradient) {
        let h = try header(of: blob, maxElements: maxElements)
        let payload = UnsafeRawBufferPointer(rebasing: blob[BlobHeader.size...])
        return (h, try sparse(h, payload: payload, scratch: scratch))
    }

    public static func decodeSparse(_ blob: [UInt8]) throws(TensorBlobError) -> (
        header: BlobHeader, sparse: SparseGradient
    ) {
        let r = blob.withUnsafeBytes { b in Result { () throws(TensorBlobError) in try decodeSparse(b) } }
        return try r.get()
    }

    /// The pairs of a checked blob's payload.
    static func sparse(
        _ h: BlobHeader, payload: UnsafeRawBufferPointer, scratch: DecodeScratch
    ) throws(TensorBlobError) -> SparseGradient {
        let count = Int(h.count)
        guard count <= Int(UInt32.max) + 1 else {
            throw TensorBlobError(.tooLarge, "\(count) elements as pairs: indices are 32-bit")
        }
        if h.codec == .sparseLZ4 {
            let (ix, v) = try readSparse(h, payload: payload, scratch: scratch)
            return SparseGradient(checked: count, indices: Array(ix), values: Array(v))
        }
        var dense = [Float](repeating: 0, count: count)
        try dense.withUnsafeMutableBufferPointer { (d) throws(TensorBlobError) in
            try decodePayload(h, payload: payload, into: d, scratch: scratch)
        }
        let indices = dense.indices.filter { dense[$0].bitPattern != 0 }
        return SparseGradient(checked: count, indices: indices.map { UInt32($0) }, values: indices.map { dense[$0] })
    }
}

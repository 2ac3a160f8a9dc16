import CLZ4
import CTensorKernels

/// The sparse-lz4 payload (docs/wire-format.md, "sparse-lz4"): the pair count `k` (u32), then
/// one LZ4 block that decompresses to the `k` index deltas (u32: the first index itself, then
/// each index minus the one before) byte-shuffled by 4, followed by the `k` values as elements of
/// the blob's dtype byte-shuffled by its width.
extension TensorBlob {
    /// Bytes of the pair count in front of the LZ4 block.
    static let sparsePrefixSize = 4
    /// A bound on what one LZ4 block byte decodes to (LZ4's ratio is below 255).
    static let maxLZ4Expansion = 256

    /// The sparse-lz4 payload for the pairs (`indices` strictly increasing and below `count`,
    /// `values` theirs, stored as `dtype`), or nil when it would not be smaller than the
    /// `count × width` raw bytes (the writer then stores the blob raw).
    static func sparsePayload(
        count: Int, indices: UnsafeBufferPointer<UInt32>, values: UnsafeBufferPointer<Float>, dtype: DType
    ) -> UnsafeMutableRawBufferPointer? {
        let k = indices.count
        let rawBytes = count * dtype.byteWidth
        guard k > 0 else {
            // No pairs: the count alone, no LZ4 block.
            guard sparsePrefixSize < rawBytes else { return nil }
            let out = UnsafeMutableRawBufferPointer.allocate(byteCount: sparsePrefixSize, alignment: 16)
            out.initializeMemory(as: UInt8.self, repeating: 0)
            return out
        }
        let total = k * (4 + dtype.byteWidth)
        guard total <= Int(LZ4_MAX_INPUT_SIZE) else { return nil }
        let section = UnsafeMutableRawBufferPointer.allocate(byteCount: total, alignment: 64)
        defer { section.deallocate() }
        // The deltas, then shuffled into the section's first 4k bytes.
        let deltas = UnsafeMutableBufferPointer<UInt32>.allocate(capacity: k)
        defer { deltas.deallocate() }
        var previous: UInt32 = 0
        for j in 0..<k {
            deltas[j] = (indices[j] &- previous).littleEndian
            previous = indices[j]
        }
        ctk_shuffle(deltas.baseAddress, section.baseAddress, k, 4)
        let elements = ElementBytes(values, dtype)
        withExtendedLifetime(elements) {
            let shuffled = elements.shuffled
            (section.baseAddress! + 4 * k).copyMemory(from: shuffled.baseAddress!, byteCount: shuffled.count)
        }
        let bound = Int(clz4_compress_bound(Int32(total)))
        let out = UnsafeMutableRawBufferPointer.allocate(byteCount: sparsePrefixSize + bound, alignment: 16)
        let n = Int(
            clz4_compress_fast(section.baseAddress, out.baseAddress! + sparsePrefixSize, Int32(total), Int32(bound), 1))
        guard n > 0, sparsePrefixSize + n < rawBytes else {
            out.deallocate()
            return nil
        }
        storeLE(UInt32(k), out, 0)
        return UnsafeMutableRawBufferPointer(rebasing: out[0..<(sparsePrefixSize + n)])
    }

    /// The sparse-lz4 payload of the elements of `values` (as `dtype`) that are not +0: the
    /// lossless codec. nil when it would not be smaller than the raw bytes; to save the work,
    /// SMLT's writer gives up as soon as more than `(count × width − 4) / (width + 1)` elements
    /// are not +0.
    static func sparsePayload(_ e: ElementBytes) -> UnsafeMutableRawBufferPointer? {
        let count = e.values.count
        let width = e.dtype.byteWidth
        let limit = (count * width - sparsePrefixSize) / (width + 1)
        guard limit > 0, count <= Int(UInt32.max) + 1 else { return nil }
        var indices: [UInt32] = []
        let v = e.values
        if width == 4 {
            for i in 0..<count where v[i].bitPattern != 0 {
                indices.append(UInt32(i))
                if indices.count > limit { return nil }
            }
        } else {
            let h = e.raw.assumingMemoryBound(to: UInt16.self)
            for i in 0..<count where h[i] != 0 {
                indices.append(UInt32(i))
                if indices.count > limit { return nil }
            }
        }
        let selected = indices.map { v[Int($0)] }
        return indices.withUnsafeBufferPointer { ix in
            selected.withUnsafeBufferPointer { sparsePayload(count: count, indices: ix, values: $0, dtype: e.dtype) }
        }
    }

    /// Checks and decompresses a sparse-lz4 payload of a blob whose header is `h` (already
    /// checked, with the checksum): the pair count, the LZ4 block and every index are checked
    /// against each other and the element count. Returns the indices and the values as f32, in
    /// `scratch`.
    static func readSparse(
        _ h: BlobHeader, payload: UnsafeRawBufferPointer, scratch: DecodeScratch
    ) throws(TensorBlobError) -> (indices: UnsafeBufferPointer<UInt32>, values: UnsafeBufferPointer<Float>) {
        let count = Int(h.count)
        guard payload.count >= sparsePrefixSize else {
            throw TensorBlobError(.lengthMismatch, "sparse payload of \(payload.count) bytes has no 4-byte pair count")
        }
        let k = Int(loadLE(payload, 0) as UInt32)
        guard k <= count else {
            throw TensorBlobError(.lengthMismatch, "sparse blob declares \(k) pairs for \(count) elements")
        }
        if k == 0 {
            guard payload.count == sparsePrefixSize else {
                throw TensorBlobError(
                    .lengthMismatch, "sparse blob with no pairs has \(payload.count) payload bytes, not 4")
            }
            return (UnsafeBufferPointer(start: nil, count: 0), UnsafeBufferPointer(start: nil, count: 0))
        }
        guard payload.count > sparsePrefixSize else {
            throw TensorBlobError(.lengthMismatch, "sparse blob declares \(k) pairs but has no LZ4 block")
        }
        let total = k * (4 + h.dtype.byteWidth)
        // LZ4 expands at most 255-fold, so a short block cannot hold many pairs: refused before
        // any buffer is sized by `k`.
        let block = payload.count - sparsePrefixSize
        guard total <= maxLZ4Expansion * block, total <= Int(LZ4_MAX_INPUT_SIZE) else {
            throw TensorBlobError(
                .lengthMismatch,
                "sparse blob declares \(k) pairs (\(total) bytes), more than its \(block)-byte LZ4 block can hold")
        }
        let section = scratch.shuffle(total)
        let n = clz4_decompress_safe(
            payload.baseAddress! + sparsePrefixSize, section.baseAddress, Int32(payload.count - sparsePrefixSize),
            Int32(total))
        guard n == Int32(total) else {
            throw TensorBlobError(
                .corruptPayload, "sparse LZ4 block does not decode to the \(total) bytes of \(k) \(h.dtype) pairs")
        }
        let (indices, values) = scratch.pairs(k)
        ctk_unshuffle(section.baseAddress, indices.baseAddress, k, 4)
        try prefixSum(indices, count: count)
        let elements = UnsafeRawPointer(section.baseAddress! + 4 * k)
        switch h.dtype {
        case .f32: ctk_unshuffle(elements, values.baseAddress, k, 4)
        case .bf16: ctk_bf16_shuffled_to_f32(elements, values.baseAddress, k)
        case .f16: ctk_f16_shuffled_to_f32(elements, values.baseAddress, k)
        }
        return (UnsafeBufferPointer(indices), UnsafeBufferPointer(values))
    }

    /// Turns little-endian u32 deltas into indices in place, checking that every delta after the
    /// first is at least 1 (indices strictly increasing) and every index is below `count`.
    static func prefixSum(_ d: UnsafeMutableBufferPointer<UInt32>, count: Int) throws(TensorBlobError) {
        var index = -1
        for j in 0..<d.count {
            let delta = Int(UInt32(littleEndian: d[j]))
            if j > 0 && delta == 0 {
                throw TensorBlobError(
                    .invalidIndex, "pair \(j) repeats index \(index) (delta 0; indices must be strictly increasing)")
            }
            index = j == 0 ? delta : index + delta
            guard index < count else {
                let hint =
                    delta >= 1 << 31
                    ? " (delta \(delta) is a negative step written as u32: indices must be strictly increasing)" : ""
                throw TensorBlobError(
                    .invalidIndex, "pair \(j): index \(index) is out of range for \(count) elements\(hint)")
            }
            d[j] = UInt32(index)
        }
    }

    /// Decodes a checked sparse-lz4 payload into `destination` (of the blob's count): zeros, then
    /// the values at their indices. Nothing is written unless the whole payload is valid.
    static func decodeSparsePayload(
        _ h: BlobHeader, payload: UnsafeRawBufferPointer, into destination: UnsafeMutableBufferPointer<Float>,
        scratch: DecodeScratch
    ) throws(TensorBlobError) {
        let (indices, values) = try readSparse(h, payload: payload, scratch: scratch)
        destination.update(repeating: 0)
        for j in 0..<indices.count { destination[Int(indices[j])] = values[j] }
    }
}

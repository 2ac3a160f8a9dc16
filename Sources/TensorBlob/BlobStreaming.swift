import CLZ4
import CTensorKernels

/// A blob as its 48-byte header and its payload, so that a writer can send the payload from
/// where it lies (the tensor's own memory, for a raw blob) without assembling the blob.
/// Owns the header and any compressed payload; their memory stays valid while it lives.
public final class BlobParts {
    public let header: UnsafeMutableRawBufferPointer
    /// The payload when it is not the f32 values themselves: compressed, or converted to a
    /// 2-byte dtype. nil for a raw f32 blob.
    public let payload: UnsafeMutableRawBufferPointer?

    init(header: UnsafeMutableRawBufferPointer, payload: UnsafeMutableRawBufferPointer?) {
        self.header = header
        self.payload = payload
    }

    deinit {
        header.deallocate()
        payload?.deallocate()
    }

    /// The blob's segments in order (header, payload), valid while this object and `values`
    /// (the tensor it was encoded from) are.
    public func segments(values: UnsafeBufferPointer<Float>) -> [UnsafeRawBufferPointer] {
        [UnsafeRawBufferPointer(header), payload.map(UnsafeRawBufferPointer.init) ?? UnsafeRawBufferPointer(values)]
    }

    /// Bytes of the whole blob.
    public var blobLength: Int { BlobHeader.size + Int(loadLE(UnsafeRawBufferPointer(header), 32) as UInt64) }
}

/// Reusable decode buffers for one thread: payloads that cannot land in the destination
/// (compressed, or of a 2-byte dtype) and LZ4's output when it cannot either.
public final class DecodeScratch {
    private var payload = UnsafeMutableRawBufferPointer(start: nil, count: 0)
    private var shuffle = UnsafeMutableRawBufferPointer(start: nil, count: 0)
    private var pairBuffer = UnsafeMutableRawBufferPointer(start: nil, count: 0)

    public init() {}

    deinit {
        payload.deallocate()
        shuffle.deallocate()
        pairBuffer.deallocate()
    }

    func payload(_ n: Int) -> UnsafeMutableRawBufferPointer { Self.grow(&payload, n) }
    func shuffle(_ n: Int) -> UnsafeMutableRawBufferPointer { Self.grow(&shuffle, n) }

    /// Room for a sparse blob's `k` indices and `k` values.
    func pairs(_ k: Int) -> (UnsafeMutableBufferPointer<UInt32>, UnsafeMutableBufferPointer<Float>) {
        let b = Self.grow(&pairBuffer, k * 8)
        let indices = b.baseAddress!.bindMemory(to: UInt32.self, capacity: k)
        let values = (b.baseAddress! + k * 4).bindMemory(to: Float.self, capacity: k)
        return (
            UnsafeMutableBufferPointer(start: indices, count: k), UnsafeMutableBufferPointer(start: values, count: k)
        )
    }

    private static func grow(_ b: inout UnsafeMutableRawBufferPointer, _ n: Int) -> UnsafeMutableRawBufferPointer {
        if b.count < n {
            b.deallocate()
            b = .allocate(byteCount: max(n, 1), alignment: 64)
        }
        return UnsafeMutableRawBufferPointer(rebasing: b[0..<n])
    }
}

extension TensorBlob {
    /// Encodes `values` as a blob of `dtype`, as a header and a payload. The payload of a raw
    /// f32 blob is `values` itself: nothing is copied, the checksum is computed over it in place.
    public static func encodeParts(
        _ values: UnsafeBufferPointer<Float>, dtype: DType = .f32, codec: BlobCodec, step: UInt64, producer: UInt32
    ) -> BlobParts {
        let rawBytes = values.count * dtype.byteWidth
        let elements = ElementBytes(values, dtype)
        var compressed: UnsafeMutableRawBufferPointer?
        if codec == .sparseLZ4 {
            compressed = sparsePayload(elements)
        } else if codec != .raw, rawBytes > 0, rawBytes <= Int(LZ4_MAX_INPUT_SIZE) {
            let bound = Int(clz4_compress_bound(Int32(rawBytes)))
            let out = UnsafeMutableRawBufferPointer.allocate(byteCount: bound, alignment: 16)
            let n = compress(elements, codec: codec, into: out.baseAddress!, capacity: bound)
            if n > 0 && n < rawBytes {
                compressed = UnsafeMutableRawBufferPointer(rebasing: out[0..<n])
            } else {
                out.deallocate()
            }
        }
        let payload = compressed ?? (rawBytes > 0 ? elements.takeRaw() : nil)
        let header = BlobHeader(
            dtype: dtype, codec: compressed == nil ? .raw : codec, count: UInt64(values.count), step: step,
            producer: producer, payloadLength: UInt64(compressed?.count ?? rawBytes), checksum: 0)
        let bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: BlobHeader.size, alignment: 16)
        writeHeader(header, to: bytes)
        let crc = ctk_crc32c(0, bytes.baseAddress, 40)
        let full =
            payload.map { ctk_crc32c(crc, $0.baseAddress, $0.count) }
            ?? ctk_crc32c(crc, values.baseAddress, rawBytes)
        storeLE(full, bytes, 40)
        return BlobParts(header: bytes, payload: payload)
    }

    /// Checks a blob's header from its first 48 bytes, before its payload has been read, and
    /// says where the payload should go: straight into `destination` for a raw f32 blob, or
    /// into `scratch` for a compressed one or one of a 2-byte dtype. Finish with `finishDecode`.
    public static func payloadTarget(
        prefix: UnsafeRawBufferPointer, blobLength: Int, destination: UnsafeMutableBufferPointer<Float>,
        scratch: DecodeScratch, maxElements: Int = defaultMaxElements
    ) throws(TensorBlobError) -> (header: BlobHeader, payload: UnsafeMutableRawBufferPointer) {
        let h = try parseHeader(prefix, blobLength: blobLength, maxElements: maxElements)
        guard Int(h.count) == destination.count else {
            throw TensorBlobError(.countMismatch, "blob holds \(h.count) elements, expected \(destination.count)")
        }
        if h.codec == .raw && h.dtype == .f32 { return (h, UnsafeMutableRawBufferPointer(destination)) }
        return (h, scratch.payload(Int(h.payloadLength)))
    }

    /// Verifies the checksum of a blob whose payload was read where `payloadTarget` said, and
    /// decodes it into `destination` (decompressed, unshuffled, converted to f32). On a checksum
    /// error `destination` holds garbage.
    public static func finishDecode(
        _ h: BlobHeader, prefix: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer,
        into destination: UnsafeMutableBufferPointer<Float>, scratch: DecodeScratch
    ) throws(TensorBlobError) {
        try verifyChecksum(h, prefix: prefix, payload: payload)
        if h.codec == .raw && h.dtype == .f32 { return }  // already in place
        try decodePayload(h, payload: payload, into: destination, scratch: scratch)
    }

    /// As `finishDecode`, but returns the blob's pairs (`decodeSparse`) instead of writing the
    /// dense vector: for a reader that adds a sparse-lz4 gradient into a sum.
    public static func finishDecodeSparse(
        _ h: BlobHeader, prefix: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer, scratch: DecodeScratch
    ) throws(TensorBlobError) -> SparseGradient {
        try verifyChecksum(h, prefix: prefix, payload: payload)
        return try sparse(h, payload: payload, scratch: scratch)
    }

    static func verifyChecksum(
        _ h: BlobHeader, prefix: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer
    ) throws(TensorBlobError) {
        var crc = ctk_crc32c(0, prefix.baseAddress, 40)
        crc = ctk_crc32c(crc, payload.baseAddress, payload.count)
        guard crc == h.checksum else {
            throw TensorBlobError(.checksumMismatch, "checksum \(hex(crc)) does not match header's \(hex(h.checksum))")
        }
    }
}

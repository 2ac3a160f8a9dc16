import CLZ4
import CTensorKernels

/// A blob as its 48-byte header and its payload, so that a writer can send the payload from
/// where it lies (the tensor's own memory, for a raw blob) without assembling the blob.
/// Owns the header and any compressed payload; their memory stays valid while it lives.
public final class BlobParts {
    public let header: UnsafeMutableRawBufferPointer
    /// The compressed payload; nil when the payload is the raw values themselves.
    public let compressed: UnsafeMutableRawBufferPointer?

    init(header: UnsafeMutableRawBufferPointer, compressed: UnsafeMutableRawBufferPointer?) {
        self.header = header
        self.compressed = compressed
    }

    deinit {
        header.deallocate()
        compressed?.deallocate()
    }

    /// The blob's segments in order (header, payload), valid while this object and `values`
    /// (the tensor it was encoded from) are.
    public func segments(values: UnsafeBufferPointer<Float>) -> [UnsafeRawBufferPointer] {
        [UnsafeRawBufferPointer(header), compressed.map(UnsafeRawBufferPointer.init) ?? UnsafeRawBufferPointer(values)]
    }

    /// Bytes of the whole blob.
    public var blobLength: Int { BlobHeader.size + Int(loadLE(UnsafeRawBufferPointer(header), 32) as UInt64) }
}

/// Reusable decode buffers for one thread: compressed payloads and the shuffle stage.
public final class DecodeScratch {
    private var payload = UnsafeMutableRawBufferPointer(start: nil, count: 0)
    private var shuffle = UnsafeMutableRawBufferPointer(start: nil, count: 0)

    public init() {}

    deinit {
        payload.deallocate()
        shuffle.deallocate()
    }

    func payload(_ n: Int) -> UnsafeMutableRawBufferPointer { Self.grow(&payload, n) }
    func shuffle(_ n: Int) -> UnsafeMutableRawBufferPointer { Self.grow(&shuffle, n) }

    private static func grow(_ b: inout UnsafeMutableRawBufferPointer, _ n: Int) -> UnsafeMutableRawBufferPointer {
        if b.count < n {
            b.deallocate()
            b = .allocate(byteCount: max(n, 1), alignment: 64)
        }
        return UnsafeMutableRawBufferPointer(rebasing: b[0..<n])
    }
}

extension TensorBlob {
    /// Encodes `values` as a header and a payload. A raw payload is `values` itself: nothing is
    /// copied, the checksum is computed over it in place.
    public static func encodeParts(
        _ values: UnsafeBufferPointer<Float>, codec: BlobCodec, step: UInt64, producer: UInt32
    ) -> BlobParts {
        let rawBytes = values.count * 4
        var compressed: UnsafeMutableRawBufferPointer?
        if codec != .raw, rawBytes > 0, rawBytes <= Int(LZ4_MAX_INPUT_SIZE) {
            let bound = Int(clz4_compress_bound(Int32(rawBytes)))
            let out = UnsafeMutableRawBufferPointer.allocate(byteCount: bound, alignment: 16)
            var n: Int32 = 0
            if codec == .shuffleLZ4 {
                let tmp = UnsafeMutableRawBufferPointer.allocate(byteCount: rawBytes, alignment: 16)
                defer { tmp.deallocate() }
                ctk_shuffle(values.baseAddress, tmp.baseAddress, values.count, 4)
                n = clz4_compress(tmp.baseAddress, out.baseAddress, Int32(rawBytes), Int32(bound))
            } else {
                n = clz4_compress(values.baseAddress, out.baseAddress, Int32(rawBytes), Int32(bound))
            }
            if n > 0 && Int(n) < rawBytes {
                compressed = UnsafeMutableRawBufferPointer(rebasing: out[0..<Int(n)])
            } else {
                out.deallocate()
            }
        }
        let header = BlobHeader(
            dtype: .f32, codec: compressed == nil ? .raw : codec, count: UInt64(values.count), step: step,
            producer: producer, payloadLength: UInt64(compressed?.count ?? rawBytes), checksum: 0)
        let bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: BlobHeader.size, alignment: 16)
        writeHeader(header, to: bytes)
        let crc = ctk_crc32c(0, bytes.baseAddress, 40)
        let full =
            compressed.map { ctk_crc32c(crc, $0.baseAddress, $0.count) }
            ?? ctk_crc32c(crc, values.baseAddress, rawBytes)
        storeLE(full, bytes, 40)
        return BlobParts(header: bytes, compressed: compressed)
    }

    /// Checks a blob's header from its first 48 bytes, before its payload has been read, and
    /// says where the payload should go: straight into `destination` for a raw blob, or into
    /// `scratch` for a compressed one. Finish with `finishDecode`.
    public static func payloadTarget(
        prefix: UnsafeRawBufferPointer, blobLength: Int, destination: UnsafeMutableBufferPointer<Float>,
        scratch: DecodeScratch, maxElements: Int = defaultMaxElements
    ) throws(TensorBlobError) -> (header: BlobHeader, payload: UnsafeMutableRawBufferPointer) {
        let h = try parseHeader(prefix, blobLength: blobLength, maxElements: maxElements)
        guard Int(h.count) == destination.count else {
            throw TensorBlobError(.countMismatch, "blob holds \(h.count) elements, expected \(destination.count)")
        }
        if h.codec == .raw { return (h, UnsafeMutableRawBufferPointer(destination)) }
        return (h, scratch.payload(Int(h.payloadLength)))
    }

    /// Verifies the checksum of a blob whose payload was read where `payloadTarget` said, and
    /// decompresses it into `destination`. On a checksum error `destination` holds garbage.
    public static func finishDecode(
        _ h: BlobHeader, prefix: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer,
        into destination: UnsafeMutableBufferPointer<Float>, scratch: DecodeScratch
    ) throws(TensorBlobError) {
        var crc = ctk_crc32c(0, prefix.baseAddress, 40)
        crc = ctk_crc32c(crc, payload.baseAddress, payload.count)
        guard crc == h.checksum else {
            throw TensorBlobError(.checksumMismatch, "checksum \(hex(crc)) does not match header's \(hex(h.checksum))")
        }
        let raw = h.rawByteCount
        guard raw > 0, h.codec != .raw else { return }
        let dst = UnsafeMutableRawPointer(destination.baseAddress!)
        let lz4Out = h.codec == .shuffleLZ4 ? scratch.shuffle(raw).baseAddress! : dst
        let n = clz4_decompress_safe(payload.baseAddress, lz4Out, Int32(payload.count), Int32(raw))
        guard n == Int32(raw) else {
            throw TensorBlobError(.corruptPayload, "LZ4 payload does not decode to \(raw) bytes")
        }
        if h.codec == .shuffleLZ4 { ctk_unshuffle(lz4Out, dst, Int(h.count), 4) }
    }
}
